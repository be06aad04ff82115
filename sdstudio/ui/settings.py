"""Persistent settings: an ini file under the user-data home, never the platform registry.

Keeping it a file under `paths.home()` means SDSTUDIO_HOME redirects every setting, so tests and scripts never
read or write a real user's preferences.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import platform
import re
import sys
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMainWindow, QSplitter

from sdstudio import paths
from sdstudio.engine.job_size import TILED_VAE_MODES
from sdstudio.engine.outpaint import DEFAULT_FILL, FILLS, MAX_EXTENSION
from sdstudio.remote.servers import Server, servers_from_json, servers_to_json
from sdstudio.ui.outpaint_bar import DEFAULT_AMOUNT
from sdstudio.ui.prompt_state import PromptState

_PROMPT_GROUP = "prompt"
DEVICE_KEY = "engine/device"
ALLOW_PICKLE_KEY = "engine/allow_pickle"
TILED_VAE_KEY = "engine/tiled_vae"
# The tiled VAE's modes (engine/job_size.py TILED_VAE_MODES) with their menu labels.
TILED_VAE_LABELS = (("auto", "&Automatic (large images, low memory)"), ("on", "Always &On"), ("off", "O&ff"))
NETWORK_DIR_KEYS = ("networks/lora_dirs", "networks/embedding_dirs")
OUTPAINT_KEYS = ("outpaint/amount", "outpaint/fill")
BACKEND_KEYS = ("backends/local", "backends/servers")
CONTROL_LAYERS_KEY = "control/layers"  # JSON of ui/control_store.py; images are in control_layers_dir()
# The engine's device names (sdstudio/engine/devices.py, which imports torch) with their menu labels.
DEVICES = (("auto", "&Automatic"), ("cpu", "&CPU"), ("cuda", "CU&DA (NVIDIA/AMD GPU)"), ("mps", "&MPS (Apple GPU)"))


def open_settings() -> QSettings:
    """The application's settings file (created on first write)."""
    return QSettings(str(paths.home() / "settings.ini"), QSettings.Format.IniFormat)


def load_prompt_state(settings: QSettings) -> PromptState:
    """The saved panel values; anything missing or unreadable keeps its default."""
    state = PromptState()
    settings.beginGroup(_PROMPT_GROUP)
    try:
        for f in dataclasses.fields(PromptState):
            if settings.contains(f.name):
                value = _coerce(settings.value(f.name), type(getattr(state, f.name)))
                if value is not None:
                    setattr(state, f.name, value)
    finally:
        settings.endGroup()
    return state


def save_prompt_state(settings: QSettings, state: PromptState) -> None:
    settings.beginGroup(_PROMPT_GROUP)
    for f in dataclasses.fields(PromptState):
        settings.setValue(f.name, getattr(state, f.name))
    settings.endGroup()


def _coerce(raw: object, kind: type) -> object | None:
    # The ini backend hands every scalar back as a string.
    try:
        if kind is bool:
            return raw if isinstance(raw, bool) else str(raw).strip().lower() in ("true", "1", "yes")
        return kind(raw)
    except (TypeError, ValueError):
        return None


def save_window_layout(settings: QSettings, window: QMainWindow, splitter: QSplitter) -> None:
    settings.setValue("window/geometry", window.saveGeometry())
    settings.setValue("window/state", window.saveState())
    settings.setValue("window/splitter", splitter.saveState())


def restore_window_layout(settings: QSettings, window: QMainWindow, splitter: QSplitter | None = None) -> bool:
    """The dock layout; with the splitter given also the geometry (first, as Qt wants) and the splitter. Returns
    whether a geometry was restored."""
    geometry = settings.value("window/geometry") if splitter is not None else None
    restored = geometry is not None and window.restoreGeometry(geometry)
    if settings.value("window/state") is not None:
        window.restoreState(settings.value("window/state"))
    if splitter is not None and settings.value("window/splitter") is not None:
        splitter.restoreState(settings.value("window/splitter"))
    return restored


def load_device(settings: QSettings) -> str:
    """The chosen engine device; "auto" when unset or not one of DEVICES."""
    device = str(settings.value(DEVICE_KEY, "auto"))
    return device if device in dict(DEVICES) else "auto"


def save_device(settings: QSettings, device: str) -> None:
    settings.setValue(DEVICE_KEY, device)
    settings.sync()


def load_tiled_vae(settings: QSettings) -> str:
    """The tiled VAE mode every job gets (request.tiled_vae); "auto" when unset or unknown."""
    mode = str(settings.value(TILED_VAE_KEY, "auto"))
    return mode if mode in TILED_VAE_MODES else "auto"


def save_tiled_vae(settings: QSettings, mode: str) -> None:
    if mode not in TILED_VAE_MODES:
        raise ValueError(f"tiled VAE mode must be one of {', '.join(TILED_VAE_MODES)}, not {mode!r}")
    settings.setValue(TILED_VAE_KEY, mode)
    settings.sync()


def load_outpaint(settings: QSettings) -> tuple[int, str]:
    """The canvas's outpaint amount (pixels, within 1..MAX_EXTENSION) and fill (one of engine/outpaint.py's
    FILLS); each its default when unset or unreadable."""
    amount = _coerce(settings.value(OUTPAINT_KEYS[0], DEFAULT_AMOUNT), int)
    fill = str(settings.value(OUTPAINT_KEYS[1], DEFAULT_FILL))
    return (amount if isinstance(amount, int) and 0 < amount <= MAX_EXTENSION else DEFAULT_AMOUNT,
            fill if fill in FILLS else DEFAULT_FILL)


def save_outpaint(settings: QSettings, amount: int, fill: str) -> None:
    if fill not in FILLS:
        raise ValueError(f"outpaint fill must be one of {', '.join(FILLS)}, not {fill!r}")
    settings.setValue(OUTPAINT_KEYS[0], int(amount))
    settings.setValue(OUTPAINT_KEYS[1], fill)


def load_allow_pickle(settings: QSettings) -> bool:
    """Whether .ckpt/.pt checkpoints may load (weights-only); off unless the user turned it on."""
    return _coerce(settings.value(ALLOW_PICKLE_KEY, False), bool) is True


def save_allow_pickle(settings: QSettings, allow: bool) -> None:
    settings.setValue(ALLOW_PICKLE_KEY, bool(allow))
    settings.sync()


def device_unavailable(device: str) -> str:
    """Why `device` cannot work here ("" when it may), found without importing torch on the GUI thread: the
    torch build says whether it was built for CUDA/ROCm, the platform whether Metal exists. The engine still
    checks for a GPU when it starts on the device and reports its own one-line error."""
    if device == "cuda" and not _torch_build_has("cuda", "hip"):
        return "this torch build has no CUDA or ROCm support"
    if device == "mps" and not (sys.platform == "darwin" and platform.machine() == "arm64"):
        return "Apple's Metal backend needs a Mac with Apple silicon"
    return ""


def _torch_build_has(*backends: str) -> bool:
    spec = importlib.util.find_spec("torch")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return False
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text(encoding="utf-8")
    except OSError:
        return False
    names = "|".join(backends)
    return re.search(rf"^(?:{names})\s*(?::[^=]*)?=\s*['\"][^'\"]+['\"]", text, re.M) is not None


def load_network_dirs(settings: QSettings) -> tuple[list[str], list[str]]:
    """The extra LoRA and embedding folders the user added (an A1111 or ComfyUI install's), in order."""
    lora, embeddings = (_folder_list(settings.value(key)) for key in NETWORK_DIR_KEYS)
    return lora, embeddings


def save_network_dirs(settings: QSettings, lora_dirs: list[str], embedding_dirs: list[str]) -> None:
    for key, folders in zip(NETWORK_DIR_KEYS, (lora_dirs, embedding_dirs), strict=True):
        # JSON, not the ini's own lists: a one-element list comes back from QSettings as a plain string.
        settings.setValue(key, json.dumps([str(f) for f in folders]))
    settings.sync()


def _folder_list(raw: object) -> list[str]:
    try:
        folders = json.loads(str(raw)) if raw is not None else []
    except ValueError:
        return []
    return [f for f in folders if isinstance(f, str) and f.strip()] if isinstance(folders, list) else []


def load_backends(settings: QSettings) -> tuple[bool, list[Server]]:
    """Whether this computer runs jobs (on unless turned off) and the A1111-compatible servers listed."""
    local = _coerce(settings.value(BACKEND_KEYS[0], True), bool) is not False
    return local, servers_from_json(str(settings.value(BACKEND_KEYS[1], "") or ""))


def save_backends(settings: QSettings, local: bool, servers: list[Server]) -> None:
    # JSON for the list (as the folder lists): QSettings turns a one-element list into a string.
    settings.setValue(BACKEND_KEYS[0], bool(local))
    settings.setValue(BACKEND_KEYS[1], servers_to_json(servers))
    settings.sync()


def control_layers_dir() -> Path:
    """Where the control layers' opened images and paintings are kept between sessions."""
    return paths.home() / "control_layers"


def load_control_layers_text(settings: QSettings) -> str:
    raw = settings.value(CONTROL_LAYERS_KEY, "")
    return raw if isinstance(raw, str) else ""


def save_control_layers_text(settings: QSettings, text: str) -> None:
    settings.setValue(CONTROL_LAYERS_KEY, text)
