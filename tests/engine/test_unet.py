"""The LDM UNet on tiny configs: shapes, meta construction, checkpoint names, and equality with diffusers."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding

from sdstudio.engine.attention import SpatialTransformer
from sdstudio.engine.errors import UnsupportedModelError
from sdstudio.engine.families import SD1, SD2, SDXL
from sdstudio.engine.unet import UNetConfig, UNetModel, timestep_embedding, unet_config_from_shapes
from tests.engine.unet_reference import diffusers_twin, randomize_, run_both, sdxl_y

CONTEXT = 32
POOLED = 16
TIME_DIM = 8  # width of each SDXL size/crop embedding in the tiny adm variant


def tiny(**changes) -> UNetConfig:
    base = UNetConfig(
        in_channels=4,
        out_channels=4,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        transformer_depth=(1, 0),
        transformer_depth_middle=1,
        context_dim=CONTEXT,
        num_heads=8,
    )
    return replace(base, **changes)


LINEAR = {"num_heads": -1, "num_head_channels": 64, "use_linear_in_transformer": True}
# Each tiny config mirrors one family's shape: conv vs linear projection, attention-free levels, adm, 9-ch.
TINY = {
    "sd1": tiny(),
    "sd1-inpaint": tiny(in_channels=9),
    "sd2": tiny(model_channels=64, **LINEAR),
    "sdxl": tiny(
        num_res_blocks=2,
        transformer_depth=(0, 2),
        transformer_depth_middle=2,
        adm_in_channels=POOLED + 6 * TIME_DIM,
        **LINEAR,
    ),
}
FULL = {
    "sd15": UNetConfig.sd15(),
    "sd15-inpaint": UNetConfig.sd15(9),
    "sd21": UNetConfig.sd21(),
    "sdxl": UNetConfig.sdxl(),
    "sdxl-inpaint": UNetConfig.sdxl(9),
}


def tiny_model(name: str, seed: int = 0) -> UNetModel:
    model = UNetModel(TINY[name]).eval()
    randomize_(model, seed)
    return model


def inputs(config: UNetConfig, size: int = 8, batch: int = 2) -> dict:
    gen = torch.Generator().manual_seed(1)
    args = {
        "x": torch.randn(batch, config.in_channels, size, size, generator=gen),
        "timesteps": torch.tensor([999.0, 37.5])[:batch],
        "context": torch.randn(batch, 5, config.context_dim, generator=gen),
    }
    if config.adm_in_channels is not None:
        args["text_embeds"] = torch.randn(batch, POOLED, generator=gen)
        args["time_ids"] = torch.tensor([[1024.0, 768.0, 0.0, 16.0, 1024.0, 1024.0]] * batch)
    return args


def shapes_of(model: UNetModel) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def run_ours(model: UNetModel, args: dict) -> torch.Tensor:
    y = None if "text_embeds" not in args else sdxl_y(args["text_embeds"], args["time_ids"], TIME_DIM)
    with torch.no_grad():
        return model(args["x"], args["timesteps"], args["context"], y)


@pytest.mark.parametrize("name", TINY)
def test_forward_returns_out_channels_at_latent_size(name):
    out = run_ours(tiny_model(name), inputs(TINY[name]))
    assert out.shape == (2, 4, 8, 8)
    assert torch.isfinite(out).all() and out.std() > 0.1


@pytest.mark.parametrize("name", TINY)
def test_matches_diffusers_with_weights_from_its_single_file_converter(name):
    model = tiny_model(name)
    ours, expected = run_both(model, diffusers_twin(model, TIME_DIM), **inputs(model.config))
    assert (ours - expected).abs().max() <= 1e-4 * expected.std()


@pytest.mark.parametrize("size", [9, 6])
def test_latent_size_not_divisible_by_strides_matches_diffusers(size):
    model = tiny_model("sdxl")
    ours, expected = run_both(model, diffusers_twin(model, TIME_DIM), **inputs(model.config, size))
    assert ours.shape == (2, 4, size, size)
    assert (ours - expected).abs().max() <= 1e-4 * expected.std()


def test_timestep_embedding_is_cos_then_sin_like_diffusers_flip_sin_to_cos():
    t = torch.tensor([0.0, 1.0, 37.5, 999.0])
    expected = get_timestep_embedding(t, 320, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert torch.allclose(timestep_embedding(t, 320), expected, atol=1e-6)
    assert torch.equal(timestep_embedding(torch.zeros(1), 8)[0], torch.tensor([1.0] * 4 + [0.0] * 4))


def test_timestep_embedding_embeds_sdxl_size_numbers_at_256_wide():
    emb = timestep_embedding(torch.tensor([0.0, 1024.0]), 256)
    assert emb.shape == (2, 256)
    assert torch.equal(emb[0], torch.cat([torch.ones(128), torch.zeros(128)]))
    freq = math.exp(-math.log(10000) * 5 / 128)
    assert emb[1, 5].item() == pytest.approx(math.cos(1024 * freq), abs=1e-4)
    assert emb[1, 128 + 5].item() == pytest.approx(math.sin(1024 * freq), abs=1e-4)


@pytest.mark.parametrize("name", FULL)
def test_full_size_model_builds_on_meta_without_storage(name):
    model = UNetModel(FULL[name], device="meta", dtype=torch.float16)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("meta", torch.float16)}


def test_full_size_parameter_counts_match_the_published_models():
    counts = {
        name: sum(p.numel() for p in UNetModel(c, device="meta").parameters()) for name, c in FULL.items()
    }
    assert counts["sd15"] == 859_520_964
    assert counts["sd21"] == 865_910_724
    assert counts["sdxl"] == 2_567_463_684
    assert (
        counts["sd15-inpaint"] - counts["sd15"] == 5 * 320 * 9
    )  # five more input channels in the first conv


# The head layout is the family's fact (no shape shows it); each config takes its family's.
FAMILY_OF = {"sd1": SD1, "sd1-inpaint": SD1, "sd2": SD2, "sdxl": SDXL, "sd15": SD1, "sd15-inpaint": SD1,
             "sd21": SD2, "sdxl-inpaint": SDXL}


@pytest.mark.parametrize("config,name", [(c, n) for n, c in [*TINY.items(), *FULL.items()]],
                         ids=list(TINY) + list(FULL))
def test_config_round_trips_through_state_dict_shapes(config, name):
    shapes = shapes_of(UNetModel(config, device="meta"))
    assert unet_config_from_shapes(shapes, FAMILY_OF[name].unet_heads) == config


def test_full_size_checkpoint_names_are_the_ldm_ones():
    keys = set(UNetModel(UNetConfig.sdxl(), device="meta").state_dict())
    for key in [
        "time_embed.0.weight", "time_embed.2.bias", "label_emb.0.0.weight", "label_emb.0.2.bias",
        "input_blocks.0.0.weight", "input_blocks.1.0.in_layers.0.weight", "input_blocks.1.0.emb_layers.1.weight",
        "input_blocks.1.0.out_layers.3.weight", "input_blocks.3.0.op.weight",
        "input_blocks.4.0.skip_connection.weight", "input_blocks.4.1.norm.weight", "input_blocks.4.1.proj_in.weight",
        "input_blocks.7.1.transformer_blocks.9.attn1.to_q.weight",
        "input_blocks.7.1.transformer_blocks.9.attn2.to_out.0.bias",
        "input_blocks.7.1.transformer_blocks.9.ff.net.0.proj.weight",
        "input_blocks.7.1.transformer_blocks.9.ff.net.2.weight", "input_blocks.7.1.transformer_blocks.9.norm3.bias",
        "middle_block.0.in_layers.2.weight", "middle_block.1.proj_out.weight", "middle_block.2.out_layers.0.bias",
        "output_blocks.2.2.conv.weight", "output_blocks.5.2.conv.weight", "output_blocks.8.0.skip_connection.weight",
        "out.0.weight", "out.2.bias",
    ]:  # fmt: skip
        assert key in keys, key
    assert not any("to_q.bias" in k or "to_k.bias" in k or "to_v.bias" in k for k in keys)


def test_sd1_uses_eight_heads_and_sd2_sdxl_heads_64_wide():
    def heads_by_width(config):
        model = UNetModel(config, device="meta")
        transformers = [m for m in model.modules() if isinstance(m, SpatialTransformer)]
        return {m.norm.num_channels: m.transformer_blocks[0].attn1.heads for m in transformers}

    assert heads_by_width(UNetConfig.sd15()) == {320: 8, 640: 8, 1280: 8}
    assert heads_by_width(UNetConfig.sd21()) == {320: 5, 640: 10, 1280: 20}
    assert heads_by_width(UNetConfig.sdxl()) == {640: 10, 1280: 20}


def test_strict_load_of_own_state_dict_onto_meta_model_reproduces_output():
    model = tiny_model("sdxl")
    clone = UNetModel(model.config, device="meta")
    clone.load_state_dict(model.state_dict(), strict=True, assign=True)
    args = inputs(model.config)
    assert torch.equal(run_ours(model, args), run_ours(clone.eval(), args))


def test_y_is_required_exactly_for_adm_models():
    sdxl, sd1 = tiny_model("sdxl"), tiny_model("sd1")
    x, t = torch.zeros(1, 4, 8, 8), torch.zeros(1)
    with pytest.raises(ValueError, match="adm_in_channels"):
        sdxl(x, t, torch.zeros(1, 5, CONTEXT))
    with pytest.raises(ValueError, match="adm_in_channels"):
        sd1(x, t, torch.zeros(1, 5, CONTEXT), torch.zeros(1, 64))


def test_config_rejects_ambiguous_head_layout():
    with pytest.raises(ValueError, match="exactly one"):
        tiny(num_head_channels=64)
    with pytest.raises(ValueError, match="heads"):
        tiny(num_heads=-1, num_head_channels=64)


def test_shapes_with_checkpoint_prefix_are_refused_naming_the_missing_key():
    shapes = {"model.diffusion_model." + k: v for k, v in shapes_of(tiny_model("sd1")).items()}
    with pytest.raises(UnsupportedModelError, match="input_blocks.0.0.weight"):
        unet_config_from_shapes(shapes, SD1.unet_heads)


def test_pruned_output_blocks_are_refused():
    shapes = shapes_of(UNetModel(UNetConfig.sdxl(), device="meta"))
    pruned = {k: v for k, v in shapes.items() if not k.startswith("output_blocks.0.1.transformer_blocks.9.")}
    with pytest.raises(UnsupportedModelError, match="output blocks have attention depths"):
        unet_config_from_shapes(pruned, SDXL.unet_heads)


def test_uneven_levels_are_refused():
    shapes = shapes_of(UNetModel(UNetConfig.sd15(), device="meta"))
    uneven = {k: v for k, v in shapes.items() if not k.startswith("input_blocks.2.1.")}
    with pytest.raises(UnsupportedModelError, match="level 0"):
        unet_config_from_shapes(uneven, SD1.unet_heads)


def test_comparison_with_diffusers_notices_a_wrong_head_split():
    """The diffusers comparison is exact (same torch ops), so guard against it being vacuous."""
    model = tiny_model("sd1")
    twin = diffusers_twin(model, TIME_DIM)
    for module in model.modules():
        if isinstance(module, SpatialTransformer):
            module.transformer_blocks[0].attn2.heads = 4
    ours, expected = run_both(model, twin, **inputs(model.config))
    assert (ours - expected).abs().max() > 1e-3 * expected.std()
