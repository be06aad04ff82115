"""How the inpainting mask is shown: brush size for an image, an overlay colour that stands out, and a live
preview composited over the unmasked original (only the masked area is being repainted).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QImage, QPainter

from sdstudio.ui.mask_model import MaskModel

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


def composite_preview(preview: QImage, original: QImage, mask: MaskModel) -> QImage:
    """The preview where the mask is painted, the original elsewhere (blended by mask value), at the
    original's size. Without a matching mask the preview is returned unchanged."""
    if mask.is_empty() or (mask.width, mask.height) != (original.width(), original.height()):
        return preview
    size = original.size()
    painted = QImage(size, QImage.Format.Format_ARGB32_Premultiplied)
    painted.fill(0)
    painter = QPainter(painted)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    painter.drawImage(QRect(0, 0, size.width(), size.height()), preview)
    painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_DestinationIn)
    pixels = np.ascontiguousarray(mask.pixels())
    alpha = QImage(pixels.data, mask.width, mask.height, mask.width, QImage.Format.Format_Alpha8)
    painter.drawImage(0, 0, alpha)
    painter.end()
    out = original.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
    painter = QPainter(out)
    painter.drawImage(0, 0, painted)
    painter.end()
    return out.convertToFormat(QImage.Format.Format_RGB32)
