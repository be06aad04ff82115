"""Writing safetensors files for tests: real ones (small) and sparse ones (full-size shapes, no data on disk)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}


def write_header_only(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "F16",
                      metadata: dict[str, str] | None = None) -> Path:
    """A valid safetensors file whose data region is a hole: multi-GB shapes cost no disk and no time."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, shape in shapes.items():
        n = math.prod(shape) * SIZES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + offset)
    return path


def write_raw_header(path: Path, header: dict, data: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + data)
    return path
