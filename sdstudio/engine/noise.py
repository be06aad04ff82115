"""Reproducible noise for sampling: one CPU generator per image, so a seed means the same image in any batch
and on any device, and ancestral samplers continue the same generators (AUTOMATIC1111's CPU RNG)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# A1111's threshold on the mean cosine above which its slerp gives up on the sphere and blends linearly.
SLERP_PARALLEL_DOT = 0.9995


def slerp(t: float, low: Tensor, high: Tensor) -> Tensor:
    """Spherical interpolation from `low` (t = 0) to `high` (t = 1), exactly as AUTOMATIC1111's `slerp`
    (modules/rng.py), so its "Variation seed" noise reproduces bit for bit.

    The angle is taken per slice along dim 1, as A1111 applies it to one image's (C, H, W) noise: each
    (channel, column) vector of H values is normalised and slerped on its own. When the mean cosine of those
    angles exceeds 0.9995 A1111 falls back to `low * t + high * (1 - t)` - note the weights: swapped against
    a lerp, so near-parallel inputs give mostly `high` at small t. We keep that quirk, because matching A1111's
    pixels is the point; it only triggers for (nearly) equal noises, e.g. a variation seed equal to the seed.
    """
    low_dir = low / torch.norm(low, dim=1, keepdim=True)
    high_dir = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_dir * high_dir).sum(1)
    if dot.mean() > SLERP_PARALLEL_DOT:
        return low * t + high * (1 - t)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    w_low = (torch.sin((1.0 - t) * omega) / sin_omega).unsqueeze(1)
    w_high = (torch.sin(t * omega) / sin_omega).unsqueeze(1)
    return w_low * low + w_high * high


def fresh_noise(seed: int, shape: Sequence[int]) -> Tensor:
    """The first CPU N(0, 1) sample of `seed`: what A1111's `randn(seed, shape)` gives with its CPU RNG."""
    return torch.randn(tuple(shape), generator=torch.Generator("cpu").manual_seed(int(seed)))


def _centred_span(new: int, old: int) -> tuple[int, int, int]:
    """(start in new, start in old, length) of A1111's centred paste along one axis. Offsets floor-divide,
    so when the old size is larger by an odd amount one row/column of the new noise stays the seed's own."""
    offset = (new - old) // 2
    if offset >= 0:
        return offset, 0, old
    return 0, -offset, old + 2 * offset


def paste_centred(small: Tensor, big: Tensor) -> Tensor:
    """`big` (C, H, W) with `small` (C, h, w) pasted centred (cropped centred where it is larger): A1111's
    "seed resize from", which keeps the old image's noise, and so its composition, in the middle."""
    ty, sy, h = _centred_span(big.shape[1], small.shape[1])
    tx, sx, w = _centred_span(big.shape[2], small.shape[2])
    big[:, ty:ty + h, tx:tx + w] = small[:, sy:sy + h, sx:sx + w]
    return big


class SeededNoise:
    """Reproducible noise for a batch: image i draws only from its own CPU generator seeded with seeds[i].

    So image i of a batch equals a batch-of-one run at seeds[i], on any device. `draw()` gives the next
    standard-normal sample for every image; the first call is the starting noise, as in AUTOMATIC1111's
    `ImageRNG`, which continues the same generators for ancestral noise: with A1111's "CPU" RNG setting,
    Euler a gets the same noise there and here.

    Called as `noise(sigma, sigma_next)` it returns the increment of one Brownian motion W(sigma) per
    image, normalised to unit variance: (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|). For
    samplers that ask for one interval per step (Euler a, DPM++ 2M SDE, LCM) that is just the next draw;
    an upward interval (sigma_next > sigma, Restart's renoising) is always the next draw.
    DPM++ SDE asks for a half-step interval and then the whole step; the path makes the two increments
    consistent, as k-diffusion's BrownianTreeNoiseSampler does. Unlike that tree (torchsde, which we don't
    ship) the values depend on the order of queries, so for DPM++ SDE and DPM++ 2M SDE our images differ
    from A1111's and ComfyUI's at the same seed, and a different step count changes the noise.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        shape: Sequence[int],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.seeds = [int(seed) for seed in seeds]
        self.generators = [torch.Generator("cpu").manual_seed(seed) for seed in self.seeds]
        self.shape = tuple(shape)
        self.device = torch.device(device)
        self.dtype = dtype
        self._path: dict[float, Tensor] = {}

    def draw(self) -> Tensor:
        """The next N(0, 1) sample for every image: (batch, *shape)."""
        return self._draw_cpu().to(self.device, self.dtype)

    def _draw_cpu(self) -> Tensor:
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])

    def first(
        self,
        subseeds: Sequence[int] = (),
        subseed_strength: float = 0.0,
        resize_from: tuple[int, int] | None = None,
    ) -> Tensor:
        """The starting noise with A1111's variation seeds and "seed resize from" (its `ImageRNG.first`).

        Image i's noise is slerp(subseed_strength, noise(seeds[i]), noise(subseeds[i])); with `resize_from`
        (old latent height, width) both are drawn at that size and pasted centred into the seed's noise at the
        full size, so an image keeps its composition at another size. Either way each image's generator
        draws exactly one full-size sample here, as in A1111, so ancestral noise continues from the seed
        alone. The variation noises come from fresh generators and the blend is computed on the CPU in float32
        (A1111 computes it on its device: on a GPU the two can differ in the last bit).
        """
        plain = self._draw_cpu()
        vary = subseed_strength != 0
        small = self.shape if resize_from is None else (self.shape[0], *resize_from)
        if not vary and small == self.shape:
            return plain.to(self.device, self.dtype)
        if vary and len(subseeds) != len(self.generators):
            raise ValueError(f"{len(subseeds)} variation seeds for {len(self.generators)} images")
        out = []
        for i, full in enumerate(plain):
            x = full if small == self.shape else fresh_noise(self.seeds[i], small)
            if vary:
                x = slerp(subseed_strength, x, fresh_noise(subseeds[i], small))
            out.append(x if small == self.shape else paste_centred(x, full.clone()))
        return torch.stack(out).to(self.device, self.dtype)

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        a, b = float(sigma), float(sigma_next)
        if b > a:
            # Noise going up (Restart's jump back to a higher sigma) starts a new forward process: a fresh
            # draw each time, off the path, so that two restarts over one interval differ.
            return self.draw()
        if not self._path:
            self._path[a] = torch.zeros(
                len(self.generators), *self.shape, device=self.device, dtype=self.dtype
            )
        return (self._w(b) - self._w(a)) / math.sqrt(abs(b - a))

    def _w(self, s: float) -> Tensor:
        """W(s), sampled on first use: beyond the known points as a fresh increment from the nearest one,
        between two known points from the Brownian bridge."""
        if s not in self._path:
            below = max((k for k in self._path if k < s), default=None)
            above = min((k for k in self._path if k > s), default=None)
            z = self.draw()
            if below is not None and above is not None:
                frac = (s - below) / (above - below)
                mean = self._path[below] + frac * (self._path[above] - self._path[below])
                self._path[s] = mean + math.sqrt((s - below) * (above - s) / (above - below)) * z
            else:
                end = below if above is None else above
                self._path[s] = self._path[end] + math.sqrt(abs(s - end)) * z
        return self._path[s]
