"""Where add-on network files live: LoRA / LyCORIS (A1111's models/Lora) and textual-inversion embeddings
(A1111's embeddings/), under the data folder, plus folders the user adds (an existing A1111 or ComfyUI
install). No torch here: the UI's browser and history's re-run lookups list them without the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from sdstudio import paths

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
