"""noise.slerp against A1111's formula, written out here again independently (per column, by hand)."""

from __future__ import annotations

import math

import torch

from sdstudio.engine import noise


def _a1111_slerp_reference(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's slerp restated: one image's (C, H, W) noise, the angle per (channel, column) over H, and its
    fallback `low * t + high * (1 - t)` when the mean cosine exceeds 0.9995. Written with the H axis moved
    last so the reductions run along the contiguous axis, not the way noise.slerp is written."""
    lo = low.transpose(1, -1)  # (C, W, H) for 3-D; for 2-D (N, D) this is a no-op view
    hi = high.transpose(1, -1)
    cos = ((lo / lo.norm(dim=-1, keepdim=True)) * (hi / hi.norm(dim=-1, keepdim=True))).sum(-1)
    if cos.mean() > 0.9995:
        return high * (1 - t) + low * t
    angle = torch.acos(cos)
    out = (torch.sin((1.0 - t) * angle) / torch.sin(angle))[..., None] * lo + (
        torch.sin(t * angle) / torch.sin(angle)
    )[..., None] * hi
    return out.transpose(1, -1)


def _noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_slerp_matches_the_reference_bit_for_bit_on_image_noise():
    low, high = _noise(1, (4, 8, 12)), _noise(2, (4, 8, 12))
    for t in (0.0, 0.05, 0.3, 0.5, 0.77, 1.0):
        ours = noise.slerp(t, low, high)
        ref = _a1111_slerp_reference(t, low, high)
        assert torch.equal(ours, ref), t


def test_slerp_angle_is_per_channel_and_column():
    # A hand check of "normalised along dim 1": each (c, :, w) column is a textbook slerp of its own pair.
    low, high = _noise(3, (2, 6, 5)), _noise(4, (2, 6, 5)).double()
    low = low.double()
    t = 0.3
    out = noise.slerp(t, low, high)
    for c in range(2):
        for w in range(5):
            a, b = low[c, :, w], high[c, :, w]
            om = math.acos(float(a @ b / (a.norm() * b.norm())))
            want = math.sin((1 - t) * om) / math.sin(om) * a + math.sin(t * om) / math.sin(om) * b
            assert torch.allclose(out[c, :, w], want, atol=1e-12)


def test_slerp_endpoints_are_exact():
    low, high = _noise(5, (4, 8, 8)), _noise(6, (4, 8, 8))
    assert torch.equal(noise.slerp(0.0, low, high), low)
    assert torch.equal(noise.slerp(1.0, low, high), high)


def test_slerp_near_parallel_falls_back_with_a1111s_swapped_weights():
    low = _noise(7, (4, 8, 8))
    high = low * 1.5 + 1e-3 * _noise(8, (4, 8, 8))  # same direction: mean cosine ~ 1
    t = 0.2
    out = noise.slerp(t, low, high)
    assert torch.equal(out, _a1111_slerp_reference(t, low, high))
    assert torch.equal(out, low * t + high * (1 - t))
    # ...which is not the lerp one might expect: at t = 0.2 it is mostly `high`.
    assert not torch.allclose(out, torch.lerp(low, high, t))


def test_slerp_fallback_threshold_is_on_the_mean_cosine():
    # Half the columns parallel and half orthogonal: mean cosine 0.5, so the spherical branch runs, and the
    # parallel columns (angle 0, sin 0) come out as NaN there, exactly like A1111.
    low = torch.zeros(1, 2, 2)
    low[0, :, 0] = torch.tensor([1.0, 0.0])
    low[0, :, 1] = torch.tensor([1.0, 0.0])
    high = torch.zeros(1, 2, 2)
    high[0, :, 0] = torch.tensor([2.0, 0.0])
    high[0, :, 1] = torch.tensor([0.0, 3.0])
    out = noise.slerp(0.5, low, high)
    ref = _a1111_slerp_reference(0.5, low, high)
    assert torch.isnan(out[0, :, 0]).all() and torch.isnan(ref[0, :, 0]).all()
    assert torch.equal(out[0, :, 1], ref[0, :, 1])
