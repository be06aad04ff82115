"""Resumable training state and loss logs.

A stage keeps one `state.pt` (modules, optimiser, step, random state) in its work folder, rewritten
atomically every few minutes, so a killed run resumes where it stopped and its latest weights can be
exported at any time. Losses go to a CSV file with one row per logged step.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import torch
from torch import nn


class Checkpointer:
    """Saves and restores named modules/optimisers plus the step counter and the torch RNG state."""

    def __init__(self, path: Path, every_s: float, **parts: nn.Module | torch.optim.Optimizer) -> None:
        self.path = path
        self.every_s = every_s
        self.parts = parts
        self._last = time.monotonic()

    def resume(self) -> int:
        """Load the saved state if there is one; return the step to continue from."""
        if not self.path.exists():
            return 0
        state = torch.load(self.path, weights_only=True)
        adopted = state.get("adopted")
        for name, part in self.parts.items():
            if name not in state and adopted:
                # adopt.py: a shipped file has weights only; optimisers (and training-only heads) start fresh
                print(f"{self.path}: '{name}' starts fresh (the state was adopted from {adopted})")
                continue
            part.load_state_dict(state[name])
        if not adopted:
            torch.set_rng_state(state["rng"])
        return int(state["step"])

    def save(self, step: int) -> None:
        state = {name: part.state_dict() for name, part in self.parts.items()}
        state["step"] = step
        state["rng"] = torch.get_rng_state()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)
        self._last = time.monotonic()

    def maybe_save(self, step: int) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self.save(step)


class LossLog:
    """Appends rows of (step, seconds, values...) to a CSV file, writing the header once, and again when a
    resumed stage logs different columns (a loss term added mid-run), so every row sits under its header."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.columns = ["step", "elapsed_s", *columns]
        self._start = time.monotonic()
        self._offset = self._previous_elapsed()

    def _previous_elapsed(self) -> float:
        if not self.path.exists():
            return 0.0
        rows = self.path.read_text().strip().splitlines()
        return float(rows[-1].split(",")[1]) if len(rows) > 1 else 0.0

    def _last_header(self) -> list[str] | None:
        if not self.path.exists():
            return None
        headers = [line for line in self.path.read_text().splitlines() if line.startswith("step,")]
        return headers[-1].split(",") if headers else None

    def write(self, step: int, **values: float) -> None:
        new = self._last_header() != self.columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(self.columns)
            elapsed = self._offset + time.monotonic() - self._start
            writer.writerow([step, f"{elapsed:.1f}", *(f"{values[c]:.6g}" for c in self.columns[2:])])


class EMA(nn.Module):
    """Exponential moving average of a module's parameters (Polyak averaging), kept as a module so
    the Checkpointer saves it like any other part."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.shadow = nn.ParameterList([nn.Parameter(p.detach().clone(), requires_grad=False)
                                        for p in model.parameters()])

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for avg, p in zip(self.shadow, model.parameters(), strict=True):
            avg.lerp_(p.detach(), 1 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for avg, p in zip(self.shadow, model.parameters(), strict=True):
            p.copy_(avg)


def lr_at(step: int, total: int, peak: float, warmup: int,
          restarts: tuple[tuple[int, float], ...] = ()) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak. Each `(start, peak)` in `restarts` begins
    a new warm-up and cosine cycle at step `start` that runs to `total` (warm restarts: Loshchilov & Hutter,
    "SGDR", ICLR 2017); the cycle before it ends at `start`."""
    for start, restart_peak in reversed(restarts):
        if step >= start:
            return lr_at(step - start, total - start, restart_peak, warmup)
    if restarts:
        total = restarts[0][0]
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.45 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item()))
