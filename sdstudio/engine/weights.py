"""Turning checked safetensors headers into torch tensors, one tensor at a time.

Each tensor is read with a plain file read straight into its own storage; a dtype or device change (fp16
file, fp32 modules; CPU read, GPU model) converts and moves that one tensor and drops the scratch copy before
the next, so peak memory is the loaded weights plus the largest single tensor.

Reads report the bytes they have read through `on_bytes`, in pieces of at most READ_PIECE bytes, so a
caller's progress callback runs often enough to cancel a multi-gigabyte load within a fraction of a second.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sdstudio.engine.errors import CheckpointError
from sdstudio.engine.safetensors_file import PICKLE_SUFFIXES, SafetensorsHeader, TensorEntry, read_header

TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
}


READ_PIECE = 4 << 20
OnBytes = Callable[[int], None]


def read_tensor(f, entry: TensorEntry, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                on_bytes: OnBytes | None = None) -> torch.Tensor:
    out = torch.empty(entry.shape, dtype=TORCH_DTYPES[entry.dtype])
    if entry.end > entry.begin:
        f.seek(entry.begin)
        view = memoryview(out.view(-1).view(torch.uint8).numpy())
        for start in range(0, len(view), READ_PIECE):
            piece = view[start:start + READ_PIECE]
            if f.readinto(piece) != len(piece):
                raise CheckpointError(f"{Path(f.name).name}: truncated while reading {entry.name!r}")
            if on_bytes is not None:
                on_bytes(len(piece))
    return place(out, dtype, device)


def place(t: torch.Tensor, dtype: torch.dtype | None, device: torch.device | str | None) -> torch.Tensor:
    """`t` in `dtype` (floating tensors only) on `device`; `t` itself when nothing changes."""
    dtype = dtype if dtype is not None and t.is_floating_point() else t.dtype
    return t.to(device=device if device is not None else t.device, dtype=dtype)


STORED_NAMES = {v: k for k, v in TORCH_DTYPES.items()}


@dataclass(frozen=True)
class PickleCheckpoint(SafetensorsHeader):
    """A weights-only pickle seen through the safetensors header interface, so detection and loading
    treat both formats alike. `state` holds the memory-mapped tensors."""

    state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


def open_pickle_checkpoint(path: str | os.PathLike) -> PickleCheckpoint:
    """Only with the user's explicit opt-in: torch.load(weights_only=True) refuses code, mmap keeps RAM free."""
    path = Path(path)
    state = _load_pickle(path, None)
    entries = {k: TensorEntry(k, STORED_NAMES.get(v.dtype, "F32"), tuple(v.shape), 0, v.numel() * v.element_size())
               for k, v in state.items()}
    return PickleCheckpoint(path, entries, {}, path.stat().st_size, state)


def load_tensors(header: SafetensorsHeader, prefix: str = "", dtype: torch.dtype | None = None,
                 skip: Iterable[str] = (), device: torch.device | str | None = None,
                 on_bytes: OnBytes | None = None) -> dict[str, torch.Tensor]:
    """All tensors under `prefix` (prefix stripped), floating ones converted to `dtype`, all on `device`."""
    skip = tuple(skip)
    n = len(prefix)
    out: dict[str, torch.Tensor] = {}
    if isinstance(header, PickleCheckpoint):
        for name, t in header.state.items():
            if name.startswith(prefix) and not any(s in name for s in skip):
                out[name[n:]] = place(t, dtype, device)
                if on_bytes is not None:
                    on_bytes(header.tensors[name].end - header.tensors[name].begin)
        return out
    with open(header.path, "rb", buffering=0) as f:
        for name, entry in header.tensors.items():
            if name.startswith(prefix) and not any(s in name for s in skip):
                out[name[n:]] = read_tensor(f, entry, dtype, device, on_bytes)
    return out


def load_state_dict_file(path: str | os.PathLike, allow_pickle: bool = False, dtype: torch.dtype | None = None,
                         device: torch.device | str | None = None,
                         on_bytes: OnBytes | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A whole file as (state dict, metadata). Pickle files only with allow_pickle, and then weights-only."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise CheckpointError(
                f"{path.name}: pickled checkpoints (.ckpt/.pt) can run code when opened, so SD Studio refuses them "
                "by default. Convert it to .safetensors, or pass --allow-pickle (command line) / enable Settings › Allow "
                "pickled checkpoints (app) to load it in weights-only mode.")
        return {k: place(v, None, device) for k, v in _load_pickle(path, dtype).items()}, {}
    header = read_header(path)
    return load_tensors(header, dtype=dtype, device=device, on_bytes=on_bytes), header.metadata


def _load_pickle(path: Path, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types here (UnpicklingError, RuntimeError, EOFError)
        raise CheckpointError(f"{path.name}: cannot be read as a weights-only PyTorch checkpoint ({exc})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path.name}: does not hold a plain dictionary of tensors")
    if dtype is None:
        return dict(obj)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in obj.items()}

