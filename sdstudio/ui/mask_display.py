"""How the inpainting mask is shown: brush size for an image, an overlay colour that stands out, and live
previews placed as the final image will be (only the masked area, or the "Only masked" box, is repainted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage

from sdstudio.engine.geometry import crop_region, fit, paste_region, prepare_mask
from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.imageconv import pil_to_qimage, qimage_to_pil

# Tried in order; the first that differs enough from the image is used (red first: it reads as "mask").
OVERLAY_COLOURS = (QColor(255, 64, 96), QColor(0, 200, 255), QColor(80, 255, 80), QColor(255, 220, 0))
MIN_CONTRAST = 140.0  # mean RGB distance between colour and image pixels below which the tint gets lost
BRUSH_FRACTION = 1 / 32  # default brush radius per pixel of the image's shorter side (16 px on 512)


def default_brush_radius(width: int, height: int) -> float:
    """A brush that suits the image: a 64 px image gets a 4 px brush, a 512 px one a 32 px brush (diameters)."""
    return max(min(width, height) * BRUSH_FRACTION, 0.5)


def overlay_colour(image: QImage | None) -> QColor:
    """The first of OVERLAY_COLOURS that contrasts with the image's pixels, else the most contrasting one."""
    if image is None or image.isNull():
        return QColor(OVERLAY_COLOURS[0])
    small = image.scaled(32, 32, Qt.AspectRatioMode.IgnoreAspectRatio,
                         Qt.TransformationMode.SmoothTransformation).convertToFormat(QImage.Format.Format_RGB888)
    rgb = np.frombuffer(small.constBits(), np.uint8).reshape(small.height(), small.bytesPerLine())
    rgb = rgb[:, : small.width() * 3].reshape(-1, 3).astype(np.float32)
    distances = [float(np.linalg.norm(rgb - np.array(c.getRgb()[:3], np.float32), axis=1).mean())
                 for c in OVERLAY_COLOURS]
    for colour, distance in zip(OVERLAY_COLOURS, distances, strict=True):
        if distance >= MIN_CONTRAST:
            return QColor(colour)
    return QColor(OVERLAY_COLOURS[int(np.argmax(distances))])


@dataclass(frozen=True)
class PreviewPlacement:
    """Where a job's step previews go, so that mid-run the canvas shows them as the final image will be:
    inpainting repaints only the masked pixels of the input fitted to the job's size; "Only masked" repaints
    the mask's box (geometry.crop_region) of the whole input and pastes it back in place (engine/passes.py).
    Built from the request the engine runs, not from the canvas, which the user may have changed since."""

    size: tuple[int, int]  # the final image's size
    base: Image.Image | None = None  # the pixels the job keeps; None when the preview is the whole image
    mask: Image.Image | None = None  # blurred as the engine blends, at `base`'s size
    region: tuple[int, int, int, int] | None = None  # the "Only masked" box in `base`

    @classmethod
    def for_request(cls, request: GenerationRequest) -> PreviewPlacement:
        init, mask = request.init_image, request.mask
        if init is None or mask is None or mask.convert("L").getbbox() is None:
            return cls((request.width, request.height))
        init, mask = init.convert("RGB"), mask.convert("L")
        if request.only_masked:
            region = crop_region(mask, request.only_masked_padding, request.width, request.height)
            return cls(init.size, init, prepare_mask(mask, init.size, request.mask_blur), region)
        size = (request.width, request.height)
        return cls(size, fit(init, *size), prepare_mask(mask, size, request.mask_blur))

    def compose(self, preview: QImage) -> QImage:
        """The preview placed over the kept pixels (unchanged when the job repaints the whole image)."""
        if self.base is None:
            return preview
        painted = paste_region(self.base, qimage_to_pil(preview), self.region or (0, 0, *self.size))
        return pil_to_qimage(Image.composite(painted, self.base, self.mask))
