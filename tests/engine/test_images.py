"""Pixels in and out: the "Only masked" box keeps the request's aspect ratio at image edges and the patch goes
back exactly where it came from."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.images import crop_padded, crop_region, paste_region


def textured(w: int, h: int) -> Image.Image:
    """Smooth stripes in three directions: any shift or stretch of a patch shows up as a large difference,
    while resampling it down and up again changes little."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    channels = [np.sin(x / 5.0), np.sin(y / 4.0), np.sin((x + y) / 7.0)]
    return Image.fromarray((127.5 + 120 * np.stack(channels, -1)).astype(np.uint8))


def mask_box(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


# On a 160x120 image with padding 32; at some request ratios the box is longer than the image.
EDGE_MASKS = {
    "left": (0, 30, 12, 90),
    "right": (150, 10, 160, 30),
    "top-left corner": (0, 0, 10, 10),
    "bottom": (40, 100, 120, 120),
}
REQUEST_SIZES = [(64, 64), (96, 48), (48, 80)]


@pytest.mark.parametrize("where", EDGE_MASKS)
@pytest.mark.parametrize("request_size", REQUEST_SIZES)
def test_box_at_an_edge_keeps_the_request_aspect_ratio_and_holds_the_mask(where, request_size):
    size, rect = (160, 120), EDGE_MASKS[where]
    left, top, right, bottom = crop_region(mask_box(size, rect), 32, *request_size)
    w, h = right - left, bottom - top
    assert abs(w / h - request_size[0] / request_size[1]) <= 1 / min(w, h)
    assert left <= rect[0] and top <= rect[1] and right >= rect[2] and bottom >= rect[3]
    for start, end, length in ((left, right, size[0]), (top, bottom, size[1])):
        if end - start <= length:
            assert 0 <= start and end <= length  # moved inside, not clipped
        else:
            assert start == (length - (end - start)) // 2  # centred, reaching past both edges


def test_box_longer_than_the_image_is_centred_past_its_edges():
    left, top, right, bottom = crop_region(mask_box((100, 40), (0, 10, 10, 30)), 32, 64, 64)
    assert right - left == bottom - top == 42  # 42 wide after padding, so 42 high though the image is 40
    assert (top, bottom) == (-1, 41) and left == 0


def test_empty_mask_gives_the_whole_image_at_the_request_ratio():
    left, top, right, bottom = crop_region(Image.new("L", (80, 60), 0), 8, 80, 60)
    assert (left, top, right, bottom) == (0, 0, 80, 60)


def test_crop_padded_repeats_edge_pixels_or_fills_zero():
    image = textured(20, 10)
    a = np.asarray(image)
    out = np.asarray(crop_padded(image, (-3, -2, 5, 12)))
    assert out.shape == (14, 8, 3)
    assert np.array_equal(out[2:12, 3:], a[:, :5])
    assert np.array_equal(out[0, 0], a[0, 0]) and np.array_equal(out[13, 7], a[9, 4])
    zero = np.asarray(crop_padded(image.convert("L"), (-3, -2, 5, 12), edge=False))
    assert zero[:2].max() == 0 and zero[:, :3].max() == 0
    assert crop_padded(image, (2, 3, 9, 8)).tobytes() == image.crop((2, 3, 9, 8)).tobytes()


@pytest.mark.parametrize("where", EDGE_MASKS)
@pytest.mark.parametrize("request_size", REQUEST_SIZES)
def test_an_identity_repaint_of_the_box_puts_every_pixel_back_in_place(where, request_size):
    # The old clip-then-centre-crop moved pixels by 50-67 levels on average here where the box is too long.
    image = textured(160, 120)
    box = crop_region(mask_box(image.size, EDGE_MASKS[where]), 32, *request_size)
    patch = crop_padded(image, box).resize(request_size, Image.Resampling.LANCZOS)
    out = np.asarray(paste_region(image, patch, box), dtype=np.int16)
    ref = np.asarray(image, dtype=np.int16)
    inside = (slice(max(box[1], 0), box[3]), slice(max(box[0], 0), box[2]))
    assert np.abs(out[inside] - ref[inside]).mean() < 2.0  # resampling only, no shift or stretch
    outside = np.ones(ref.shape[:2], bool)
    outside[inside] = False
    assert np.array_equal(out[outside], ref[outside])


def test_paste_region_drops_the_part_outside_the_image():
    canvas = Image.new("RGB", (10, 10))
    out = np.asarray(paste_region(canvas, Image.new("RGB", (6, 6), (255, 0, 0)), (-2, -3, 4, 3)))[:, :, 0]
    assert (out > 0).sum() == 12 and out[:3, :4].min() == 255
