"""The engine's public surface for the app and the CLI: load a model, generate, cancel via a callback.

`Engine` keeps one model loaded (loading is the expensive part) and re-loads only when a request names a
different model, VAE, preview decoder or prediction override; device and dtype are the Engine's own and part
of the same key. Weight patches (`set_patches`) are applied to and removed from the loaded model in place,
never by reloading. Every failure reaches the caller as an SDStudioError with a message a user can act on;
after any failure, a cancelled load included, the engine is ready for the next request.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable
from pathlib import Path

import torch

from sdstudio.engine.checkpoint import LoadedModel, attach_taesd, load_checkpoint
from sdstudio.engine.control_job import ControlNetCache
from sdstudio.engine.detect import ModelDescription
from sdstudio.engine.devices import job_memory, resolve_device
from sdstudio.engine.embeddings import EmbeddingLibrary
from sdstudio.engine.errors import Cancelled, GenerationError, SDStudioError
from sdstudio.engine.hires_checkpoint import check_hires_checkpoint
from sdstudio.engine.job_size import fit_memory
from sdstudio.engine.lora_set import LoraFiles, resolve_loras
from sdstudio.engine.model_files import (
    approx_decoder,
    builtin_model_path,
    builtin_taesd_path,
    list_models,
    model_hash,
)
from sdstudio.engine.patches import NO_PATCHES, PatchSet
from sdstudio.engine.pipeline import generate
from sdstudio.engine.prompt_schedule import texts
from sdstudio.engine.request import GenerationRequest, GenerationResult, StepInfo
from sdstudio.engine.upscaler_models import register_model_upscalers
from sdstudio.engine.validate import validate


class Engine:
    """One loaded model on one device. `device` is "auto", "cpu", "cuda" or "mps" (devices.resolve_device);
    `dtype` None picks each component's precision by devices.choose_placements. `allow_pickle` lets
    .ckpt/.pt files load (weights-only); off, they are refused with a message saying how to allow them."""

    def __init__(self, device: str = "auto", dtype: torch.dtype | None = None, allow_pickle: bool = False):
        self.device = resolve_device(device)
        self.dtype = dtype
        self.allow_pickle = allow_pickle
        self.model: LoadedModel | None = None
        self.patches: PatchSet = NO_PATCHES
        self._key: tuple | None = None
        # Folders searched for LoRA files / embeddings after the data folder's models/Lora and embeddings/
        # (a user's A1111 or ComfyUI ones), in order.
        self.lora_dirs: list[str | Path] = []
        self.embedding_dirs: list[str | Path] = []
        self._loras = LoraFiles()
        self._controlnets = ControlNetCache(allow_pickle)  # the last job's ControlNets stay loaded
        self._embeddings: EmbeddingLibrary | None = None
        # Before each job, check that it fits the device's memory (job_size.fit_memory: tile the VAE when
        # "auto" and short, else refuse saying what would fit). The CLI's --yes turns it off.
        self.check_memory = True
        register_model_upscalers(self.device)  # ESRGAN-style files become upscaler names (hires, upscale)

    def _resolve(self, path: str) -> tuple[str, str]:
        if path:
            return path, ""
        builtin = builtin_model_path()
        if not builtin.is_file():
            raise SDStudioError("the built-in model is missing from this installation; choose a checkpoint")
        taesd = builtin_taesd_path()
        return str(builtin), str(taesd) if taesd.is_file() else ""

    def _model_key(self, path: str, vae: str, taesd: str, prediction: str) -> tuple:
        model_path, builtin_taesd = self._resolve(path)
        return model_path, vae, taesd or builtin_taesd, prediction, self.device, self.dtype

    def load_model(self, path: str = "", progress: Callable[[str, float], None] | None = None, *, vae: str = "",
                   taesd: str = "", prediction: str = "") -> ModelDescription:
        """Load (or keep) the model; `progress(stage, fraction)` may raise Cancelled to abort the load."""
        self._load(path, progress, vae=vae, taesd=taesd, prediction=prediction)
        self.model.apply_patches(self.patches)
        return self.model.description

    def _load(self, path: str, progress: Callable[[str, float], None] | None = None, *, vae: str = "",
              taesd: str = "", prediction: str = "") -> None:
        """Load the model unless it is the one loaded; its patches are the caller's to apply."""
        key = self._model_key(path, vae, taesd, prediction)
        model_path = key[0]
        if self.model is None or key != self._key:
            # Drop the old model first: two models at once may not fit.
            self.model, self._key = None, None
            gc.collect()
            try:
                model = load_checkpoint(model_path, vae_path=vae or None, taesd_path=key[2] or None,
                                        prediction=prediction, device=self.device, dtype=self.dtype,
                                        allow_pickle=self.allow_pickle, progress=progress)
            except (torch.OutOfMemoryError, MemoryError):
                gc.collect()
                raise GenerationError("not enough memory to load this model; close other programs or choose a "
                                      "smaller (fp16) checkpoint") from None
            if model.taesd is None and (found := approx_decoder(model.description.family)):
                try:  # live previews and draft decode
                    attach_taesd(model, found, self.device, self.dtype)
                except SDStudioError as exc:
                    raise SDStudioError(f"the preview decoder {found} cannot be used ({exc}); replace or remove "
                                        "it") from None
            self.model, self._key = model, key

    def set_patches(self, patch_set: PatchSet = NO_PATCHES) -> None:
        """The weight patches every following generation uses (NO_PATCHES: none), under those of the prompt's
        `<lora:…>` tags. Applied now when a model is loaded, else at the next load. A set that does not fit
        the loaded model raises PatchError and the engine keeps the previous set (the model is unpatched until
        the next generation re-applies it)."""
        if self.model is not None:
            self.model.apply_patches(patch_set)
        self.patches = patch_set

    def _hires_loader(self, request: GenerationRequest, loras, should_cancel: Callable[[], bool] | None):
        """The hires pass's model loader (pipeline.generate's `hires_model`): the hires checkpoint replaces
        the loaded model (A1111 swaps the weights too; two models at once may not fit), with the same weight
        patches; the next job loads its own model again."""

        def progress(_stage: str, _fraction: float) -> None:
            if should_cancel is not None and should_cancel():
                raise Cancelled("Generation cancelled.")

        def load() -> LoadedModel:
            self._load(request.hires_checkpoint, progress, vae=request.vae, taesd=request.taesd,
                       prediction=request.prediction)
            self.model.text.prompts.embeddings = self._embedding_library()
            tagged = self._loras.patch_set(loras, self.model)
            self.model.apply_patches(PatchSet(self.patches.patches + tagged.patches))
            return self.model

        return load

    def _embedding_library(self) -> EmbeddingLibrary:
        """The embeddings library for the current folders, re-listed for each generation (a file added since
        is found; the prompt cache is keyed on the listing)."""
        extra = tuple(str(f) for f in self.embedding_dirs)
        if self._embeddings is None or self._embeddings.extra != extra:
            self._embeddings = EmbeddingLibrary(extra)
        self._embeddings.refresh()
        return self._embeddings

    def describe(self) -> ModelDescription | None:
        """The loaded model's description, or None before the first load."""
        return None if self.model is None else self.model.description

    def list_models(self) -> list[str]:
        """Paths of the models to choose from, the built-in model first."""
        return [str(p) for p in list_models()]

    def generate(self, request: GenerationRequest, on_step: Callable[[StepInfo], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None) -> GenerationResult:
        """Generate; the prompt's `<lora:…>` tags add their weight patches (lora_set.py) to `self.patches`
        for this job, the files found and checked before the model loads. The model is patched only when that
        set changed (a changed weight rebuilds the set, never the model), and a prompt without tags leaves
        `self.patches` alone. The result's requests keep the prompt as written, tags included (A1111's
        infotext does), with `lora_hashes` filled in. A job that would not fit the device's memory is refused
        (or its VAE tiled) first, unless `check_memory` is off."""
        loras = resolve_loras(request, self.lora_dirs)
        self._load(request.model, vae=request.vae, taesd=request.taesd, prediction=request.prediction)
        assert self.model is not None
        if self.check_memory:
            # Sized on the validated request (its sizes checked first); only the tiled VAE choice is taken.
            memory, where = job_memory(self.model.placements["unet"].device)
            checked = validate(request, multiple=self.model.description.vae_downscale)
            fitted = fit_memory(checked, self.model.description, memory, self.model.dtype.itemsize, where)
            request = request.replace(tiled_vae=fitted.tiled_vae)
        prompts = self.model.text.prompts
        prompts.embeddings = self._embedding_library()
        # Checks every embedding the prompts name before any work (the tag-free prompt: a LoRA's name is no
        # embedding); the hashes go to the infotext (TI hashes).
        # Prompt editing: the texts each step encodes, not the prompt with its [from:to:when] brackets.
        ti_hashes = prompts.embeddings_used(*texts(loras.prompt, request.steps),
                                            *texts(request.negative_prompt, request.steps, split=False),
                                            request.blend_prompt)
        tagged_patches = self._loras.patch_set(loras, self.model)
        self.model.apply_patches(PatchSet(self.patches.patches + tagged_patches.patches))
        written = request.replace(model_hash=model_hash(self._key[0]), lora_hashes=loras.hashes,
                                  ti_hashes=ti_hashes)
        hires_model = None
        if request.hires and request.hires_checkpoint:
            # Checked from the file's header before any work; loaded only once the first pass is done.
            check_hires_checkpoint(request.hires_checkpoint, self.model.description, request.prediction)
            written = written.replace(hires_checkpoint_hash=model_hash(request.hires_checkpoint))
            hires_model = self._hires_loader(request, loras, should_cancel)
        try:
            result = generate(self.model, written.replace(prompt=loras.prompt), on_step=on_step,
                              should_cancel=should_cancel, controlnets=self._controlnets,
                              hires_model=hires_model)
            tagged = [r.replace(prompt=written.prompt, lora_hashes=written.lora_hashes) for r in result.requests]
            return dataclasses.replace(result, requests=tagged)
        except (torch.OutOfMemoryError, MemoryError):
            gc.collect()
            raise GenerationError("out of memory: lower the width/height or batch size, or close other "
                                  "programs") from None
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
                gc.collect()
                raise GenerationError("out of memory: lower the width/height or batch size") from None
            raise GenerationError(f"generation failed: {exc}") from exc
