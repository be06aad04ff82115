"""A scripted stand-in for sdstudio.engine.api.Engine: same methods, tiny images, optional real CPU work."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sdstudio.engine.errors import Cancelled, CheckpointError
from sdstudio.engine.request import GenerationRequest, GenerationResult, StepInfo


@dataclass(frozen=True)
class FakeDescription:
    name: str
    family: str = "demo"
    inpainting: bool = False
    prediction: str = "eps"
    default_size: int = 64

    def summary(self) -> str:
        return "SD Studio demo, eps-prediction, fake"


def result_colour(seed: int) -> tuple[int, int, int]:
    """The colour of the fake image for a seed, so tests can tell results apart."""
    return (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)


def preview_colour(step: int, total: int) -> tuple[int, int, int]:
    level = int(255 * (step + 1) / total)
    return (level, 0, 255 - level)


class FakeEngine:
    """Runs `steps` steps of `step_seconds` each; a file that is not a .safetensors model fails to load.

    `matmul` > 0 spends each step on torch matrix products of that size instead of sleeping, so the worker
    thread really competes with the GUI thread for the CPU and the GIL.
    """

    def __init__(self, step_seconds: float = 0.005, matmul: int = 0, previews: bool = True):
        self.step_seconds = step_seconds
        self.matmul = matmul
        self.previews = previews
        self.loaded: list[str] = []
        self.generated: list[GenerationRequest] = []
        self.steps_run = 0
        self.thread: threading.Thread | None = None
        self.gate = threading.Event()
        self.gate.set()

    def load_model(self, path: str = "", progress=None) -> FakeDescription:
        self.thread = threading.current_thread()
        if progress:
            progress("reading", 0.5)
        if path:
            data = Path(path).read_bytes()[:8] if Path(path).exists() else b""
            if len(data) < 8 or int.from_bytes(data, "little") > 100_000_000:
                raise CheckpointError(f"{Path(path).name}: not a safetensors file (the header is unreadable)")
        self.loaded.append(path)
        return FakeDescription(name=Path(path).stem if path else "sdstudio-emoji")

    def generate(self, request: GenerationRequest, on_step=None, should_cancel=None) -> GenerationResult:
        self.generated.append(request)
        for i in range(request.steps):
            self.gate.wait()
            if should_cancel is not None and should_cancel():
                raise Cancelled("cancelled")
            self._work()
            self.steps_run += 1
            if on_step is not None:
                preview = None
                if self.previews:
                    preview = Image.new("RGB", (request.width, request.height), preview_colour(i, request.steps))
                on_step(StepInfo(step=i, total=request.steps, sigma=1.0 - i / request.steps, preview=preview))
        seeds = [request.seed + b for b in range(request.batch_size)]
        images = [Image.new("RGB", (request.width, request.height), result_colour(s)) for s in seeds]
        return GenerationResult(images, [request.replace(seed=s) for s in seeds], model_name="sdstudio-emoji",
                                seconds=0.01)

    def _work(self) -> None:
        if not self.matmul:
            time.sleep(self.step_seconds)
            return
        import torch

        a = torch.randn(self.matmul, self.matmul)
        end = time.monotonic() + self.step_seconds
        while time.monotonic() < end:
            a = torch.tanh(a @ a)
