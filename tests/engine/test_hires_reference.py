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


def test_tiny_hires_fix_with_its_own_cfg_scale_equals_the_a1111_reference(tiny):  # noqa: F811
    model, pipe = tiny[4]
    req = HIRES.replace(hires_upscaler="Latent", hires_steps=3, hires_cfg_scale=12.0)
    got = generate(model, req).images[0]
    expected = reference.hires(pipe, req.prompt, req.negative_prompt, req.seed, req.steps, req.cfg_scale,
                               req.width, req.height, 2.0, "Latent", req.strength, 3, hires_cfg=12.0)
    assert compare("hires Latent, CFG 7 then 12", got, expected) <= 1
    first_cfg = reference.hires(pipe, req.prompt, req.negative_prompt, req.seed, req.steps, req.cfg_scale,
                                req.width, req.height, 2.0, "Latent", req.strength, 3)
    assert np.abs(np.asarray(first_cfg, dtype=np.int16) - np.asarray(got, dtype=np.int16)).max() > 8


@pytest.mark.slow
def test_sd15_hires_fix_equals_the_a1111_reference():
    """Full-size SD 1.5 (random weights), Latent and Lanczos (run under the shared lock, -s prints numbers)."""
    import gc

    from sdstudio.engine.checkpoint import load_checkpoint
    from tests.engine import a1111_reference as a1111
    from tests.engine import reference_models as ref
    from tests.engine.full_size import cached_checkpoint

    path = cached_checkpoint("sd15")
    reqs = {name: HIRES.replace(hires_upscaler=name, hires_steps=steps) for name, steps in (("Latent", 0),
                                                                                            ("Lanczos", 3))}
    model = load_checkpoint(path)
    got = {name: generate(model, req).images[0] for name, req in reqs.items()}
    del model
    gc.collect()
    pipe = a1111.sd_pipeline(path, ref.ORIGINAL_CONFIGS["sd15"], ref.TEXT_REFERENCES["sd15"][0])
    worst = {name: compare(f"SD 1.5 hires {name}", got[name], reference.hires(
        pipe, req.prompt, req.negative_prompt, req.seed, req.steps, req.cfg_scale, req.width, req.height, 2.0,
        name, req.strength, req.hires_steps)) for name, req in reqs.items()}
    assert max(worst.values()) <= 1, worst
