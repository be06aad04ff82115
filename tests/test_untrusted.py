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
