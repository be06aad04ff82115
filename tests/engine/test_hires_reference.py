"""Proof: a 64x64 -> 128x128 Euler hires fix run equals a reference of A1111's hires pass
(a1111_hires_reference.py, written from its rules on diffusers/k-diffusion parts) within 1/255 per pixel."""

from __future__ import annotations

import numpy as np
import pytest

from sdstudio.engine.pipeline import generate
from tests.engine import a1111_hires_reference as reference
from tests.engine.test_reference_pipeline import BASE, tiny  # noqa: F401 (the fixture)

HIRES = BASE.replace(hires=True, hires_scale=2.0, strength=0.55)


def compare(label, got, expected) -> int:
    a, b = np.asarray(got, dtype=np.int16), np.asarray(expected, dtype=np.int16)
    assert a.shape == b.shape == (128, 128, 3)
    diff = np.abs(a - b)
    print(f"\n{label}: max |diff| {diff.max()}/255, mean {diff.mean():.4f}, pixels differing {np.mean(diff > 0):.2%}"
          f"; reference std {b.std():.1f}")
    assert b.std() > 8, f"{label}: the reference image is degenerate"
    return int(diff.max())


@pytest.mark.parametrize("upscaler,hires_steps", [("Latent", 0), ("Lanczos", 3), ("Latent (nearest-exact)", 5),
                                                  ("Latent (bicubic antialiased)", 2)])
def test_tiny_hires_fix_equals_the_a1111_reference(tiny, upscaler, hires_steps):  # noqa: F811
    model, pipe = tiny[4]
    req = HIRES.replace(hires_upscaler=upscaler, hires_steps=hires_steps)
    got = generate(model, req).images[0]
    expected = reference.hires(pipe, req.prompt, req.negative_prompt, req.seed, req.steps, req.cfg_scale,
                               req.width, req.height, 2.0, upscaler, req.strength, hires_steps)
    assert compare(f"hires {upscaler} {hires_steps}", got, expected) <= 1
