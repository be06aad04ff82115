"""The one prompt grammar: AUTOMATIC1111's emphasis syntax (`modules/prompt_parser.py`,
parse_prompt_attention) and its 75-token chunk layout (`modules/sd_hijack_clip.py`, tokenize_line).
Torch-free: the engine encodes with it and the UI's token counter counts with it, so they cannot disagree.

    (text)        weight x 1.1, nested brackets multiply: ((text)) x 1.21
    (text:1.3)    weight x 1.3 (spaces allowed around the number)
    [text]        weight / 1.1
    \\( \\) \\[ \\] \\\\  literal characters
    BREAK         (capitals, a separate word) starts a new 75-token chunk

Unbalanced brackets behave as in A1111: a bracket left open applies to the end of the prompt, a stray
closing bracket is literal text. Weights are multiplied in the same order as A1111, so the floats are
identical (1.3 * 1.1 * 1.1 = 1.5730000000000004). One deliberate difference: A1111 multiplies a BREAK inside
brackets like text, which turns it into the literal word "BREAK"; here BREAK is always a chunk break.

Chunking: tokens fill chunks of 75; BREAK closes a chunk. When a chunk fills up and a comma lies within the
last `comma_backtrack` tokens (A1111's "comma_padding_backtrack", default 20), the tokens after that comma
move to the next chunk; 0 gives plain 75-token chunks.

Textual-inversion embeddings (with an `embeddings` lookup): a word, or a comma-separated part of one, that
names an embedding (A1111: the file stem; ComfyUI: `embedding:NAME`, `embedding:NAME.pt`) becomes that
embedding's n vectors, each taking one token slot with the word's weight. As in A1111's tokenize_line, an
embedding is never split: when it does not fit in what is left of a chunk, the chunk is closed (padded) and
the embedding starts the next one. Unlike A1111, a comma backtrack that moves tokens to the next chunk moves
an embedding's vectors with them (A1111 leaves its vectors at the old offsets, in the padding). A name holding
a space or a comma cannot be written this way (ComfyUI splits at spaces too).

Every character of a run remembers where it came from in the prompt, so each token and each chunk knows its
source offset (the prompt box marks where chunks 2, 3, ... begin). Runs are tokenised word by word (split at
space, tab and newline): CLIP's tokenizer never joins text across those, so the ids are the same as for the
whole run, and a caller can cache per word.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sdstudio.engine.clip_vocab import COMMA
from sdstudio.engine.errors import RequestError

CHUNK_TOKENS = 75  # 77 positions minus BOS and EOS
A1111_COMMA_BACKTRACK = 20
BREAK = ("BREAK", -1.0)

# texts -> token ids of each text, without BOS/EOS and without truncation
Tokenize = Callable[[Sequence[str]], list[list[int]]]
# (text, explicit) -> (embedding name, vector count), or None when `text` names no embedding. `explicit` is
# True for ComfyUI's `embedding:NAME` (text is NAME): the lookup raises when there is no such embedding.
EmbeddingLookup = Callable[[str, bool], "tuple[str, int] | None"]
EMBEDDING_PREFIX = "embedding:"
EMBEDDING_PLACEHOLDER = 0  # the token id an embedding's slots carry (A1111 too); the encoder replaces them
_COMMAS = re.compile(r"(,+)")

_TOKENS = re.compile(
    r"""
    \\\( | \\\) | \\\[ | \\] | \\\\ | \\     # escapes, and a lone backslash
    | \( | \[                               # openers
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)      # explicit weight closing a round bracket
    | \) | ]                                # closers
    | [^\\()\[\]:]+                         # plain text
    | :                                     # a colon that is not a weight
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
# Only the separators CLIP's tokenizer certainly splits at: other "whitespace" (\f, \x1c) it deletes instead.
_WORD = re.compile(r"[^ \t\n\r]+")
ROUND = 1.1
SQUARE = 1 / 1.1


@dataclass(frozen=True)
class Run:
    """Text of one weight, with the prompt offset of each of its characters; or a BREAK (`at`: its end)."""

    text: str
    weight: float
    starts: tuple[int, ...] = ()
    is_break: bool = False
    at: int = 0


@dataclass(frozen=True)
class EmbeddingSlot:
    """An embedding's place in a chunk: token slots start .. start + count - 1."""

    start: int
    name: str
    count: int


@dataclass(frozen=True)
class EmbeddingRef:
    """An embedding in the prompt, before layout: its name, vector count, weight and source offset."""

    name: str
    count: int
    weight: float
    offset: int


@dataclass
class Chunk:
    """Up to 75 prompt tokens and their weights, before BOS/EOS/padding.

    `offsets` holds each token's source offset in the prompt; `start` is where the chunk begins there (its
    first token, or the end of the BREAK that opened an empty chunk).
    """

    tokens: list[int]
    weights: list[float]
    offsets: list[int] = field(default_factory=list, compare=False)
    start: int = field(default=0, compare=False)
    embeddings: list[EmbeddingSlot] = field(default_factory=list)


def parse_runs(text: str) -> list[Run]:
    """Split a prompt into weighted runs that know their source offsets (see the module docstring)."""
    parts: list[list] = []  # [text, weight, is_break, starts, at]
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for part in parts[start:]:
            if not part[2]:
                part[1] *= factor

    for match in _TOKENS.finditer(text):
        token, weight, begin = match.group(0), match.group("weight"), match.start()
        if token.startswith("\\"):
            parts.append([token[1:], 1.0, False, [begin] * len(token[1:]), 0])
        elif token == "(":
            round_open.append(len(parts))
        elif token == "[":
            square_open.append(len(parts))
        elif weight is not None and round_open:
            multiply(round_open.pop(), _number(weight))
        elif token == ")" and round_open:
            multiply(round_open.pop(), ROUND)
        elif token == "]" and square_open:
            multiply(square_open.pop(), SQUARE)
        else:
            piece_start = 0
            for brk in _BREAK.finditer(token):
                parts.append(_text_part(token, piece_start, brk.start(), begin))
                parts.append([BREAK[0], BREAK[1], True, [], begin + brk.end()])
                piece_start = brk.end()
            parts.append(_text_part(token, piece_start, len(token), begin))
    for start in round_open:
        multiply(start, ROUND)
    for start in square_open:
        multiply(start, SQUARE)
    return _merge(parts)


def parse_prompt(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) runs; BREAK markers appear as `BREAK` = ("BREAK", -1.0).

    >>> parse_prompt("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    """
    return [BREAK if run.is_break else (run.text, run.weight) for run in parse_runs(text)]


def chunk_prompt(prompt: str, tokenize: Tokenize, comma_backtrack: int = A1111_COMMA_BACKTRACK,
                 embeddings: EmbeddingLookup | None = None) -> list[Chunk]:
    """The prompt's chunk layout: parse, tokenise every word in one `tokenize` call, lay out in chunks.
    With `embeddings`, words naming an embedding take its vectors' slots (module docstring)."""
    # (word, weight, offset), an embedding, or a BREAK's end offset
    pieces: list[tuple[str, float, int] | EmbeddingRef | int] = []
    for run in parse_runs(prompt):
        if run.is_break:
            pieces.append(run.at)
        elif embeddings is None:
            pieces += [(m.group(), run.weight, run.starts[m.start()]) for m in _WORD.finditer(run.text)]
        else:
            for m in _WORD.finditer(run.text):
                pieces += _embedding_pieces(m.group(), run.weight, run.starts[m.start():m.end()], embeddings)
    words = [piece[0] for piece in pieces if isinstance(piece, tuple)]
    ids = iter(tokenize(words) if words else [])
    items: list[tuple[int, float, int] | EmbeddingRef | int] = []
    for piece in pieces:
        if isinstance(piece, tuple):
            items += [(token, piece[1], piece[2]) for token in next(ids)]
        else:
            items.append(piece)
    return lay_out(items, comma_backtrack)


def _embedding_pieces(word: str, weight: float, starts: Sequence[int],
                      lookup: EmbeddingLookup) -> list[tuple[str, float, int] | EmbeddingRef]:
    """One word as text pieces and embeddings. Commas split names from the text around them (A1111 matches
    `name,` too, its tokenizer splitting punctuation off); a word with no embedding stays one piece."""
    out: list[tuple[str, float, int] | EmbeddingRef] = []
    text, text_at, at = "", 0, 0
    for part in _COMMAS.split(word):
        found = None
        if part.startswith(EMBEDDING_PREFIX):
            found = lookup(part[len(EMBEDDING_PREFIX):], True)
        elif part and not part.startswith(","):
            found = lookup(part, False)
        if found is None:
            text, text_at = text + part, text_at if text else at
        else:
            if text:
                out.append((text, weight, starts[text_at]))
                text = ""
            name, count = found
            if not 0 < count <= CHUNK_TOKENS:
                raise RequestError(f"embedding '{name}' has {count} vectors; a prompt chunk holds 1 to "
                                   f"{CHUNK_TOKENS}")
            out.append(EmbeddingRef(name, count, weight, starts[at]))
        at += len(part)
    if text:
        out.append((text, weight, starts[text_at]))
    return out


def split_chunks(
    runs: Sequence[tuple[str, float]], token_runs: Sequence[Sequence[int]], comma_backtrack: int
) -> list[Chunk]:
    """Lay already tokenised runs out in chunks (A1111 tokenize_line); offsets are not known here (0)."""
    items: list[tuple[int, float, int] | int] = []
    for run, tokens in zip(runs, token_runs, strict=True):
        if run == BREAK:
            items.append(0)
        else:
            items += [(token, run[1], 0) for token in tokens]
    return lay_out(items, comma_backtrack)


def lay_out(items: Sequence[tuple[int, float, int] | EmbeddingRef | int],
            comma_backtrack: int) -> list[Chunk]:
    """Tokens (token, weight, offset), embeddings and BREAKs (an int: where the next chunk begins) -> chunks.

    Always returns at least one chunk; a BREAK always closes the current chunk, even an empty one (A1111).
    """
    chunks: list[Chunk] = []
    current = Chunk([], [])
    last_comma = -1

    def close(next_start: int) -> Chunk:
        nonlocal last_comma
        chunks.append(current)
        last_comma = -1
        return Chunk([], [], start=next_start)

    for item in items:
        if isinstance(item, int):
            current = close(item)
            continue
        ref = item if isinstance(item, EmbeddingRef) else None
        token, weight, offset = (EMBEDDING_PLACEHOLDER, ref.weight, ref.offset) if ref else item
        if ref is None and token == COMMA:
            last_comma = len(current.tokens)
        elif len(current.tokens) == CHUNK_TOKENS and 0 <= CHUNK_TOKENS - last_comma <= comma_backtrack:
            cut = last_comma + 1
            moved = Chunk(current.tokens[cut:], current.weights[cut:], current.offsets[cut:],
                          embeddings=[EmbeddingSlot(e.start - cut, e.name, e.count)
                                      for e in current.embeddings if e.start >= cut])
            moved.start = moved.offsets[0] if moved.offsets else offset
            del current.tokens[cut:], current.weights[cut:], current.offsets[cut:]
            current.embeddings = [e for e in current.embeddings if e.start < cut]
            close(0)
            current = moved
        if len(current.tokens) == CHUNK_TOKENS:
            current = close(offset)
        count = 1 if ref is None else ref.count
        if len(current.tokens) + count > CHUNK_TOKENS:  # an embedding that does not fit starts the next chunk
            current = close(offset)
        if chunks and not current.tokens:
            current.start = offset
        if ref is not None:
            current.embeddings.append(EmbeddingSlot(len(current.tokens), ref.name, count))
        current.tokens += [token] * count
        current.weights += [weight] * count
        current.offsets += [offset] * count
    if current.tokens or not chunks:
        close(0)
    return chunks


def _text_part(token: str, begin: int, end: int, token_start: int) -> list:
    return [token[begin:end], 1.0, False, list(range(token_start + begin, token_start + end)), 0]


def _number(weight: str) -> float:
    try:
        return float(weight)
    except ValueError:
        message = f"'{weight}' in the prompt is not a number; write a weight like (word:1.2)"
        raise RequestError(message) from None


def _merge(parts: list[list]) -> list[Run]:
    """Join neighbouring runs of equal weight, as A1111 does; BREAK markers stay separate."""
    merged: list[list] = []
    for part in parts:
        if merged and not part[2] and not merged[-1][2] and merged[-1][1] == part[1]:
            merged[-1][0] += part[0]
            merged[-1][3] = merged[-1][3] + part[3]
        else:
            merged.append(part)
    if not merged:
        return [Run("", 1.0)]
    return [Run(text, weight, tuple(starts), is_break, at) for text, weight, is_break, starts, at in merged]
