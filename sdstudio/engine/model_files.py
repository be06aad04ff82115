"""Model files on disk: the built-in model, the models folder, A1111's model hashes, and finding the
checkpoint an image names. No torch here: the UI and history call it without loading the engine.

A1111 writes ``Model hash`` into its parameters text. Since 2023 that is the first 10 hex digits of the
file's SHA-256 (``modules/hashes.py``); older files carry the 8-hex "AutoV1" hash of 64 KiB read at
offset 1 MiB (``modules/sd_models.py: model_hash``). Both are accepted here.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from sdstudio import paths
from sdstudio.engine.errors import ModelNotFound
from sdstudio.engine.families import family
from sdstudio.untrusted import printable, quoted

MODEL_SUFFIXES = (".safetensors",)
BUILTIN_NAME = "sdstudio-emoji"
_LEGACY_OFFSET, _LEGACY_LENGTH = 0x100000, 0x10000


def builtin_model_path() -> Path:
    return paths.builtin_models_dir() / f"{BUILTIN_NAME}.safetensors"


def builtin_taesd_path() -> Path:
    return paths.builtin_models_dir() / f"{BUILTIN_NAME}.taesd_decoder.safetensors"


# Subfolders of the models folder that hold add-on networks, not checkpoints (A1111's names).
# A1111's upscaler model folders (engine/upscaler_models.py reads the ESRGAN-style ones).
UPSCALER_FOLDERS = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT", "ScuNET")
NETWORK_SUBFOLDERS = frozenset({"lora", "lycoris", "controlnet", "vae", "vae-approx",
                                *(name.lower() for name in UPSCALER_FOLDERS)})


UPSCALER_SUFFIXES = (".safetensors", ".pth", ".pt")


def upscaler_files(models_dir: Path | None = None) -> list[Path]:
    """Every upscaler model file in A1111's upscaler folders (subfolders included), by folder then name."""
    root = models_dir or paths.models_dir()
    found: list[Path] = []
    for folder in (root / name for name in UPSCALER_FOLDERS):
        if folder.is_dir():
            found += sorted(p for p in folder.rglob("*") if p.suffix.lower() in UPSCALER_SUFFIXES and p.is_file())
    return found


def upscaler_model_names(models_dir: Path | None = None) -> list[str]:
    """The upscaler models by name (file stem, A1111's naming), first of each name; torch-free for the UI."""
    names: list[str] = []
    for path in upscaler_files(models_dir):
        if path.stem not in names:
            names.append(path.stem)
    return names


def approx_decoder(family_name: str) -> Path | None:
    """The tiny preview decoder (TAESD) for a family, when the user put one in models/VAE-approx under the name
    madebyollin publishes (`taesd_decoder.safetensors`, `taesdxl_decoder.safetensors`); None otherwise."""
    stem = family(family_name).taesd_decoder
    found = paths.approx_decoders_dir() / f"{stem}.safetensors"
    return found if stem and found.is_file() else None


def folder_models(folder: Path) -> list[Path]:
    """Every checkpoint under `folder` (subfolders included, except the add-on network folders such as
    models/Lora), sorted by path; [] when there is no folder."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in MODEL_SUFFIXES and p.is_file()
                  and not _in_network_folder(p.relative_to(folder)))


def _in_network_folder(relative: Path) -> bool:
    return len(relative.parts) > 1 and relative.parts[0].lower() in NETWORK_SUBFOLDERS


def list_models(models_dir: Path | None = None) -> list[Path]:
    """The built-in model (when shipped) followed by every checkpoint in the user's models folder."""
    found = [builtin_model_path()] if builtin_model_path().is_file() else []
    return found + folder_models(models_dir or paths.models_dir())


# Full SHA-256 per (path, size, mtime): hashing a multi-GB checkpoint takes seconds, and a changed file
# (new size or mtime) is hashed again.
_SHA256: dict[tuple[str, int, int], str] = {}
_SHA256_LOCK = threading.Lock()


def _sha256(path: str | os.PathLike) -> str:
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _SHA256_LOCK:
        cached = _SHA256.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 24):
            digest.update(chunk)
    with _SHA256_LOCK:
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def file_sha256(path: str | os.PathLike) -> str:
    """The full SHA-256 (hex) of a file, cached per path, size and mtime; A1111 hashes checkpoints and
    textual-inversion embeddings this way (modules/hashes.py sha256), and LoRA .pt files
    (network_files.py)."""
    return _sha256(path)


def model_hash(path: str | os.PathLike) -> str:
    """A1111's "Model hash": the first 10 hex digits of the file's SHA-256 (cached per path, size, mtime)."""
    return _sha256(path)[:10]


def legacy_model_hash(path: str | os.PathLike) -> str:
    """A1111's old 8-hex "AutoV1" hash: SHA-256 of the 64 KiB at offset 1 MiB (cheap, so not cached)."""
    with open(path, "rb") as file:
        file.seek(_LEGACY_OFFSET)
        return hashlib.sha256(file.read(_LEGACY_LENGTH)).hexdigest()[:8]


def hash_matches(path: Path, wanted: str) -> bool:
    """Whether `wanted` (8-hex AutoV1, or a SHA-256 prefix of 10 or more hex digits) is this file's hash."""
    wanted = wanted.strip().lower()
    if len(wanted) == 8:
        return legacy_model_hash(path) == wanted
    return len(wanted) >= 10 and _sha256(path).startswith(wanted)


def resolve_model(name: str, model_hash: str, models_dir: Path | None = None) -> Path:
    """The checkpoint an image names, found among `list_models(models_dir)` (built-in model included).

    Files whose stem equals `name` are checked first, so a hash usually means hashing one file; when a
    hash is given it must match (a same-named file with another hash is a different model). Without a
    hash the name alone decides and must be unambiguous. Raises ModelNotFound saying what was looked for.
    """
    folder = models_dir or paths.models_dir()
    candidates = list_models(folder)
    named = [p for p in candidates if name and p.stem.lower() == name.strip().lower()]
    if model_hash:
        for path in named + [p for p in candidates if p not in named]:
            if hash_matches(path, model_hash):
                return path
    elif len(named) == 1:
        return named[0]
    elif len(named) > 1:
        listed = ", ".join(str(p) for p in named)
        raise ModelNotFound(f"several checkpoints are named {quoted(name)} ({listed}); choose a model")
    raise ModelNotFound(_not_found_message(name, model_hash, folder, bool(named)))


def _not_found_message(name: str, model_hash: str, folder: Path, name_seen: bool) -> str:
    if not name and not model_hash:
        return "this image does not say which model made it; choose a model"
    # The name and hash come from an image's metadata: shown escaped.
    shown, hash_ = quoted(name, 120), printable(model_hash, 64, multiline=False)
    what = f"{shown} (hash {hash_})" if name and model_hash else shown if name else f"with hash {hash_}"
    differs = f"; the {shown} there has a different hash" if name_seen else ""
    return f"this image was made with model {what}, which is not in {folder}{differs}; put it there or choose a model"
