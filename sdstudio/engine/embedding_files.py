"""Textual-inversion embedding files on disk, torch-free: which file a prompt word names, and how many vectors
a file holds, read from its header, so the UI's token counter can count embeddings without loading torch.

Names (one rule for the engine and the UI): A1111 refers to an embedding by its file stem; its tokenizer
lowercases, so the match ignores case (an exact-case stem wins over another file differing only in case).
ComfyUI's `embedding:NAME` also accepts `NAME.pt` / `.safetensors` / `.bin` and a path relative to an
embeddings folder (`embedding:sub/NAME`). The folders are $SDSTUDIO_HOME/embeddings and the extra ones
(network_files.embedding_dirs). A name two files answer to (in two folders, or `x.pt` beside
`x.safetensors`) is refused naming both, as network_files.find_embedding refuses it for a re-run.

Vector counts: a safetensors header gives the shapes directly. A PyTorch `.pt`/`.bin` (torch.save's zip:
`*/data.pkl` plus raw storages) is read with an unpickler that builds nothing but dictionaries, lists and
shape stand-ins for tensors: any other class in the pickle makes the count unknown (None), and the engine's
weights-only load decides about the file. Legacy (pre-zip) torch files give None too.
"""

from __future__ import annotations

import io
import os
import pickle
import threading
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sdstudio.engine.errors import NetworkFileError
from sdstudio.engine.network_files import EMBEDDING_SUFFIXES, embedding_dirs, list_files
from sdstudio.engine.prompt_grammar import EmbeddingLookup
from sdstudio.engine.safetensors_file import read_header
from sdstudio.untrusted import quoted

MAX_PICKLE_BYTES = 1 << 20  # an embedding's data.pkl is a few hundred bytes; refuse to parse more


@dataclass(frozen=True)
class EmbeddingIndex:
    """The embedding files of some folders, by the names a prompt can use; `state` changes whenever a file is
    added, removed or rewritten (a cache key)."""

    folders: tuple[Path, ...]
    files: tuple[Path, ...]
    state: tuple[tuple[str, int, int], ...]
    # name -> files: stem, casefolded stem, casefolded file name, relative path (with and without suffix)
    _names: dict[str, dict[str, list[Path]]] = field(default_factory=dict, repr=False)

    def resolve(self, text: str, explicit: bool = False) -> Path | None:
        """The file `text` names: a stem (A1111, `explicit` False), or ComfyUI's NAME / NAME.ext / sub/NAME
        (`explicit` True); None when nothing matches, NetworkFileError when two files do."""
        if not explicit:
            return self._one(text, self._get("stem", text) or self._get("folded", text.casefold()))
        rel = text.replace("\\", "/").strip("/").casefold()
        if rel.endswith(EMBEDDING_SUFFIXES):
            return self._one(text, self._get("relative", rel) or ([] if "/" in rel else self._get("file", rel)))
        if "/" in rel:
            return self._one(text, self._get("relative_stem", rel))
        return self.resolve(text)

    def _get(self, kind: str, key: str) -> list[Path]:
        return self._names.get(kind, {}).get(key, [])

    def _one(self, text: str, paths: list[Path]) -> Path | None:
        if len(paths) > 1:  # as network_files.find_embedding: never a silent choice between two files
            listed = ", ".join(str(p) for p in paths)
            raise NetworkFileError(f"several embeddings are named {quoted(text)} ({listed}); rename or remove one")
        return paths[0] if paths else None


def not_found(text: str, folders: Iterable[Path]) -> NetworkFileError:
    """The error for an `embedding:NAME` that names no file (engine and token counter say the same)."""
    where = ", ".join(str(f) for f in folders)
    return NetworkFileError(f"embedding {quoted(text)} was not found in the embeddings folders ({where})")


def index_embeddings(folders: Sequence[Path]) -> EmbeddingIndex:
    """List the embedding files under `folders` (subfolders included) and index them by name."""
    files = list_files(folders, EMBEDDING_SUFFIXES)
    names: dict[str, dict[str, list[Path]]] = {k: {} for k in ("stem", "folded", "file", "relative", "relative_stem")}
    state = []
    for path in files:
        relative = path.relative_to(next(f for f in folders if path.is_relative_to(f))).as_posix().casefold()
        keys = {"stem": path.stem, "folded": path.stem.casefold(), "file": path.name.casefold(),
                "relative": relative, "relative_stem": relative[: -len(path.suffix)]}
        for kind, key in keys.items():
            names[kind].setdefault(key, []).append(path)
        try:
            st = path.stat()
            state.append((str(path), st.st_size, st.st_mtime_ns))
        except OSError:
            state.append((str(path), -1, -1))
    return EmbeddingIndex(tuple(folders), tuple(files), tuple(state), names)


def library_index(extra: Iterable[str | os.PathLike] = ()) -> EmbeddingIndex:
    """$SDSTUDIO_HOME/embeddings and the `extra` folders, indexed."""
    return index_embeddings(embedding_dirs(extra))


def count_from_shapes(shapes: Mapping[str, Sequence[int]]) -> int | None:
    """How many vectors (token slots) an embedding of these tensor shapes takes; None when the layout is not
    one of the known formats (the engine's reader then says why). Keys are flattened with dots."""
    if "clip_l" in shapes and "clip_g" in shapes:
        shape = shapes["clip_l"]
    else:
        params = [k for k in shapes if k.startswith("string_to_param.")]
        if params:
            shape = shapes[params[0]] if len(params) == 1 else ()
        elif len(shapes) == 1:
            shape = next(iter(shapes.values()))
        else:
            return None
    if len(shape) == 1:
        return 1
    return int(shape[0]) if len(shape) == 2 else None


def vector_count(path: str | os.PathLike) -> int | None:
    """The number of vectors in an embedding file, from its header alone; None when it cannot be told."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            return count_from_shapes(read_header(path).shapes())
        return count_from_shapes(pickle_shapes(path))
    except Exception:  # a hostile pickle can raise anything (TypeError, RecursionError...): count unknown
        return None  # (counted as an estimate; the engine's weights-only load says what is wrong)


class EmbeddingCounts:
    """The token counter's view of the embeddings folders, without torch: names from an index (re-listed by
    `refresh`), vector counts from file headers (cached per path, size and mtime)."""

    def __init__(self, extra: Iterable[str | os.PathLike] = ()):
        self.extra = tuple(str(f) for f in extra)
        self.index = EmbeddingIndex((), (), ())
        self._counts: dict[tuple[str, int, int], int | None] = {}
        self._refreshing = threading.Lock()  # a background re-list and a change of folders: the later wins

    def refresh(self, extra: Iterable[str | os.PathLike] | None = None) -> None:
        with self._refreshing:
            if extra is not None:
                self.extra = tuple(str(f) for f in extra)
            self.index = library_index(self.extra)

    def count(self, path: Path) -> int | None:
        try:
            st = path.stat()
        except OSError:
            return None
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._counts:
            self._counts[key] = vector_count(path)
        return self._counts[key]

    def lookup(self, unknown: set[str]) -> EmbeddingLookup:
        """The prompt grammar's lookup; an embedding whose count its header does not tell is counted as one
        vector and its name added to `unknown` (the count is then an estimate)."""
        index = self.index

        def lookup(text: str, explicit: bool) -> tuple[str, int] | None:
            path = index.resolve(text, explicit)
            if path is None:
                if explicit:
                    raise not_found(text, index.folders)
                return None
            count = self.count(path)
            if count is None:
                unknown.add(path.stem)
            return path.stem, count or 1

        return lookup


class _Tensor:
    """A tensor's shape, standing in for the tensor while reading a pickle without torch."""

    def __init__(self, shape: Sequence[int]):
        self.shape = tuple(int(n) for n in shape)


def _rebuild_tensor(storage: object, offset: object, size: Sequence[int], *rest: object) -> _Tensor:
    return _Tensor(size)


def _rebuild_parameter(data: object, *rest: object) -> object:
    return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): dict,
}


class _ShapeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name.endswith("Storage"):  # a storage's type, named in its persistent id
            return name
        raise pickle.UnpicklingError(f"{module}.{name} is not read without torch")

    def persistent_load(self, pid: object) -> object:
        return None  # the storage's bytes are not needed for a shape


def pickle_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors in a torch.save zip file, keys flattened with dots; ValueError when it holds
    something other than (nested) dictionaries of tensors and plain values."""
    with zipfile.ZipFile(path) as archive:
        member = next((i for i in archive.infolist() if i.filename.endswith("data.pkl")), None)
        if member is None or member.file_size > MAX_PICKLE_BYTES:
            raise ValueError("no small data.pkl in the archive")
        data = _ShapeUnpickler(io.BytesIO(archive.read(member))).load()
    shapes: dict[str, tuple[int, ...]] = {}

    def walk(value: object, prefix: str) -> None:
        if isinstance(value, _Tensor):
            shapes[prefix] = value.shape
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))

    if isinstance(data, _Tensor):
        return {"": data.shape}
    if not isinstance(data, dict):
        raise ValueError("not a dictionary")
    walk(data, "")
    return shapes
