"""The model-family table: every entry complete and self-consistent, detection driven by it alone, metadata
settings, LoRA prefixes, and no torch/transformers behind it (the UI imports it)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from sdstudio.engine import families
from sdstudio.engine.clip_vocab import EOS, OPENCLIP_PAD
from sdstudio.engine.detect import detect
from sdstudio.engine.errors import CheckpointError, UnsupportedModelError
from sdstudio.engine.families import DEMO, FAMILIES, SD1, SD2, SDXL, EncoderSpec, Family, HeadLayout, family
from sdstudio.engine.preview import Previewer
from sdstudio.engine.safetensors_file import read_header
from sdstudio.ui.prompt_state import size_presets
from tests.engine.st_files import write_header_only

DETECTABLE = [f for f in FAMILIES if f.context_dim is not None]


def table_shapes(fam: Family, in_channels: int = 4) -> dict[str, tuple[int, ...]]:
    """The fewest tensors detect() reads, built from the family's own entry (not from a real layout)."""
    unet = fam.unet_prefix
    shapes = {unet + "input_blocks.0.0.weight": (320, in_channels, 3, 3),
              unet + "middle_block.1.transformer_blocks.0.attn2.to_k.weight": (320, fam.context_dim),
              fam.vae_prefix + "encoder.conv_in.weight": (128, 3, 3, 3)}
    if fam.adm_in_channels is not None:
        shapes[unet + "label_emb.0.0.weight"] = (1280, fam.adm_in_channels)
    for spec in fam.text_encoders:
        shapes[spec.prefix + "probe.weight"] = (spec.width or 8, 4)
    return shapes


@pytest.mark.parametrize("fam", FAMILIES, ids=[f.name for f in FAMILIES])
def test_each_entry_is_complete_and_consistent(fam):
    assert fam.name and fam.label and fam.text_encoders
    assert len(fam.latent_rgb) == 4 and all(len(row) == 3 for row in fam.latent_rgb)
    assert 0 < fam.scale_factor <= 1 and fam.default_prediction in ("eps", "v")
    assert fam.size_presets[0] == (fam.default_size, fam.default_size)
    assert all(w % 8 == 0 and h % 8 == 0 for w, h in fam.size_presets)
    assert len(set(fam.size_presets)) == len(fam.size_presets)
    widths = [e.width for e in fam.text_encoders]
    if fam.context_dim is not None:
        # The UNet's cross-attention reads the encoders' hidden states side by side.
        assert sum(widths) == fam.context_dim
    # SDXL's `y` begins with a pooled, projected text embedding: exactly one encoder must provide it.
    assert sum(e.projection for e in fam.text_encoders) == (1 if fam.needs_y else 0)
    assert all(e.layer in ("last", "penultimate", "penultimate_no_norm") for e in fam.text_encoders)
    assert all(e.pad == (OPENCLIP_PAD if e.openclip else EOS) for e in fam.text_encoders)
    assert len({e.prefix for e in fam.text_encoders}) == len(fam.text_encoders)
    assert all(not e.prefix.startswith((fam.unet_prefix, fam.vae_prefix)) for e in fam.text_encoders)


def test_names_are_unique_and_detection_facts_do_not_overlap():
    assert len({f.name for f in FAMILIES}) == len(FAMILIES)
    facts = [(f.context_dim, f.adm_in_channels) for f in DETECTABLE]
    assert len(set(facts)) == len(facts)


def test_the_published_facts():
    assert (SD1.unet_heads, SD2.unet_heads, SDXL.unet_heads) == (
        HeadLayout(num_heads=8), HeadLayout(num_head_channels=64), HeadLayout(num_head_channels=64))
    assert (SD1.scale_factor, SD2.scale_factor, SDXL.scale_factor) == (0.18215, 0.18215, 0.13025)
    assert SDXL.zero_empty_negative and not SD1.zero_empty_negative and not SD2.zero_empty_negative
    assert SDXL.needs_y and SDXL.adm_in_channels == 2816 and not SD1.needs_y
    assert [e.layer for e in SD2.text_encoders] == ["penultimate"]
    assert SD2.prediction_note and SD2.v_bias_probe and not SD1.prediction_note and SD1.v_bias_probe is None


def test_head_layout_sets_exactly_one_of_its_fields():
    with pytest.raises(ValueError, match="exactly one"):
        HeadLayout()
    with pytest.raises(ValueError, match="exactly one"):
        HeadLayout(num_heads=8, num_head_channels=64)


def test_unknown_name_is_refused_naming_the_known_ones():
    assert family("sdxl") is SDXL
    with pytest.raises(UnsupportedModelError, match="'sd3'.*sd1, sd2, sdxl, demo"):
        family("sd3")


@pytest.mark.parametrize("in_channels", [4, 9])
@pytest.mark.parametrize("fam", DETECTABLE, ids=[f.name for f in DETECTABLE])
def test_detection_picks_each_family_from_shapes_built_from_the_table(tmp_path, fam, in_channels):
    path = write_header_only(tmp_path / "m.safetensors", table_shapes(fam, in_channels))
    desc = detect(read_header(path))
    assert (desc.family, desc.family_label, desc.context_dim) == (fam.name, fam.label, fam.context_dim)
    assert (desc.scale_factor, desc.default_size, desc.missing) == (fam.scale_factor, fam.default_size, ())
    assert desc.inpainting == (in_channels == 9)
    assert desc.notes == ((fam.prediction_note,) if fam.prediction_note else ())


def test_a_file_without_one_of_two_text_encoders_is_reported(tmp_path):
    shapes = {k: v for k, v in table_shapes(SDXL).items() if not k.startswith(SDXL.text_encoders[1].prefix)}
    desc = detect(read_header(write_header_only(tmp_path / "m.safetensors", shapes)))
    assert desc.family == "sdxl" and desc.missing == ("text encoder",)


def test_adding_a_family_is_one_entry(tmp_path, monkeypatch):
    new = Family(
        name="wide", label="Wide test family", context_dim=4096, adm_in_channels=None,
        text_encoders=(EncoderSpec("text_model.", openclip=False, pad=EOS, layer="last", width=4096),),
        unet_heads=HeadLayout(num_head_channels=128), scale_factor=0.5,
        latent_rgb=((1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 0)), default_size=640,
        size_presets=((640, 640), (512, 768)), lora_prefixes=SD1.lora_prefixes)
    path = write_header_only(tmp_path / "wide.safetensors", table_shapes(new))
    with pytest.raises(UnsupportedModelError, match="context 4096"):
        detect(read_header(path))

    monkeypatch.setattr(families, "FAMILIES", (*FAMILIES, new))
    desc = detect(read_header(path))
    assert (desc.family, desc.scale_factor, desc.default_size) == ("wide", 0.5, 640)
    assert family("wide") is new and size_presets("wide") == ((640, 640), (512, 768))
    assert Previewer("wide").latent_rgb == new.latent_rgb


@pytest.mark.parametrize("fam,key,component,encoder", [
    (SD1, "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "unet", None),
    (SD1, "lora_te_text_model_encoder_layers_0_mlp_fc1.alpha", "text", 0),
    (SD1, "unet.down_blocks.0.attentions.0.proj_in.lora_A.weight", "unet", None),
    (SD1, "text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_B.weight", "text", 0),
    (SD2, "lora_te_text_model_encoder_layers_22_mlp_fc1.lora_up.weight", "text", 0),
    (SDXL, "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", "text", 0),
    (SDXL, "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", "text", 1),
    (SDXL, "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight", "text", 0),
    (SDXL, "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight", "text", 1),
    (SDXL, "unet.up_blocks.1.attentions.0.proj_out.lora_B.weight", "unet", None),
])
def test_lora_prefixes_map_to_components(fam, key, component, encoder):
    target = fam.lora_target(key)
    assert (target.component, target.encoder) == (component, encoder)
    assert key.startswith(target.prefix)


def test_lora_text_encoder_indices_address_the_right_encoder():
    # kohya's te2 / diffusers' text_encoder_2 is SDXL's OpenCLIP bigG, the one with the pooled projection.
    for prefix in ("lora_te2_", "text_encoder_2."):
        target = SDXL.lora_target(prefix + "x")
        assert SDXL.text_encoders[target.encoder].prefix == families.SDXL_TEXT_G
    for fam in FAMILIES:
        for style in ("kohya", "diffusers"):
            rows = [p for p in fam.lora_prefixes if p.style == style]
            encoders = sorted(p.encoder for p in rows if p.component == "text")
            assert encoders == list(range(len(fam.text_encoders)))
            assert [p.component for p in rows].count("unet") == 1


def test_a_lora_key_for_another_family_is_refused():
    with pytest.raises(UnsupportedModelError, match="lora_te2_x.*SD 1.x"):
        SD1.lora_target("lora_te2_x")


def test_metadata_sets_what_shapes_cannot_show():
    config = {"scale_factor": 0.5, "default_size": 96, "unet": {"num_head_channels": 16},
              "text": {"pad": 0, "layer": "penultimate", "hidden_act": "gelu", "num_attention_heads": 2},
              "latent_rgb": [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]}
    demo = DEMO.configured(config)
    assert (demo.scale_factor, demo.default_size) == (0.5, 96)
    assert demo.unet_heads == HeadLayout(num_head_channels=16)
    spec = demo.text_encoders[0]
    assert (spec.pad, spec.layer, spec.hidden_act, spec.num_heads) == (OPENCLIP_PAD, "penultimate", "gelu", 2)
    assert demo.latent_rgb[0] == (1.0, 0.0, 0.0)
    assert DEMO.configured({}) is DEMO
    assert DEMO.configured({"text": {"layer": "last"}}).text_encoders[0].pad == EOS  # pad unset: the family's


def test_metadata_with_an_unknown_pad_is_refused():
    with pytest.raises(CheckpointError, match="text pad to .zero."):
        DEMO.configured({"text": {"pad": "zero"}})


def test_families_and_the_ui_presets_import_neither_torch_nor_transformers():
    code = ("import sys, sdstudio.engine.families, sdstudio.ui.prompt_state; "
            "print([m for m in ('torch', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.replace("'", '"')) == []


def test_entries_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SD1.default_size = 1024


@pytest.mark.parametrize("config,message", [
    ({"scale_factor": float("nan")}, "scale_factor to nan"),  # NaN would decode every image to black
    ({"scale_factor": float("inf")}, "scale_factor to inf"),
    ({"scale_factor": 0}, "scale_factor to 0"),
    ({"scale_factor": -0.18}, "scale_factor"),
    ({"scale_factor": 1e9}, "scale_factor"),
    ({"scale_factor": "0.5"}, "scale_factor to '0.5'"),
    ({"scale_factor": True}, "scale_factor"),
    ({"default_size": 100}, "default_size to 100, not a multiple of 8"),
    ({"default_size": -64}, "default_size"),
    ({"default_size": 0}, "default_size"),
    ({"default_size": 10**9}, "default_size"),
    ({"default_size": 64.0}, "default_size"),
    ({"default_size": "64"}, "default_size"),
    ({"latent_rgb": [[1, 0, 0]] * 3}, "latent_rgb"),
    ({"latent_rgb": [[1, 0]] * 4}, "latent_rgb"),
    ({"latent_rgb": [[1, 0, float("nan")]] * 4}, "latent_rgb"),
    ({"latent_rgb": [[1, 0, "x"]] * 4}, "latent_rgb"),
    ({"latent_rgb": "red"}, "latent_rgb"),
    ({"unet": {"num_heads": 0}}, "unet.num_heads to 0"),
    ({"unet": {"num_heads": -2}}, "unet.num_heads"),
    ({"unet": {"num_heads": 2.5}}, "unet.num_heads"),
    ({"unet": {"num_head_channels": "64"}}, "unet.num_head_channels"),
    ({"unet": [2]}, "unet to \\[2\\], not a JSON object"),
    ({"text": "last"}, "text to 'last', not a JSON object"),
    ({"text": {"num_attention_heads": 0}}, "text num_attention_heads"),
    ({"text": {"num_attention_heads": "2"}}, "text num_attention_heads"),
    ({"text": {"layer": "first"}}, "text layer to 'first'"),
    ({"text": {"layer": ["last"]}}, "text layer"),
    ({"text": {"hidden_act": "os.system"}}, "text hidden_act"),
    ({"text": {"pad": True}}, "text pad"),
    ({"text": {"pad": [0]}}, "text pad"),
])
def test_metadata_values_of_the_wrong_type_or_range_are_refused_in_one_line(config, message):
    with pytest.raises(CheckpointError, match=message) as info:
        DEMO.configured(config)
    assert "\n" not in str(info.value) and "re-export" in str(info.value)


def test_metadata_within_range_is_accepted():
    demo = DEMO.configured({"scale_factor": 1, "default_size": 4096, "unet": {"num_heads": 1},
                            "latent_rgb": [[-1.5, 0, 2]] * 4, "text": {"pad": "0", "num_attention_heads": 4}})
    assert (demo.scale_factor, demo.default_size, demo.unet_heads.num_heads) == (1.0, 4096, 1)
    assert demo.text_encoders[0].pad == OPENCLIP_PAD and demo.text_encoders[0].num_heads == 4
