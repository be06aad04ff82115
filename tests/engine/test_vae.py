"""AutoencoderKL: LDM key layout, shapes, config detection from shapes, both attention weight layouts."""

import pytest
import torch

from sdstudio.engine.errors import UnsupportedModelError
from sdstudio.engine.vae import AutoencoderKL, VAEConfig, vae_config_from_shapes

TINY = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1)
ATTENTION = ("q", "k", "v", "proj_out")


def tiny_vae(config: VAEConfig = TINY, seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    vae = AutoencoderKL(config).eval()
    with torch.no_grad():  # non-trivial norms, so a swapped norm would change the output
        for name, p in vae.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return vae


def shapes_of(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items()}


def test_state_dict_uses_original_ldm_names():
    keys = set(AutoencoderKL(TINY, device="meta").state_dict())
    expected = {
        "encoder.conv_in.weight",
        "encoder.down.0.block.0.norm1.weight",
        "encoder.down.0.block.0.conv2.bias",
        "encoder.down.0.downsample.conv.weight",
        "encoder.down.1.block.0.nin_shortcut.weight",
        "encoder.mid.block_1.conv1.weight",
        "encoder.mid.attn_1.norm.bias",
        "encoder.mid.attn_1.q.weight",
        "encoder.mid.attn_1.proj_out.weight",
        "encoder.mid.block_2.norm2.weight",
        "encoder.norm_out.weight",
        "encoder.conv_out.weight",
        "decoder.conv_in.weight",
        "decoder.mid.attn_1.v.bias",
        "decoder.up.0.block.1.conv1.weight",
        "decoder.up.0.block.0.nin_shortcut.weight",
        "decoder.up.1.upsample.conv.weight",
        "decoder.norm_out.bias",
        "decoder.conv_out.weight",
        "quant_conv.weight",
        "post_quant_conv.bias",
    }
    assert expected <= keys
    # the last encoder level and the full-resolution decoder level do not resample
    assert not any(k.startswith(("encoder.down.1.downsample", "decoder.up.0.upsample")) for k in keys)


def test_decoder_levels_are_indexed_by_resolution_like_ldm():
    state = AutoencoderKL(TINY, device="meta").state_dict()
    # up.1 is the coarse level (64 channels in, 64 out); up.0 narrows 64 -> 32 at full resolution
    assert state["decoder.up.1.block.0.conv1.weight"].shape == (64, 64, 3, 3)
    assert state["decoder.up.0.block.0.conv1.weight"].shape == (32, 64, 3, 3)
    assert state["decoder.up.0.block.0.nin_shortcut.weight"].shape == (32, 64, 1, 1)
    assert len([k for k in state if k.startswith("decoder.up.0.block.") and k.endswith("conv1.weight")]) == 2


def test_encode_and_decode_shapes():
    vae = tiny_vae()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        mean, logvar = vae.encode(x)
        image = vae.decode(mean)
    assert mean.shape == logvar.shape == (2, 4, 8, 8)
    assert image.shape == (2, 3, 16, 16)
    assert torch.isfinite(image).all()
    assert not torch.equal(image[0], image[1])


@pytest.mark.parametrize(("ch_mult", "factor"), [((1, 2), 2), ((1, 1, 2), 4), ((1, 1, 2, 2), 8)])
def test_downscale_factor_follows_ch_mult_depth(ch_mult, factor):
    config = VAEConfig(ch=32, ch_mult=ch_mult, num_res_blocks=1)
    assert config.downscale == factor
    vae = tiny_vae(config)
    with torch.no_grad():
        mean, _ = vae.encode(torch.zeros(1, 3, 16, 16))
        image = vae.decode(torch.zeros(1, 4, 16 // factor, 16 // factor))
    assert mean.shape == (1, 4, 16 // factor, 16 // factor)
    assert image.shape == (1, 3, 16, 16)


def test_full_sd_config_downscales_by_eight():
    assert VAEConfig().downscale == 8


def test_logvar_is_clamped_like_ldm_posterior():
    vae = tiny_vae()
    with torch.no_grad():
        vae.quant_conv.bias[4:] = 1000.0
        _, logvar = vae.encode(torch.zeros(1, 3, 16, 16))
    assert logvar.max().item() == 20.0


def test_builds_on_meta_device_without_memory():
    vae = AutoencoderKL(VAEConfig(), device="meta")
    assert all(p.is_meta for p in vae.parameters())
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863


def test_meta_model_loads_by_assignment():
    source = tiny_vae()
    vae = AutoencoderKL(TINY, device="meta")
    vae.load_state_dict(source.state_dict(), strict=True, assign=True)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(vae.encode(x)[0], source.encode(x)[0])


def test_strict_load_rejects_missing_and_extra_keys():
    state = tiny_vae().state_dict()
    with pytest.raises(RuntimeError, match="Missing"):
        AutoencoderKL(TINY).load_state_dict({k: v for k, v in state.items() if k != "quant_conv.bias"})
    with pytest.raises(RuntimeError, match="Unexpected"):
        AutoencoderKL(TINY).load_state_dict({**state, "encoder.down.0.attn.0.q.weight": torch.zeros(1)})


def linear_attention(state: dict) -> dict:
    """The layout of converted files: attention projections as (C, C) matrices."""
    return {
        k: v[:, :, 0, 0] if v.ndim == 4 and k.split(".")[-2] in ATTENTION and ".attn_1." in k else v
        for k, v in state.items()
    }


def test_linear_and_conv_attention_weights_load_the_same():
    source = tiny_vae()
    conv_state = source.state_dict()
    linear_state = linear_attention(conv_state)
    assert linear_state["encoder.mid.attn_1.q.weight"].shape == (64, 64)
    from_conv, from_linear = AutoencoderKL(TINY), AutoencoderKL(TINY)
    from_conv.load_state_dict(conv_state, strict=True)
    from_linear.load_state_dict(linear_state, strict=True)
    z = torch.randn(1, 4, 8, 8)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(from_linear.decode(z), from_conv.decode(z))
        assert torch.equal(from_linear.encode(x)[0], source.encode(x)[0])
    assert from_linear.state_dict()["decoder.mid.attn_1.proj_out.weight"].shape == (64, 64, 1, 1)


def test_linear_attention_weights_do_not_alter_the_callers_dict():
    linear_state = linear_attention(tiny_vae().state_dict())
    AutoencoderKL(TINY).load_state_dict(linear_state)
    assert linear_state["decoder.mid.attn_1.k.weight"].ndim == 2


def test_mid_attention_matches_ldm_explicit_softmax():
    attn = tiny_vae().encoder.mid.attn_1
    x = torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        y = attn.norm(x)
        q, k, v = (conv(y).flatten(2) for conv in (attn.q, attn.k, attn.v))  # (b, c, hw)
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) * 64**-0.5, dim=2)  # (b, hw_q, hw_k)
        mixed = torch.bmm(v, weights.transpose(1, 2)).reshape(x.shape)
        expected = x + attn.proj_out(mixed)
        assert torch.allclose(attn(x), expected, atol=1e-5)


@pytest.mark.parametrize(
    "config",
    [
        TINY,
        VAEConfig(ch=32, ch_mult=(1, 1, 2), num_res_blocks=2),
        VAEConfig(ch=64, ch_mult=(1, 2, 2, 4), num_res_blocks=1, z_channels=8, embed_dim=8),
        VAEConfig(),
    ],
)
def test_config_from_shapes_round_trips(config):
    shapes = shapes_of(AutoencoderKL(config, device="meta").state_dict())
    assert vae_config_from_shapes(shapes) == config


def test_config_from_shapes_accepts_linear_attention():
    shapes = shapes_of(linear_attention(tiny_vae().state_dict()))
    assert shapes["decoder.mid.attn_1.v.weight"] == (64, 64)
    assert vae_config_from_shapes(shapes) == TINY


def test_config_from_shapes_names_a_missing_tensor():
    shapes = shapes_of(AutoencoderKL(TINY, device="meta").state_dict())
    del shapes["post_quant_conv.weight"]
    with pytest.raises(UnsupportedModelError, match="post_quant_conv.weight"):
        vae_config_from_shapes(shapes)


def test_config_from_shapes_names_a_missing_inner_tensor():
    shapes = shapes_of(AutoencoderKL(TINY, device="meta").state_dict())
    del shapes["decoder.up.0.block.1.norm2.bias"]
    with pytest.raises(UnsupportedModelError, match=r"1 missing .*decoder\.up\.0\.block\.1\.norm2\.bias"):
        vae_config_from_shapes(shapes)


def test_config_from_shapes_names_an_unexpected_tensor():
    shapes = shapes_of(AutoencoderKL(TINY, device="meta").state_dict())
    shapes["loss.logvar"] = ()
    with pytest.raises(UnsupportedModelError, match="loss.logvar"):
        vae_config_from_shapes(shapes)


def test_config_from_shapes_names_a_mis_shaped_tensor():
    shapes = shapes_of(AutoencoderKL(TINY, device="meta").state_dict())
    shapes["decoder.mid.block_1.conv2.weight"] = (64, 64, 1, 1)
    with pytest.raises(
        UnsupportedModelError, match=r"decoder\.mid\.block_1\.conv2\.weight' is \(64, 64, 1, 1\)"
    ):
        vae_config_from_shapes(shapes)


def test_config_from_shapes_rejects_attention_inside_levels():
    shapes = shapes_of(AutoencoderKL(TINY, device="meta").state_dict())
    shapes["encoder.down.1.attn.0.q.weight"] = (64, 64, 1, 1)
    with pytest.raises(UnsupportedModelError, match="attention inside resolution levels"):
        vae_config_from_shapes(shapes)


def test_config_from_shapes_rejects_widths_that_groupnorm_cannot_split():
    shapes = {
        k: tuple(s // 2 if s in (32, 64) else s for s in shape)
        for k, shape in shapes_of(AutoencoderKL(TINY, device="meta").state_dict()).items()
    }
    with pytest.raises(UnsupportedModelError, match=r"widths \[16, 16, 32\]"):
        vae_config_from_shapes(shapes)


def test_config_from_shapes_rejects_non_vae_weights():
    with pytest.raises(UnsupportedModelError, match="encoder.conv_in.weight"):
        vae_config_from_shapes({"input_blocks.0.0.weight": (320, 4, 3, 3)})


def test_config_from_shapes_rejects_vae_without_quant_convs():
    # SD3/Flux-style VAEs have 16 latent channels and no quant_conv / post_quant_conv
    config = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=16, embed_dim=16)
    shapes = shapes_of(AutoencoderKL(config, device="meta").state_dict())
    shapes = {k: v for k, v in shapes.items() if "quant_conv" not in k}
    with pytest.raises(UnsupportedModelError, match="post_quant_conv"):
        vae_config_from_shapes(shapes)
