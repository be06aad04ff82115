"""The weight-free preprocessors' pixel work on known small images: canny edges of a square are its outline,
XDoG and line art find a drawn line, thresholds split where they should; the Gaussian and the connected
components against scipy's (a test-only reference)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sdstudio.engine import preprocessor_maps as maps


def square(h=48, w=64, box=(12, 36, 16, 48), fg=255, bg=0) -> np.ndarray:
    a = np.full((h, w, 3), bg, np.uint8)
    top, bottom, left, right = box
    a[top:bottom, left:right] = fg
    return a


def textured(h=40, w=56, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    smooth = 127 + 100 * np.stack([np.sin(x / 3.0), np.cos(y / 4.0), np.sin((x + y) / 5.0)], -1)
    return np.clip(smooth + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("sigma", [0.5, 1.3, 6.0])
def test_gaussian_blur_equals_scipy_with_mirrored_borders(sigma):
    a = textured().astype(np.float32)
    ours = maps.gaussian_blur(a, sigma)
    radius = max(1, round(4 * sigma))
    ref = np.stack([ndimage.gaussian_filter(a[..., c].astype(np.float64), sigma, mode="mirror", truncate=radius / sigma)
                    for c in range(3)], -1)
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_gaussian_blur_of_a_single_row_and_a_huge_sigma_stays_finite_and_keeps_the_mean():
    row = textured(1, 30).astype(np.float32)
    out = maps.gaussian_blur(row, 20.0)
    assert out.shape == row.shape and np.isfinite(out).all()
    assert abs(out.mean() - row.mean()) < 10


def test_canny_edges_of_a_square_are_its_outline():
    a = square()
    edges = maps.canny(a, 100, 200)[..., 0] > 0
    # OpenCV keeps the first pixel of the two equal-magnitude ones across a step: the dark side on the left
    # and top (row 11, column 15), the bright side's last pixel... never both.
    expected = np.zeros(edges.shape, bool)
    expected[11, 16:48] = expected[35, 16:48] = True  # top: the row above; bottom: the last white row
    expected[12:36, 15] = expected[12:36, 47] = True
    inside = edges[13:34, 17:46]
    assert not inside.any() and not edges[:9].any() and not edges[38:].any()
    assert edges[11, 18:46].all() and edges[13:34, 15].all()
    assert edges[35, 18:46].all() and edges[13:34, 47].all()
    assert edges.sum() <= expected.sum() + 8  # one-pixel lines: at most the corners differ


def test_canny_thresholds_drop_faint_edges_and_keep_strong_ones():
    a = square(fg=30)  # a step of 30: Sobel L1 magnitude 120
    assert maps.canny(a, 100, 200).max() == 0
    assert maps.canny(a, 50, 110).max() == 255
    # swapped thresholds are sorted, as OpenCV does
    np.testing.assert_array_equal(maps.canny(a, 110, 50), maps.canny(a, 50, 110))


def test_canny_hysteresis_keeps_weak_edges_only_when_connected_to_a_strong_one():
    a = np.zeros((40, 60, 3), np.uint8)
    a[10:30, 5:20] = 255  # strong square
    a[10:30, 20:40] = 40  # weak step continuing it on the right (touching: connected)
    a[10:30, 50:58] = 40  # weak square alone
    edges = maps.canny(a, 100, 600)[..., 0] > 0  # magnitude of the 255 step is 1020, of the 40 steps 160
    assert edges[:, :20].any()
    assert edges[:, 22:42].any()
    assert not edges[:, 46:].any()


def test_canny_uses_the_channel_with_the_largest_gradient():
    a = np.zeros((32, 32, 3), np.uint8)
    a[8:24, 8:24, 2] = 255  # a blue square: its luma step is only 29
    assert maps.canny(a, 100, 200).max() == 255


def test_canny_smoothing_removes_noise_edges():
    rng = np.random.default_rng(1)
    noisy = np.clip(square(fg=200, bg=40).astype(int) + rng.normal(0, 25, (48, 64, 3)), 0, 255).astype(np.uint8)
    rough = (maps.canny(noisy, 100, 200) > 0).sum()
    smooth = (maps.canny(noisy, 100, 200, sigma=1.5) > 0).sum()
    assert smooth < rough / 2
    assert smooth > 60  # the outline survives


def test_connected_labels_match_scipys_components():
    rng = np.random.default_rng(2)
    mask = rng.random((50, 70)) < 0.45
    labels = maps.connected_labels(mask)
    ref, count = ndimage.label(mask, structure=np.ones((3, 3)))
    assert (labels[~mask] == mask.size).all()
    # same partition: each scipy component has exactly one of our labels and vice versa
    pairs = {(int(a), int(b)) for a, b in zip(labels[mask], ref[mask], strict=True)}
    assert len(pairs) == count == len({a for a, _ in pairs})


def test_connected_labels_follow_a_long_spiral():
    mask = np.zeros((41, 41), bool)
    top, left, bottom, right = 0, 0, 40, 40
    while top <= bottom and left <= right:  # a one-pixel spiral with one-pixel gaps: one long component
        mask[top, left:right + 1] = True
        mask[top:bottom + 1, right] = True
        if top + 2 <= bottom:
            mask[bottom, left:right + 1] = True
        if left + 2 <= right:
            mask[top + 2:bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    _, count = ndimage.label(mask, structure=np.ones((3, 3)))
    labels = maps.connected_labels(mask)
    assert len(np.unique(labels[mask])) == count


def test_otsu_splits_two_clusters_between_them():
    values = np.concatenate([np.full(500, 40), np.full(300, 200), np.arange(0, 20)]).astype(np.uint8)
    t = maps.otsu_threshold(values)
    assert 40 <= t < 200


def test_binary_turns_dark_strokes_white_and_threshold_keeps_bright_areas():
    drawing = square(fg=0, bg=255)  # a black square on white
    b = maps.binary(drawing, 0)[..., 0]
    assert (b[12:36, 16:48] == 255).all() and b[:12].max() == 0
    fixed = maps.binary(drawing, 128)[..., 0]
    np.testing.assert_array_equal(fixed, b)
    t = maps.threshold(square(fg=200, bg=100), 150)[..., 0]
    assert (t[12:36, 16:48] == 255).all() and t[:12].max() == 0


def test_invert():
    a = textured()
    np.testing.assert_array_equal(maps.invert(a).astype(int), 255 - a.astype(int))


def test_xdog_and_lineart_find_a_dark_line_on_white():
    a = np.full((64, 64, 3), 255, np.uint8)
    a[30:33, 8:56] = 0  # a 3-pixel black line
    for out in (maps.scribble_xdog(a, 32)[..., 0], maps.lineart_standard(a)[..., 0]):
        assert out[30:33, 12:52].min() > 0  # the line is white in the map
        assert out[:20].max() == 0 and out[44:].max() == 0  # paper far from it stays black
    # a higher XDoG threshold draws less
    assert (maps.scribble_xdog(textured(), 60) > 0).sum() < (maps.scribble_xdog(textured(), 4) > 0).sum()


def test_lineart_of_a_blank_page_is_black():
    assert maps.lineart_standard(np.full((20, 30, 3), 255, np.uint8)).max() == 0


def test_downsample_and_blur():
    a = textured(64, 80)
    assert maps.downsample(a, 1.05) is a
    small = maps.downsample(a, 4.0)
    assert small.shape == (16, 20, 3)
    np.testing.assert_allclose(small.astype(float).mean(), a.astype(float).mean(), atol=2)
    noise = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    blurred = maps.blur(noise, 3.0).astype(float)
    assert blurred.std() < noise.astype(float).std() / 5
    assert abs(blurred.mean() - noise.mean()) < 3


def test_color_grid_is_flat_in_each_cell():
    a = textured(128, 192)
    out = maps.color_grid(a)
    assert out.shape == a.shape
    for r in (0, 64):
        for c in (0, 64, 128):
            cell = out[r:r + 64, c:c + 64].reshape(-1, 3)
            assert (cell == cell[0]).all()
    assert maps.color_grid(textured(20, 30)).reshape(-1, 3).std(axis=0).max() == 0  # smaller than a cell


def test_shuffle_is_seeded_keeps_colours_and_moves_pixels():
    a = textured(96, 128)
    one, again, other = maps.shuffle(a, 7), maps.shuffle(a, 7), maps.shuffle(a, 8)
    np.testing.assert_array_equal(one, again)
    assert np.abs(one.astype(int) - other.astype(int)).mean() > 5
    assert np.abs(one.astype(int) - a.astype(int)).mean() > 20
    # pixels are moved, not made up: the shuffled image's colours stay near the image's (mean per channel)
    np.testing.assert_allclose(one.reshape(-1, 3).mean(0), a.reshape(-1, 3).mean(0), atol=25)
