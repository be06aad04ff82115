"""The weights of network preprocessors (annotators) from the user's files in models/annotators: read as plain
tensors (torch's weights-only loader for .pth, so a pickle cannot run code), loaded strictly into the
network that file is for, and the last one kept while its file is unchanged, since a job preprocesses once
and the next job usually reuses the same annotator."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from torch import nn

from sdstudio.engine.errors import RequestError
from sdstudio.engine.upscaler_models import read_upscaler_state  # the one reader of .pth/.safetensors weights

_lock = threading.Lock()  # the worker and the canvas's preprocessing thread may both ask
_kept: dict[tuple[str, float, str], nn.Module] = {}


def load_network(path: Path, build: Callable[[], nn.Module], what: str) -> nn.Module:
    """`build()`'s network with the file's weights, in eval mode; RequestError naming the file when it cannot be
    read or does not fit (`what` names the annotator the file should be)."""
    key = (str(path), path.stat().st_mtime, what)
    with _lock:
        if key in _kept:
            return _kept[key]
        net = build()
        try:
            net.load_state_dict(read_upscaler_state(path), strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise RequestError(f"{path.name}: not a {what} file: {first}") from None
        except Exception as exc:  # CheckpointError: unreadable, or a pickle that needs more than tensors
            raise RequestError(str(exc)) from None
        _kept.clear()  # one network at a time: they are 10-60 MB each
        _kept[key] = net.eval()
        return _kept[key]
