"""Mutated PNG text chunks fed to the readers: every outcome is a result or a clean refusal, in bounded memory.

Seeded, so a failure names a case that can be replayed. The mutations are the shapes the hardening issue met:
random bytes, truncations, huge and non-finite numbers, deep JSON, bad UTF-8 and zTXt bombs of modest size.
"""

from __future__ import annotations

import functools
import io
import json
import random
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from sdstudio.engine.errors import SDStudioError
from sdstudio.history.file_parameters import FileParameters, read_file_parameters
from sdstudio.history.store import HistoryStore

CASES = 300
A1111 = "a fox, (detailed:1.2)\nNegative prompt: blur\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 8x8"
RECORD = {"format": 1, "id": "abc", "created": 1.0, "request": {"prompt": "a fox", "seed": 5, "width": 8, "height": 8}}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _base_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 99, 199)).save(buffer, format="PNG", pnginfo=PngImagePlugin.PngInfo())
    return buffer.getvalue()


def _payload(rng: random.Random) -> bytes:
    """One hostile text, as bytes."""
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 3000))
    if kind == 1:
        return A1111.encode()[: rng.randrange(len(A1111))]
    if kind == 2:
        number = rng.choice(["9.9e999", "nan.", "-0.", "9" * rng.randrange(20, 6000), str(2**63), "1e-400", "inf"])
        key = rng.choice(["Steps", "Seed", "CFG scale", "Size", "Clip skip", "Denoising strength"])
        return A1111.replace("Steps: 20", f"{key}: {number}").encode()
    if kind == 3:
        depth = rng.randrange(1000, 200_000)
        return (rng.choice("[{") * depth).encode()
    if kind == 4:
        good = json.dumps(RECORD).encode()
        return good[: rng.randrange(len(good))] + rng.randbytes(rng.randrange(8))
    if kind == 5:
        value = rng.choice(["NaN", "Infinity", "-1e999", str(2**64), '"\\ud800"', "[]", "{}", "null", "1" * 5000])
        field = rng.choice(['"created": 1.0', '"seed": 5', '"prompt": "a fox"', '"id": "abc"'])
        name = field.split(":")[0]
        return json.dumps(RECORD).replace(field, f"{name}: {value}").encode()
    if kind == 6:
        return b"\xff\xfe\xc3" + A1111.encode() + b"\xed\xa0\x80"  # bad UTF-8, an encoded lone surrogate
    return b"k: " + rng.choice([b"a", b'"', b":", b",", b"\\"]) * rng.randrange(10_000, 400_000)


# Compressed once: making a fresh 64 MiB bomb per case would cost the test more than reading it does.
@functools.cache
def _bombs() -> list[bytes]:
    return [zlib.compress(b"\0" * (mib << 20), 9) for mib in (16, 40, 64)]


def _text_chunk(rng: random.Random) -> bytes:
    key = rng.choice([b"parameters", b"sdstudio", b"parameters", b"x" * rng.randrange(1, 90)])
    text = _payload(rng)
    form = rng.randrange(5)
    if form == 0:
        return _chunk(b"tEXt", key + b"\0" + text)
    if form == 1:
        return _chunk(b"zTXt", key + b"\0\0" + zlib.compress(text))
    if form == 2:
        return _chunk(b"iTXt", key + b"\0\1\0\0\0" + zlib.compress(text))
    if form == 3:  # a bomb of modest size: 16 to 64 MiB from a few KB
        return _chunk(b"zTXt", key + b"\0\0" + rng.choice(_bombs()))
    data = _chunk(b"iTXt", key + b"\0\0\0\0\0" + text)
    cut = rng.randrange(len(data))
    return data[:cut] + rng.randbytes(rng.randrange(3)) + data[cut + 3 :]  # damaged: bad CRC, length or bytes


def _hostile_png(rng: random.Random, base: bytes) -> bytes:
    at = base.index(b"IDAT") - 4
    chunks = b"".join(_text_chunk(rng) for _ in range(rng.randrange(1, 4)))
    return base[:at] + chunks + base[at:]


def fuzz_pngs(tmp_path: Path) -> tuple[int, float]:
    """Feed CASES hostile PNGs to the reader and to reconcile, asserting clean outcomes: (peak traced bytes,
    seconds)."""
    rng = random.Random(20240612)
    base = _base_png()
    outputs = tmp_path / "outputs" / "fuzz"
    outputs.mkdir(parents=True)
    started = time.perf_counter()
    tracemalloc.start()
    for case in range(CASES):
        path = outputs / f"{case:05}.png"
        path.write_bytes(_hostile_png(rng, base))
        try:
            found = read_file_parameters(path, pixels=False)
        except SDStudioError:
            continue
        assert isinstance(found, FileParameters), case
        assert "\n" not in found.problem and len(found.problem) < 400, (case, found.problem[:500])
        found.listing_request()
    store = HistoryStore(tmp_path / "outputs", reconcile=False)
    report = store.reconcile()  # what runs at open: indexes what it can, lists the rest
    assert report.files_indexed + len(report.skipped) <= CASES and report.files_indexed > 0
    store.close()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    seconds = time.perf_counter() - started
    print(f"{CASES} hostile PNGs: {seconds:.1f} s, peak {peak / 2**20:.0f} MiB traced, {len(report.skipped)} skipped")
    return peak, seconds


def test_mutated_text_chunks_give_results_or_clean_refusals(tmp_path: Path) -> None:
    peak, seconds = fuzz_pngs(tmp_path)
    assert peak < 500 * 2**20
    assert seconds < 300  # a hang guard, not a speed claim (see the perf test)


@pytest.mark.perf
def test_mutated_text_chunks_are_handled_in_seconds(tmp_path: Path) -> None:
    _, seconds = fuzz_pngs(tmp_path)
    assert seconds < 60  # about 2-10 s here; a quadratic parser or an unbounded inflate takes minutes
