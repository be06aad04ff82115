"""Brush size per image, an overlay colour that stands out, and inpaint previews over the original."""

import numpy as np
from PIL import Image, ImageDraw
from PySide6.QtGui import QColor, QImage

from sdstudio.engine.geometry import crop_region
from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.imageconv import qimage_to_pil
from sdstudio.ui.mask_display import OVERLAY_COLOURS, PreviewPlacement, default_brush_radius, overlay_colour


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


def _textured(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _as_array(image: QImage) -> np.ndarray:
    return np.asarray(qimage_to_pil(image))


def test_only_masked_preview_is_the_repainted_box_pasted_back_into_the_whole_input() -> None:
    """The engine samples the mask's box at the request's size and pastes it back: the preview (the box) is
    placed there, and every pixel outside the box is the input's own."""
    init = _textured(160, 96)
    mask = Image.new("L", init.size, 0)
    ImageDraw.Draw(mask).rectangle((112, 12, 131, 31), fill=255)  # off-centre: top right
    request = GenerationRequest(width=64, height=64, init_image=init, mask=mask, only_masked=True,
                                only_masked_padding=8, mask_blur=2)
    placement = PreviewPlacement.for_request(request)
    box = crop_region(mask, 8, 64, 64)
    assert placement.size == (160, 96) and placement.region == box == (104, 4, 140, 40)
    preview = filled(64, 64, QColor(255, 255, 0))  # the box, at the request's size
    out = _as_array(placement.compose(preview))
    assert out.shape == (96, 160, 3)
    outside = np.ones((96, 160), bool)
    outside[box[1]:box[3], box[0]:box[2]] = False
    assert np.array_equal(out[outside], np.asarray(init)[outside])
    assert (out[18:26, 118:126] == (255, 255, 0)).all()  # the mask's core shows the preview
    assert np.array_equal(out[5, 105], np.asarray(init)[5, 105])  # in the box, off the mask: the input


def test_inpainting_preview_shows_only_the_masked_pixels_of_the_fitted_input() -> None:
    init = _textured(96, 64, seed=1)  # fitted to 64×64: 16 px cropped off each side
    mask = Image.new("L", init.size, 0)
    ImageDraw.Draw(mask).rectangle((50, 10, 70, 30), fill=255)
    request = GenerationRequest(width=64, height=64, init_image=init, mask=mask, mask_blur=0)
    placement = PreviewPlacement.for_request(request)
    out = _as_array(placement.compose(filled(8, 8, QColor(255, 255, 0))))  # a low-resolution preview
    assert out.shape == (64, 64, 3)
    assert (out[12:28, 36:54] == (255, 255, 0)).all()
    fitted = np.asarray(init.crop((16, 0, 80, 64)))
    assert np.array_equal(out[40:], fitted[40:]) and np.array_equal(out[:, :30], fitted[:, :30])


def test_preview_of_a_job_without_a_mask_is_shown_as_it_is() -> None:
    preview = filled(8, 8, QColor(255, 255, 0))
    for request in (GenerationRequest(width=64, height=64),
                    GenerationRequest(width=64, height=64, init_image=_textured(64, 64)),
                    GenerationRequest(width=64, height=64, init_image=_textured(64, 64),
                                      mask=Image.new("L", (64, 64), 0), only_masked=True)):
        placement = PreviewPlacement.for_request(request)
        assert placement.size == (64, 64) and placement.compose(preview) is preview
