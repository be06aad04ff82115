"""sdstudio.engine.clip_text against transformers' CLIP text classes (the reference, test-only): the same
state-dict keys and the same outputs for the same random weights, in every shape Stable Diffusion uses."""

from __future__ import annotations

import pytest
import torch
import transformers

from sdstudio.engine import clip_text
from sdstudio.engine.text_encoder import clip_l_config, openclip_bigg_config, openclip_h_config

# SD 1.x / SDXL first encoder (ViT-L/14, quick_gelu), SD 2.x (OpenCLIP ViT-H as converted, gelu),
# SDXL second encoder (bigG, gelu, projection). Outputs are compared with 3 layers of each: width, heads and
# activation are what differ, more layers only repeat them (and cost seconds to GBs of random weights); the
# key sets are compared at full depth on the meta device.
SHAPES = {
    "sd15_clip_l": (clip_l_config, False),
    "sd2_openclip_h": (openclip_h_config, True),
    "sdxl_clip_l": (clip_l_config, False),
    "sdxl_bigg": (openclip_bigg_config, True),
}
LAYERS = 3


def pair(make, layers, projection, eos=None):
    ours_config = make()
    if layers:
        ours_config.num_hidden_layers = layers
    if eos is not None:
        ours_config.eos_token_id = eos
    ref_config = transformers.CLIPTextConfig(**vars(ours_config))
    ref_config._attn_implementation = "sdpa"
    ours = (clip_text.CLIPTextModelWithProjection if projection else clip_text.CLIPTextModel)(ours_config)
    ref = (transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel)(ref_config)
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=generator) * 0.05 for k, v in ref.state_dict().items()}
    ref.load_state_dict(state)
    ours.load_state_dict(state)
    return ours.eval(), ref.eval()


def tokens(batch: int, eos: int = 49407) -> torch.Tensor:
    """SD-style rows: BOS, random ids, EOS, then EOS (SD 1.x) or 0 (OpenCLIP) padding; mixed lengths."""
    generator = torch.Generator().manual_seed(1)
    rows = []
    for i in range(batch):
        n = [3, 40, 75][i % 3]
        body = torch.randint(0, 49406, (n,), generator=generator).tolist()
        pad = eos if i % 2 == 0 else 0
        rows.append([49406, *body, eos] + [pad] * (75 - n))
    return torch.tensor(rows)


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


@pytest.mark.parametrize("name", SHAPES)
def test_same_state_dict_keys_as_transformers_at_full_depth(name):
    make, projection = SHAPES[name]
    config = make()
    with torch.device("meta"):
        ours = (clip_text.CLIPTextModelWithProjection if projection else clip_text.CLIPTextModel)(config)
        ref = (transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel)(
            transformers.CLIPTextConfig(**vars(config)))
    assert set(ours.state_dict()) == set(ref.state_dict())
    shapes = {k: v.shape for k, v in ref.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == shapes


@pytest.mark.parametrize("name", SHAPES)
def test_same_outputs_as_transformers(name):
    make, projection = SHAPES[name]
    ours, ref = pair(make, LAYERS, projection)
    assert set(ours.state_dict()) == set(ref.state_dict())
    ids = tokens(3)
    with torch.no_grad():
        a, b = ours(ids, output_hidden_states=True), ref(input_ids=ids, output_hidden_states=True)
    close(a.last_hidden_state, b.last_hidden_state)
    assert len(a.hidden_states) == len(b.hidden_states) == ours.config.num_hidden_layers + 1
    for mine, theirs in zip(a.hidden_states, b.hidden_states, strict=True):
        close(mine, theirs)
    if projection:
        close(a.text_embeds, b.text_embeds)
        close(a.pooler_output, ref.text_model(input_ids=ids).pooler_output)
    else:
        close(a.pooler_output, b.pooler_output)


def test_pooled_output_is_read_at_the_first_eos_not_the_padding():
    ours, ref = pair(clip_l_config, 2, False)
    ids = tokens(3)
    with torch.no_grad():
        pooled = ours(ids).pooler_output
        close(pooled, ref(input_ids=ids).pooler_output)
        last = ours(ids).last_hidden_state
    first_eos = (ids == 49407).int().argmax(dim=-1)
    assert first_eos.tolist() == [4, 41, 76]
    close(pooled, last[torch.arange(3), first_eos])
    assert not torch.allclose(pooled[0], last[0, -1])  # row 0 pads with EOS: the last EOS is another vector


def test_old_configs_with_eos_2_pool_at_the_highest_id():
    ours, ref = pair(clip_l_config, 2, False, eos=2)
    ids = tokens(2)
    ids[1, 10] = 49407  # an early highest id in a 40-token prompt; with eos 2, argmax(ids) picks it
    with torch.no_grad():
        out = ours(ids)
        close(out.pooler_output, ref(input_ids=ids).pooler_output)
    close(out.pooler_output[1], out.last_hidden_state[1, 10])


def test_attention_is_causal():
    ours, _ = pair(clip_l_config, 2, False)
    ids = tokens(1)
    changed = ids.clone()
    changed[0, 20] = 123
    with torch.no_grad():
        a, b = ours(ids).last_hidden_state, ours(changed).last_hidden_state
    torch.testing.assert_close(a[0, :20], b[0, :20])
    assert not torch.allclose(a[0, 20:], b[0, 20:])


def test_quick_gelu_and_gelu_differ_and_match_transformers():
    x = torch.linspace(-4, 4, 101)
    from transformers.activations import ACT2FN
    close(clip_text.quick_gelu(x), ACT2FN["quick_gelu"](x))
    close(clip_text.ACTIVATIONS["gelu"](x), ACT2FN["gelu"](x))
    assert (clip_text.quick_gelu(x) - clip_text.ACTIVATIONS["gelu"](x)).abs().max() > 1e-2


def test_config_checks():
    with pytest.raises(ValueError, match="not a multiple"):
        clip_text.CLIPTextConfig(hidden_size=100, num_attention_heads=3)
    with pytest.raises(ValueError, match="unknown activation"):
        clip_text.CLIPTextConfig(hidden_act="relu")


def test_initialisation_has_transformers_scales():
    config = clip_text.CLIPTextConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                      num_attention_heads=4)
    model = clip_text.CLIPTextModel(config)
    layer = model.encoder.layers[0]
    assert abs(model.embeddings.token_embedding.weight.std().item() - 0.02) < 1e-3
    assert abs(layer.self_attn.q_proj.weight.std().item() - 256 ** -0.5 * 8 ** -0.5) < 2e-3
    assert abs(layer.mlp.fc1.weight.std().item() - 512 ** -0.5) < 2e-3
    assert layer.self_attn.q_proj.bias.abs().max() == 0 and layer.layer_norm1.weight.min() == 1
