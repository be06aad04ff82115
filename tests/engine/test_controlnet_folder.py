"""The ControlNet folder: files listed with the family their header tells, unreadable files named."""

from __future__ import annotations

import json

from sdstudio import paths
from sdstudio.engine.controlnet_folder import (
    ControlNetFile,
    controlnet_files,
    family_from_header,
    find_controlnet,
)
from tests.engine.st_files import write_header_only, write_raw_header


def _original(context: int, adm: int | None = None,
              prefix: str = "control_model.") -> dict[str, tuple[int, ...]]:
    """A few keys of lllyasviel's layout with the widths that tell the family."""
    shapes = {f"{prefix}input_hint_block.0.weight": (16, 3, 3, 3),
              f"{prefix}zero_convs.0.0.weight": (320, 320, 1, 1),
              f"{prefix}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, context),
              f"{prefix}middle_block_out.0.weight": (1280, 1280, 1, 1)}
    if adm is not None:
        shapes[f"{prefix}label_emb.0.0.weight"] = (1280, adm)
    return shapes


def _diffusers(context: int, adm: int | None = None) -> dict[str, tuple[int, ...]]:
    shapes = {"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
              "controlnet_down_blocks.0.weight": (320, 320, 1, 1),
              "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": (320, context),
              "controlnet_mid_block.weight": (1280, 1280, 1, 1)}
    if adm is not None:
        shapes["add_embedding.linear_1.weight"] = (1280, adm)
    return shapes


def test_family_from_the_widths_in_both_layouts_with_or_without_prefix():
    assert family_from_header(_original(768), {}) == "sd1"
    assert family_from_header(_original(768, prefix=""), {}) == "sd1"
    assert family_from_header(_original(1024), {}) == "sd2"
    assert family_from_header(_original(2048, 2816), {}) == "sdxl"
    assert family_from_header(_diffusers(768), {}) == "sd1"
    assert family_from_header(_diffusers(2048, 2816), {}) == "sdxl"


def test_unknown_widths_or_no_attention_tell_no_family():
    assert family_from_header(_original(2048), {}) is None  # SDXL width without label_emb: no family of ours
    assert family_from_header(_original(512), {}) is None
    assert family_from_header({"input_hint_block.0.weight": (16, 3, 3, 3)}, {}) is None
    assert family_from_header({}, {}) is None


def test_our_metadata_names_the_family_and_a_hostile_one_is_ignored():
    assert family_from_header({}, {"sdstudio.config": json.dumps({"family": "demo"})}) == "demo"
    assert family_from_header(_original(768), {"sdstudio.config": json.dumps({"family": "nope"})}) == "sd1"
    assert family_from_header(_original(768), {"sdstudio.config": "{not json"}) == "sd1"
    assert family_from_header(_original(768), {"sdstudio.config": json.dumps([1, 2])}) == "sd1"


def test_the_folder_lists_every_file_with_its_family_and_names_broken_ones(home, monkeypatch):
    monkeypatch.setattr(paths, "builtin_controlnet_dir", lambda: home / "no-builtin")  # the user's folder alone
    folder = paths.controlnet_dir()
    (folder / "sub").mkdir(parents=True)
    write_header_only(folder / "control_v11p_sd15_canny.safetensors", _original(768))
    write_header_only(folder / "sub" / "diffusers_xl_canny.safetensors", _diffusers(2048, 2816))
    bad = {"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 99]}}  # more data than the file has
    write_raw_header(folder / "broken.safetensors", bad)
    (folder / "notes.txt").write_text("not a model")
    found = {f.name: f for f in controlnet_files()}
    assert set(found) == {"control_v11p_sd15_canny", "diffusers_xl_canny", "broken"}
    assert found["control_v11p_sd15_canny"].family == "sd1"
    assert found["diffusers_xl_canny"].family == "sdxl"
    assert found["broken"].problem and found["broken"].family is None
    assert not found["broken"].compatible("sd1")


def test_an_absent_folder_is_an_empty_list(home, monkeypatch):
    monkeypatch.setattr(paths, "builtin_controlnet_dir", lambda: home / "no-builtin")
    assert controlnet_files() == []


def test_built_in_controlnets_are_listed_after_the_users_and_found_by_name(home, monkeypatch, tmp_path):
    builtin = tmp_path / "resources" / "models" / "ControlNet"
    builtin.mkdir(parents=True)
    monkeypatch.setattr(paths, "builtin_controlnet_dir", lambda: builtin)
    meta = {"sdstudio.config": json.dumps({"family": "demo"})}
    write_header_only(builtin / "sdstudio-emoji_canny.safetensors", _original(128), metadata=meta)
    paths.controlnet_dir().mkdir(parents=True)
    write_header_only(paths.controlnet_dir() / "control_v11p_sd15_canny.safetensors", _original(768))
    found = controlnet_files()
    assert [(f.name, f.family) for f in found] == [("control_v11p_sd15_canny", "sd1"), ("sdstudio-emoji_canny", "demo")]
    assert find_controlnet("sdstudio-emoji_canny") == builtin / "sdstudio-emoji_canny.safetensors"
    assert find_controlnet("sdstudio-emoji_canny.safetensors") == builtin / "sdstudio-emoji_canny.safetensors"
    assert find_controlnet("sdstudio-emoji") is None
    # A user's file of the same name comes first.
    write_header_only(paths.controlnet_dir() / "sdstudio-emoji_canny.safetensors", _original(768))
    assert find_controlnet("sdstudio-emoji_canny") == paths.controlnet_dir() / "sdstudio-emoji_canny.safetensors"
    assert controlnet_files(builtin) == [found[1]]


def test_compatibility_and_the_reason_when_not():
    sd1 = ControlNetFile("/m/a.safetensors", "a", "sd1")
    assert sd1.compatible("sd1") and sd1.compatible(None) and not sd1.compatible("sdxl")
    assert sd1.why_not("sdxl") == "made for SD 1.x; the model is SDXL"
    assert sd1.why_not("sd1") == ""
    unknown = ControlNetFile("/m/b.safetensors", "b")
    assert unknown.compatible("sdxl") and unknown.compatible("demo")


def test_adapters_in_the_folder_are_listed_with_their_kind_and_family(home):
    folder = paths.controlnet_dir()
    folder.mkdir(parents=True)
    write_header_only(folder / "t2iadapter_canny_sd15v2.safetensors",
                      {"conv_in.weight": (320, 64, 3, 3), "body.0.block1.weight": (320, 320, 3, 3)})
    write_header_only(folder / "t2i-adapter-lineart-sdxl.safetensors",
                      {"adapter.conv_in.weight": (320, 768, 3, 3),
                       "adapter.body.0.resnets.0.block1.weight": (320, 320, 3, 3)})
    write_header_only(folder / "control_v11p_sd15_canny.safetensors", _original(768))
    found = {f.name: f for f in controlnet_files()}
    names = ("t2iadapter_canny_sd15v2", "t2i-adapter-lineart-sdxl", "control_v11p_sd15_canny")
    sd, xl, cn = (found[n] for n in names)
    assert (sd.kind, sd.family, sd.label) == ("T2I-Adapter", "sd1", "t2iadapter_canny_sd15v2 (T2I-Adapter)")
    assert (xl.kind, xl.family) == ("T2I-Adapter", "sdxl")
    assert xl.why_not("sd1") == "made for SDXL; the model is SD 1.x"
    assert (cn.kind, cn.label) == ("ControlNet", "control_v11p_sd15_canny")
