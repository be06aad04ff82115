"""ControlNet units in history: A1111's "ControlNet N" infotext written and read back (and A1111's own text
read), our record keeping every unit with its image as a sidecar, and a re-run restoring the units with
their images and their model files found in models/ControlNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageChops

from sdstudio.engine.errors import ModelNotFound, RequestError
from sdstudio.engine.request import ControlUnit, GenerationRequest
from sdstudio.history.control_parameters import control_settings, parse_unit, unit_text
from sdstudio.history.layout import Layout, sidecar_owner
from sdstudio.history.parameters import format_parameters, parse_parameters, request_from_parameters
from sdstudio.history.png import read_png_parameters
from sdstudio.history.record import Record, record_from_json
from sdstudio.history.store import HistoryStore

A1111_TEXT = (
    'a house\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 5, '
    'Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, '
    'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 0.8, Resize Mode: Crop and '
    'Resize, Processor Res: 512, Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, Guidance End: 0.9, '
    'Pixel Perfect: False, Control Mode: My prompt is more important", '
    'ControlNet 2: "Module: none, Model: control_v11p_sd15_scribble [4e6af23e], Weight: 1.0, Resize Mode: Just '
    'Resize, Processor Res: -1, Threshold A: -1, Threshold B: -1, Guidance Start: 0.2, Guidance End: 1.0, '
    'Pixel Perfect: True, Control Mode: ControlNet is more important", '
    'Version: v1.9.4'
)


def textured(w=24, h=16, seed=0, mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, len(mode)), dtype=np.uint8), mode)


def units() -> tuple[ControlUnit, ...]:
    return (
        ControlUnit(model="/m/ControlNet/control_v11p_sd15_canny.safetensors", image=textured(seed=1),
                    preprocessor="canny", preprocessor_params=(("low", 50), ("high", 150), ("sigma", 1.5)),
                    strength=0.75, start=0.1, end=0.8, mode="ControlNet is more important",
                    resize_mode="Resize and Fill", model_hash="0123abcd"),
        ControlUnit(model="/m/ControlNet/sketch.safetensors", image=textured(seed=2, mode="RGBA"),
                    preprocessor="inpaint_only"),
    )


def test_a1111_text_of_a_unit():
    unit = ControlUnit(model="C:\\cn\\control_v11p_sd15_canny.safetensors", preprocessor="canny",
                       model_hash="d14c016b")
    assert unit_text(unit) == (
        "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: Crop and Resize, "
        "Processor Res: 512, Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, Guidance End: 1.0, "
        "Pixel Perfect: False, Control Mode: Balanced")
    # no resolution and no sliders: those fields are left out, as sd-webui-controlnet leaves hidden sliders out
    plain = unit_text(ControlUnit(model="a,b:c.pth", preprocessor="invert"))
    assert "Processor Res" not in plain and "Threshold" not in plain and "Model: abc," in plain
    assert "Threshold A: 2.5" in unit_text(ControlUnit(model="t", preprocessor="tile_resample",
                                                       preprocessor_params=(("rate", 2.5),)))


def test_units_round_trip_through_the_parameters_text():
    request = GenerationRequest(prompt="p", seed=3, control_units=units())
    text = format_parameters(request, "model")
    assert 'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [0123abcd], Weight: 0.75,' in text
    assert 'ControlNet 1: "Module: inpaint_only, Model: sketch, Weight: 1.0, Resize Mode: Crop and Resize,' in text
    back = request_from_parameters(parse_parameters(text)).control_units
    first, second = back
    assert first == ControlUnit(model="control_v11p_sd15_canny", preprocessor="canny",
                                preprocessor_params=(("resolution", 512), ("low", 50), ("high", 150)),
                                strength=0.75, start=0.1, end=0.8, mode="ControlNet is more important",
                                resize_mode="Resize and Fill", model_hash="0123abcd")
    assert (second.model, second.preprocessor, second.preprocessor_params) == ("sketch", "inpaint_only", ())
    assert request_from_parameters(parse_parameters(format_parameters(GenerationRequest(), ""))).control_units == ()


def test_a1111_text_reads_in_slot_order_skipping_hidden_sliders():
    request = request_from_parameters(parse_parameters(A1111_TEXT))
    canny, scribble = request.control_units
    assert (canny.model, canny.model_hash, canny.strength, canny.end) == ("control_v11p_sd15_canny", "d14c016b", 0.8, 0.9)
    assert canny.preprocessor_params == (("resolution", 512), ("low", 100), ("high", 200))
    assert canny.mode == "My prompt is more important" and canny.resize_mode == "Crop and Resize"
    assert (scribble.preprocessor, scribble.preprocessor_params, scribble.start) == ("none", (), 0.2)
    assert (scribble.mode, scribble.resize_mode) == ("ControlNet is more important", "Just Resize")


def test_old_enum_names_and_units_without_a_model():
    unit = parse_unit("Module: depth, Model: control_sd15_depth [fef5e48e], Weight: 1, Resize Mode: "
                      "ResizeMode.INNER_FIT, Control Mode: ControlMode.CONTROL")
    assert (unit.preprocessor, unit.resize_mode, unit.mode) == ("depth_midas", "Crop and Resize",
                                                                "ControlNet is more important")
    assert parse_unit("Module: canny, Model: None, Weight: 1.0") is None
    assert control_settings({"Steps": "20"}) == {}


@pytest.mark.parametrize(("text", "message"), [
    ("Module: reference_only, Model: x", "unknown preprocessor 'reference_only'"),
    ("Module: canny, Model: x, Weight: heavy", "weight must be a number"),
    ("Module: canny, Model: x, Control Mode: Loud", "control mode must be one of"),
    ("Module: canny, Model: x, Threshold A: 999", "canny low 999 is out of range"),
    ("Module: canny, Model: x, Resize Mode", "is not a 'Field: value' pair"),
])
def test_bad_unit_text_is_a_clear_error(text, message):
    with pytest.raises(RequestError, match=message):
        request_from_parameters(parse_parameters(f'p\nSteps: 20, Seed: 1, Size: 64x64, ControlNet 0: "{text}"'))


def test_record_keeps_every_unit_field_and_refuses_hostile_ones():
    request = GenerationRequest(prompt="p", control_units=units())
    record = Record(id="0" * 32, created=1.0, request=request, control_files=("a.control0.png", ""))
    back = record_from_json(record.to_json())
    assert back.control_files == ("a.control0.png", "")
    first = back.request.control_units[0]
    assert first == units()[0].replace(model="control_v11p_sd15_canny.safetensors")  # names only, never paths
    assert first.image is None
    data = record.to_json()
    for hostile in ([{"model": 3}], [{"model": "x", "strength": "high"}], [{"model": "x", "mode": "Loud"}],
                    [{"model": "x", "preprocessor_params": [["low", "50"]]}], [{"model": "x"}] * 11, "x"):
        data["request"]["control_units"] = hostile
        with pytest.raises(ValueError):
            record_from_json(data)


def test_control_sidecars_belong_to_their_entry():
    assert sidecar_owner("2025-01-01/x.control3.png") == "2025-01-01/x.png"
    assert "d/x.control0.png" in Layout(Path("/tmp/nowhere")).entry_files("d/x.png")


@pytest.fixture
def store(tmp_path):
    opened = HistoryStore(tmp_path / "outputs")
    yield opened
    opened.close()


def models_with_controlnets(tmp_path) -> Path:
    models = tmp_path / "models"
    (models / "ControlNet" / "sub").mkdir(parents=True)
    (models / "ControlNet" / "control_v11p_sd15_canny.safetensors").write_bytes(b"c")
    (models / "ControlNet" / "sub" / "sketch.safetensors").write_bytes(b"s")
    return models


def test_rerun_restores_units_with_their_images_and_model_files(store, tmp_path):
    request = GenerationRequest(prompt="p", width=24, height=16, control_units=units())
    entry = store.add(textured(), request, "m", created=1_700_000_000.0)
    for n in (0, 1):
        assert entry.file.with_name(entry.file.stem + f".control{n}.png").is_file()
    models = models_with_controlnets(tmp_path)
    again = store.request_for(entry, models_dir=models)
    for restored, original in zip(again.control_units, units(), strict=True):
        assert ImageChops.difference(restored.image, original.image).getbbox() is None
        assert restored.image.mode == original.image.mode
    assert again.control_units[0].model == str(models / "ControlNet" / "control_v11p_sd15_canny.safetensors")
    assert again.control_units[1].model == str(models / "ControlNet" / "sub" / "sketch.safetensors")
    assert again.control_units[0].preprocessor_params == units()[0].preprocessor_params  # sigma too
    text, _ = read_png_parameters(entry.file)
    assert "ControlNet 0:" in text and "ControlNet 1:" in text
    # trashing the entry takes its control images along
    store.delete(entry.id)
    assert not any(entry.file.parent.glob("*.control*.png"))


def test_rerun_says_which_controlnet_file_or_image_is_missing(store, tmp_path):
    request = GenerationRequest(prompt="p", width=24, height=16, control_units=units())
    entry = store.add(textured(), request, "m", created=1_700_000_000.0)
    with pytest.raises(ModelNotFound, match=r"ControlNet 'control_v11p_sd15_canny.safetensors' \(unit 1\).*is not in"):
        store.request_for(entry, models_dir=tmp_path / "empty")
    entry.file.with_name(entry.file.stem + ".control1.png").unlink()
    with pytest.raises(RequestError, match="ControlNet unit 2 image .* is missing"):
        store.request_for(entry, models_dir=models_with_controlnets(tmp_path))


def test_rerun_finds_a_built_in_controlnet_unless_the_users_folder_has_one_of_that_name(store, tmp_path,
                                                                                      monkeypatch):
    from sdstudio import paths

    builtin = tmp_path / "builtin"
    builtin.mkdir()
    (builtin / "control_v11p_sd15_canny.safetensors").write_bytes(b"b")
    (builtin / "sketch.safetensors").write_bytes(b"b")
    monkeypatch.setattr(paths, "builtin_controlnet_dir", lambda: builtin)
    request = GenerationRequest(prompt="p", width=24, height=16, control_units=units())
    entry = store.add(textured(), request, "m", created=1_700_000_000.0)
    again = store.request_for(entry, models_dir=tmp_path / "empty")
    assert [u.model for u in again.control_units] == [str(builtin / "control_v11p_sd15_canny.safetensors"),
                                                      str(builtin / "sketch.safetensors")]
    models = models_with_controlnets(tmp_path)
    again = store.request_for(entry, models_dir=models)
    assert again.control_units[0].model == str(models / "ControlNet" / "control_v11p_sd15_canny.safetensors")
    assert again.control_units[1].model == str(models / "ControlNet" / "sub" / "sketch.safetensors")


def test_an_a1111_image_with_controlnet_asks_for_the_unit_images(tmp_path):
    from sdstudio.history.file_parameters import read_file_parameters
    from sdstudio.history.png import save_png

    path = tmp_path / "a1111.png"
    save_png(path, textured(), A1111_TEXT)
    found = read_file_parameters(path)
    assert len(found.request.control_units) == 2
    assert "ControlNet unit 1 image was not kept" in found.problem
    assert found.listing_request().prompt == "a house"


def test_too_many_units_are_refused_before_anything_is_written(store):
    request = GenerationRequest(prompt="p", width=8, height=8, control_units=(units()[0],) * 11)
    with pytest.raises(RequestError, match="at most 10"):
        store.add(textured(8, 8), request, "m")
    assert not any(store.root.rglob("*.png"))


def test_a_control_sidecar_name_that_is_a_path_is_refused_and_never_opened(tmp_path):
    from sdstudio.history.file_parameters import read_file_parameters
    from sdstudio.history.png import save_png

    secret = tmp_path / "secret.png"
    textured().save(secret)
    request = GenerationRequest(prompt="p", control_units=(units()[1].replace(image=None),))
    record = Record(id="0" * 32, created=1.0, request=request, control_files=("../secret.png",))
    folder = tmp_path / "shared"
    folder.mkdir()
    save_png(folder / "x.png", textured(), "", record.to_json())
    found = read_file_parameters(folder / "x.png")
    assert "ControlNet unit 1 image is named '../secret.png', which is not a plain file name; refused" in found.problem
    assert found.request.control_units[0].image is None
