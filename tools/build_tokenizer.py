"""Build sdstudio/resources/tokenizer/{vocab.json, merges.txt} from CLIP's `bpe_simple_vocab_16e6.txt.gz`.

The BPE file ships (MIT) in the `clip-anytorch` wheel. The vocabulary is derived exactly as OpenAI's
`clip/simple_tokenizer.py` does: the 256 byte-unicode characters, the same with the end-of-word marker
`</w>`, the 48,894 merges joined (lines 1..48894 after the `#version` header, i.e. `49152 - 256 - 2`),
then `<|startoftext|>` and `<|endoftext|>`: 49,408 entries.

Usage: python tools/build_tokenizer.py path/to/clip_anytorch-*.whl [out_dir]
"""

from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path

BPE_MEMBER = "clip/bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 49408
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "sdstudio" / "resources" / "tokenizer"


def bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte -> printable-unicode table, in byte order of the printable ones first."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def read_merges(wheel: Path) -> list[str]:
    """The merge lines used by CLIP, without the header and the unused tail."""
    with zipfile.ZipFile(wheel) as zf:
        text = gzip.decompress(zf.read(BPE_MEMBER)).decode("utf-8")
    merges = text.split("\n")[1 : N_MERGES + 1]
    if len(merges) != N_MERGES or any(len(m.split()) != 2 for m in merges):
        raise ValueError(f"{wheel}: unexpected BPE file layout")
    return merges


def build_vocab(merges: list[str]) -> dict[str, int]:
    chars = bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"vocabulary has {len(vocab)} entries, expected {VOCAB_SIZE}")
    return vocab


def main(argv: list[str]) -> None:
    if not argv or len(argv) > 2:
        raise SystemExit(__doc__)
    out = Path(argv[1]) if len(argv) == 2 else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    merges = read_merges(Path(argv[0]))
    vocab = build_vocab(merges)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
