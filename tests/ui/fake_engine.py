"""A scripted stand-in for sdstudio.engine.api.Engine: implements sdstudio.engine.backend.Backend with tiny
images, optional real CPU work and an optionally slow, cancellable load."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from PIL import Image

from sdstudio.engine.detect import ModelDescription
from sdstudio.engine.errors import Cancelled, CheckpointError
from sdstudio.engine.request import GenerationRequest, GenerationResult, StepInfo


def fake_description(name: str, path: str = "") -> ModelDescription:
    """A complete description of the demo family, as the real detector would give for the built-in model."""
    return ModelDescription(
        name=name, path=path, family="demo", family_label="SD Studio demo", inpainting=False, prediction="eps",
        prediction_source="default", dtype="float32", params={"unet": 1_000_000, "vae": 200_000, "text": 0},
        default_size=64, scale_factor=1.0, vae_downscale=8, context_dim=64, unet_in_channels=4,
    )


def result_colour(seed: int) -> tuple[int, int, int]:
    """The colour of the fake image for a seed, so tests can tell results apart."""
    return (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)


def preview_colour(step: int, total: int) -> tuple[int, int, int]:
    level = int(255 * (step + 1) / total)
    return (level, 0, 255 - level)


class FakeEngine:
    """Runs `steps` steps of `step_seconds` each; a file that is not a .safetensors model fails to load.

    `matmul` > 0 spends each step on torch matrix products of that size instead of sleeping, so the worker
    thread really competes with the GUI thread for the CPU and the GIL. A load reports progress `load_steps`
    times, `load_step_seconds` apart, as the real engine does per tensor; `progress_calls` counts them.
    """

    def __init__(self, step_seconds: float = 0.005, matmul: int = 0, previews: bool = True,
                 load_steps: int = 1, load_step_seconds: float = 0.0, models: list[str] | None = None):
        self.step_seconds = step_seconds
        self.matmul = matmul
        self.previews = previews
        self.load_steps = load_steps
        self.load_step_seconds = load_step_seconds
        self.models = list(models or [])
        self.loaded: list[str] = []
        self.generated: list[GenerationRequest] = []
        self.steps_run = 0
        self.progress_calls = 0
        self.description: ModelDescription | None = None
        self.thread: threading.Thread | None = None
        self.preview_maker = None  # (step, request) -> PIL image, instead of the solid preview colour
        self.gate = threading.Event()
        self.gate.set()

    def load_model(self, path: str = "", progress=None) -> ModelDescription:
        self.thread = threading.current_thread()
        self.description = None
        for i in range(self.load_steps):
            if progress:
                self.progress_calls += 1
                progress("reading", (i + 1) / (self.load_steps + 1))
            if self.load_step_seconds:
                time.sleep(self.load_step_seconds)
        if path:
            data = Path(path).read_bytes()[:8] if Path(path).exists() else b""
            if len(data) < 8 or int.from_bytes(data, "little") > 100_000_000:
                raise CheckpointError(f"{Path(path).name}: not a safetensors file (the header is unreadable)")
        self.loaded.append(path)
        self.description = fake_description(Path(path).stem if path else "sdstudio-emoji", path)
        return self.description

    def describe(self) -> ModelDescription | None:
        return self.description

    def list_models(self) -> list[str]:
        return list(self.models)

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
                if self.preview_maker is not None:
                    preview = self.preview_maker(i, request)
                elif self.previews:
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


def failing_once(engine):
    """An engine factory whose first call fails (a driver hiccup) and later calls return `engine`; `.calls`
    counts them."""

    def factory():
        factory.calls += 1
        if factory.calls == 1:
            raise RuntimeError("driver hiccup")
        return engine

    factory.calls = 0
    return factory
