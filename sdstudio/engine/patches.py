"""Weight patches on a loaded model: W += strength * ΔW, and exact removal.

A `WeightPatch` names one weight of the loaded model and a function giving ΔW for it; a `PatchSet` is an
ordered, immutable collection of them whose `key` identifies its content, so caches can be keyed on it.
This is the seam LoRA/LyCORIS (low-rank ΔW = up @ down * alpha / rank, Hu et al. 2021, "LoRA") fill.

Targets use the loaded model's own parameter names under a component prefix:
- UNet: the checkpoint key, `model.diffusion_model.<name>` (detect.UNET; our module path is the checkpoint's);
- VAE: `first_stage_model.<name>` (detect.VAE);
- text encoders: `text.<i>.<name>`, where <i> is the encoder's position (SDXL: 0 = CLIP-L, 1 = OpenCLIP
  bigG) and <name> is our TextEncoder's parameter name, which is transformers' CLIP naming
  (`text.0.text_model.encoder.layers.3.self_attn.q_proj.weight`): LoRA files address those names, and
  OpenCLIP checkpoints are converted to them when loaded.

Applying computes W + sum(strength * ΔW) in float32 on W's device and casts back to W's dtype. Removing is
exact because the patched weights' originals are kept as CPU copies, bit for bit, while a patch is on. We keep
copies rather than re-read the file: a re-read would have to repeat every conversion the loader made (OpenCLIP's
fused in_proj split into q/k/v, a separate VAE file, a pickle), and the file may have changed on disk since.
The cost is host memory for exactly the patched tensors in their loaded dtype (never GPU memory), and only
while a patch set is applied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from sdstudio.engine.errors import PatchError

TEXT_PREFIX = "text."


def text_prefix(index: int) -> str:
    return f"{TEXT_PREFIX}{index}."


@dataclass(frozen=True)
class WeightPatch:
    """ΔW for one weight. `delta` receives the original weight in float32 (do not modify it) and returns ΔW
    of the same shape (or the same number of elements, e.g. a [out, in] LoRA product for a 1x1 conv).
    `source` identifies what `delta` computes (e.g. "lora:<file hash>"): patches are compared by
    (target, source, strength), never by the function."""

    target: str
    delta: Callable[[Tensor], Tensor] = field(compare=False, repr=False)
    strength: float = 1.0
    source: str = ""

    def __post_init__(self) -> None:
        if not self.source:
            raise PatchError(f"the patch for {self.target!r} has no source; name the file or hash it came from")


@dataclass(frozen=True)
class PatchSet:
    """An ordered, immutable set of weight patches; equal content gives an equal `key`."""

    patches: tuple[WeightPatch, ...] = ()

    @property
    def key(self) -> tuple[tuple[str, str, float], ...]:
        return tuple((p.target, p.source, p.strength) for p in self.patches)

    def under(self, prefix: str) -> PatchSet:
        """The patches whose target starts with `prefix` (e.g. TEXT_PREFIX: what changes prompt encodings)."""
        return PatchSet(tuple(p for p in self.patches if p.target.startswith(prefix)))

    def __bool__(self) -> bool:
        return bool(self.patches)


NO_PATCHES = PatchSet()


class PatchedWeights:
    """The weights of a loaded model's components (by target prefix) and the patch set applied to them."""

    def __init__(self, parts: Mapping[str, nn.Module]):
        self.parts = dict(parts)
        self.current = NO_PATCHES
        self._originals: dict[str, Tensor] = {}

    def parameter(self, target: str) -> Tensor:
        for prefix, module in self.parts.items():
            if target.startswith(prefix):
                try:
                    return module.get_parameter(target[len(prefix):])
                except AttributeError:
                    raise PatchError(f"patch target {target!r} is not a weight of this model's "
                                     f"{prefix.rstrip('.')}; the patch was made for another model") from None
        raise PatchError(f"patch target {target!r} names no part of this model; targets start with one of: "
                         f"{', '.join(self.parts)}")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every patchable target and its shape (what a LoRA's module names are resolved against)."""
        return {prefix + name: tuple(p.shape) for prefix, module in self.parts.items()
                for name, p in module.named_parameters()}

    @torch.no_grad()
    def apply(self, patch_set: PatchSet) -> None:
        """Make `patch_set` the applied set: restore the current one, then patch. Unknown targets are refused
        before any weight changes; on any failure every weight is back to its original."""
        if patch_set.key == self.current.key:
            return
        groups: dict[str, list[WeightPatch]] = {}
        for patch in patch_set.patches:
            groups.setdefault(patch.target, []).append(patch)
        params = {target: self.parameter(target) for target in groups}
        self.restore()
        try:
            for target, group in groups.items():
                weight = params[target]
                self._originals[target] = weight.detach().to("cpu", copy=True)
                original = weight.detach().float()
                patched = original.clone()
                for patch in group:
                    patched += patch.strength * _delta_like(patch, original)
                weight.copy_(patched.to(weight.dtype))
        except BaseException:
            self.restore()
            raise
        self.current = patch_set

    @torch.no_grad()
    def restore(self) -> None:
        """Put every patched weight back, bit for bit, and drop the copies."""
        for target, original in self._originals.items():
            self.parameter(target).copy_(original)
        self._originals.clear()
        self.current = NO_PATCHES


def _delta_like(patch: WeightPatch, original: Tensor) -> Tensor:
    delta = patch.delta(original)
    if delta.numel() != original.numel():
        raise PatchError(f"the patch for {patch.target!r} ({patch.source}) has shape {tuple(delta.shape)}, "
                         f"but the weight is {tuple(original.shape)}; it was made for another model")
    return delta.to(original.device, torch.float32).reshape(original.shape)
