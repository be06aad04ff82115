"""Hires fix in the infotext: A1111's keys written, read back, and a re-run restores every hires setting."""

from __future__ import annotations

import pytest

from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.parameters import (
    a1111_mode,
    format_parameters,
    parse_parameters,
    request_fields,
    request_from_parameters,
)

BASE = GenerationRequest(prompt="a castle, sunset", negative_prompt="blurry", steps=25, sampler="Euler a",
                         scheduler="karras", seed=99, width=512, height=768, strength=0.45, hires=True)

A1111_TEXT = """a castle, sunset
Negative prompt: blurry
Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: \
0123456789, Model: sd15, Denoising strength: 0.7, Hires resize: 1024x768, Hires steps: 10, Hires upscaler: \
Latent (bicubic antialiased), Hires sampler: Euler, Hires schedule type: Exponential, Hires prompt: "a castle, \
night", Hires negative prompt: lowres, Version: v1.10.1"""


@pytest.mark.parametrize("changes", [
    {},
    {"hires_scale": 1.5, "hires_steps": 12, "hires_upscaler": "Lanczos"},
    {"hires_resize_w": 1024, "hires_resize_h": 0, "hires_upscaler": "Latent (nearest-exact)"},
    {"hires_resize_w": 1024, "hires_resize_h": 1024, "hires_sampler": "DPM++ 2M", "hires_scheduler": "exponential"},
    {"hires_prompt": "a castle, night: \"stars\"", "hires_negative_prompt": "lowres, jpeg"},
    {"hires_upscaler": "4x-UltraSharp"},
    {"hires_cfg_scale": 9.5},
    {"hires_cfg_scale": 1.0, "cfg_scale": 7.0},
])
def test_hires_settings_round_trip(changes):
    req = BASE.replace(**changes)
    back = request_from_parameters(parse_parameters(format_parameters(req, "m")))
    for name in ("hires", "hires_scale", "hires_resize_w", "hires_resize_h", "hires_steps", "hires_upscaler",
                 "hires_sampler", "hires_scheduler", "hires_prompt", "hires_negative_prompt", "strength",
                 "width", "height", "steps", "hires_cfg_scale", "cfg_scale"):
        assert getattr(back, name) == getattr(req, name), name


def test_the_keys_are_a1111s_and_written_only_where_they_say_something():
    fields = request_fields(BASE, "m")
    assert [k for k in fields if k.startswith("Hires")] == ["Hires upscale", "Hires upscaler"]
    assert fields["Denoising strength"] == "0.45" and fields["Size"] == "512x768"
    same = request_fields(BASE.replace(hires_sampler="Euler a", hires_scheduler="karras", hires_prompt=BASE.prompt), "m")
    assert not {"Hires sampler", "Hires schedule type", "Hires prompt"} & set(same)
    resized = request_fields(BASE.replace(hires_resize_w=1024, hires_resize_h=1536, hires_steps=8), "m")
    assert resized["Hires resize"] == "1024x1536" and resized["Hires steps"] == 8 and "Hires upscale" not in resized
    assert "Hires CFG Scale" not in request_fields(BASE.replace(hires_cfg_scale=BASE.cfg_scale), "m")
    assert request_fields(BASE.replace(hires_cfg_scale=3.5), "m")["Hires CFG Scale"] == "3.5"
    off = request_fields(BASE.replace(hires=False, hires_cfg_scale=3.5), "m")
    assert not [k for k in off if k.startswith("Hires")] and "Denoising strength" not in off


def test_an_a1111_hires_text_is_read_into_every_field():
    params = parse_parameters(A1111_TEXT)
    req = request_from_parameters(params)
    assert a1111_mode(params) == "txt2img"
    assert (req.hires, req.hires_resize_w, req.hires_resize_h, req.hires_steps) == (True, 1024, 768, 10)
    assert (req.hires_upscaler, req.hires_sampler, req.hires_scheduler) == ("Latent (bicubic antialiased)", "Euler",
                                                                            "exponential")
    assert (req.hires_prompt, req.hires_negative_prompt, req.strength) == ("a castle, night", "lowres", 0.7)
    assert req.hires_scale == 2.0 and (req.width, req.height) == (512, 512)


def test_forges_hires_cfg_scale_is_read_and_alone_turns_hires_on():
    # Forge writes the key on every hires image, the first pass's value included.
    text = "x\nSteps: 5, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Hires CFG Scale: {}"
    req = request_from_parameters(parse_parameters(text.format("4.5")))
    assert req.hires and (req.cfg_scale, req.hires_cfg_scale) == (7.0, 4.5)
    same = request_from_parameters(parse_parameters(text.format("7")))
    assert same.hires_cfg_scale == 7.0 and "Hires CFG Scale" not in request_fields(same, "m")
    assert request_from_parameters(parse_parameters(A1111_TEXT)).hires_cfg_scale == 0  # not written: the first's


def test_a_text_without_hires_keys_leaves_hires_off():
    req = request_from_parameters(parse_parameters("x\nSteps: 5, Sampler: Euler, Seed: 1, Size: 64x64"))
    assert not req.hires


@pytest.mark.parametrize("line,message", [("Hires resize: big", "Hires resize must look like 1024x768"),
                                          ("Hires upscale: two", "Hires upscale must be a number"),
                                          ("Hires steps: ten", "Hires steps must be a whole number"),
                                          ("Hires sampler: Wizard", "hires: .*Wizard"),
                                          ("Hires CFG Scale: high", "Hires CFG Scale must be a number")])
def test_bad_hires_values_are_named(line, message):
    with pytest.raises(RequestError, match=message):
        request_from_parameters(parse_parameters(f"x\nSteps: 5, Sampler: Euler, Seed: 1, Size: 64x64, {line}"))


def test_the_hires_checkpoint_is_written_as_a1111s_short_title_and_read_back():
    req = BASE.replace(hires_checkpoint="/models/sub/anime v1.5.safetensors",
                       hires_checkpoint_hash="4c8e2d31fa")
    fields = request_fields(req, "m")
    assert fields["Hires checkpoint"] == "anime v1.5 [4c8e2d31fa]"
    back = request_from_parameters(parse_parameters(format_parameters(req, "m")))
    # A name (the reader finds the file in the models folder) and its hash.
    assert (back.hires_checkpoint, back.hires_checkpoint_hash) == ("anime v1.5", "4c8e2d31fa")
    assert "Hires checkpoint" not in request_fields(BASE, "m")  # the same checkpoint: not written
    assert "Hires checkpoint" not in request_fields(req.replace(hires=False), "m")


@pytest.mark.parametrize("value, expected", [
    ("Use same checkpoint", ("", "")),
    ("realistic_v51", ("realistic_v51", "")),
    ("realistic_v51.safetensors [ABCDEF0123]", ("realistic_v51", "abcdef0123")),
    ("C:\\sd\\models\\realistic.ckpt", ("realistic", "")),
])
def test_a1111_hires_checkpoint_values_are_read(value, expected):
    params = parse_parameters(f"p\nSteps: 20, Seed: 1, Size: 64x64, Hires upscale: 2, "
                              f"Hires checkpoint: {value}")
    req = request_from_parameters(params)
    assert (req.hires_checkpoint, req.hires_checkpoint_hash) == expected and req.hires


def test_a_rerun_finds_the_hires_checkpoint_in_the_models_folder_by_hash(tmp_path):
    from sdstudio.engine.model_files import model_hash
    from sdstudio.history.file_parameters import read_file_parameters
    from tests.history.test_reconcile import a1111_png

    models = tmp_path / "models"
    (models / "deep").mkdir(parents=True)
    first = models / "first.safetensors"
    first.write_bytes(b"weights one")
    renamed = models / "deep" / "second-local.safetensors"
    renamed.write_bytes(b"weights two")
    text = (f"p\nSteps: 20, Seed: 1, Size: 64x64, Model hash: {model_hash(first)}, Model: first, "
            f"Hires upscale: 2, Hires checkpoint: second [{model_hash(renamed)}]")
    found = read_file_parameters(a1111_png(tmp_path / "a.png", text), models_dir=models)
    assert found.model_problem == ""
    assert (found.rerun_request().model, found.rerun_request().hires_checkpoint) == (str(first), str(renamed))
    renamed.unlink()
    missing = read_file_parameters(a1111_png(tmp_path / "b.png", text), models_dir=models)
    assert missing.model_problem.startswith("hires checkpoint: ") and "'second'" in missing.model_problem


def test_our_record_keeps_the_hires_checkpoint_as_a_file_name_and_the_rerun_finds_it(tmp_path):
    from PIL import Image

    from sdstudio.engine.model_files import model_hash
    from sdstudio.history.file_parameters import read_file_parameters
    from sdstudio.history.png import save_png
    from sdstudio.history.record import Record, request_to_dict

    models = tmp_path / "models"
    models.mkdir()
    second = models / "second.safetensors"
    second.write_bytes(b"weights two")
    req = BASE.replace(hires_checkpoint="/elsewhere/second.safetensors",
                       hires_checkpoint_hash=model_hash(second))
    assert request_to_dict(req)["hires_checkpoint"] == "second.safetensors"  # no path leaves the machine
    record = Record(id="x", created=1.0, request=req, model_name="m")
    save_png(tmp_path / "ours.png", Image.new("RGB", (8, 8)), format_parameters(req, "m"), record.to_json())
    found = read_file_parameters(tmp_path / "ours.png", models_dir=models)
    assert found.request.hires_checkpoint == str(second) and not found.model_problem.startswith("hires")
