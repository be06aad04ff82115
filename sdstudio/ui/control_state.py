"""What the control layers panel edits, as plain data, and how it becomes the request's ControlUnits.

One `ControlLayer` per ControlNet unit (Zhang et al. 2023, arXiv:2302.05543): its model file, where its image
comes from (an opened file, the canvas's current image, or a painting) and how strongly and when it steers.
A painted layer is the control image itself (white lines on black, as ControlNet's scribble, lineart and
canny models are trained on), so it takes no preprocessor. Qt-free: the panel edits it, tests drive it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from sdstudio.engine import preprocessors
from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import CONTROL_MODES, CONTROL_RESIZE_MODES, ControlUnit

FILE, CANVAS, PAINT = "file", "canvas", "paint"
SOURCES = (FILE, CANVAS, PAINT)
SOURCE_LABELS = {FILE: "Image file", CANVAS: "Canvas image", PAINT: "Paint"}
NO_PREPROCESSOR = preprocessors.NONE  # the image is the map
FROM_HISTORY = "from the image's history"  # the image_name of a layer a re-run restored
_DEFAULT = ControlUnit(model="")  # the one set of defaults, shared with the engine and the CLI


@dataclass
class ControlLayer:
    """One unit as the panel shows it. Mutable: the panel edits it; units are snapshots of it."""

    model: str = ""  # ControlNet file path, "" = none chosen yet
    source: str = PAINT
    image: Image.Image | None = field(default=None, repr=False)  # the file's or canvas's image (not PAINT's)
    image_name: str = ""  # what the image is, for the panel ("photo.png", "canvas image")
    preprocessor: str = NO_PREPROCESSOR
    preprocessor_params: tuple[tuple[str, float], ...] = ()
    strength: float = _DEFAULT.strength
    start: float = _DEFAULT.start
    end: float = _DEFAULT.end
    mode: str = _DEFAULT.mode
    resize_mode: str = _DEFAULT.resize_mode
    enabled: bool = True
    # The preprocessed map's canvas layer: shown or not, and its opacity (0..1); for a painting, the canvas's
    # image shown under the strokes at that opacity, to trace (`trace`). Neither reaches the request.
    map_visible: bool = True
    map_opacity: float = 0.6
    trace: bool = False

    @property
    def effective_preprocessor(self) -> str:
        """What runs on the image: a painting is the map itself."""
        return NO_PREPROCESSOR if self.source == PAINT else self.preprocessor

    def choose_model(self, path: str) -> None:
        """Pick a ControlNet file; the preprocessor follows the model's name (`…_canny` → canny)."""
        self.model = path
        if path:
            self.choose_preprocessor(preprocessors.pairing(path))

    def choose_preprocessor(self, name: str) -> None:
        """Pick a preprocessor, with its settings at their defaults."""
        if name != self.preprocessor:
            self.preprocessor = name
            self.preprocessor_params = tuple((p.name, p.default) for p in preprocessor_settings(name))


def scribble_image(pixels: np.ndarray) -> Image.Image:
    """A painted layer (one byte per pixel, 255 = line) as the RGB control image: white lines on black."""
    if pixels.ndim != 2 or pixels.size == 0:
        raise RequestError("the painted control layer is empty: paint on it, or choose another image source")
    return Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).convert("RGB")


def layer_image(layer: ControlLayer, painting: np.ndarray | None) -> Image.Image:
    """The image a layer's unit gets: its painting, or the file's / canvas's image; an error saying what to
    do when there is none."""
    if layer.source == PAINT:
        if painting is None or not painting.any():
            raise RequestError("a painted control layer has nothing painted: paint lines on it, or turn it "
                               "off")
        return scribble_image(painting)
    if layer.image is None:
        what = "open an image file" if layer.source == FILE else "use the canvas image"
        raise RequestError(f"a control layer has no image: {what} for it, or turn it off")
    return layer.image.copy()


def build_units(layers: list[ControlLayer], paintings: list[np.ndarray | None]) -> tuple[ControlUnit, ...]:
    """The enabled layers as ControlUnits, in order (`paintings[i]` is layer i's painted pixels). An enabled
    layer that cannot be used (no model, no image) is an error naming what to do, never skipped silently."""
    units = []
    for layer, painting in zip(layers, paintings, strict=True):
        if not layer.enabled:
            continue
        if not layer.model:
            raise RequestError("a control layer has no ControlNet model: choose one, or turn the layer off")
        if not 0 <= layer.start < layer.end <= 1:
            raise RequestError(f"a control layer's start ({layer.start:g}) must be before its end "
                               f"({layer.end:g})")
        units.append(ControlUnit(
            model=layer.model, image=layer_image(layer, painting), preprocessor=layer.effective_preprocessor,
            preprocessor_params=layer.preprocessor_params if layer.source != PAINT else (),
            strength=layer.strength, start=layer.start, end=layer.end, mode=_known(layer.mode, CONTROL_MODES),
            resize_mode=_known(layer.resize_mode, CONTROL_RESIZE_MODES)))
    return tuple(units)


def _known(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise RequestError(f"unknown control setting {value!r}; one of: {', '.join(allowed)}")
    return value


def layers_from_units(units: tuple[ControlUnit, ...]) -> list[ControlLayer]:
    """The layers that reproduce a request's units (a re-run from history): each image comes back as an
    image source, since history keeps the control image, not the strokes that made it."""
    return [ControlLayer(model=u.model, source=FILE, image=u.image.copy() if u.image is not None else None,
                         image_name=FROM_HISTORY if u.image is not None else "",
                         preprocessor=u.preprocessor, preprocessor_params=tuple(u.preprocessor_params),
                         strength=u.strength, start=u.start, end=u.end, mode=u.mode,
                         resize_mode=u.resize_mode)
            for u in units]


# --- the engine's preprocessor table (engine/preprocessors.py) ---------------------------------------------
def preprocessor_choices() -> list[tuple[str, str, str]]:
    """(name, label, why unavailable or "") of every preprocessor, "none" first: the ones that need an
    annotator file the user has not put in models/annotators are listed with the reason, not hidden."""
    return [(name, preprocessors.describe(name).label, preprocessors.availability(name))
            for name in preprocessors.names()]


def preprocessor_settings(name: str) -> tuple[preprocessors.Param, ...]:
    """The settings a preprocessor takes (A1111's sliders), () for none or a name the table lacks."""
    try:
        return preprocessors.describe(name).params
    except RequestError:
        return ()


def run_preprocessor(name: str, image: Image.Image, params: tuple[tuple[str, float], ...]) -> Image.Image:
    """The map of `image`, as the engine will make it (never on the GUI thread: numpy work; control_preview.py
    runs it)."""
    return preprocessors.run(name, image, params)
