"""The prompt text the LoRA / embedding browser writes: A1111's `<lora:NAME:WEIGHT>` tag, an embedding's name
(weighted as `(NAME:WEIGHT)`, A1111's attention syntax), found again to change its weight in place.

Plain text in, plain text out (Python string indices); the browser maps them to the editor's UTF-16 positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdstudio.network_catalog import LORA, NetworkEntry


@dataclass(frozen=True)
class TagSpan:
    start: int
    end: int
    weight: float


def weight_text(weight: float) -> str:
    """1 -> "1", 0.8 -> "0.8", 0.35 -> "0.35": as A1111 users write weights."""
    return f"{round(float(weight), 2):g}"


def tag_text(entry: NetworkEntry, weight: float = 1.0) -> str:
    if entry.kind == LORA:
        return f"<lora:{entry.name}:{weight_text(weight)}>"
    return entry.name if weight == 1 else f"({entry.name}:{weight_text(weight)})"


def _number(text: str | None, default: float = 1.0) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default


def find_tag(text: str, entry: NetworkEntry) -> TagSpan | None:
    """The first use of `entry` in the prompt and its weight; None when the prompt does not use it."""
    name = re.escape(entry.name)
    if entry.kind == LORA:
        m = re.search(rf"<lora:{name}(?::([^:>]*))?(?::[^>]*)?>", text)
        return None if m is None else TagSpan(m.start(), m.end(), _number(m.group(1)))
    weighted = re.search(rf"\(\s*{name}\s*:\s*([0-9.]+)\s*\)", text)
    bare = re.search(rf"(?<![\w.-]){name}(?![\w.-])", text)
    if weighted is not None and (bare is None or weighted.start() <= bare.start() - 1):
        return TagSpan(weighted.start(), weighted.end(), _number(weighted.group(1)))
    return None if bare is None else TagSpan(bare.start(), bare.end(), 1.0)


def insert_at(text: str, position: int, tag: str) -> tuple[str, int]:
    """`tag` inserted at `position` with a space on either side where a word would otherwise touch it;
    returns the new text and the position just after the tag."""
    position = max(0, min(position, len(text)))
    before = " " if position > 0 and not text[position - 1].isspace() else ""
    after = " " if position < len(text) and not text[position].isspace() else ""
    new = text[:position] + before + tag + after + text[position:]
    return new, position + len(before) + len(tag)


def utf16_position(text: str, index: int) -> int:
    """A Python string index as a Qt document position (UTF-16 units: an emoji counts two)."""
    return len(text[:index].encode("utf-16-le")) // 2


def python_index(text: str, position: int) -> int:
    """A Qt document position as a Python string index."""
    units = 0
    for index, char in enumerate(text):
        if units >= position:
            return index
        units += 2 if ord(char) > 0xFFFF else 1
    return len(text)
