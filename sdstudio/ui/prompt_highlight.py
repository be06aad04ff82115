"""Syntax highlighting for the prompt boxes: prompt editing `[a:b:when]`, alternation `[a|b]`, `AND` with
sub-prompt weights, `<lora:…>` tags, emphasis `( )`, `[ ]`, `(x:1.2)` and escapes, and problems underlined
in place while typing.

The spans come from the engine's own parser (engine/prompt_schedule.py, torch-free) through
`highlight_spans`, a plain function; PromptHighlighter only paints them, so what is highlighted is what the
engine will do. A "problem" is a prompt the engine refuses (the counter shows "!" with the message); a
"warning" is text A1111 reads, but likely not as meant (a stray bracket, a `|` outside `[a|b]`).
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QSyntaxHighlighter, QTextCharFormat, QTextDocument

from sdstudio.engine.extra_networks import tag_spans
from sdstudio.engine.prompt_schedule import Span, spans

# Colours chosen to read on both the light and the dark theme.
COLOURS = {
    "schedule": "#2f8fd8", "when": "#d08a1e", "alternate": "#b05fd0", "and": "#2faa6a",
    "weight": "#d08a1e", "emphasis": "#7f8c9a", "escape": "#7f8c9a", "lora": "#2faa6a",
}
UNDERLINES = {"problem": "#e0443a", "warning": "#d8a020"}


def highlight_spans(text: str, tags: bool = False) -> list[Span]:
    """The spans to paint in a prompt box. `tags`: the positive prompt (AND splits it and `<lora:…>` tags
    are taken out before encoding); the negative prompt has neither, as in A1111. Overlapping tag
    characters are not parsed as prompt syntax (the engine removes the tag first)."""
    lora = [Span(start, end, "lora") for start, end in tag_spans(text)] if tags else []
    blanked = text
    for span in lora:
        blanked = blanked[:span.start] + " " * (span.end - span.start) + blanked[span.end:]
    return sorted([*lora, *spans(blanked, split=tags)], key=lambda s: (s.start, s.end))


def first_problem(found: list[Span], kind: str = "problem") -> str:
    """The message of the first span of `kind` ("" for none)."""
    return next((span.message for span in found if span.kind == kind), "")


def _utf16_offsets(text: str) -> list[int]:
    """Document position (UTF-16 units) of each Python character offset 0..len(text)."""
    out, position = [0], 0
    for char in text:
        position += 2 if ord(char) > 0xFFFF else 1
        out.append(position)
    return out


class PromptHighlighter(QSyntaxHighlighter):
    """Paints highlight_spans over a prompt box's document; `spans` holds the last whole-text result."""

    def __init__(self, document: QTextDocument, tags: bool = False) -> None:
        self.tags = tags
        self._text: str | None = None
        self.spans: list[Span] = []
        self._positions: list[int] = [0]
        self._painted: list[Span] = []
        super().__init__(document)
        # Qt repaints only the edited block (and the ones after it while their state changes); a bracket typed
        # on one line can change what an earlier line means, so a change of the spans repaints everything.
        document.contentsChanged.connect(self._repaint_if_changed)

    def _update(self) -> None:
        text = self.document().toPlainText()
        if text != self._text:
            self._text = text
            self.spans = highlight_spans(text, self.tags)
            self._positions = _utf16_offsets(text)

    def _repaint_if_changed(self) -> None:
        self._update()
        if self.spans != self._painted:
            self._painted = self.spans
            self.rehighlight()

    def current(self) -> list[Span]:
        """The spans of the document's text now."""
        self._update()
        return self.spans

    def highlightBlock(self, block_text: str) -> None:  # noqa: N802 (Qt's name)
        self._update()
        block = self.currentBlock()
        start, length = block.position(), block.length()
        # colours first, then underlines merged over them, so a problem around syntax keeps its colours
        for underline in (False, True):
            for span in self.spans:
                if (span.kind in UNDERLINES) != underline:
                    continue
                first, last = self._positions[span.start], self._positions[span.end]
                if last <= start or first >= start + length:
                    continue
                begin, end = max(first, start) - start, min(last, start + length) - start
                if not underline:
                    self.setFormat(begin, end - begin, _format(span.kind))
                    continue
                for position in range(begin, end):
                    merged = QTextCharFormat(self.format(position))
                    merged.merge(_format(span.kind))
                    self.setFormat(position, 1, merged)


def _format(kind: str) -> QTextCharFormat:
    fmt = QTextCharFormat()
    if kind in UNDERLINES:
        fmt.setUnderlineStyle(QTextCharFormat.UnderlineStyle.WaveUnderline)
        fmt.setUnderlineColor(QColor(UNDERLINES[kind]))
        return fmt
    fmt.setForeground(QColor(COLOURS[kind]))
    if kind in ("schedule", "alternate", "and"):
        fmt.setFontWeight(QFont.Weight.Bold)
    return fmt
