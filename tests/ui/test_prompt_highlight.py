"""Prompt box highlighting: spans from the engine's parser (no Qt), painted per block, problems in place."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QColor, QTextCharFormat
from PySide6.QtWidgets import QPlainTextEdit

from sdstudio.ui.prompt_highlight import COLOURS, PromptHighlighter, first_problem, highlight_spans
from sdstudio.ui.prompt_panel import PromptPanel
from sdstudio.ui.prompt_state import PromptState
from sdstudio.ui.token_counter import LazyTokenCounter


def kinds(text: str, tags: bool = True) -> set[tuple[str, str]]:
    return {(text[s.start:s.end], s.kind) for s in highlight_spans(text, tags)}


def test_spans_cover_every_construct_of_the_positive_prompt():
    text = "a [cat:dog:0.5] [x|y] (big:1.2) [small] \\(lit\\) <lora:ink:0.8> AND b :0.7"
    found = kinds(text)
    assert {("[", "schedule"), ("0.5", "when"), ("|", "alternate"), ("(", "emphasis"), (":1.2", "weight"),
            ("[", "emphasis"), ("\\(", "escape"), ("<lora:ink:0.8>", "lora"), ("AND", "and"),
            (" :0.7", "weight")} <= found
    # the tag's colons are not prompt syntax: the engine removes the tag before parsing
    assert not [s for s in highlight_spans(text, True) if s.kind in ("problem", "warning")]


def test_the_negative_prompt_has_no_and_and_no_tags():
    found = kinds("<lora:ink:1> AND [a:b:3]", tags=False)
    assert ("AND", "and") not in found and not any(kind == "lora" for _, kind in found)
    assert ("3", "when") in found


def test_problems_and_warnings_are_told_apart():
    deep = highlight_spans("(" * 5000 + "x", True)
    assert "deep" in first_problem(deep) and first_problem(deep, "warning") == ""
    stray = highlight_spans("a | b [c:d:2]", True)
    assert first_problem(stray) == "" and "'|'" in first_problem(stray, "warning")
    assert "not closed" in first_problem(highlight_spans("a [b", True), "warning")


def formats(edit: QPlainTextEdit, block: int) -> list[tuple[int, int, str, bool]]:
    """(start, length, foreground colour, wave underline) of each painted range of a block."""
    out = []
    for r in edit.document().findBlockByNumber(block).layout().formats():
        fmt = QTextCharFormat(r.format)
        wave = fmt.underlineStyle() == QTextCharFormat.UnderlineStyle.WaveUnderline
        out.append((r.start, r.length, fmt.foreground().color().name(), wave))
    return out


def test_highlighter_paints_per_block_with_utf16_positions(qtbot):
    edit = QPlainTextEdit()
    qtbot.addWidget(edit)
    highlighter = PromptHighlighter(edit.document(), tags=True)
    edit.setPlainText("🍎 [a|b]\nx [c:d:3] AND y")
    first = formats(edit, 0)
    # the emoji is two UTF-16 units: '[' sits at 3 in the block, '|' at 5, ']' at 7
    coloured = {(start, colour) for start, _, colour, _ in first}
    assert {(3, QColor(COLOURS["alternate"]).name()), (5, QColor(COLOURS["alternate"]).name()),
            (7, QColor(COLOURS["alternate"]).name())} <= coloured
    second = {(start, length, colour) for start, length, colour, _ in formats(edit, 1)}
    assert (7, 1, QColor(COLOURS["when"]).name()) in second and (10, 3, QColor(COLOURS["and"]).name()) in second
    assert highlighter.current() == highlight_spans(edit.toPlainText(), True)


def test_typing_on_a_later_line_repaints_an_earlier_one(qtbot):
    edit = QPlainTextEdit()
    qtbot.addWidget(edit)
    PromptHighlighter(edit.document(), tags=True)
    edit.setPlainText("a [b\nc:d")
    assert (2, True) in [(s, wave) for s, _, _, wave in formats(edit, 0)]  # '[' not closed: a warning
    cursor = edit.textCursor()
    cursor.movePosition(cursor.MoveOperation.End)
    edit.setTextCursor(cursor)
    qtbot.keyClicks(edit, ":2]")
    first = formats(edit, 0)
    assert (2, 1, QColor(COLOURS["schedule"]).name(), False) in first and not any(w for *_, w in first)


def test_a_problem_is_underlined_in_place(qtbot):
    edit = QPlainTextEdit()
    qtbot.addWidget(edit)
    PromptHighlighter(edit.document(), tags=False)
    edit.setPlainText("ok [a:b:1e999] rest")
    painted = formats(edit, 0)
    underlined = sorted(position for s, n, _, wave in painted if wave for position in range(s, s + n))
    assert underlined == list(range(19))  # the block's text, every character
    assert (8, 5, QColor(COLOURS["when"]).name(), True) in painted  # colours kept under the underline


@pytest.fixture
def panel(qtbot, home):
    panel = PromptPanel(PromptState(), LazyTokenCounter(loader=lambda: None))
    qtbot.addWidget(panel)
    return panel


def test_the_counter_shows_a_parse_problem_while_typing(panel):
    label = panel.prompt_edit._label
    panel.prompt_edit.setPlainText("a [b:c:2]")
    assert label.text() != "!"
    panel.prompt_edit.setPlainText("[" * 200 + "b")
    assert label.text() == "!" and "deep" in label.toolTip()
    panel.prompt_edit.setPlainText("a | b")
    assert label.text() != "!" and "'|'" in label.toolTip()
    panel.negative_edit.setPlainText("[x:y:1e999]")
    assert panel.negative_edit._label.text() == "!" and "finite" in panel.negative_edit._label.toolTip()
