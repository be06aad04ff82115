import functools
import gzip
import importlib.util
import json
import zipfile
from pathlib import Path

import pytest
import regex

from sdstudio.engine.tokenizer import (
    BOS,
    CHUNK_TOKENS,
    COMMA,
    EOS,
    OPENCLIP_PAD,
    VOCAB_SIZE,
    load_tokenizer,
    pad_chunk,
    tokenize,
)
from sdstudio.paths import tokenizer_dir

ROOT = Path(__file__).resolve().parents[2]


def _build_tool():
    spec = importlib.util.spec_from_file_location("build_tokenizer", ROOT / "tools" / "build_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=1)
def _shipped_merges() -> list[str]:
    return (tokenizer_dir() / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]


def test_a_photo_of_a_cat_gives_the_reference_ids():
    ids = load_tokenizer()("a photo of a cat")["input_ids"]
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_vocabulary_has_49408_tokens_and_clip_special_ids():
    tokenizer = load_tokenizer()
    assert len(tokenizer) == VOCAB_SIZE
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (BOS, EOS) == (49406, 49407)
    assert tokenizer.model_max_length == 77
    assert tokenizer.get_vocab()[",</w>"] == COMMA


def test_load_tokenizer_is_cached():
    assert load_tokenizer() is load_tokenizer()


def test_vocab_file_follows_openai_layout():
    vocab = json.loads((tokenizer_dir() / "vocab.json").read_text(encoding="utf-8"))
    by_id = sorted(vocab, key=vocab.get)
    chars = _build_tool().bytes_to_unicode()
    merges = _shipped_merges()
    assert len(merges) == 48894
    assert by_id[:256] == chars
    assert by_id[256:512] == [c + "</w>" for c in chars]
    assert by_id[512:-2] == ["".join(m.split()) for m in merges]
    assert by_id[-2:] == ["<|startoftext|>", "<|endoftext|>"]


def test_build_tool_reproduces_shipped_files_from_a_clip_wheel(tmp_path):
    # A stand-in wheel: the original BPE file has the header, the merges we use, then unused extra lines.
    bpe = "\n".join(['"bpe_simple_vocab_16e6.txt#version: 0.2', *_shipped_merges(), "un used", "ex tra"])
    wheel = tmp_path / "clip.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("clip/bpe_simple_vocab_16e6.txt.gz", gzip.compress(bpe.encode("utf-8")))
    _build_tool().main([str(wheel), str(tmp_path / "out")])
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / "out" / name).read_bytes() == (tokenizer_dir() / name).read_bytes()


@functools.lru_cache(maxsize=1)
def _ranks() -> dict[tuple[str, ...], int]:
    return {tuple(m.split()): i for i, m in enumerate(_shipped_merges())}


def _reference_bpe_tokenize(text: str) -> list[int]:
    """OpenAI clip/simple_tokenizer.py's algorithm (without ftfy), written from its description."""
    vocab = load_tokenizer().get_vocab()
    ranks = _ranks()
    byte_chars = _build_tool().bytes_to_unicode()
    byte_order = [*range(33, 127), *range(161, 173), *range(174, 256)]
    byte_order += [b for b in range(256) if b not in byte_order]
    encoder = dict(zip(byte_order, byte_chars, strict=True))
    pattern = regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )
    ids = []
    for piece in pattern.findall(regex.sub(r"\s+", " ", text).strip().lower()):
        word = [encoder[b] for b in piece.encode("utf-8")]
        word[-1] += "</w>"
        while len(word) > 1:
            pairs = [(word[i], word[i + 1]) for i in range(len(word) - 1)]
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids += [vocab[w] for w in word]
    return ids


@pytest.mark.parametrize(
    "text",
    [
        "a photo of a cat",
        "masterpiece, best quality, (1girl:1.2), looking at viewer",
        "Café au lait — naïve résumé, 東京タワー at night!!",
        "it's 12:30 and we'll   see\tthe  sunset",
        "emoji 🐱🎨 and symbols <> [] {} ### ...",
        "UPPER lower MiXeD 3d render 8k uhd",
    ],
)
def test_tokenizer_matches_openai_bpe_algorithm(text):
    assert tokenize([text])[0] == _reference_bpe_tokenize(text)


def test_tokenize_has_no_special_tokens_and_no_truncation():
    ids = tokenize(["cat " * 100])[0]
    assert len(ids) == 100
    assert BOS not in ids and EOS not in ids
    assert tokenize([]) == []


def test_pad_chunk_sd1_pads_with_eos():
    chunk = pad_chunk([320, 2368], EOS)
    assert len(chunk) == 77
    assert chunk[:4] == [BOS, 320, 2368, EOS]
    assert chunk[4:] == [EOS] * 73


def test_pad_chunk_openclip_pads_with_zero():
    chunk = pad_chunk([320, 2368], OPENCLIP_PAD)
    assert chunk[:4] == [BOS, 320, 2368, EOS]
    assert chunk[4:] == [0] * 73


def test_pad_chunk_refuses_more_than_75_tokens():
    assert len(pad_chunk([1] * CHUNK_TOKENS, 0)) == 77
    with pytest.raises(ValueError):
        pad_chunk([1] * (CHUNK_TOKENS + 1), 0)
