"""Watches the engine's preprocessor table run (engine/preprocessors.py): which preprocessor ran, on what,
with which settings and on which thread; optionally slowed down until the test lets it go."""

from __future__ import annotations

import threading
import types

from sdstudio.engine import preprocessors


def install(monkeypatch, delay: threading.Event | None = None) -> types.SimpleNamespace:
    """Wrap `preprocessors.run`; returns `calls`: (name, image size, params, thread name) per run. With
    `delay`, each run first waits for the event (a slow preprocessor)."""
    seen = types.SimpleNamespace(calls=[])
    real = preprocessors.run

    def run(name, image, params=()):
        seen.calls.append((name, image.size, tuple(params), threading.current_thread().name))
        if delay is not None:
            delay.wait(5)
        return real(name, image, params)

    monkeypatch.setattr(preprocessors, "run", run)
    return seen
