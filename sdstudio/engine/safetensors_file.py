"""Reading safetensors files without trusting them.

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N bytes of
JSON mapping tensor names to {dtype, shape, data_offsets: [begin, end]} (offsets relative to the byte after
the header) plus an optional "__metadata__" dict of strings, then the data.

We parse and check the header ourselves so that a truncated file or a header that lies about sizes gets a
precise message before any tensor is touched, and so that `inspect` needs only the header. Tensors are read
one at a time with plain file reads straight into their destination (no mmap), so loading an fp16 file into
fp32 modules holds the fp32 weights plus one tensor's worth of scratch, never two copies of the model.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdstudio.engine.errors import CheckpointError
from sdstudio.untrusted import printable, quoted

_MAX_HEADER = 100 * 1024 * 1024
MAX_JSON_DEPTH = 64  # a real header nests 3 deep; json.loads recurses once per level
MAX_DIM = 2**40  # larger than any tensor dimension a model has, small enough that products stay meaningful
MAX_RANK = 16
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute file offsets
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    file_size: int

    def shapes(self, prefix: str = "") -> dict[str, tuple[int, ...]]:
        """Shapes of the tensors under `prefix`, with the prefix removed."""
        n = len(prefix)
        return {k[n:]: t.shape for k, t in self.tensors.items() if k.startswith(prefix)}

    def has_prefix(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.tensors)

    def dtypes(self) -> dict[str, int]:
        """Bytes per stored dtype, to describe a file as fp16 / fp32 / mixed."""
        out: dict[str, int] = {}
        for t in self.tensors.values():
            out[t.dtype] = out.get(t.dtype, 0) + t.end - t.begin
        return out


def _fail(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{printable(path.name, multiline=False)}: {what}")


def read_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Parse and validate the header of a safetensors file; raise CheckpointError saying what is wrong."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"{path}: is a folder, not a model file (diffusers folders are not supported; "
                              "use a single-file .safetensors checkpoint)")
    if not stat.S_ISREG(st.st_mode):
        # Checked before open(): opening a FIFO blocks until someone writes to it.
        raise _fail(path, "is not a regular file (a pipe, socket or device?); choose a model file")
    size = st.st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _fail(path, f"file is {size} bytes, too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or n < 2 or _looks_pickled(head):
            raise _pickle_or_garbage(path, head)
        if 8 + n > size:
            raise _fail(path, f"truncated: the header claims {n} bytes but the file has {size - 8} after the "
                              "length field (incomplete download?)")
        raw = f.read(n)
    try:
        doc = strict_json(raw)
    except ValueError as exc:
        raise _fail(path, f"not a valid safetensors file (header is not JSON: {exc})") from None
    if not isinstance(doc, dict):
        raise _fail(path, "not a valid safetensors file (header is not a JSON object)")
    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _fail(path, "safetensors metadata is not a dictionary")
    bad = next((k for k, v in metadata.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise _fail(path, f"safetensors metadata {quoted(bad)} is not a string (the format allows only strings)")
    data_start = 8 + n
    tensors = {name: _entry(path, name, info, data_start, size) for name, info in doc.items()}
    _check_layout(path, tensors)
    return SafetensorsHeader(path, tensors, metadata, size)


def strict_json(raw: bytes | str) -> object:
    """json.loads that refuses, with ValueError, what a hostile file uses to hurt the parser or lie: nesting
    deeper than MAX_JSON_DEPTH (json recurses once per level), duplicate keys (which of two values is
    meant?), NaN/Infinity (not JSON) and numbers too long to convert."""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    if json_depth(data) > MAX_JSON_DEPTH:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


_CHUNK = 1 << 20


def json_depth(data: bytes) -> int:
    """The deepest bracket nesting of JSON text, outside strings, in linear time and bounded memory
    (vectorised over 1 MB chunks). Exact for valid JSON; for invalid text at least the depth json.loads
    reaches before it stops at the error."""
    depth = deepest = 0
    in_string = 0
    backslashes = 0  # the run of backslashes that ends the previous chunk
    for start in range(0, len(data), _CHUNK):
        c = np.frombuffer(data, dtype=np.uint8, count=min(_CHUNK, len(data) - start), offset=start)
        n = len(c)
        idx = np.arange(n)
        is_bs = c == ord("\\")
        last_plain = np.maximum.accumulate(np.where(is_bs, -1, idx))  # last non-backslash at or before i
        before = np.empty(n, dtype=np.int64)  # backslashes immediately before position i
        before[0] = backslashes
        before[1:] = np.where(last_plain[:-1] < 0, idx[1:] + backslashes, idx[1:] - 1 - last_plain[:-1])
        quotes = (c == ord('"')) & (before % 2 == 0)
        seen = np.cumsum(quotes) + in_string
        outside = seen % 2 == 0
        step = (outside & ((c == ord("[")) | (c == ord("{")))).astype(np.int64)
        step -= outside & ((c == ord("]")) | (c == ord("}")))
        levels = np.cumsum(step) + depth
        deepest = max(deepest, int(levels.max()))
        depth, in_string = int(levels[-1]), int(seen[-1]) % 2
        backslashes = backslashes + n if last_plain[-1] < 0 else n - 1 - int(last_plain[-1])
    return deepest


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {quoted(dup)}")
    return out


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _looks_pickled(head: bytes) -> bool:
    # Pickle protocol 2-5 opcodes, or the zip container torch.save has written since PyTorch 1.6.
    return head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head[:4] == b"PK\x03\x04"


def _pickle_or_garbage(path: Path, head: bytes) -> CheckpointError:
    if _looks_pickled(head):
        return _fail(path, "this is a pickled PyTorch checkpoint (.ckpt/.pt), not safetensors. Pickle files can "
                           "run code when opened; convert it to .safetensors, or allow pickle loading explicitly")
    return _fail(path, "not a safetensors file (the header length field is implausible)")


def _entry(path: Path, name: str, info: object, data_start: int, size: int) -> TensorEntry:
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise _fail(path, f"tensor {quoted(name)} has a malformed header entry")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise _fail(path, f"tensor {quoted(name)} has unsupported dtype {quoted(dtype, 80)}")
    if not (isinstance(shape, list) and len(shape) <= MAX_RANK and all(_is_int(d) and 0 <= d < MAX_DIM for d in shape)):
        raise _fail(path, f"tensor {quoted(name)} has an invalid shape {quoted(shape, 80)} (at most {MAX_RANK} "
                          f"non-negative integer dimensions below 2**40)")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise _fail(path, f"tensor {quoted(name)} has invalid data offsets {quoted(offsets, 80)}")
    begin, end = offsets
    data_size = size - data_start
    if not 0 <= begin <= end:
        # A negative begin would read the header (or the length field) as weights.
        raise _fail(path, f"tensor {quoted(name)} has data offsets {quoted(offsets, 80)} outside its data section "
                          "(negative or reversed)")
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - begin != expected:
        raise _fail(path, f"header lies about tensor {quoted(name)}: shape {tuple(shape)} of {dtype} needs "
                          f"{expected} bytes but its offsets span {end - begin}")
    if end > data_size:
        raise _fail(path, f"truncated: tensor {quoted(name)} should end at byte {data_start + end} but the file "
                          f"has {size} bytes (incomplete download?)")
    return TensorEntry(name, dtype, tuple(shape), data_start + begin, data_start + end)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_layout(path: Path, tensors: dict[str, TensorEntry]) -> None:
    ordered = sorted(tensors.values(), key=lambda t: (t.begin, t.end))
    last_end = ordered[0].begin if ordered else 0
    for t in ordered:
        if t.begin < last_end:
            raise _fail(path, f"header lies about sizes: tensor {quoted(t.name)} overlaps the previous tensor")
        last_end = max(last_end, t.end)
