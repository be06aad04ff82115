"""The companion ControlNet's hints: the engine's canny map, and a drawn-stroke outline of the filled silhouette."""

import numpy as np

from sdstudio.training.control_hints import KINDS, cached_hints, canny_hint, outline_hint, silhouette


def ring_with_white_hole() -> np.ndarray:
    """A red disc (radius 20) on white with a white disc (radius 8) inside it: a shape with an inner hole."""
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    image = np.full((64, 64, 3), 255, np.uint8)
    image[r <= 20] = (220, 30, 30)
    image[r <= 8] = 255
    return image


def test_silhouette_fills_white_enclosed_by_the_shape():
    shape = silhouette(ring_with_white_hole())
    assert shape[32, 32] and shape[32, 32 + 15] and not shape[2, 2] and not shape[32, 60]


def test_outline_is_a_closed_stroke_around_the_shape_only():
    image = ring_with_white_hole()
    outline = outline_hint(image) > 127
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    assert outline[(r > 18) & (r < 22)].mean() > 0.6  # on the rim
    assert not outline[r < 14].any()  # the inner hole is not outlined: it is inside the drawn shape
    assert not outline[r > 24].any()
    canny = canny_hint(image) > 127
    assert canny[(r > 6) & (r < 10)].any()  # the canny map does see the hole


def test_hints_are_cached_once(tmp_path):
    images = np.stack([ring_with_white_hole(), np.full((64, 64, 3), 255, np.uint8)])
    path = tmp_path / "hints.npz"
    hints = cached_hints(path, images)
    assert hints.shape == (len(KINDS), 2, 64, 64) and hints.dtype == np.uint8
    assert hints[:, 1].max() == 0  # a blank image has no edges
    stamp = path.stat().st_mtime_ns
    assert (cached_hints(path, images) == hints).all() and path.stat().st_mtime_ns == stamp
