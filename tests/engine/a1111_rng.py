"""AUTOMATIC1111's starting noise (`modules/rng.py`: `slerp`, `ImageRNG.first` with its CPU RNG) restated
independently of sdstudio.engine.noise, for the variation-seed and seed-resize proofs."""

from __future__ import annotations

import torch
from torch import Tensor


def slerp(t: float, low: Tensor, high: Tensor) -> Tensor:
    """A1111's slerp for one image's (C, H, W) noise: the angle per (channel, column) over H, and its
    fallback `low * t + high * (1 - t)` when the mean cosine exceeds 0.9995. Written with the H axis moved
    last so the reductions run along the contiguous axis, not the way noise.slerp is written."""
    lo = low.transpose(1, -1)
    hi = high.transpose(1, -1)
    cos = ((lo / lo.norm(dim=-1, keepdim=True)) * (hi / hi.norm(dim=-1, keepdim=True))).sum(-1)
    if cos.mean() > 0.9995:
        return high * (1 - t) + low * t
    angle = torch.acos(cos)
    out = (torch.sin((1.0 - t) * angle) / torch.sin(angle))[..., None] * lo + (
        torch.sin(t * angle) / torch.sin(angle)
    )[..., None] * hi
    return out.transpose(1, -1)


def first_noise(seed: int, shape: tuple[int, int, int], subseed: int = 0, strength: float = 0.0,
                resize_from_hw: tuple[int, int] | None = None) -> tuple[Tensor, torch.Generator]:
    """One image's starting noise (C, H, W) and its generator, left where ancestral noise continues."""
    gen = torch.Generator().manual_seed(seed)
    old = shape if resize_from_hw is None else (shape[0], *resize_from_hw)
    sub = None
    if strength != 0:
        torch_state = torch.Generator().manual_seed(subseed)  # A1111: manual_seed(subseed); randn(shape)
        sub = torch.randn(old, generator=torch_state)
    if old != shape:
        noise = torch.randn(old, generator=torch.Generator().manual_seed(seed))
    else:
        noise = torch.randn(shape, generator=gen)
    if sub is not None:
        noise = slerp(strength, noise, sub)
    if old != shape:
        x = torch.randn(shape, generator=gen)
        dx = (shape[2] - old[2]) // 2
        dy = (shape[1] - old[1]) // 2
        w = old[2] if dx >= 0 else old[2] + 2 * dx
        h = old[1] if dy >= 0 else old[1] + 2 * dy
        tx = 0 if dx < 0 else dx
        ty = 0 if dy < 0 else dy
        dx = max(-dx, 0)
        dy = max(-dy, 0)
        x[:, ty:ty + h, tx:tx + w] = noise[:, dy:dy + h, dx:dx + w]
        noise = x
    return noise, gen
