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
import struct
from dataclasses import dataclass
from pathlib import Path

from sdstudio.engine.errors import CheckpointError
from sdstudio.untrusted import printable, quoted

_MAX_HEADER = 100 * 1024 * 1024
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
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a model file (diffusers folders are not supported; "
                              "use a single-file .safetensors checkpoint)")
    size = path.stat().st_size
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
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"not a valid safetensors file (header is not JSON: {exc})") from None
    if not isinstance(doc, dict):
        raise _fail(path, "not a valid safetensors file (header is not a JSON object)")
    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _fail(path, "safetensors metadata is not a dictionary")
    data_start = 8 + n
    tensors = {name: _entry(path, name, info, data_start) for name, info in doc.items()}
    _check_layout(path, tensors, size)
    return SafetensorsHeader(path, tensors, {str(k): str(v) for k, v in metadata.items()}, size)


def _looks_pickled(head: bytes) -> bool:
    # Pickle protocol 2-5 opcodes, or the zip container torch.save has written since PyTorch 1.6.
    return head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head[:4] == b"PK\x03\x04"


def _pickle_or_garbage(path: Path, head: bytes) -> CheckpointError:
    if _looks_pickled(head):
        return _fail(path, "this is a pickled PyTorch checkpoint (.ckpt/.pt), not safetensors. Pickle files can "
                           "run code when opened; convert it to .safetensors, or allow pickle loading explicitly")
    return _fail(path, "not a safetensors file (the header length field is implausible)")


def _entry(path: Path, name: str, info: object, data_start: int) -> TensorEntry:
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise _fail(path, f"tensor {quoted(name)} has a malformed header entry")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPE_SIZES:
        raise _fail(path, f"tensor {quoted(name)} has unsupported dtype {quoted(dtype)}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise _fail(path, f"tensor {quoted(name)} has an invalid shape {quoted(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise _fail(path, f"tensor {quoted(name)} has invalid data offsets {quoted(offsets)}")
    begin, end = offsets
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - begin != expected:
        raise _fail(path, f"header lies about tensor {quoted(name)}: shape {quoted(tuple(shape))} of {dtype} needs {expected} "
                          f"bytes but its offsets span {end - begin}")
    return TensorEntry(name, dtype, tuple(shape), data_start + begin, data_start + end)


def _check_layout(path: Path, tensors: dict[str, TensorEntry], size: int) -> None:
    ordered = sorted(tensors.values(), key=lambda t: t.begin)
    last_end = ordered[0].begin if ordered else 0
    for t in ordered:
        if t.begin < last_end:
            raise _fail(path, f"header lies about sizes: tensor {quoted(t.name)} overlaps the previous tensor")
        last_end = t.end
    if ordered and ordered[-1].end > size:
        raise _fail(path, f"truncated: tensor data should end at byte {ordered[-1].end} but the file has {size} "
                          "bytes (incomplete download?)")
