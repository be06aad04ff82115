"""Tiled VAE (vae_tiles.py): equal to the untiled VAE with tiny textured VAEs, bands of every awkward size; the
auto rule; the pipeline's use of it. The full-size SD 1.5 figures are in bench/vae_tiles.py and the slow test."""

import numpy as np
import pytest
import torch
from PIL import Image

from sdstudio.engine import vae_tiles
from sdstudio.engine.errors import RequestError
from sdstudio.engine.job_size import AUTO_TILE_PIXELS, estimate, job_problem
from sdstudio.engine.pipeline import generate
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.vae import AutoencoderKL, VAEConfig
from sdstudio.engine.vae_tiles import tiled_decode, tiled_encode, use_tiles


def textured_vae(config: VAEConfig, seed: int = 0) -> AutoencoderKL:
    """Random weights with unit-scale activations and norms whose scale and shift matter."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(config).eval()
    for name, p in vae.named_parameters():
        if p.ndim == 1:
            p.data = (1 if name.endswith("weight") else 0) + 0.3 * torch.randn_like(p)
        else:
            p.data = torch.randn_like(p) * p[0].numel() ** -0.5
    return vae


TINY = VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1)
DEEP = VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=2)


def uneven_latent(b: int, h: int, w: int) -> torch.Tensor:
    """Latent whose halves differ in scale: per-band statistics would normalise them differently."""
    z = torch.randn(b, 4, h, w)
    z[:, :, : h // 2] *= 4
    return z + torch.linspace(-2, 2, w)


# Bands of one row, of a few rows that do not divide the height, and one band for all (at several levels).
@pytest.mark.parametrize(("config", "band_pixels", "size"), [
    (TINY, 1, (7, 5)), (TINY, 37, (7, 5)), (TINY, 200, (12, 20)), (TINY, 1 << 18, (12, 20)), (DEEP, 37, (6, 10)),
], ids=["one-row", "uneven", "uneven-wide", "whole", "deep"])
def test_tiled_decode_equals_the_untiled_decode(config, band_pixels, size):
    vae = textured_vae(config)
    z = uneven_latent(2, *size)
    before = z.clone()
    with torch.no_grad():
        expected = vae.decode(z)
    got = tiled_decode(vae, z, band_pixels=band_pixels)
    assert got.shape == expected.shape
    assert expected.std() > 0.1  # a textured image, not a flat one
    torch.testing.assert_close(got, expected, atol=2e-5 * expected.abs().max().item(), rtol=0)
    assert torch.equal(z, before)  # the caller's latent is never written in place


@pytest.mark.parametrize(("config", "band_pixels", "size"), [
    (TINY, 1, (16, 24)), (TINY, 50, (40, 56)), (TINY, 1 << 18, (64, 24)), (DEEP, 50, (32, 24)),
], ids=["one-row", "uneven", "whole", "deep"])
def test_tiled_encode_equals_the_untiled_encode(config, band_pixels, size):
    vae = textured_vae(config, seed=1)
    image = torch.rand(1, 3, *size) * 2 - 1
    image[:, :, :, : size[1] // 3] *= 0.1
    before = image.clone()
    with torch.no_grad():
        mean, logvar = vae.encode(image)
    got_mean, got_logvar = tiled_encode(vae, image, band_pixels=band_pixels)
    torch.testing.assert_close(got_mean, mean, atol=2e-5 * mean.abs().max().item(), rtol=0)
    torch.testing.assert_close(got_logvar, logvar, atol=2e-5 * logvar.abs().max().item(), rtol=0)
    assert torch.equal(image, before)


def test_bands_with_their_own_statistics_would_differ():
    """The check above can fail: normalising each band alone (naive tiling) leaves seams."""
    vae = textured_vae(TINY)
    z = uneven_latent(1, 12, 8)
    with torch.no_grad():
        whole = vae.decode(z)
        halves = torch.cat([vae.decode(z[:, :, :6]), vae.decode(z[:, :, 6:])], dim=2)
    assert (halves - whole).abs().max() > 0.05


def test_tiled_decode_keeps_whole_tensors_on_the_storage_device():
    vae = textured_vae(TINY)
    z = uneven_latent(1, 6, 6)
    out = tiled_decode(vae, z, storage=torch.device("cpu"), band_pixels=30)
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, vae.decode(z).detach(), atol=1e-4, rtol=0)


def test_use_tiles_modes(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(vae_tiles, "available_memory", lambda device: 64 << 30)
    assert use_tiles("on", 64, 64, cpu) and not use_tiles("off", 4096, 4096, cpu)
    assert not use_tiles("auto", 1024, 1024, cpu)
    side = int(AUTO_TILE_PIXELS**0.5)
    assert use_tiles("auto", side + 8, side, cpu) and not use_tiles("auto", side, side, cpu)
    # short of memory: a small image tiles too; an unknown amount leaves only the size rule
    monkeypatch.setattr(vae_tiles, "available_memory", lambda device: 100 << 20)
    assert use_tiles("auto", 512, 512, cpu)
    monkeypatch.setattr(vae_tiles, "available_memory", lambda device: None)
    assert not use_tiles("auto", 512, 512, cpu)
    with pytest.raises(RequestError, match="tiled VAE 'yes'"):
        use_tiles("yes", 64, 64, cpu)


def test_available_memory_reads_this_machine():
    free = vae_tiles.available_memory(torch.device("cpu"))
    assert free is None or 0 < free < 1 << 50
    assert vae_tiles.available_memory(torch.device("meta")) is None


def test_job_problem_refuses_an_untiled_decode_that_does_not_fit_and_says_what_would():
    job = estimate(2048, 2048, 20, 1, 512)
    memory = 16 << 30
    assert job_problem(job, memory, "auto") is None and job_problem(job, memory, "on") is None
    problem = job_problem(job, memory, "off")
    assert "untiled VAE decode of 2048x2048" in problem and "tiled VAE on" in problem
    side = int(problem.rsplit("at most about ", 1)[1].split("x")[0])
    assert 512 <= side < 2048 and side % 64 == 0
    assert "per image would fit" in job_problem(estimate(4096, 4096, 20, 2, 512), 16 << 30)


REQ = GenerationRequest(prompt="a red apple", steps=3, cfg_scale=2.0, sampler="Euler", width=64, height=48, seed=5)


def test_generate_with_tiles_on_matches_off_and_really_tiles(tiny_model, monkeypatch):
    calls = []
    for name in ("tiled_decode", "tiled_encode"):
        original = getattr(vae_tiles, name)
        monkeypatch.setattr(f"sdstudio.engine.passes.{name}",
                            lambda *a, _o=original, _n=name, **k: calls.append(_n) or _o(*a, **k))
    init = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    for req in (REQ.replace(batch_size=2), REQ.replace(init_image=init, strength=0.6)):
        off = generate(tiny_model, req.replace(tiled_vae="off"))
        assert calls == []
        on = generate(tiny_model, req.replace(tiled_vae="on"))
        assert calls.count("tiled_decode") == req.batch_size
        assert calls.count("tiled_encode") == (req.init_image is not None)
        calls.clear()
        for a, b in zip(off.images, on.images, strict=True):
            diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
            assert diff.max() <= 1
        assert all(r.tiled_vae == "on" for r in on.requests)


def test_generate_refuses_an_unknown_tiled_mode(tiny_model):
    with pytest.raises(RequestError, match="tiled VAE"):
        generate(tiny_model, REQ.replace(tiled_vae="sometimes"))
