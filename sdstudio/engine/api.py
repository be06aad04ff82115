"""The engine's public surface for the app and the CLI: load a model, generate, cancel via a callback.

`Engine` keeps one model loaded (loading is the expensive part) and re-loads only when a request names a
different model, VAE, preview decoder or prediction override. Every failure reaches the caller as an
SDStudioError with a message a user can act on; after any failure the engine is ready for the next request.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import torch

from sdstudio.engine.checkpoint import LoadedModel, load_checkpoint
from sdstudio.engine.detect import ModelDescription
from sdstudio.engine.errors import GenerationError, SDStudioError
from sdstudio.engine.model_files import (  # noqa: F401  (re-exported: the engine's public surface)
    BUILTIN_NAME,
    MODEL_SUFFIXES,
    builtin_model_path,
    builtin_taesd_path,
    list_models,
    model_hash,
)
from sdstudio.engine.pipeline import generate
from sdstudio.engine.request import GenerationRequest, GenerationResult, StepInfo


class Engine:
    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype
        self.model: LoadedModel | None = None
        self._key: tuple | None = None

    def _resolve(self, path: str) -> tuple[str, str]:
        if path:
            return path, ""
        builtin = builtin_model_path()
        if not builtin.is_file():
            raise SDStudioError("the built-in model is missing from this installation; choose a checkpoint")
        taesd = builtin_taesd_path()
        return str(builtin), str(taesd) if taesd.is_file() else ""

    def load_model(self, path: str = "", vae: str = "", taesd: str = "", prediction: str = "",
                   progress: Callable[[str, float], None] | None = None) -> ModelDescription:
        model_path, builtin_taesd = self._resolve(path)
        key = (model_path, vae, taesd or builtin_taesd, prediction)
        if self.model is not None and key == self._key:
            return self.model.description
        self.model, self._key = None, None
        gc.collect()
        try:
            self.model = load_checkpoint(model_path, vae_path=vae or None, taesd_path=key[2] or None,
                                         prediction=prediction, dtype=self.dtype, progress=progress)
        except MemoryError:
            raise GenerationError("not enough memory to load this model; close other programs or choose a "
                                  "smaller (fp16) checkpoint") from None
        self._key = key
        return self.model.description

    def generate(self, request: GenerationRequest, on_step: Callable[[StepInfo], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None) -> GenerationResult:
        self.load_model(request.model, request.vae, request.taesd, request.prediction)
        assert self.model is not None
        request = request.replace(model_hash=model_hash(self._key[0]))
        try:
            return generate(self.model, request, on_step=on_step, should_cancel=should_cancel)
        except (torch.OutOfMemoryError, MemoryError):
            gc.collect()
            raise GenerationError("out of memory: lower the width/height or batch size, or close other "
                                  "programs") from None
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
                gc.collect()
                raise GenerationError("out of memory: lower the width/height or batch size") from None
            raise GenerationError(f"generation failed: {exc}") from exc
