"""Our numpy filters against OpenCV, which sd-webui-controlnet (A1111) calls for the same preprocessors: Canny
edges bit for bit, the Gaussian within float rounding, so A1111's thresholds give A1111's maps. OpenCV is a
test-only reference (opencv-python-headless in the test extra); SD Studio never imports it."""

from __future__ import annotations

import numpy as np
import pytest

from sdstudio.engine import preprocessor_maps as maps

cv2 = pytest.importorskip("cv2")


def textured(h, w, seed, noise=20.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    smooth = 127 + 100 * np.stack([np.sin(x / 3.0), np.cos(y / 4.0), np.sin((x + y) / 5.0)], -1)
    return np.clip(smooth + rng.normal(0, noise, (h, w, 3)), 0, 255).astype(np.uint8)


def shapes(h=90, w=120) -> np.ndarray:
    """Flat shapes with edges in every direction: a disc, a triangle, a bar, on a gradient."""
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 2, y * 2, np.full_like(x, 60)], -1).astype(np.float64)
    a[(x - 40) ** 2 + (y - 45) ** 2 < 20**2] = (250, 30, 30)
    a[(y > 10) & (y < 60) & (x > 70) & (x - 70 < (y - 10))] = (20, 200, 90)
    a[70:76, 10:110] = (0, 0, 0)
    return a.clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("low", "high"), [(100, 200), (50, 150), (20, 300), (200, 100), (1, 1)])
def test_canny_equals_opencv_bit_for_bit(seed, low, high):
    for image in (textured(67, 91, seed), textured(40, 50, seed, noise=60), shapes()):
        ours = maps.canny(image, low, high)
        assert ours.shape == image.shape and (ours == ours[..., :1]).all()
        np.testing.assert_array_equal(ours[..., 0], cv2.Canny(image, low, high))


@pytest.mark.parametrize("sigma", [0.5, 1.0, 5.0, 6.0, 9.0])
def test_gaussian_blur_equals_opencv(sigma):
    a = textured(64, 80, 1).astype(np.float32)
    np.testing.assert_allclose(maps.gaussian_blur(a, sigma), cv2.GaussianBlur(a, (0, 0), sigma), atol=1e-3)


def test_xdog_and_lineart_match_the_rules_computed_with_opencv():
    image = shapes()
    x = image.astype(np.float32)
    dog = (255 - np.min(cv2.GaussianBlur(x, (0, 0), 5.0) - cv2.GaussianBlur(x, (0, 0), 0.5), axis=2)).clip(0, 255)
    expected = np.where(2 * (255 - dog.astype(np.uint8).astype(np.int64)) > 32, 255, 0)
    np.testing.assert_array_equal(maps.scribble_xdog(image, 32)[..., 0], expected)
    darkness = np.min(cv2.GaussianBlur(x, (0, 0), 6.0) - x, axis=2).clip(0, 255)
    scale = max(16.0, float(np.median(darkness[darkness > 8])))
    expected_lines = (darkness / scale * 127).clip(0, 255).astype(np.uint8)
    assert np.abs(maps.lineart_standard(image)[..., 0].astype(int) - expected_lines).max() <= 1


@pytest.mark.parametrize("gamma", [1.0, 0.6])
def test_recolor_maps_equal_opencvs_lab_lightness_and_hsv_value(gamma):
    image = np.concatenate([textured(40, 50, 2), shapes(40, 50)], axis=1)
    lightness = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[..., 0]  # OpenCV's 8-bit L* is table-driven: ±1
    ours = maps.recolor_luminance(image, 1.0)[..., 0]
    assert np.abs(ours.astype(int) - lightness).max() <= 1
    expected = ((ours / 255.0) ** gamma * 255.0).clip(0, 255).astype(np.uint8)
    np.testing.assert_array_equal(maps.recolor_luminance(image, gamma)[..., 0], expected)
    value = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 2].astype(np.float32) / 255.0
    np.testing.assert_array_equal(maps.recolor_intensity(image, gamma)[..., 0],
                                  (value**gamma * 255.0).clip(0, 255).astype(np.uint8))
