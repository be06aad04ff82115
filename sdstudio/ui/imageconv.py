"""Conversions between PIL images (what the engine speaks) and QImage (what Qt paints).

QImages built here own their pixels, so they may be created in the worker thread and shown in the GUI thread.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtGui import QImage


def pil_to_qimage(image: Image.Image) -> QImage:
    """RGB(A) copy of a PIL image as a QImage that does not borrow PIL's buffer."""
    if image.mode == "RGBA":
        data = image.tobytes("raw", "RGBA")
        return QImage(data, image.width, image.height, 4 * image.width, QImage.Format.Format_RGBA8888).copy()
    rgb = image.convert("RGB")
    data = rgb.tobytes("raw", "RGB")
    return QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888).copy()


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
