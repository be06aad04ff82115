"""Tiled against untiled decode and encode with the full-size SD 1.5 VAE (random fan-in scaled weights) at
1024 px: within 2/255 per pixel (the issue's bound). The memory figures come from bench/vae_tiles.py."""

import pytest
import torch

from sdstudio.engine.vae import AutoencoderKL, VAEConfig
from sdstudio.engine.vae_tiles import tiled_decode, tiled_encode
from tests.engine.full_size import random_tensor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sd15_vae():
    shapes = AutoencoderKL(VAEConfig(), device="meta").state_dict()
    g = torch.Generator().manual_seed(0)
    vae = AutoencoderKL(VAEConfig())
    vae.load_state_dict({name: random_tensor(name, tuple(t.shape), g) for name, t in shapes.items()})
    return vae.eval()


@torch.no_grad()
def test_full_size_tiled_decode_is_within_2_of_255(sd15_vae):
    z = torch.randn(1, 4, 128, 128, generator=torch.Generator().manual_seed(1))
    expected = sd15_vae.decode(z)
    got = tiled_decode(sd15_vae, z)
    diff = (got - expected).abs().max().item() * 127.5  # [-1, 1] -> 0..255
    print(f"1024 px decode: max difference {diff:.5f}/255, image std {expected.std():.3f}")
    assert diff <= 2 and expected.std() > 0.05


@torch.no_grad()
def test_full_size_tiled_encode_matches(sd15_vae):
    image = torch.rand(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2)) * 2 - 1
    mean, logvar = sd15_vae.encode(image)
    got_mean, got_logvar = tiled_encode(sd15_vae, image)
    diff = (got_mean - mean).abs().max().item()
    print(f"1024 px encode: max latent difference {diff:.2e} (latent range {mean.abs().max():.2f})")
    assert diff <= 1e-3 * mean.abs().max().item()
    assert (got_logvar - logvar).abs().max().item() <= 1e-3 * logvar.abs().max().item()
