"""AutoencoderKL against diffusers' AutoencoderKL holding the same weights, converted from our LDM-named
state dict by diffusers' own single-file converter (`convert_ldm_vae_checkpoint(checkpoint, config)`)."""
import pytest
import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from sdstudio.engine.vae import AutoencoderKL, VAEConfig

TINY = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1)
# SD 1.x/2.x (v1-inference.yaml, v2-inference.yaml) and SDXL (sd_xl_base.yaml) share this ddconfig:
# ch 128, ch_mult [1, 2, 4, 4], num_res_blocks 2, z_channels 4, embed_dim 4, attn_resolutions [].
FULL = VAEConfig()


def diffusers_config(config: VAEConfig) -> dict:
    levels = len(config.ch_mult)
    return {
        "in_channels": config.in_channels,
        "out_channels": config.out_ch,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": [config.ch * m for m in config.ch_mult],
        "layers_per_block": config.num_res_blocks,
        "latent_channels": config.embed_dim,
        "norm_num_groups": 32,
    }


def random_pair(config: VAEConfig, seed: int = 0) -> tuple[AutoencoderKL, DiffusersAutoencoderKL]:
    torch.manual_seed(seed)
    ours = AutoencoderKL(config).eval()
    with torch.no_grad():  # non-trivial norms, so a norm loaded into the wrong place changes the output
        for name, p in ours.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    reference_config = diffusers_config(config)
    reference = DiffusersAutoencoderKL(**reference_config).eval()
    converted = convert_ldm_vae_checkpoint(ours.state_dict(), reference_config)
    reference.load_state_dict(converted, strict=True)
    return ours, reference


def compare(config: VAEConfig, size: int) -> dict:
    ours, reference = random_pair(config)
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
    latent = torch.randn(1, config.embed_dim, size // config.downscale, size // config.downscale,
                         generator=generator)
    with torch.no_grad():
        mean, logvar = ours.encode(image)
        posterior = reference.encode(image).latent_dist
        decoded = ours.decode(latent)
        reference_decoded = reference.decode(latent).sample
    return {
        "mean": (mean - posterior.mean).abs().max().item(),
        "logvar": (logvar - posterior.logvar).abs().max().item(),
        "decode": (decoded - reference_decoded).abs().max().item(),
        "mean_scale": posterior.mean.abs().max().item(),
        "decode_scale": reference_decoded.abs().max().item(),
        "shapes": (tuple(mean.shape), tuple(decoded.shape)),
    }


def assert_close(result: dict, rtol: float) -> None:
    assert result["mean"] <= rtol * result["mean_scale"], result
    assert result["logvar"] <= rtol * max(result["mean_scale"], 1.0), result
    assert result["decode"] <= rtol * result["decode_scale"], result


def test_converter_accepts_every_tensor_of_our_state_dict():
    ours, reference = random_pair(TINY)
    assert len(convert_ldm_vae_checkpoint(ours.state_dict(), diffusers_config(TINY))) == len(ours.state_dict())
    assert sum(p.numel() for p in reference.parameters()) == sum(p.numel() for p in ours.parameters())


@pytest.mark.parametrize("config", [TINY, VAEConfig(ch=32, ch_mult=(1, 1, 2), num_res_blocks=2)])
def test_tiny_vae_matches_diffusers(config):
    result = compare(config, size=16)
    assert result["shapes"] == ((1, 4, 16 // config.downscale, 16 // config.downscale), (1, 3, 16, 16))
    assert result["decode_scale"] > 0.1
    assert_close(result, rtol=1e-5)


@pytest.mark.slow
def test_full_sd_and_sdxl_vae_matches_diffusers():
    result = compare(FULL, size=64)
    print(f"\nfull SD/SDXL VAE vs diffusers at 64x64 px, fp32: {result}")
    assert result["shapes"] == ((1, 4, 8, 8), (1, 3, 64, 64))
    assert_close(result, rtol=1e-4)
