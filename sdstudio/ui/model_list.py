"""The model picker's choices: the built-in model, the models folder, and files added from elsewhere.

Listing is a directory scan on the GUI thread (no torch import); "Add model…" remembers a path in the
settings instead of copying a multi-gigabyte file into the models folder.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

from sdstudio.engine.detect import ModelDescription, detect
from sdstudio.engine.errors import SDStudioError
from sdstudio.engine.model_files import MODEL_SUFFIXES, builtin_model_path, folder_models
from sdstudio.engine.safetensors_file import PICKLE_SUFFIXES, read_header

BUILTIN_LABEL = "SD Studio emoji (built-in)"
_EXTRA_KEY = "models/extra"


def extra_models(settings: QSettings) -> list[str]:
    value = settings.value(_EXTRA_KEY, [])
    items = [value] if isinstance(value, str) else list(value or [])
    return [p for p in items if p]


def add_extra_model(settings: QSettings, path: str) -> None:
    items = extra_models(settings)
    if path not in items:
        settings.setValue(_EXTRA_KEY, [*items, path])


def remove_extra_model(settings: QSettings, path: str) -> None:
    """Forget an added model; the file itself stays where it is."""
    settings.setValue(_EXTRA_KEY, [p for p in extra_models(settings) if p != path])


def model_label(path: str) -> str:
    """The name shown for a model path ("" is the built-in model)."""
    return Path(path).stem if path else BUILTIN_LABEL


def loaded_model_path(description: ModelDescription) -> str:
    """The model path as the app names it ("" for the built-in model) of what the engine says it loaded."""
    if not description.path or Path(description.path) == builtin_model_path():
        return ""
    return description.path


def same_model(a: str, b: str) -> bool:
    return a == b or bool(a and b and Path(a) == Path(b))


def model_choices(models_dir: Path, settings: QSettings) -> list[tuple[str, str]]:
    """(label, path) pairs: built-in ("" path) first, then the folder's files, then added files that exist."""
    found = sorted(folder_models(models_dir), key=lambda p: p.name.lower())
    known = {str(p) for p in found}
    found += [Path(p) for p in extra_models(settings) if p not in known and Path(p).is_file()]
    return [(BUILTIN_LABEL, "")] + [(model_label(str(p)), str(p)) for p in found]


def is_model_file(path: str) -> bool:
    """A checkpoint by its name (a file dropped on the window is added as a model, not opened as an image)."""
    return Path(path).suffix.lower() in (*MODEL_SUFFIXES, *PICKLE_SUFFIXES)


def checkpoint_problem(path: str) -> str:
    """Why `path` cannot be added as a checkpoint, read from its header alone (no torch); "" when it can.
    A LoRA, ControlNet, VAE or an architecture we do not run is named by detection."""
    if Path(path).suffix.lower() not in MODEL_SUFFIXES:
        return ""  # a pickle: its header is torch's; the load says what it is
    try:
        detect(read_header(Path(path)))
    except SDStudioError as exc:
        return str(exc)
    return ""
