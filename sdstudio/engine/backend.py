"""What the app's worker needs from an engine, as a typed Protocol (PEP 544 structural typing).

The real `sdstudio.engine.api.Engine` and the UI tests' fake both implement it, and a remote engine can be
dropped in later. Torch-free: only plain data crosses it (requests, PIL images, ModelDescription), so the UI
can name the protocol without loading the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from sdstudio.engine.detect import ModelDescription
from sdstudio.engine.request import GenerationRequest, GenerationResult, StepInfo

# (message, fraction done); it may raise Cancelled to abandon the load, so an engine calls it often.
LoadProgress = Callable[[str, float], None]
OnStep = Callable[[StepInfo], None]
ShouldCancel = Callable[[], bool]


@runtime_checkable
class Backend(Protocol):
    # `progress` is keyword-only: engines may take more load options (a VAE, ...) between the two.
    def load_model(self, path: str = "", *, progress: LoadProgress | None = None) -> ModelDescription:
        """Load a checkpoint ("" = the built-in model) unless it is already loaded; describe it."""
        ...

    def generate(self, request: GenerationRequest, on_step: OnStep | None = None,
                 should_cancel: ShouldCancel | None = None) -> GenerationResult:
        """Run one request (loading its model if needed); raise Cancelled when `should_cancel` says so."""
        ...

    def describe(self) -> ModelDescription | None:
        """The loaded model, or None before the first load."""
        ...

    def list_models(self) -> list[str]:
        """Paths of the checkpoints this engine can load (the built-in model first when shipped)."""
        ...
