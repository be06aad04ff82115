"""Additive residuals for the UNet: what ControlNet (Zhang et al. 2023, "Adding Conditional Control to
Text-to-Image Diffusion Models", arXiv:2302.05543) and T2I-Adapter (Mou et al. 2023, arXiv:2302.08453) hand
it.

- `skips` and `middle` are ControlNet's, as ldm's `ControlledUnetModel` and diffusers'
  `down_block_additional_residuals` / `mid_block_additional_residual`: one tensor per input block (in
  `input_blocks` order, the first conv included), each added to that block's output only where the decoder
  consumes it as a skip, and one added to the middle block's output. `skips` may be empty (none).
- `encoder` is T2I-Adapter's (diffusers' `down_intrablock_additional_residuals`, sd-webui-controlnet's
  t2i injection): (input block index, tensor) pairs, each added to that block's output on the encoder path
  itself, so every later block, and the skip of that block, sees it.

Under classifier-free guidance the UNet sees [image for the prompt; image for the negative prompt]. Fixed
residuals are given for the images (batch 1 or B) and `guided` lays them out for that pair, either on both
halves or on the prompt half only (zeros on the negative half, as ControlNet's "prompt is more important").
A `ResidualSource` instead computes them for each UNet call from that call's input, so it always sees
exactly the batch the UNet sees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from sdstudio.engine.denoiser import UNetConditioning


@dataclass(frozen=True)
class Residuals:
    """skips: one (N, C_k, H_k, W_k) tensor per UNet input block, in order, or none; middle: (N, C, h, w) or
    None; encoder: (input block index, (N, C, H, W)) pairs in block order, each index once."""

    skips: tuple[Tensor, ...]
    middle: Tensor | None = None
    encoder: tuple[tuple[int, Tensor], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "skips", tuple(self.skips))
        object.__setattr__(self, "encoder", tuple(sorted(((int(i), t) for i, t in self.encoder),
                                                         key=lambda pair: pair[0])))
        indices = [i for i, _ in self.encoder]
        if len(set(indices)) != len(indices):
            raise ValueError(f"encoder residuals name an input block twice: {indices}")
        if not self.tensors():
            raise ValueError("residuals without any tensor")
        sizes = {t.shape[0] for t in self.tensors()}
        if len(sizes) > 1:
            raise ValueError(f"residual tensors disagree on the batch size: {sorted(sizes)}")

    def tensors(self) -> list[Tensor]:
        return [*self.skips, *([] if self.middle is None else [self.middle]), *(t for _, t in self.encoder)]

    @property
    def batch(self) -> int:
        return self.tensors()[0].shape[0]

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Residuals:
        return Residuals(tuple(fn(t) for t in self.skips), None if self.middle is None else fn(self.middle),
                         tuple((i, fn(t)) for i, t in self.encoder))

    def scaled(self, factor: float) -> Residuals:
        return self._map(lambda t: t * factor)

    def repeated(self, rows: int) -> Residuals:
        """Batch-1 residuals for a call on `rows` images (the same condition for each)."""
        if self.batch != 1:
            raise ValueError(f"repeat one image's residuals, not {self.batch}")
        return self._map(lambda t: t.expand(rows, *t.shape[1:]))

    def image(self, index: int) -> Residuals:
        """The residuals of image `index` of the batch (batch 1): row `index`, or the one row of a batch of 1."""
        if self.batch == 1:
            return self
        if not 0 <= index < self.batch:
            raise ValueError(f"residuals hold {self.batch} images, asked for image {index}")
        return self._map(lambda t: t[index : index + 1])

    def guided(self, on_uncond: bool = True) -> Residuals:
        """Batch-1 residuals laid out for a [prompt; negative prompt] UNet call."""
        if self.batch != 1:
            raise ValueError(f"lay out one image's residuals for guidance, not {self.batch}")
        return self._map(lambda t: torch.cat([t, t if on_uncond else torch.zeros_like(t)]))

    def to(self, device: torch.device, dtype: torch.dtype) -> Residuals:
        return self._map(lambda t: t.to(device, dtype))

    def __add__(self, other: Residuals) -> Residuals:
        """Several control models on one UNet: their residuals add up (a part one of them lacks is the
        other's)."""
        if self.skips and other.skips and len(self.skips) != len(other.skips):
            raise ValueError(f"cannot add residuals for {len(self.skips)} and {len(other.skips)} skips")
        skips = tuple(a + b for a, b in zip(self.skips, other.skips, strict=True)) if (
            self.skips and other.skips) else self.skips or other.skips
        middle = other.middle if self.middle is None else self.middle if other.middle is None else (
            self.middle + other.middle)
        encoder = dict(self.encoder)
        for i, t in other.encoder:
            encoder[i] = encoder[i] + t if i in encoder else t
        return Residuals(skips, middle, tuple(encoder.items()))


# (UNet input x without extra channels, timesteps t, conditioning) -> residuals for that batch, or None.
ResidualSource = Callable[[Tensor, Tensor, "UNetConditioning"], Residuals | None]
ResidualInput = Residuals | ResidualSource | None


def for_image(residuals: ResidualInput, index: int) -> ResidualInput:
    """What image `index` of a batch gets: its row of fixed residuals; a source is asked per call anyway."""
    return residuals.image(index) if isinstance(residuals, Residuals) else residuals


def for_guidance(residuals: ResidualInput, on_uncond: bool = True) -> ResidualInput:
    """One image's residuals for a [prompt; negative prompt] call. A source on the prompt half only is asked
    for that half alone and the negative half gets zeros."""
    if residuals is None:
        return None
    if isinstance(residuals, Residuals):
        return residuals.guided(on_uncond)
    if on_uncond:
        return residuals
    source = residuals

    def prompt_half_only(x: Tensor, t: Tensor, cond: UNetConditioning) -> Residuals | None:
        half = x.shape[0] // 2
        found = source(x[:half], t[:half], cond.rows(0, half))
        return None if found is None else found._map(lambda r: torch.cat([r, torch.zeros_like(r)]))

    return prompt_half_only
