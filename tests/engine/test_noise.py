"""noise.slerp and SeededNoise.first against A1111's formulas, restated independently (tests/engine/a1111_rng.py)."""

from __future__ import annotations

import math

import pytest
import torch

from sdstudio.engine import noise
from tests.engine.a1111_rng import first_noise
from tests.engine.a1111_rng import slerp as _a1111_slerp_reference


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


SHAPE = (4, 8, 10)


@pytest.mark.parametrize("strength", [0.0, 0.1, 0.3, 0.999, 1.0])
def test_variation_noise_equals_a1111_bit_for_bit(strength):
    seeds, subseeds = [11, 11, 11], [7, 8, 9]
    rng = noise.SeededNoise(seeds, SHAPE)
    ours = rng.first(subseeds, strength)
    for i in range(3):
        ref, gen = first_noise(seeds[i], SHAPE, subseeds[i], strength)
        assert torch.equal(ours[i], ref)
    # Ancestral noise continues from the seed's generator, after one full-size draw, whatever the strength.
    after = rng.draw()
    for i in range(3):
        _, gen = first_noise(seeds[i], SHAPE, subseeds[i], strength)
        assert torch.equal(after[i], torch.randn(SHAPE, generator=gen))


def test_strength_zero_is_the_plain_noise_and_one_is_the_variation_seeds_noise():
    plain = noise.SeededNoise([5], SHAPE).draw()
    assert torch.equal(noise.SeededNoise([5], SHAPE).first([99], 0.0), plain)
    at_one = noise.SeededNoise([5], SHAPE).first([99], 1.0)
    assert torch.equal(at_one, noise.SeededNoise([99], SHAPE).draw())
    middle = noise.SeededNoise([5], SHAPE).first([99], 0.5)
    assert not torch.equal(middle, plain) and not torch.equal(middle, at_one)


def test_variation_seed_equal_to_the_seed_takes_a1111s_fallback_branch():
    ours = noise.SeededNoise([5], SHAPE).first([5], 0.3)
    ref, _ = first_noise(5, SHAPE, 5, 0.3)
    assert torch.equal(ours[0], ref)


@pytest.mark.parametrize("old_hw", [(6, 6), (4, 10), (8, 10), (11, 7), (12, 15), (3, 13)])
@pytest.mark.parametrize("strength", [0.0, 0.4])
def test_seed_resize_equals_a1111_bit_for_bit(old_hw, strength):
    rng = noise.SeededNoise([21], SHAPE)
    ours = rng.first([4], strength, old_hw)
    ref, gen = first_noise(21, SHAPE, 4, strength, old_hw)
    assert torch.equal(ours[0], ref)
    assert torch.equal(rng.draw()[0], torch.randn(SHAPE, generator=gen))


def test_seed_resize_keeps_the_old_noise_in_the_middle():
    old = noise.SeededNoise([3], (4, 6, 6)).draw()[0]
    bigger = noise.SeededNoise([3], (4, 10, 12)).first((), 0.0, (6, 6))[0]
    assert torch.equal(bigger[:, 2:8, 3:9], old)
    smaller = noise.SeededNoise([3], (4, 4, 4)).first((), 0.0, (6, 6))[0]
    assert torch.equal(smaller, old[:, 1:5, 1:5])


def test_variation_needs_one_subseed_per_image():
    with pytest.raises(ValueError, match="variation seeds"):
        noise.SeededNoise([1, 2], SHAPE).first([3], 0.5)
