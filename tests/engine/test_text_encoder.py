import pytest
import torch

from sdstudio.engine.clip_text import CLIPTextModel, CLIPTextModelWithProjection
from sdstudio.engine.errors import CheckpointError, RequestError
from sdstudio.engine.text_encoder import (
    TextEncoder,
    _config,
    build_text_encoder,
    clip_l_config,
    openclip_bigg_config,
    openclip_h_config,
    openclip_to_transformers,
    text_config_from_shapes,
)
from sdstudio.engine.tokenizer import EOS, OPENCLIP_PAD, pad_chunk, tokenize
from tests.engine.test_text_equivalence import random_openclip_state


def tiny_config(act="gelu", proj=16):
    return _config(hidden=32, layers=3, heads=2, intermediate=64, act=act, proj=proj)


def tiny_model(projection: bool):
    torch.manual_seed(0)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(tiny_config()).eval()


def tokens(pad=EOS):
    return torch.tensor([pad_chunk(ids, pad) for ids in tokenize(["a photo of a cat", "a dog"])])


@pytest.mark.parametrize(
    ("make", "width", "layers", "heads", "mlp", "act", "params"),
    [
        (clip_l_config, 768, 12, 12, 3072, "quick_gelu", 123_650_304),
        (openclip_h_config, 1024, 24, 16, 4096, "gelu", 354_032_640),
        (openclip_bigg_config, 1280, 32, 20, 5120, "gelu", 694_659_840),
    ],
)
def test_family_configs_build_on_meta_with_known_sizes(make, width, layers, heads, mlp, act, params):
    config = make()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        width,
        layers,
        heads,
    )
    assert (config.intermediate_size, config.hidden_act) == (mlp, act)
    assert (config.vocab_size, config.max_position_embeddings) == (49408, 77)
    with torch.device("meta"):
        model = CLIPTextModelWithProjection(config)
    assert sum(p.numel() for p in model.parameters()) == params
    assert all(p.device.type == "meta" for p in model.parameters())


def test_config_from_transformers_shapes():
    model = tiny_model(projection=True)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    config = text_config_from_shapes(shapes, openclip=False)
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (32, 3, 64)
    assert (config.vocab_size, config.max_position_embeddings, config.projection_dim) == (49408, 77, 16)
    assert config.num_attention_heads == 1  # hidden / 64, at least one
    assert config.hidden_act == "quick_gelu"


def test_config_from_openclip_shapes_reads_bigg_sizes():
    config = openclip_bigg_config()
    with torch.device("meta"):
        state = random_openclip_state(1280, 32, 5120, 1280)
    read = text_config_from_shapes({k: v.shape for k, v in state.items()}, openclip=True)
    for field in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "projection_dim",
        "vocab_size",
        "max_position_embeddings",
        "hidden_act",
    ):
        assert getattr(read, field) == getattr(config, field), field


def test_config_from_shapes_accepts_explicit_heads_and_activation():
    shapes = {k: v.shape for k, v in tiny_model(projection=False).state_dict().items()}
    shapes = {"text_model." + k: v for k, v in shapes.items()}
    config = text_config_from_shapes(shapes, openclip=False, hidden_act="gelu", num_heads=4)
    assert (config.num_attention_heads, config.hidden_act) == (4, "gelu")
    with pytest.raises(CheckpointError, match="attention heads"):
        text_config_from_shapes(shapes, openclip=False, num_heads=3)


def test_config_from_shapes_names_a_missing_key():
    with pytest.raises(CheckpointError, match="token_embedding"):
        text_config_from_shapes({"positional_embedding": (77, 32)}, openclip=True)


def test_openclip_mapping_splits_in_proj_into_views_and_transposes_projection():
    state = random_openclip_state(32, 2, 64, 16, vocab=100)
    mapped = openclip_to_transformers(state)
    in_proj = state["transformer.resblocks.1.attn.in_proj_weight"]
    prefix = "text_model.encoder.layers.1.self_attn."
    for i, name in enumerate("qkv"):
        part = mapped[prefix + f"{name}_proj.weight"]
        assert torch.equal(part, in_proj[32 * i : 32 * (i + 1)])
        assert part.untyped_storage().data_ptr() == in_proj.untyped_storage().data_ptr()
    bias = mapped[prefix + "v_proj.bias"]
    assert torch.equal(bias, state["transformer.resblocks.1.attn.in_proj_bias"][64:])
    projection = mapped["text_projection.weight"]
    assert projection.shape == (16, 32)
    assert torch.equal(projection, state["text_projection"].t())
    assert projection.untyped_storage().data_ptr() == state["text_projection"].untyped_storage().data_ptr()
    assert (
        mapped["text_model.encoder.layers.0.mlp.fc2.bias"] is state["transformer.resblocks.0.mlp.c_proj.bias"]
    )
    assert "logit_scale" not in mapped and not any("resblocks" in k for k in mapped)


def test_openclip_mapping_covers_every_transformers_weight():
    state = random_openclip_state(32, 3, 64, 16)
    with torch.device("meta"):
        expected = CLIPTextModelWithProjection(tiny_config()).state_dict().keys()
    assert set(openclip_to_transformers(state)) == set(expected)


def test_openclip_mapping_drops_unused_keys_and_rejects_unknown_ones():
    state = random_openclip_state(32, 1, 64, 16, vocab=100)
    extras = {"attn_mask": torch.zeros(77, 77), "visual.proj": torch.zeros(2), "logit_scale": torch.zeros(())}
    assert openclip_to_transformers(state | extras).keys() == openclip_to_transformers(state).keys()
    with pytest.raises(CheckpointError, match="transformer.resblocks.0.attn.bogus"):
        openclip_to_transformers(state | {"transformer.resblocks.0.attn.bogus.weight": torch.zeros(1)})


def test_build_loads_without_copies_and_ignores_position_ids():
    source = tiny_model(projection=True)
    state = dict(source.state_dict()) | {"text_model.embeddings.position_ids": torch.arange(77)[None]}
    encoder = build_text_encoder(tiny_config(), state, pad_token=EOS, layer_mode="last", projection=True)
    weight = encoder.text_model.encoder.layers[0].self_attn.q_proj.weight
    assert weight.data_ptr() == state["text_model.encoder.layers.0.self_attn.q_proj.weight"].data_ptr()
    assert encoder.text_model.embeddings.position_ids.device.type == "cpu"
    with torch.no_grad():
        hidden, pooled = encoder(tokens())
        expected = source(input_ids=tokens())
    assert torch.allclose(hidden, expected.last_hidden_state, atol=1e-6)
    assert torch.allclose(pooled, expected.text_embeds, atol=1e-6)


def test_encoder_state_dict_uses_checkpoint_names():
    encoder = TextEncoder(tiny_model(projection=False), EOS, "last")
    keys = encoder.state_dict().keys()
    assert "text_model.embeddings.token_embedding.weight" in keys
    assert "text_model.final_layer_norm.weight" in keys
    assert not any(k.startswith("text_projection") for k in keys)


def test_build_without_projection_drops_it_and_returns_no_pooled():
    state = tiny_model(projection=True).state_dict()
    encoder = build_text_encoder(
        tiny_config(), state, pad_token=OPENCLIP_PAD, layer_mode="penultimate", projection=False
    )
    with torch.no_grad():
        _, pooled = encoder(tokens(OPENCLIP_PAD))
    assert pooled is None


def test_build_reports_missing_and_misshapen_weights():
    state = dict(tiny_model(projection=False).state_dict())
    state = {"text_model." + k: v for k, v in state.items()}
    broken = {k: v for k, v in state.items() if "layers.1.mlp.fc1.weight" not in k}
    with pytest.raises(CheckpointError, match="1 missing.*layers.1.mlp.fc1.weight"):
        build_text_encoder(tiny_config(), broken, pad_token=EOS, layer_mode="last", projection=False)
    misshapen = state | {"text_model.final_layer_norm.weight": torch.ones(31)}
    with pytest.raises(CheckpointError, match="final_layer_norm"):
        build_text_encoder(tiny_config(), misshapen, pad_token=EOS, layer_mode="last", projection=False)


@pytest.mark.parametrize(
    ("mode", "clip_skip", "index", "normed"),
    [
        ("last", 1, -1, True),  # SD 1.x: last_hidden_state
        ("last", 2, -2, True),  # A1111 clip skip 2: final_layer_norm(hidden_states[-2])
        ("penultimate", 1, -2, True),  # SD 2.x: penultimate block, then ln_final
        ("penultimate_no_norm", 1, -2, False),  # SDXL: hidden_states[-2], no final norm
        ("penultimate_no_norm", 2, -3, False),
        ("penultimate", 2, -3, True),
    ],
)
def test_layer_modes_pick_the_documented_hidden_state(mode, clip_skip, index, normed):
    model = tiny_model(projection=False)
    encoder = TextEncoder(model, EOS, mode)
    with torch.no_grad():
        hidden, _ = encoder(tokens(), clip_skip)
        out = model(input_ids=tokens(), output_hidden_states=True)
    expected = out.hidden_states[index]
    if normed:
        expected = model.final_layer_norm(expected)
    assert torch.equal(hidden, expected)
    if (mode, clip_skip) == ("last", 1):
        assert torch.allclose(hidden, out.last_hidden_state)


def test_pooled_is_final_norm_at_first_eos_then_projection():
    model = tiny_model(projection=True)
    encoder = TextEncoder(model, OPENCLIP_PAD, "penultimate_no_norm")
    ids = tokens(OPENCLIP_PAD)
    with torch.no_grad():
        _, pooled = encoder(ids, clip_skip=2)
        last = model.text_model(input_ids=ids).last_hidden_state
    eos = ids.argmax(dim=-1)
    expected = model.text_projection(last[torch.arange(2), eos])
    assert torch.allclose(pooled, expected, atol=1e-6)


def test_clip_skip_out_of_range_is_a_request_error():
    encoder = TextEncoder(tiny_model(projection=False), EOS, "penultimate")
    with pytest.raises(RequestError, match="between 1 and 2"):
        encoder(tokens(), clip_skip=3)
    with pytest.raises(RequestError):
        encoder(tokens(), clip_skip=0)


def test_unknown_layer_mode_is_rejected():
    with pytest.raises(ValueError, match="layer mode"):
        TextEncoder(tiny_model(projection=False), EOS, "middle")


def test_inserts_replace_token_embeddings_before_positions_and_only_for_the_call():
    model = tiny_model(projection=True)
    encoder = TextEncoder(model, EOS, "penultimate_no_norm")
    ids = tokens()
    with torch.no_grad():
        plain = encoder(ids, 1)
        own = encoder.text_model.embeddings.token_embedding.weight[ids[1, 2:5]].clone()
        same = encoder(ids, 1, [(1, 2, own)])  # a token's own vectors: bit-identical result
        other = encoder(ids, 1, [(1, 2, own.flip(0))])
        again = encoder(ids, 1)
    assert all(torch.equal(a, b) for a, b in zip(plain, same, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(plain, again, strict=True))
    assert torch.equal(other[0][0], plain[0][0])  # row 0 untouched
    assert torch.equal(other[0][1, :2], plain[0][1, :2])  # causal: positions before the insert unchanged
    assert (other[0][1, 2:] - plain[0][1, 2:]).abs().max() > 1e-3
