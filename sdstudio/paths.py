"""Where SD Studio finds its resources and keeps user data.

Resources (tokenizer, built-in model, icons) are package data in sdstudio/resources/, so a source checkout,
an installed wheel and a PyInstaller bundle (which puts them in <_MEIPASS>/resources/) all carry them.
User data lives under the platform's app-data folder, or under $SDSTUDIO_HOME when set (tests and scripts
use it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "SDStudio"


def resources_dir() -> Path:
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"  # the layout packaging/trim.py resource_datas() gives the bundle
    return Path(__file__).resolve().parent / "resources"


def tokenizer_dir() -> Path:
    return resources_dir() / "tokenizer"


def builtin_models_dir() -> Path:
    return resources_dir() / "models"


def builtin_controlnet_dir() -> Path:
    """The built-in model's companion ControlNet(s), listed beside the user's models/ControlNet."""
    return builtin_models_dir() / "ControlNet"


def home() -> Path:
    override = os.environ.get("SDSTUDIO_HOME")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / APP_NAME


def models_dir() -> Path:
    return home() / "models"


def lora_dir() -> Path:
    """A1111's folder for LoRA and LyCORIS files (models/Lora), so a user's habits and scripts carry over."""
    return models_dir() / "Lora"


def controlnet_dir() -> Path:
    """A1111's folder for ControlNet models (models/ControlNet, sd-webui-controlnet's default)."""
    return models_dir() / "ControlNet"


def approx_decoders_dir() -> Path:
    """A1111's folder for tiny preview decoders (TAESD): models/VAE-approx."""
    return models_dir() / "VAE-approx"


def embeddings_dir() -> Path:
    """A1111's folder for textual-inversion embeddings."""
    return home() / "embeddings"


def annotators_dir() -> Path:
    """Weights of the ControlNet preprocessors that need a network (depth, pose, normals): models/annotators,
    where the user puts the files (sd-webui-controlnet's annotator file names)."""
    return models_dir() / "annotators"


def outputs_dir() -> Path:
    return home() / "outputs"


def history_db() -> Path:
    return home() / "history.sqlite3"


def logs_dir() -> Path:
    return home() / "logs"
