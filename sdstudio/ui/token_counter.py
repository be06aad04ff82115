"""Token counting for the prompt boxes: how many CLIP tokens, and where each 75-token chunk begins.

The engine encodes prompts in chunks of 75 tokens (77 with BOS/EOS); `BREAK` starts a new chunk early. A1111's
emphasis syntax — `(word)`, `[word]`, `(word:1.3)` — costs no tokens, so it is stripped before counting;
`\\(` is a literal bracket. The real CLIP tokenizer is loaded lazily off the GUI thread; until it is there
(or when it cannot load) a per-word estimate stands in and the count is marked as estimated.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from PySide6.QtCore import QObject, Signal

CHUNK_TOKENS = 75

# Order matters: escaped brackets are text, a weight like ":1.3)" and bare brackets are syntax, BREAK splits.
_WEIGHT = r":\s*[+-]?(?:\d+\.?\d*|\.\d+)\s*\)"
_SYNTAX = re.compile(rf"\\[()\[\]]|{_WEIGHT}|[()\[\]]|\bBREAK\b|(?:[^\s()\[\]\\:]|:(?!{_WEIGHT[1:]}))+|[:\\]")
_MARKUP = re.compile(rf"{_WEIGHT}|[()\[\]]")
_ESTIMATE_PIECES = re.compile(r"[^\W\d_]+|\d|[^\w\s]+|_+")

WordCounter = Callable[[str], int]


@dataclass(frozen=True)
class TokenCount:
    tokens: int
    chunks: int
    boundaries: tuple[int, ...]  # character offsets where chunks 2, 3, ... begin
    estimated: bool


def estimate_word(word: str) -> int:
    """Lower-bound guess without the tokenizer: a letter run, a digit, or a punctuation run is one token."""
    return len(_ESTIMATE_PIECES.findall(word))


def count_prompt(text: str, count_word: WordCounter | None = None) -> TokenCount:
    """Count tokens chunk by chunk; a word that would cross the 75-token line starts the next chunk."""
    counter = count_word or estimate_word
    tokens, in_chunk, boundaries = 0, 0, []
    pending_break = False
    for match in _SYNTAX.finditer(text):
        piece = match.group()
        if piece == "BREAK":
            pending_break = in_chunk > 0
            continue
        if _MARKUP.fullmatch(piece):
            continue
        n = counter(piece[1:] if piece.startswith("\\") else piece)
        if n == 0:
            continue
        if pending_break or (in_chunk and in_chunk + n > CHUNK_TOKENS):
            boundaries.append(match.start())
            in_chunk, pending_break = 0, False
        tokens += n
        in_chunk += n
    return TokenCount(tokens, len(boundaries) + 1, tuple(boundaries), estimated=count_word is None)


def format_count(count: TokenCount) -> str:
    """'12/75', '80/150' (the limit grows by chunks); '≈' marks an estimate."""
    approx = "≈" if count.estimated else ""
    return f"{approx}{count.tokens}/{CHUNK_TOKENS * count.chunks}"


def word_counter_from_tokenizer(tokenizer) -> WordCounter:
    """Per-word counts with a cache: typing re-counts the whole prompt on every key press."""

    @lru_cache(maxsize=4096)
    def count(word: str) -> int:
        return len(tokenizer.tokenize(word))

    return count


def _load_real_counter() -> WordCounter:
    from sdstudio.engine.tokenizer import load_tokenizer

    return word_counter_from_tokenizer(load_tokenizer())


class LazyTokenCounter(QObject):
    """Holds the word counter; loads the real tokenizer in a background thread and says when it is ready."""

    ready = Signal()

    def __init__(self, loader: Callable[[], WordCounter] = _load_real_counter, parent: QObject | None = None):
        super().__init__(parent)
        self._loader = loader
        self._counter: WordCounter | None = None
        self._started = False
        self.error = ""

    def start(self) -> None:
        if not self._started:
            self._started = True
            threading.Thread(target=self._load, name="tokenizer-loader", daemon=True).start()

    def count(self, text: str) -> TokenCount:
        return count_prompt(text, self._counter)

    def _load(self) -> None:
        try:
            counter = self._loader()
        except Exception as exc:  # any failure keeps the estimate; the tooltip says why
            self.error = f"{type(exc).__name__}: {exc}"
            return
        self._counter = counter
        self.ready.emit()
