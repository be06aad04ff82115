"""Token counting for the prompt boxes: how many CLIP tokens, and where each 75-token chunk begins.

The count is the engine's own chunk layout (sdstudio/engine/prompt_grammar.py: emphasis syntax, BREAK, the
comma backtrack), so what the box shows is what the engine encodes. The real CLIP tokenizer is loaded lazily
off the GUI thread; until it is there (or when it cannot load) an estimating tokenizer stands in and the count
is marked as estimated.

Embeddings count one token per vector, as the engine lays them out. The UI never loads torch, so the vector
counts come from the files' headers (engine/embedding_files.py: safetensors shapes, and for `.pt`/`.bin` the
torch.save archive's pickle read with shape stand-ins, nothing else built); a file whose count cannot be told
that way (a legacy pickle) is counted as one vector and the count is marked as estimated. The width check
needs the loaded model and stays with the engine, which refuses a mismatched embedding when generating.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from sdstudio.engine.embedding_files import EmbeddingCounts
from sdstudio.engine.errors import NetworkFileError, RequestError
from sdstudio.engine.extra_networks import tag_spans
from sdstudio.engine.prompt_grammar import CHUNK_TOKENS, COMMA, Tokenize, chunk_prompt
from sdstudio.engine.prompt_schedule import texts

__all__ = ["CHUNK_TOKENS", "LazyTokenCounter", "TokenCount", "cached_tokenize", "count_prompt",
           "estimate_tokenize", "format_count"]

_ESTIMATE_PIECES = re.compile(r"[^\W\d_]+|\d|[^\w\s]+|_+")
# Steps a prompt schedule is laid out over for counting (the box does not know the job's): enough for every
# text of a [from:to:when] with a fraction and of alternations of up to that many words.
COUNTED_STEPS = 60
_ESTIMATED_ID = 0  # any id but COMMA: the estimate only needs to know where commas are


@dataclass(frozen=True)
class TokenCount:
    tokens: int
    chunks: int
    boundaries: tuple[int, ...]  # character offsets where chunks 2, 3, ... begin
    estimated: bool
    problem: str = ""  # the engine's message when it would refuse this prompt (a malformed weight)
    unknown_embeddings: tuple[str, ...] = ()  # embeddings counted as one vector: their header does not say


def estimate_tokenize(texts: Sequence[str]) -> list[list[int]]:
    """Lower-bound guess without the tokenizer: a letter run, a digit, or a punctuation run is one token;
    a lone comma is CLIP's comma, so the estimate chunks like the engine does."""
    return [[COMMA if piece == "," else _ESTIMATED_ID for piece in _ESTIMATE_PIECES.findall(text)]
            for text in texts]


def count_prompt(text: str, tokenize: Tokenize | None = None,
                 embeddings: EmbeddingCounts | None = None, tags: bool = False) -> TokenCount:
    """The engine's chunk layout of `text`, with `tokenize` (None: the estimate) and `embeddings`. With `tags`
    (the positive prompt), `<lora:…>` tags are not counted: the engine removes them before encoding, as A1111
    does. They are blanked, not cut, so chunk offsets still point into what the user typed."""
    if tags:
        for start, end in tag_spans(text):
            text = text[:start] + " " * (end - start) + text[end:]
    unknown: set[str] = set()
    lookup = None if embeddings is None else embeddings.lookup(unknown)
    try:
        # Prompt editing, alternation and AND: each text a step encodes is its own prompt; the count is the
        # longest one's, and chunk starts are marked only when the box holds one text as typed.
        step_texts = texts(text, COUNTED_STEPS, split=tags)
        layouts = [chunk_prompt(t, tokenize or estimate_tokenize, embeddings=lookup) for t in step_texts]
    except (RequestError, NetworkFileError) as exc:  # shown while typing; generating reports it again
        return TokenCount(0, 1, (), estimated=tokenize is None, problem=str(exc))
    chunks = max(layouts, key=lambda found: (sum(len(chunk.tokens) for chunk in found), len(found)))
    tokens = sum(len(chunk.tokens) for chunk in chunks)
    # one text, a prefix of the typed one (an AND weight or trailing space cut off): its offsets hold
    plain = len(step_texts) == 1 and text.startswith(step_texts[0])
    boundaries = tuple(chunk.start for chunk in chunks[1:]) if plain else ()
    return TokenCount(tokens, len(chunks), boundaries, estimated=tokenize is None or bool(unknown),
                      unknown_embeddings=tuple(sorted(unknown)))


def format_count(count: TokenCount) -> str:
    """'12/75', '80/150' (the limit grows by chunks); '≈' marks an estimate, '!' a prompt the engine refuses."""
    if count.problem:
        return "!"
    approx = "≈" if count.estimated else ""
    return f"{approx}{count.tokens}/{CHUNK_TOKENS * count.chunks}"


def cached_tokenize(tokenize: Tokenize, size: int = 4096) -> Tokenize:
    """Per-text cache: typing re-counts the whole prompt on every key press, and the grammar asks per word."""
    cache: dict[str, list[int]] = {}
    lock = threading.Lock()

    def cached(texts: Sequence[str]) -> list[list[int]]:
        with lock:
            missing = list(dict.fromkeys(t for t in texts if t not in cache))
            if missing:
                if len(cache) + len(missing) > size:
                    cache.clear()
                cache.update(zip(missing, tokenize(missing), strict=True))
            return [cache[t] for t in texts]

    return cached


def _load_real_tokenize() -> Tokenize:
    # the plain-Python CLIP tokenizer, not torch: the GUI process stays free of torch until the worker
    # imports it.
    from sdstudio.engine.tokenizer import load_tokenizer, tokenize

    load_tokenizer()  # here, in the loader thread, not on the first key press
    return cached_tokenize(tokenize)


class LazyTokenCounter(QObject):
    """Holds the tokenize function; loads the real tokenizer in a background thread and says when it is ready."""

    ready = Signal()

    def __init__(self, loader: Callable[[], Tokenize | None] = _load_real_tokenize,
                 parent: QObject | None = None, relist_seconds: float = 10.0):
        super().__init__(parent)
        self._loader = loader
        self._tokenize: Tokenize | None = None
        self._started = False
        self.error = ""
        self.embeddings = EmbeddingCounts()
        # The embeddings folders are re-listed in the background at most this often while counting, so a
        # file dropped in while the app runs is counted (the engine re-lists for every generation).
        self.relist_seconds = relist_seconds
        self._listed = 0.0
        self._listing = False

    def refresh_embeddings(self, extra: Sequence[str] | None = None) -> None:
        """Re-list the embeddings folders ($SDSTUDIO_HOME/embeddings and `extra`, when given) and recount."""
        self.embeddings.refresh(extra)
        self.ready.emit()

    def start(self) -> None:
        if not self._started:
            self._started = True
            threading.Thread(target=self._load, name="tokenizer-loader", daemon=True).start()

    def count(self, text: str, tags: bool = False) -> TokenCount:
        if self._started and not self._listing and time.monotonic() - self._listed > self.relist_seconds:
            self._listing = True
            threading.Thread(target=self._relist, name="embeddings-lister", daemon=True).start()
        return count_prompt(text, self._tokenize, self.embeddings, tags)

    def _relist(self) -> None:
        before = self.embeddings.index.state
        try:
            self.embeddings.refresh()
        finally:
            self._listed, self._listing = time.monotonic(), False
        if self.embeddings.index.state != before:
            self.ready.emit()

    def _load(self) -> None:
        self._listing = True
        try:
            self.embeddings.refresh()  # a folder listing, off the GUI thread like the tokenizer
        finally:
            self._listed, self._listing = time.monotonic(), False
        try:
            tokenize = self._loader()
        except Exception as exc:  # any failure keeps the estimate; the tooltip says why
            self.error = f"{type(exc).__name__}: {exc}"
            return
        self._tokenize = tokenize
        self.ready.emit()
