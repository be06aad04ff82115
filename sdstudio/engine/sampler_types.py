"""What every sampler shares: the call shapes of the model, the progress callback and the noise sampler,
and the two helpers all of them use (see samplers.py for the conventions)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

Model = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, float, Tensor, Tensor], None]
NoiseSampler = Callable[[Tensor, Tensor], Tensor]


def report(callback: Callback | None, i: int, sigma: Tensor | float, x: Tensor, denoised: Tensor) -> None:
    """Step i's progress: after its (first) model call, with the noise level and the denoised estimate."""
    if callback is not None:
        callback(i, float(sigma), x, denoised)


def need_noise(noise_sampler: NoiseSampler | None, sampler: str) -> NoiseSampler:
    """The noise sampler a stochastic sampler cannot run without."""
    if noise_sampler is None:
        raise ValueError(f"{sampler} is stochastic: pass a noise_sampler (e.g. SeededNoise)")
    return noise_sampler
