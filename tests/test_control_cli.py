"""`generate`'s ControlNet flags: the n-th of each flag belongs to unit n, defaults fill the rest, and bad
flags are refused with one line before anything loads."""

from __future__ import annotations

import pytest
from PIL import Image

from sdstudio.cli import build_parser, main
from sdstudio.engine.request import ControlUnit
from sdstudio.generate_cli import build_request


def args_for(*argv: str):
    return build_parser().parse_args(["generate", "--seed", "1", *argv])


@pytest.fixture
def files(tmp_path):
    canny = tmp_path / "control_v11p_sd15_canny.safetensors"
    scribble = tmp_path / "control_v11p_sd15_scribble.safetensors"
    for f in (canny, scribble):
        f.write_bytes(b"not read by the flags")
    photo, sketch = tmp_path / "photo.png", tmp_path / "sketch.png"
    Image.new("RGB", (40, 30), (10, 20, 30)).save(photo)
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(sketch)
    return canny, scribble, photo, sketch


def test_one_unit_with_every_flag(files):
    canny, _, photo, _ = files
    req = build_request(args_for("--control-model", str(canny), "--control-image", str(photo),
                                 "--control-preprocessor", "canny", "--control-params", "low=50,high=150,sigma=1.5",
                                 "--control-strength", "0.8", "--control-start", "0.1", "--control-end", "0.9",
                                 "--control-mode", "prompt", "--control-resize", "fill"))
    [unit] = req.control_units
    assert unit == ControlUnit(model=str(canny), preprocessor="canny",
                               preprocessor_params=(("low", 50), ("high", 150), ("sigma", 1.5)), strength=0.8,
                               start=0.1, end=0.9, mode="My prompt is more important", resize_mode="Resize and Fill")
    assert unit.image.size == (40, 30)


def test_a_model_name_finds_the_built_in_controlnet(files, home, monkeypatch, tmp_path):
    from sdstudio import paths

    _, _, photo, _ = files
    builtin = tmp_path / "builtin"
    builtin.mkdir()
    (builtin / "sdstudio-emoji_canny.safetensors").write_bytes(b"not read by the flags")
    monkeypatch.setattr(paths, "builtin_controlnet_dir", lambda: builtin)
    req = build_request(args_for("--control-model", "sdstudio-emoji_canny", "--control-image", str(photo),
                                 "--control-preprocessor", "auto"))
    [unit] = req.control_units
    assert (unit.model, unit.preprocessor) == (str(builtin / "sdstudio-emoji_canny.safetensors"), "canny")


def test_two_units_take_the_nth_flags_and_defaults_for_the_rest(files):
    canny, scribble, photo, sketch = files
    req = build_request(args_for("--control-model", str(canny), "--control-image", str(photo),
                                 "--control-model", str(scribble), "--control-image", str(sketch),
                                 "--control-preprocessor", "auto", "--control-strength", "0.5",
                                 "--control-mode", "balanced", "--control-mode", "control"))
    first, second = req.control_units
    assert (first.model, first.preprocessor, first.strength, first.mode) == (str(canny), "canny", 0.5, "Balanced")
    assert (second.model, second.preprocessor, second.strength) == (str(scribble), "none", 1.0)
    assert second.mode == "ControlNet is more important"
    assert (second.start, second.end, second.resize_mode) == (0.0, 1.0, "Crop and Resize")
    assert second.image.mode == "RGBA"  # kept as given: inpaint_only reads its alpha
    assert build_request(args_for()).control_units == ()


@pytest.mark.parametrize(("extra", "message"), [
    (["--control-image", "{photo}"], "--control-image needs a --control-model"),
    (["--control-model", "{canny}"], "1 --control-model but 0 --control-image"),
    (["--control-model", "{canny}", "--control-image", "{photo}", "--control-strength", "1", "--control-strength",
      "1"], "2 --control-strength for 1 --control-model"),
    (["--control-model", "{tmp}/missing.safetensors", "--control-image", "{photo}"], "no such file, nor a ControlNet of that name"),
    (["--control-model", "{canny}", "--control-image", "{tmp}/missing.png"], "unit 1: --control-image"),
    (["--control-model", "{canny}", "--control-image", "{canny}"], "not a readable image"),
    (["--control-model", "{canny}", "--control-image", "{photo}", "--control-preprocessor", "edges"],
     "unknown preprocessor 'edges'"),
    (["--control-model", "{canny}", "--control-image", "{photo}", "--control-preprocessor", "depth_midas"],
     "preprocessor depth_midas is unavailable: no annotator file"),
    (["--control-model", "{canny}", "--control-image", "{photo}", "--control-preprocessor", "canny",
      "--control-params", "low=999"], "canny low 999 is out of range"),
    (["--control-model", "{canny}", "--control-image", "{photo}", "--control-params", "low=1"],
     "preprocessor none has no setting 'low'"),
    (["--control-model", "{canny}", "--control-image", "{photo}", "--control-strength", "3"],
     "--control-strength 3 is out of range"),
    (["--control-model", "{canny}", "--control-image", "{photo}", "--control-start", "0.6", "--control-end", "0.5"],
     "--control-start 0.6 must be below --control-end 0.5"),
    (["--control-model", "{canny}", "--control-image", "{photo}", "--no-control"], "contradict"),
])
def test_bad_control_flags_are_refused_before_loading(home, files, tmp_path, capsys, extra, message):
    canny, _, photo, _ = files
    argv = [a.format(canny=canny, photo=photo, tmp=tmp_path) for a in extra]
    assert main(["generate", "--seed", "1", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bad_params_text_and_mode_are_argparse_errors(capsys):
    with pytest.raises(SystemExit):
        args_for("--control-params", "low")
    assert "not a setting" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        args_for("--control-mode", "strong")


def test_no_control_drops_units_and_nothing_changes_without_flags(files):
    canny, _, photo, _ = files
    from sdstudio.control_cli import control_options

    req = build_request(args_for("--control-model", str(canny), "--control-image", str(photo)))
    assert control_options(req, args_for("--no-control")).control_units == ()
    assert control_options(req, args_for()).control_units == req.control_units


def test_from_an_image_made_with_controlnet_restores_its_units_and_flags_replace_them(home, files):
    from sdstudio import paths
    from sdstudio.engine.request import GenerationRequest
    from sdstudio.history.store import HistoryStore

    canny, scribble, photo, _ = files
    folder = paths.controlnet_dir()
    folder.mkdir(parents=True)
    (folder / canny.name).write_bytes(b"c")
    source = Image.open(photo).copy()
    unit = ControlUnit(model=str(canny), image=source, preprocessor="canny", strength=0.6, model_hash="0123abcd")
    request = GenerationRequest(prompt="p", seed=4, width=8, height=8, model="", control_units=(unit,))
    store = HistoryStore(paths.outputs_dir(), paths.history_db())
    try:
        entry = store.add(Image.new("RGB", (8, 8)), request, "m")
    finally:
        store.close()
    again = build_request(args_for("--from", str(entry.file)))
    [restored] = again.control_units
    assert restored.model == str(folder / canny.name) and restored.strength == 0.6
    assert restored.image.tobytes() == source.tobytes()
    replaced = build_request(args_for("--from", str(entry.file), "--control-model", str(scribble), "--control-image",
                                      str(photo)))
    assert [u.model for u in replaced.control_units] == [str(scribble)]
    assert build_request(args_for("--from", str(entry.file), "--no-control")).control_units == ()
