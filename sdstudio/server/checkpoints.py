"""The server's checkpoints as A1111 names them (GET /sdapi/v1/sd-models, `sd_model_checkpoint`), and a
client's model name turned back into one of those files, never into an arbitrary path.

A1111's title is the file's path under the models folder with its short hash in brackets
("sub/model.safetensors [0123456789]", modules/sd_models.py CheckpointInfo); the hash is shown once known
(hashing a multi-GB file takes seconds, so only the built-in model and models this server has used are
hashed). A name matches a title, the path under the folder, A1111's `model_name` or the file's stem.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from sdstudio import paths
from sdstudio.engine.errors import RequestError
from sdstudio.engine.model_files import builtin_model_path, file_sha256, list_models, model_hash
from sdstudio.server.body import shown

_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]$")


@dataclass(frozen=True)
class Checkpoint:
    name: str  # path under the models folder, "/"-separated (the built-in model: its file name)
    path: Path
    builtin: bool

    @property
    def model_name(self) -> str:
        """A1111's model_name: the name without its suffix, folders joined by "_"."""
        return str(PurePosixPath(self.name).with_suffix("")).replace("/", "_")

    @property
    def engine_path(self) -> str:
        """What GenerationRequest.model holds: "" for the built-in model."""
        return "" if self.builtin else str(self.path)


class Checkpoints:
    """The models folder as the API lists it; thread-safe (routes and the worker both ask)."""

    def __init__(self) -> None:
        self._hashed: set[str] = {str(builtin_model_path())}
        self._lock = threading.Lock()

    def all(self) -> list[Checkpoint]:
        root, builtin = paths.models_dir(), builtin_model_path()
        found = []
        for path in list_models():
            if path == builtin:
                found.append(Checkpoint(path.name, path, True))
            else:
                found.append(Checkpoint(path.relative_to(root).as_posix(), path, False))
        return found

    def short_hash(self, checkpoint: Checkpoint) -> str | None:
        with self._lock:
            known = str(checkpoint.path) in self._hashed
        return model_hash(checkpoint.path) if known else None

    def sha256(self, checkpoint: Checkpoint) -> str:
        return file_sha256(checkpoint.path)

    def mark_used(self, checkpoint: Checkpoint) -> None:
        """Hash it from now on (the engine hashes a model it generates with anyway)."""
        with self._lock:
            self._hashed.add(str(checkpoint.path))

    def title(self, checkpoint: Checkpoint) -> str:
        short = self.short_hash(checkpoint)
        return f"{checkpoint.name} [{short}]" if short else checkpoint.name

    def listing(self) -> list[dict]:
        """GET /sdapi/v1/sd-models (A1111's SDModelItem fields)."""
        rows = []
        for c in self.all():
            short = self.short_hash(c)
            rows.append({"title": self.title(c), "model_name": c.model_name, "hash": short,
                         "sha256": None if short is None else self.sha256(c), "filename": str(c.path),
                         "config": None})
        return rows

    def find(self, name: object) -> Checkpoint:
        """The checkpoint a client names; RequestError for a path, an unknown name or a non-string."""
        if not isinstance(name, str) or not name.strip():
            raise RequestError(f"sd_model_checkpoint must be a model's title, got {shown(name)}")
        wanted = _HASH_SUFFIX.sub("", name.strip())
        if is_path_like(wanted):
            raise RequestError(f"model {shown(name)} is a path, not a model name: choose a title from GET "
                               "/sdapi/v1/sd-models")
        for c in self.all():
            if wanted in (c.name, c.model_name, c.path.stem) or name.strip() == self.title(c):
                return c
        raise RequestError(f"no model named {shown(name)} on this server: GET /sdapi/v1/sd-models lists them")

    def builtin(self) -> Checkpoint:
        path = builtin_model_path()
        return Checkpoint(path.name, path, True)


def is_path_like(name: str) -> bool:
    """An absolute path (either OS's), a drive, or a step up: never a name under the models folder."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    return (posix.is_absolute() or windows.is_absolute() or bool(windows.drive) or name.startswith("~")
            or ".." in posix.parts or ".." in windows.parts or "\x00" in name)
