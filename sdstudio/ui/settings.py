"""Persistent settings: an ini file under the user-data home, never the platform registry.

Keeping it a file under `paths.home()` means SDSTUDIO_HOME redirects every setting, so tests and scripts never
read or write a real user's preferences.
"""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import QSettings

from sdstudio import paths
from sdstudio.ui.prompt_state import PromptState

_PROMPT_GROUP = "prompt"


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
