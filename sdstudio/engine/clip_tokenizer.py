"""CLIP's byte-level BPE tokenizer (Radford et al. 2021; the byte-to-unicode table and BPE of GPT-2,
Radford et al. 2019, section 2.2) in plain Python, giving the ids transformers' CLIPTokenizer gives.

transformers (5.x, backed by the `tokenizers` library) runs, in this order:
1. split the raw text at the special tokens `<|startoftext|>` / `<|endoftext|>` (matched verbatim, before any
   normalisation) and emit their ids;
2. on each remaining segment: Unicode NFC, every run of White_Space replaced by one space, then lower-casing
   character by character (no Greek final-sigma rule, unlike Python's `str.lower`);
3. pre-tokenize with CLIP's pattern `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|
   [^\\s\\p{L}\\p{N}]+`, whitespace dropped, then GPT-2's byte-level split inside each piece (which only
   splits a lower-cased special token into `<|`, the word, `|>`);
4. BPE each piece over its UTF-8 bytes, `</w>` marking the last symbol, merges applied lowest rank first.

Python's `re` has no \\p{L} / \\p{N}, so the pre-tokenizer is a small scanner over `unicodedata` categories
(L*: letters, N*: numbers); ftfy is not used (transformers does not use it either).
tests/engine/test_clip_tokenizer.py compares ids with transformers on hard prompts and random strings.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path

from sdstudio.engine.clip_vocab import BOS, EOS

SPECIALS = {"<|startoftext|>": BOS, "<|endoftext|>": EOS}
END_OF_WORD = "</w>"
# Unicode's White_Space property: what the `\s` of the `tokenizers` library's (Oniguruma) patterns matches.
# Python's str.isspace also counts U+001C..U+001F, which CLIP keeps as symbols.
WHITE_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                        + "".join(chr(c) for c in range(0x2000, 0x200B)))
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table: printable Latin-1 bytes map to themselves, the
    rest to U+0100 onwards in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in kept}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _kind(char: str) -> str:
    """'s' space, 'L' letter, 'N' number, 'P' anything else (CLIP's three pre-token classes)."""
    if char == " ":  # normalise() has turned every other white-space character into a space
        return "s"
    major = unicodedata.category(char)[0]
    return major if major in "LN" else "P"


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    out: list[str] = []
    for char in text:
        if char in WHITE_SPACE:
            if not out or out[-1] != " ":
                out.append(" ")
        else:
            out.append(char.lower())
    return "".join(out)


def pre_tokenize(text: str) -> Iterator[str]:
    """CLIP's pre-tokens of normalised text (step 3 of the module docstring)."""
    i, n = 0, len(text)
    while i < n:
        kind = _kind(text[i])
        if kind == "s":
            i += 1
            continue
        special = next((s for s in SPECIALS if text.startswith(s, i)), None)
        if special is not None:
            yield from ("<|", special[2:-2], "|>")  # GPT-2's byte-level split of the piece
            i += len(special)
            continue
        contraction = next((c for c in CONTRACTIONS if text.startswith(c, i)), None)
        if contraction is not None:
            end = i + len(contraction)
        elif kind == "N":
            end = i + 1
        else:
            end = i + 1
            while end < n and _kind(text[end]) == kind:
                end += 1
        yield text[i:end]
        i = end


class CLIPTokenizer:
    """Text -> CLIP token ids, from OpenAI's vocab.json and merges.txt. The call mirrors transformers':
    `tokenizer(texts, add_special_tokens=..., truncation=False)["input_ids"]`."""

    bos_token_id = BOS
    eos_token_id = EOS

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]], model_max_length: int = 77):
        self.vocab = dict(vocab)
        self.ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
        self.model_max_length = model_max_length
        self.byte_chars = bytes_to_unicode()
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_folder(cls, folder: Path, model_max_length: int = 77) -> CLIPTokenizer:
        """vocab.json + merges.txt (its first line is a version header)."""
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
        merges = [tuple(line.split()) for line in lines[1:] if line]
        return cls(vocab, merges, model_max_length)

    def __len__(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def bpe(self, piece: str) -> list[int]:
        """Ids of one pre-token: merges applied lowest rank first, every occurrence left to right."""
        if piece in self._cache:
            return self._cache[piece]
        word = [self.byte_chars[b] for b in piece.encode("utf-8")]
        word[-1] += END_OF_WORD
        while len(word) > 1:
            ranked = [(self.ranks.get(pair, -1), pair) for pair in zip(word, word[1:], strict=False)]
            ranked = [(rank, pair) for rank, pair in ranked if rank >= 0]
            if not ranked:
                break
            first, second = min(ranked)[1]
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids = [self.vocab[symbol] for symbol in word]
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Ids of `text` without BOS/EOS (special-token text in it still becomes BOS/EOS ids)."""
        ids: list[int] = []
        start = 0
        while start < len(text):
            found = [(text.find(s, start), s) for s in SPECIALS]
            found = [(at, s) for at, s in found if at >= 0]
            at, special = min(found) if found else (len(text), "")
            for piece in pre_tokenize(normalise(text[start:at])):
                ids += self.bpe(piece)
            if special:
                ids.append(SPECIALS[special])
            start = at + len(special)
        return ids

    def __call__(self, texts: str | Sequence[str], add_special_tokens: bool = True,
                 truncation: bool = False) -> dict[str, list]:
        if truncation:
            raise ValueError("truncation is the caller's job (prompts are split into 75-token chunks)")
        single = isinstance(texts, str)
        rows = [self.encode(text) for text in ([texts] if single else texts)]
        if add_special_tokens:
            rows = [[BOS, *row, EOS] for row in rows]
        return {"input_ids": rows[0] if single else rows}
