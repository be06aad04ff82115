"""Control layers kept between sessions: each layer's plain settings as JSON (for the settings file), its
opened image and its painting as PNG files in a folder of the data home (never inside the settings blob).

Qt-free. Restoring never fails the app: a layer whose model file or image file has gone comes back without
it and a one-line notice says so; a saved state that cannot be read is dropped with a notice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sdstudio.ui.control_state import PAINT, SOURCES, ControlLayer

VERSION = 1
IMAGE_SUFFIX, PAINTING_SUFFIX = "-image.png", "-painting.png"
# The plain fields saved as they are, with the type each must have when read back.
_PLAIN: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("model", str), ("source", str), ("image_name", str), ("preprocessor", str),
    ("strength", (int, float)), ("start", (int, float)), ("end", (int, float)), ("mode", str),
    ("resize_mode", str), ("enabled", bool), ("map_visible", bool), ("map_opacity", (int, float)),
    ("trace", bool))


@dataclass
class Restored:
    """What a saved state gives back: the layers, each one's painting (None for image layers, or a painting
    not found), and the notices to show the user."""

    layers: list[ControlLayer] = field(default_factory=list)
    paintings: list[np.ndarray | None] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def save_layers(layers: list[ControlLayer], paintings: list[np.ndarray | None], folder: Path) -> str:
    """Write each layer's image / painting into `folder` (its earlier files replaced) and return the JSON that
    describes the layers."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("layer-*.png"):
        old.unlink()
    saved = []
    for i, (layer, painting) in enumerate(zip(layers, paintings, strict=True)):
        entry: dict[str, object] = {name: getattr(layer, name) for name, _kind in _PLAIN}
        entry["preprocessor_params"] = [[k, v] for k, v in layer.preprocessor_params]
        if layer.image is not None:
            entry["image_file"] = f"layer-{i}{IMAGE_SUFFIX}"
            layer.image.save(folder / str(entry["image_file"]))
        if painting is not None and painting.size:
            entry["painting_file"] = f"layer-{i}{PAINTING_SUFFIX}"
            pixels = Image.fromarray(np.ascontiguousarray(painting, dtype=np.uint8))
            pixels.save(folder / str(entry["painting_file"]))
        saved.append(entry)
    return json.dumps({"version": VERSION, "layers": saved})


def load_layers(text: str, folder: Path, model_exists: Callable[[str], bool] = lambda p: Path(p).is_file()
                ) -> Restored:
    """The layers `save_layers` described; an unreadable description gives none and one notice."""
    if not text:
        return Restored()
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("layers"),
                                                                                         list):
            raise ValueError(f"not a version {VERSION} list of layers")
        restored = Restored()
        for n, entry in enumerate(data["layers"], 1):
            layer, painting, notices = _layer(entry, n, folder, model_exists)
            restored.layers.append(layer)
            restored.paintings.append(painting)
            restored.notices += notices
        return restored
    except (ValueError, TypeError, KeyError) as exc:
        return Restored(notices=[f"The saved control layers could not be read ({exc}); starting without "
                                 "them"])


def _layer(entry: object, n: int, folder: Path, model_exists: Callable[[str], bool]
           ) -> tuple[ControlLayer, np.ndarray | None, list[str]]:
    if not isinstance(entry, dict):
        raise ValueError(f"layer {n} is not an object")
    values = {}
    for name, kind in _PLAIN:
        if name in entry:
            value = entry[name]
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise ValueError(f"layer {n}: {name} is {value!r}")
            values[name] = float(value) if kind == (int, float) else value
    if values.get("source", PAINT) not in SOURCES:
        raise ValueError(f"layer {n}: unknown image source {values['source']!r}")
    params = tuple((str(k), float(v)) for k, v in entry.get("preprocessor_params", []))
    layer = ControlLayer(**values, preprocessor_params=params)
    notices = []
    if layer.model and not model_exists(layer.model):
        notices.append(f"Control layer {n}: its model {Path(layer.model).name} is missing; choose another")
        layer.model = ""
    if "image_file" in entry:
        layer.image = _read(folder / str(entry["image_file"]), "RGB")
        if layer.image is None:
            notices.append(f"Control layer {n}: its image ({layer.image_name or 'saved file'}) is missing; "
                           "open it again")
            layer.image_name = ""
    painting = None
    if "painting_file" in entry:
        image = _read(folder / str(entry["painting_file"]), "L")
        if image is None:
            notices.append(f"Control layer {n}: its painting is missing; it starts blank")
        else:
            painting = np.asarray(image, dtype=np.uint8).copy()
    return layer, painting, notices


def _read(path: Path, mode: str) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (OSError, ValueError):
        return None
