"""Brush size per image, an overlay colour that stands out, and inpaint previews over the original."""

from PySide6.QtGui import QColor, QImage

from sdstudio.ui.mask_display import OVERLAY_COLOURS, composite_preview, default_brush_radius, overlay_colour
from sdstudio.ui.mask_model import MaskModel


def filled(width: int, height: int, colour: QColor) -> QImage:
    image = QImage(width, height, QImage.Format.Format_RGB32)
    image.fill(colour)
    return image


def test_default_brush_scales_with_the_shorter_side() -> None:
    assert default_brush_radius(64, 64) == 2
    assert default_brush_radius(512, 1024) == 16
    assert default_brush_radius(8, 8) == 0.5


def test_overlay_colour_is_red_unless_the_image_is_reddish() -> None:
    assert overlay_colour(filled(32, 32, QColor(90, 90, 90))) == OVERLAY_COLOURS[0]
    assert overlay_colour(None) == OVERLAY_COLOURS[0]
    on_red = overlay_colour(filled(32, 32, QColor(230, 40, 60)))
    assert on_red != OVERLAY_COLOURS[0]
    assert abs(on_red.red() - 230) + abs(on_red.green() - 40) + abs(on_red.blue() - 60) > 250


def test_preview_shows_only_inside_the_mask_over_the_original() -> None:
    original = filled(64, 64, QColor(0, 0, 255))
    mask = MaskModel()
    mask.reset(64, 64)
    mask.begin_stroke(radius=10, hardness=1.0)
    mask.stroke_to(16, 16)
    mask.end_stroke()
    preview = filled(8, 8, QColor(255, 255, 0))  # a low-resolution preview, stretched to the original
    out = composite_preview(preview, original, mask)
    assert out.size() == original.size()
    assert out.pixelColor(16, 16) == QColor(255, 255, 0)
    assert out.pixelColor(50, 50) == QColor(0, 0, 255)
    assert out.pixelColor(16, 40) == QColor(0, 0, 255)


def test_preview_without_a_mask_is_shown_as_it_is() -> None:
    mask = MaskModel()
    mask.reset(64, 64)
    preview = filled(8, 8, QColor(255, 255, 0))
    assert composite_preview(preview, filled(64, 64, QColor(0, 0, 255)), mask) is preview
