"""printable/quoted: text from files shown as what it is, never acted on by a terminal or a text widget."""

from __future__ import annotations

import pytest

from sdstudio.untrusted import printable, quoted

HOSTILE = "ok\x1b[2J\x1b]0;title\x07\rOK\x00\x7f\x85\u202eevil\u2066\u2069\u2028\ud800 end"


def test_every_control_bidi_and_surrogate_character_becomes_a_visible_escape() -> None:
    shown = printable(HOSTILE)
    assert shown == ("ok\\x1b[2J\\x1b]0;title\\x07\\x0dOK\\x00\\x7f\\x85\\u202eevil\\u2066\\u2069\\u2028"
                     "\\ud800 end")
    assert shown.isprintable()
    shown.encode("utf-8")  # a lone surrogate would raise here (and in print)


def test_newlines_and_tabs_stay_in_multiline_text_and_are_escaped_on_one_line() -> None:
    text = "a prompt\n\tNegative prompt: x"
    assert printable(text) == text
    assert printable(text, multiline=False) == "a prompt\\x0a\\x09Negative prompt: x"


@pytest.mark.parametrize("code", [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)])
def test_each_dangerous_code_point_is_escaped(code) -> None:
    assert chr(code) not in printable(f"a{chr(code)}b", multiline=False)


def test_ordinary_text_is_untouched() -> None:
    text = "Füchse, 狐, émoji 🦊 — \"quotes\" 'and' back\\slash"
    assert printable(text) == text


def test_length_is_capped_and_the_cut_is_said() -> None:
    shown = printable("x" * 10_000, limit=100)
    assert shown.startswith("x" * 100) and shown.endswith("(9900 more characters)") and len(shown) < 130
    assert printable("x" * 100, limit=100) == "x" * 100


def test_quoted_names_fit_on_one_line() -> None:
    assert quoted("model.diffusion_model.x") == "'model.diffusion_model.x'"
    assert quoted("a\nb\x1b") == "'a\\x0ab\\x1b'"
    assert quoted([1, "\x1b"]) == "[1, '\\x1b']"
    assert "\n" not in quoted("\n" * 1000) and len(quoted("y" * 10**6)) < 260


# Where file text is shown: the `params` command, engine errors quoting tensor names, model look-ups.

ESC = "\x1b[2J\x1b[1;1HOK\r\u202e"


def write_safetensors(path, header: dict) -> None:
    import json
    import struct

    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def test_params_prints_metadata_escaped(tmp_path, capsys) -> None:
    from PIL import Image, PngImagePlugin

    from sdstudio.cli import main

    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", f"a fox{ESC}\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 8x8")
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png", pnginfo=info)
    assert main(["params", str(tmp_path / "x.png")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert "a fox\\x1b[2J\\x1b[1;1HOK\\x0d\\u202e\nSteps: 20" in out


@pytest.mark.parametrize("entry", [
    {"dtype": "BAD", "shape": [1], "data_offsets": [0, 1]},
    {"dtype": "F32", "shape": "x", "data_offsets": [0, 4]},
    {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]},
    "not an entry",
])
def test_safetensors_errors_quote_tensor_names_escaped(tmp_path, entry) -> None:
    from sdstudio.engine.errors import CheckpointError
    from sdstudio.engine.safetensors_file import read_header

    write_safetensors(tmp_path / f"m{ESC}.safetensors", {f"w{ESC}" + "n" * 5000: entry})
    with pytest.raises(CheckpointError) as caught:
        read_header(tmp_path / f"m{ESC}.safetensors")
    message = str(caught.value)
    assert message.isprintable() and "\\x1b[2J" in message and len(message) < 800


def test_detect_names_sample_keys_escaped(tmp_path) -> None:
    from sdstudio.engine.detect import detect
    from sdstudio.engine.errors import CheckpointError
    from sdstudio.engine.safetensors_file import read_header

    write_safetensors(tmp_path / "m.safetensors", {f"a{ESC}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}})
    with pytest.raises(CheckpointError) as caught:
        detect(read_header(tmp_path / "m.safetensors"))
    assert str(caught.value).isprintable() and "a\\x1b[2J" in str(caught.value)


def test_model_not_found_names_the_model_escaped(tmp_path) -> None:
    from sdstudio.engine.errors import ModelNotFound
    from sdstudio.engine.model_files import resolve_model

    with pytest.raises(ModelNotFound) as caught:
        resolve_model(f"evil{ESC}", f"01234{ESC}", tmp_path)
    assert str(caught.value).isprintable() and "'evil\\x1b[2J" in str(caught.value)


def test_the_cli_error_line_escapes_a_hostile_file_name(tmp_path, capsys):
    from sdstudio.cli import main

    hostile = tmp_path / "\x1b[2J\x1b[32mOK\x1b[0m.safetensors"
    hostile.write_bytes(b"\x00" * 4)
    assert main(["inspect", str(hostile)]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\\x1b[2J" in err and err.count("\n") == 1
