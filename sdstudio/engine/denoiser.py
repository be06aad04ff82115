"""Turn a UNet that predicts eps or v at a timestep into a denoiser D(x, sigma) -> x0 estimate.

Preconditioning from Karras et al. (2022), arXiv:2206.00364, table 1, with sigma_data = 1 as
k-diffusion's `DiscreteEpsDDPMDenoiser` / `DiscreteVDDPMDenoiser` use for LDM models:
  eps:  c_in = 1/sqrt(sigma^2+1), D = x - sigma * eps(x * c_in, t)
  v:    c_in = 1/sqrt(sigma^2+1), c_skip = 1/(sigma^2+1), c_out = -sigma/sqrt(sigma^2+1),
        D = c_skip * x + c_out * v(x * c_in, t)   (v-prediction: Salimans & Ho 2022, arXiv:2202.00512)
Classifier-free guidance: Ho & Salimans (2022), arXiv:2207.12598.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from sdstudio.engine.errors import Cancelled, GenerationError
from sdstudio.engine.residuals import ResidualInput, Residuals, for_guidance, for_image
from sdstudio.engine.schedules import ModelSampling

if TYPE_CHECKING:
    from sdstudio.engine.step_conditioning import StepConditioning

PREDICTIONS = ("eps", "v")
# At most this many rows (AND sub-prompts and the negative prompt of one image) go through one UNet call; more
# sub-prompts take several calls, split the same way for every image, so batches stay bit-identical to re-runs.
GUIDED_BATCH = 8


class UNetFn(Protocol):
    def __call__(
        self,
        x: Tensor,
        t: Tensor,
        context: Tensor,
        y: Tensor | None = None,
        residuals: Residuals | None = None,
    ) -> Tensor: ...


@dataclass(frozen=True)
class UNetConditioning:
    """What a prompt becomes for the UNet: cross-attention `context` (N, tokens, dim) and, for SDXL, the
    `y` vector (N, adm). N is 1 (one prompt for the whole batch) or the batch size."""

    context: Tensor
    y: Tensor | None = None

    def repeat_to(self, batch: int) -> UNetConditioning:
        """The same conditioning for `batch` images; N must be 1 or already `batch`."""
        n = self.context.shape[0]
        if n == batch:
            return self
        if n != 1:
            raise ValueError(f"conditioning holds {n} prompts for a batch of {batch} images")
        y = None if self.y is None else self.y.expand(batch, *self.y.shape[1:])
        return UNetConditioning(self.context.expand(batch, *self.context.shape[1:]), y)

    def to(self, device: torch.device) -> UNetConditioning:
        return UNetConditioning(self.context.to(device), None if self.y is None else self.y.to(device))

    def rows(self, start: int, stop: int) -> UNetConditioning:
        """Images start..stop-1 of a batch."""
        y = None if self.y is None else self.y[start:stop]
        return UNetConditioning(self.context[start:stop], y)


def _concat(conds: list[UNetConditioning]) -> UNetConditioning:
    if len({c.context.shape[1:] for c in conds}) > 1:
        shapes = ", ".join(str(tuple(c.context.shape)) for c in conds)
        raise ValueError(f"cannot batch prompt and negative prompt contexts of shapes {shapes}")
    if len({c.y is None for c in conds}) > 1:
        raise ValueError("either every conditioning has a y vector or none does")
    y = None if conds[0].y is None else torch.cat([c.y for c in conds])
    return UNetConditioning(torch.cat([c.context for c in conds]), y)


def _per_item(values: Tensor, ndim: int) -> Tensor:
    """(B,) -> (B, 1, 1, ...) to broadcast over images of `ndim` dimensions."""
    return values.reshape(-1, *([1] * (ndim - 1)))


class Denoiser:
    """D(x, sigma, cond) for a discrete-time eps- or v-predicting UNet.

    `unet(x, t, context, y=None, residuals=None)` gets the scaled input and the fractional timestep t of
    each sigma. For 9-channel inpainting UNets pass `extra_channels` (mask and masked-image latent,
    B x 5 x h x w): the UNet input is then concat(x * c_in, extra_channels) along channels, unscaled like in
    LDM's hybrid conditioning. `residuals` (residuals.py) are fixed tensors for this batch or a source that
    is asked with (x * c_in, t, cond), the UNet input without extra channels, as ControlNet takes it. The
    UNet output is cast back to x's dtype; the callable handles its own dtype and device.
    """

    def __init__(self, unet: UNetFn, model_sampling: ModelSampling, prediction: str = "eps") -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.unet = unet
        self.model_sampling = model_sampling
        self.prediction = prediction

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in) for each sigma."""
        c_in = 1 / (sigma**2 + 1) ** 0.5
        if self.prediction == "eps":
            return torch.ones_like(sigma), -sigma, c_in
        return 1 / (sigma**2 + 1), -sigma * c_in, c_in

    def __call__(
        self,
        x: Tensor,
        sigma: Tensor,
        cond: UNetConditioning,
        extra_channels: Tensor | None = None,
        residuals: ResidualInput = None,
    ) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        sigma = sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma
        c_skip, c_out, c_in = (_per_item(c, x.ndim).to(x.dtype) for c in self.scalings(sigma))
        t = self.model_sampling.sigma_to_t(sigma.cpu()).to(x.device)
        scaled = x * c_in
        if residuals is not None and not isinstance(residuals, Residuals):
            residuals = residuals(scaled, t, cond)
        unet_in = scaled
        if extra_channels is not None:
            unet_in = torch.cat([unet_in, extra_channels.to(x.dtype)], dim=1)
        if residuals is None:
            out = self.unet(unet_in, t, cond.context, y=cond.y)
        else:
            if residuals.batch != x.shape[0]:
                raise ValueError(f"residuals for {residuals.batch} images in a UNet call on {x.shape[0]}")
            out = self.unet(unet_in, t, cond.context, y=cond.y, residuals=residuals)
        return c_skip * x + c_out * out.to(x.dtype)


class CFGDenoiser:
    """The sampler's model(x, sigma) -> denoised with classifier-free guidance.

    The UNet runs once per image and step, on [x_i for the prompt; x_i for the negative prompt], and the
    result is uncond + scale * (cond - uncond). With scale 1 the formula is just cond, so the negative half
    is not computed at all and each call is x_i alone. `should_cancel` is asked before every UNet call; True
    raises Cancelled.

    Why one image per call: a UNet call on a batch of B images takes different kernel paths (blocking,
    reduction order) than one on a batch of 1, so image i of a batch would differ from its batch-of-one
    re-run by a unit in a few pixels. Calling per image gives every op the very shapes of a batch-of-one run,
    and the sampler maths outside is elementwise per image, so each batch member is bit-identical to its
    re-run from the result's request. On a CPU this costs nothing measurable (the cores are busy either
    way); on a GPU it gives up batch parallelism, which a later "fast batches" option could win back by
    giving up exactness.

    Prompt editing and composable prompts (step_conditioning): with `schedule` set, model call n (counted
    from 0, A1111's CFGDenoiser step counter) takes its sub-prompts and negative prompt from `schedule(n)`
    instead of `cond`/`uncond`, and each image's call runs on [x_i per sub-prompt; x_i for the negative]
    (GUIDED_BATCH rows per call at most);
    the result is A1111's combine_denoised: uncond + sum_i (cond_i - uncond) * (weight_i * scale), in
    sub-prompt order. One sub-prompt of weight 1 is the plain formula, bit for bit.

    `extra_channels` (1 or B images) go with each image as in Denoiser. `residuals` are fixed Residuals for
    1 or B images, or a source asked for every UNet call; `residuals_on_uncond` False applies them to the
    prompt half only.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        cond: UNetConditioning,
        uncond: UNetConditioning,
        scale: float,
        extra_channels: Tensor | None = None,
        should_cancel: Callable[[], bool] | None = None,
        residuals: ResidualInput = None,
        residuals_on_uncond: bool = True,
        schedule: Callable[[int], StepConditioning] | None = None,
    ) -> None:
        self.denoiser = denoiser
        self.schedule = schedule
        self.calls = 0
        self.cond = cond
        self.uncond = uncond
        self.scale = scale
        self.extra_channels = extra_channels  # (1 or B, C, h, w), see Denoiser
        self.should_cancel = should_cancel
        self.residuals = residuals
        self.residuals_on_uncond = residuals_on_uncond

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        batch = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(batch)
        if self.schedule is None:
            conds, uncond = ((self.cond, 1.0),), self.uncond
        else:
            now = self.schedule(self.calls)
            conds, uncond = now.conds, now.uncond
        self.calls += 1
        if len(conds) > 1 and self.residuals is not None:
            raise GenerationError("composable prompts (AND) cannot be combined with ControlNet yet")
        plain = len(conds) == 1 and conds[0][1] == 1 and self.scale == 1
        conds = tuple((c.repeat_to(batch), w) for c, w in conds)
        uncond = None if plain else uncond.repeat_to(batch)
        extra = self.extra_channels
        if extra is not None:
            extra = extra.expand(batch, *extra.shape[1:])
        return torch.cat([self._image(i, x, sigma, conds, uncond, extra) for i in range(batch)])

    def _image(
        self,
        i: int,
        x: Tensor,
        sigma: Tensor,
        conds: tuple[tuple[UNetConditioning, float], ...],
        uncond: UNetConditioning | None,
        extra: Tensor | None,
    ) -> Tensor:
        """The guided estimate of image i alone: the same call a batch-of-one run makes."""
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("Generation cancelled.")
        x_i, sigma_i, extra_i = x[i : i + 1], sigma[i : i + 1], None if extra is None else extra[i : i + 1]
        residuals = for_image(self.residuals, i)
        if uncond is None:
            return self.denoiser(x_i, sigma_i, conds[0][0].rows(i, i + 1), extra_i, residuals)
        rows = [c.rows(i, i + 1) for c, _ in conds] + [uncond.rows(i, i + 1)]
        residuals = for_guidance(residuals, self.residuals_on_uncond)  # only with one sub-prompt (see __call__)
        outs: list[Tensor] = []
        for start in range(0, len(rows), GUIDED_BATCH):
            part = rows[start : start + GUIDED_BATCH]
            n = len(part)
            denoised = self.denoiser(torch.cat([x_i] * n), torch.cat([sigma_i] * n), _concat(part),
                                     None if extra_i is None else torch.cat([extra_i] * n), residuals)
            outs += denoised.chunk(n)
        uncond_out = outs[-1]
        result = uncond_out
        for out, (_, weight) in zip(outs[:-1], conds, strict=True):
            result = result + (weight * self.scale) * (out - uncond_out)
        return result
