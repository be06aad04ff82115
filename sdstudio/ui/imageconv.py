"""Conversions between PIL images (what the engine speaks) and QImage (what Qt paints).

QImages built here own their pixels, so they may be created in the worker thread and shown in the GUI thread.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtGui import QImage


def pil_to_qimage(image: Image.Image) -> QImage:
    """A QImage copy of a PIL image, in the 32-bit format the raster painter draws fastest.

    The conversion happens once, in whichever thread calls this (the worker, for previews), instead of on
    every repaint of the canvas.
    """
    if image.mode == "RGBA":
        data = image.tobytes("raw", "RGBA")
        wrapped = QImage(data, image.width, image.height, 4 * image.width, QImage.Format.Format_RGBA8888)
        return wrapped.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
    rgb = image.convert("RGB")
    data = rgb.tobytes("raw", "RGB")
    wrapped = QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888)
    return wrapped.convertToFormat(QImage.Format.Format_RGB32)


def qimage_to_pil(image: QImage) -> Image.Image:
    """RGB PIL copy of a QImage (alpha is dropped: init images are opaque)."""
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    view = np.asarray(rgb.constBits(), dtype=np.uint8).reshape(rgb.height(), rgb.bytesPerLine())
    pixels = view[:, : 3 * rgb.width()].reshape(rgb.height(), rgb.width(), 3)
    return Image.fromarray(pixels.copy())


def load_image(path: str) -> Image.Image:
    """Open an image file as RGB; OSError (with the file name) when it is not an image."""
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")
