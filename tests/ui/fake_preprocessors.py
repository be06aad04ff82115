"""A stand-in for sdstudio.engine.preprocessors (names / run / pairing), installed into sys.modules by tests, so
the control layers can be tested before, and independently of, the engine's real table."""

from __future__ import annotations

import sys
import threading
import types

import numpy as np
from PIL import Image

from sdstudio.engine.errors import RequestError

NAME = "sdstudio.engine.preprocessors"


def install(monkeypatch, delay: threading.Event | None = None) -> types.SimpleNamespace:
    """Install the fake; returns what it recorded: `calls` (name, size, params, thread name). With `delay`,
    `run` waits for the event first (a slow preprocessor)."""
    seen = types.SimpleNamespace(calls=[])
    module = types.ModuleType(NAME)

    def run(name: str, image: Image.Image, params: dict) -> Image.Image:
        seen.calls.append((name, image.size, dict(params), threading.current_thread().name))
        if delay is not None:
            delay.wait(5)
        if name == "invert":
            return Image.fromarray(255 - np.asarray(image.convert("RGB")))
        if name == "broken":
            raise RequestError("broken: no annotator file")
        raise RequestError(f"unknown preprocessor {name}")

    module.names = lambda: ("none", "canny", "invert", "broken")
    module.run = run
    module.pairing = lambda model_name: "canny" if model_name.endswith("canny") else "none"
    monkeypatch.setitem(sys.modules, NAME, module)
    return seen
