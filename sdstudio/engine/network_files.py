"""Where add-on network files live: LoRA / LyCORIS (A1111's models/Lora) and textual-inversion embeddings
(A1111's embeddings/), under the data folder, plus folders the user adds (an existing A1111 or ComfyUI
install). No torch here: the UI's browser and history's re-run lookups list them without the engine.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from sdstudio import paths
from sdstudio.engine.errors import CheckpointError, NetworkFileError
from sdstudio.engine.model_files import file_sha256
from sdstudio.engine.safetensors_file import read_header
from sdstudio.untrusted import printable, quoted

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")


def _folders(own: Path, extra: Iterable[str | Path]) -> list[Path]:
    found: list[Path] = []
    for folder in (own, *(Path(f).expanduser() for f in extra if str(f).strip())):
        if folder not in found:
            found.append(folder)
    return found


def lora_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    """$SDSTUDIO_HOME/models/Lora first, then `extra` in order, duplicates dropped (missing folders kept: a
    caller may say which folders it looked in)."""
    return _folders(paths.lora_dir(), extra)


def embedding_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    """$SDSTUDIO_HOME/embeddings first, then `extra` in order, duplicates dropped."""
    return _folders(paths.embeddings_dir(), extra)


def list_files(folders: Sequence[Path], suffixes: Sequence[str]) -> list[Path]:
    """Regular files with one of `suffixes` under `folders` (subfolders included), each folder's sorted by
    path, in folder order; folders that do not exist give nothing."""
    found: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            found.extend(sorted(p for p in folder.rglob("*")
                                if p.suffix.lower() in suffixes and p.is_file() and p not in found))
    return found


# --- A1111's short hashes -------------------------------------------------------------------------------
#
# LoRA (extensions-builtin/Lora/network.py `NetworkOnDisk`): the file's `sshs_model_hash` metadata when it
# has one (kohya writes it), else `hashes.sha256(..., use_addnet_hash=is_safetensors)`: for .safetensors the
# SHA-256 of the bytes after the 8-byte header length and the JSON header (`addnet_hash_safetensors`: the
# tensor data only, so editing metadata keeps the hash), for .pt/.ckpt of the whole file; the first 12 hex
# digits. Embeddings (modules/textual_inversion/textual_inversion.py): the whole file's SHA-256, 12 digits.
# Both are cached per (path, size, mtime), like model hashes: a changed file is hashed again.

SHORT_HASH_LENGTH = 12
_HEX = frozenset("0123456789abcdef")
_DATA_SHA256: dict[tuple[str, int, int], str] = {}
_METADATA: dict[tuple[str, int, int], dict[str, str]] = {}
_CACHE_LOCK = threading.Lock()


def _file_key(path: Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return str(path), st.st_size, st.st_mtime_ns


def is_short_hash(text: str) -> bool:
    """Whether `text` is a hash as infotexts carry them: 8 to 64 lowercase-able hex digits."""
    return 8 <= len(text) <= 64 and set(text.lower()) <= _HEX


def lora_metadata(path: Path) -> dict[str, str]:
    """A .safetensors LoRA's `__metadata__` (header only, cached per path, size and mtime); {} for .pt/.ckpt
    (A1111 reads metadata from safetensors only). NetworkFileError for a damaged or pickled .safetensors."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return {}
    key = _file_key(path)
    with _CACHE_LOCK:
        cached = _METADATA.get(key)
    if cached is None:
        try:
            cached = read_header(path).metadata
        except CheckpointError as exc:
            raise NetworkFileError(f"LoRA {exc}") from None
        with _CACHE_LOCK:
            _METADATA[key] = cached
    return dict(cached)


def _data_sha256(path: Path) -> str:
    """SHA-256 of a safetensors file's bytes after its header (kohya's and A1111's "addnet" hash)."""
    key = _file_key(path)
    with _CACHE_LOCK:
        cached = _DATA_SHA256.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    shown = printable(path.name, multiline=False)
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) < 8:
            raise NetworkFileError(f"LoRA {shown}: {key[1]} bytes is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if 8 + length > key[1]:
            raise NetworkFileError(f"LoRA {shown}: truncated (the header claims {length} bytes, the file has "
                                   f"{key[1] - 8}); download it again")
        file.seek(8 + length)
        while chunk := file.read(1 << 24):
            digest.update(chunk)
    with _CACHE_LOCK:
        _DATA_SHA256[key] = digest.hexdigest()
    return _DATA_SHA256[key]


def lora_short_hash(path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> str:
    """A1111's LoRA hash (12 hex digits), as written in "Lora hashes". `metadata`: the file's, when the caller
    has read it already. NetworkFileError when the file cannot be read."""
    path = Path(path)
    safetensors = path.suffix.lower() == ".safetensors"
    if metadata is None:
        metadata = lora_metadata(path) if safetensors else {}
    declared = str(metadata.get("sshs_model_hash", "")).strip().lower()
    if len(declared) >= SHORT_HASH_LENGTH and is_short_hash(declared):
        return declared[:SHORT_HASH_LENGTH]
    try:
        return (_data_sha256(path) if safetensors else file_sha256(path))[:SHORT_HASH_LENGTH]
    except OSError as exc:
        raise NetworkFileError(f"LoRA {path}: cannot be read ({exc.strerror or exc})") from None


def embedding_short_hash(path: str | os.PathLike) -> str:
    """A1111's embedding hash (12 hex digits), as written in "TI hashes": the whole file's SHA-256."""
    try:
        return file_sha256(path)[:SHORT_HASH_LENGTH]
    except OSError as exc:
        raise NetworkFileError(f"embedding {path}: cannot be read ({exc.strerror or exc})") from None


# --- Finding a file a prompt or an image names ------------------------------------------------------------


def find_lora(name: str, short_hash: str = "", extra_dirs: Iterable[str | Path] = ()) -> Path:
    """The LoRA file `<lora:NAME:…>` means, under `lora_dirs(extra_dirs)`.

    As A1111: NAME is a file stem, else a file's `ss_output_name` alias (the stem wins when both exist). A stem
    is compared exactly first, then ignoring case. With `short_hash` (a re-run: "Lora hashes") the file must
    have that hash: the named files are hashed first, then every other one, so a renamed file is found too.
    NetworkFileError (one line) saying which LoRA is missing and where we looked, or which files are ambiguous.
    """
    folders = lora_dirs(extra_dirs)
    files = list_files(folders, LORA_SUFFIXES)
    named = _by_stem(files, name)
    unreadable: list[Path] = []
    if not named:
        named = _by_alias(files, name, unreadable)
    return _choose("LoRA", name, short_hash, folders, files, named, lora_short_hash, unreadable)


def find_embedding(name: str, short_hash: str = "", extra_dirs: Iterable[str | Path] = ()) -> Path:
    """The embedding file named `name` (its stem) under `embedding_dirs(extra_dirs)`; with `short_hash` (a
    re-run: "TI hashes") the file must have that hash, and a renamed file is found by it. NetworkFileError
    as `find_lora`."""
    folders = embedding_dirs(extra_dirs)
    files = list_files(folders, EMBEDDING_SUFFIXES)
    return _choose("embedding", name, short_hash, folders, files, _by_stem(files, name), embedding_short_hash, [])


def _choose(kind: str, name: str, short_hash: str, folders: Sequence[Path], files: Sequence[Path],
            named: Sequence[Path], hash_of, unreadable: list[Path]) -> Path:
    """The one file of `named` (or, with a hash, of all `files`, the named first) a lookup means."""
    wanted = short_hash.strip().lower()
    if wanted:
        for path in [*named, *(p for p in files if p not in named)]:
            try:
                if _same_hash(hash_of(path), wanted):
                    return path
            except NetworkFileError:
                unreadable.append(path)
    elif len(named) == 1:
        return named[0]
    elif len(named) > 1:
        listed = ", ".join(str(p) for p in named)
        plural = "LoRA files" if kind == "LoRA" else "embeddings"
        raise NetworkFileError(f"several {plural} are named {quoted(name)} ({listed}); rename or remove one")
    raise NetworkFileError(_missing(kind, name, wanted, folders, bool(named), unreadable))


def _by_stem(files: Sequence[Path], name: str) -> list[Path]:
    exact = [p for p in files if p.stem == name]
    return exact or [p for p in files if p.stem.casefold() == name.casefold()]


def _by_alias(files: Sequence[Path], name: str, unreadable: list[Path]) -> list[Path]:
    found = []
    for path in files:
        try:
            if lora_metadata(path).get("ss_output_name") == name:
                found.append(path)
        except (NetworkFileError, OSError):
            unreadable.append(path)  # a damaged file elsewhere in the folder must not hide the one asked for
    return found


def _same_hash(short: str, wanted: str) -> bool:
    """Whether an infotext's hash (12 hex digits; 8 in some older tools; a full SHA-256) is this file's."""
    return short.startswith(wanted) or wanted.startswith(short)


def _missing(kind: str, name: str, wanted: str, folders: Sequence[Path], name_seen: bool,
             unreadable: Sequence[Path]) -> str:
    shown = quoted(name, 120)  # from a prompt or an image's metadata: shown escaped
    what = f"{kind} {shown} (hash {printable(wanted, 64, multiline=False)})" if wanted else f"{kind} {shown}"
    where = ", ".join(str(f) for f in folders)
    differs = f"; the {shown} there has a different hash" if wanted and name_seen else ""
    skipped = (f"; {len(set(unreadable))} file(s) there could not be read, e.g. {unreadable[0].name}"
               if unreadable else "")
    return f"{what} is not in {where}{differs}{skipped}; put it there or add its folder"
