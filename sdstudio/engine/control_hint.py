"""A ControlNet unit's hint: the source image through its preprocessor, fitted to the pass's pixel size.

The three resize modes are sd-webui-controlnet's (`detectmap_proc`), with its rounding (int(x + 0.5)) and
centring ((big - small) // 2):
- "Just Resize": stretched to width x height, the aspect ratio ignored;
- "Crop and Resize": scaled by max(h/h0, w/w0) so it covers the target, then centre-cropped;
- "Resize and Fill": scaled by min(h/h0, w/w0) so it fits inside, centred on a background of the median
  colour of the scaled map's border pixels.
Shrinking uses area averaging (PIL's BOX, OpenCV's INTER_AREA), enlarging Lanczos, as its high-quality resize.
The hint tensor is RGB in [0, 1] (ControlNet's training range), (1, 3, height, width). An RGBA map (the
inpaint_only preprocessor's: transparent = repaint) follows sd-webui-controlnet's inpaint rule: repainted
pixels are -1, the rest the image; the area "Resize and Fill" adds counts as repainted.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import CONTROL_RESIZE_MODES, ControlUnit

NO_PREPROCESSOR = "none"


def _round(x: float) -> int:
    return int(x + 0.5)


def _resize(image: Image.Image, width: int, height: int) -> Image.Image:
    if (width, height) == image.size:
        return image
    shrink = width * height < image.width * image.height
    return image.resize((width, height), Image.Resampling.BOX if shrink else Image.Resampling.LANCZOS)


def _border_median(image: Image.Image) -> tuple[int, ...]:
    a = np.asarray(image)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    return tuple(int(v) for v in np.median(border, axis=0).astype(np.uint8))


def fit_hint(image: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """`image` (RGB or RGBA) fitted to width x height by one of CONTROL_RESIZE_MODES."""
    if mode not in CONTROL_RESIZE_MODES:
        raise RequestError(f"unknown ControlNet resize mode {mode!r}; one of {', '.join(CONTROL_RESIZE_MODES)}")
    if mode == "Just Resize":
        return _resize(image, width, height)
    k0, k1 = height / image.height, width / image.width
    k = max(k0, k1) if mode == "Crop and Resize" else min(k0, k1)
    scaled = _resize(image, max(1, _round(image.width * k)), max(1, _round(image.height * k)))
    if mode == "Crop and Resize":
        left, top = max(0, (scaled.width - width) // 2), max(0, (scaled.height - height) // 2)
        return scaled.crop((left, top, left + width, top + height))
    fill = _border_median(scaled)
    if scaled.mode == "RGBA":
        fill = (*fill[:3], 0)  # the added border is for the model to paint
    canvas = Image.new(scaled.mode, (width, height), fill)
    canvas.paste(scaled, (max(0, (width - scaled.width) // 2), max(0, (height - scaled.height) // 2)))
    return canvas


def control_map(unit: ControlUnit) -> Image.Image:
    """The unit's control map at the source image's size: the image itself for "none", else the engine's
    preprocessor table's result."""
    if unit.image is None:
        raise RequestError(f"ControlNet unit {unit.model!r} has no control image")
    if unit.preprocessor == NO_PREPROCESSOR:
        return unit.image.convert("RGB")
    try:
        from sdstudio.engine import preprocessors
    except ImportError:
        raise RequestError(f"ControlNet preprocessor {unit.preprocessor!r} is not available in this build; "
                           "use preprocessor \"none\" with a ready-made control map") from None
    found = preprocessors.run(unit.preprocessor, unit.image, dict(unit.preprocessor_params))
    return found if found.mode == "RGBA" else found.convert("RGB")


def hint_tensor(image: Image.Image) -> Tensor:
    """(1, 3, H, W) float32: an RGB image in [0, 1]; an RGBA one with its transparent pixels at -1."""
    a = np.asarray(image.convert("RGBA" if image.mode == "RGBA" else "RGB"), dtype=np.float32) / 255.0
    if a.shape[-1] == 4:
        repaint = (a[..., 3:] < 0.5).astype(np.float32)
        a = a[..., :3] * (1 - repaint) - repaint
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].contiguous()


class Hint:
    """One unit's hint for a job: preprocessed once, fitted once per pass size (hires fix asks for two)."""

    def __init__(self, unit: ControlUnit) -> None:
        self.unit = unit
        self.map = control_map(unit)
        self._sized: dict[tuple[int, int], Tensor] = {}

    def at(self, width: int, height: int) -> Tensor:
        key = (width, height)
        if key not in self._sized:
            self._sized[key] = hint_tensor(fit_hint(self.map, width, height, self.unit.resize_mode))
        return self._sized[key]
