"""The pixel work of the weight-free ControlNet preprocessors (preprocessors.py holds their table).

Each function takes an RGB uint8 array (H, W, 3) and its settings and returns the map as a uint8 array.
numpy and Pillow only (no OpenCV): the filters are written here from their definitions, with OpenCV's border
and rounding conventions where A1111's sd-webui-controlnet relies on them, so its thresholds mean the same.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# OpenCV's Canny sorts gradient directions with integer maths: tan(22.5°) in 15-bit fixed point.
_TAN22_Q15 = round(math.tan(math.pi / 8) * (1 << 15))
_TAN67_Q15 = _TAN22_Q15 + (2 << 15)  # tan(67.5°) = tan(22.5°) + 2


def gaussian_blur(a: np.ndarray, sigma: float, reach: float = 4.0) -> np.ndarray:
    """Separable Gaussian blur over the first two axes, float32; radius round(reach·sigma) and mirrored borders
    without repeating the edge pixel (OpenCV's GaussianBlur, BORDER_REFLECT_101, which reaches 4 sigmas for
    float images and 3 for uint8 ones)."""
    x = np.asarray(a, dtype=np.float32)
    if sigma <= 0:
        return x.copy()
    radius = max(1, (round(2 * reach * sigma + 1) | 1) // 2)
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(taps**2) / (2 * sigma * sigma))
    kernel = (kernel / kernel.sum()).astype(np.float32)
    for axis in (0, 1):
        n = x.shape[axis]
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        # numpy's "reflect" is reflect-101; a single row/column has nothing to mirror, so it is repeated.
        padded = np.moveaxis(np.pad(x, pad, mode="reflect" if n > 1 else "edge"), axis, 0)
        out = kernel[radius] * padded[radius:radius + n]
        for t in range(radius):  # the kernel is symmetric: one multiply per pair of taps
            out += kernel[t] * (padded[t:t + n] + padded[2 * radius - t:2 * radius - t + n])
        x = np.moveaxis(out, 0, axis)
    return x


def _sobel(channel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3×3 Sobel derivatives (dx, dy) with the edge pixel repeated past the border (Canny's BORDER_REPLICATE)."""
    p = np.pad(channel, 1, mode="edge")
    left = p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2]
    right = p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]
    top = p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:]
    bottom = p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]
    return right - left, bottom - top


def canny(rgb: np.ndarray, low: float, high: float, sigma: float = 0.0) -> np.ndarray:
    """Canny edges (Canny 1986, "A Computational Approach to Edge Detection") as OpenCV's cv2.Canny computes
    them on a colour image, which is what A1111 calls: per pixel the channel with the largest L1 Sobel
    magnitude |dx| + |dy| gives the gradient; non-maximum suppression along its direction (one of four
    sectors); pixels above `high` are edges, pixels above `low` join them when 8-connected to one. `sigma` > 0
    smooths with a Gaussian first (cv2.Canny does not, so 0 gives A1111's maps). White on edges."""
    if low > high:
        low, high = high, low
    x = gaussian_blur(rgb, sigma) if sigma > 0 else rgb.astype(np.float64)
    x = x.astype(np.float64)
    if x.ndim == 2:
        x = x[..., None]
    gradients = [_sobel(x[..., c]) for c in range(x.shape[2])]
    dx = np.stack([g[0] for g in gradients])
    dy = np.stack([g[1] for g in gradients])
    magnitudes = np.abs(dx) + np.abs(dy)
    best = np.argmax(magnitudes, axis=0)[None]  # the first channel wins a tie, as in OpenCV
    dx, dy = np.take_along_axis(dx, best, 0)[0], np.take_along_axis(dy, best, 0)[0]
    m = np.take_along_axis(magnitudes, best, 0)[0]
    # OpenCV floors the thresholds for the L1 magnitude and keeps a pixel only above them (strictly).
    low, high = math.floor(low), math.floor(high)
    maxima = _suppressed(m, dx, dy)
    candidates = maxima & (m > low)
    return as_rgb(np.where(_hysteresis(candidates, candidates & (m > high)), 255, 0).astype(np.uint8))


def _suppressed(m: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Where m is a local maximum across the edge: it must beat the neighbour before it strictly and the one
    after it or equal it (OpenCV's asymmetry keeps one pixel of a two-pixel plateau); diagonals beat both."""
    p = np.pad(m, 1)  # magnitude 0 outside the image
    h, w = m.shape

    def at(di: int, dj: int) -> np.ndarray:
        return p[1 + di:1 + di + h, 1 + dj:1 + dj + w]

    ax, ay = np.abs(dx) * _TAN22_Q15, np.abs(dy) * (1 << 15)
    horizontal = ay < ax
    vertical = ~horizontal & (ay > np.abs(dx) * _TAN67_Q15)
    diagonal = ~horizontal & ~vertical
    same_sign = (dx * dy) >= 0  # down-right diagonal (image rows grow downwards)
    keep = horizontal & (m > at(0, -1)) & (m >= at(0, 1))
    keep |= vertical & (m > at(-1, 0)) & (m >= at(1, 0))
    keep |= diagonal & same_sign & (m > at(-1, -1)) & (m > at(1, 1))
    keep |= diagonal & ~same_sign & (m > at(-1, 1)) & (m > at(1, -1))
    return keep


def _hysteresis(candidates: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """The candidates 8-connected (through candidates) to a strong pixel."""
    labels = connected_labels(candidates)
    hit = np.zeros(candidates.size + 1, dtype=bool)
    hit[labels[strong]] = True
    return candidates & hit[labels]


def connected_labels(mask: np.ndarray) -> np.ndarray:
    """8-connected component labels of a boolean mask: each pixel of a component holds the flat index of the
    component's first pixel (row-major); pixels outside the mask hold mask.size. Vectorised union-find over
    the mask's neighbour pairs: each round hooks every root to the smallest root it touches, then compresses
    the paths, so even a long chain takes a few dozen rounds over the mask's pixels only."""
    h, w = mask.shape
    labels = np.full(mask.size, mask.size, dtype=np.int64)
    pixels = np.flatnonzero(mask)
    if pixels.size == 0:
        return labels.reshape(h, w)
    compact = np.full(mask.size, -1, dtype=np.int64)
    compact[pixels] = np.arange(pixels.size)
    grid = np.pad(compact.reshape(h, w), 1, constant_values=-1)
    here = grid[1:h + 1, 1:w + 1]
    firsts, seconds = [], []
    for di, dj in ((0, 1), (1, 0), (1, 1), (1, -1)):  # each neighbour pair once
        there = grid[1 + di:h + 1 + di, 1 + dj:w + 1 + dj]
        both = (here >= 0) & (there >= 0)
        firsts.append(here[both])
        seconds.append(there[both])
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    parent = np.arange(pixels.size)
    while True:
        pa, pb = parent[a], parent[b]
        apart = pa != pb
        if not apart.any():
            break
        a, b, pa, pb = a[apart], b[apart], pa[apart], pb[apart]  # pairs already joined stay joined
        np.minimum.at(parent, np.maximum(pa, pb), np.minimum(pa, pb))
        while True:  # parents only ever point lower, so this ends with every pixel pointing at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    # A root is its component's smallest index: anything smaller in it would have been hooked below it.
    labels[pixels] = pixels[parent]
    return labels.reshape(h, w)


def gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as uint8 (0.299 R + 0.587 G + 0.114 B), Pillow's and OpenCV's RGB → gray."""
    return np.asarray(Image.fromarray(rgb).convert("L"))


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold (Otsu 1979) of uint8 values: the t that maximises the between-class variance of
    {<= t} and {> t}; the first such t on a tie."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    levels = np.arange(256, dtype=np.float64)
    weight0 = np.cumsum(hist)
    sum0 = np.cumsum(hist * levels)
    weight1 = total - weight0
    with np.errstate(divide="ignore", invalid="ignore"):
        mean0 = sum0 / weight0
        mean1 = (sum0[-1] - sum0) / weight1
        between = weight0 * weight1 * (mean0 - mean1) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    return int(np.argmax(between))


def as_rgb(gray_map: np.ndarray) -> np.ndarray:
    return np.repeat(gray_map[..., None], 3, axis=2)


def invert(rgb: np.ndarray) -> np.ndarray:
    """255 − each channel: a black-on-white drawing becomes the white-on-black map line models expect."""
    return 255 - rgb


def threshold(rgb: np.ndarray, level: float) -> np.ndarray:
    """White where every channel is above `level`, black elsewhere (sd-webui-controlnet's "threshold")."""
    return as_rgb(np.where(rgb.min(axis=2) > level, 255, 0).astype(np.uint8))


def binary(rgb: np.ndarray, level: float) -> np.ndarray:
    """Dark strokes as white lines: white where the luma is at or below `level`, black above it (A1111's
    "binary", an inverted threshold); level 0 or 255 means Otsu's automatic threshold."""
    luma = gray(rgb)
    t = otsu_threshold(luma) if level in (0, 255) else level
    return as_rgb(np.where(luma > t, 0, 255).astype(np.uint8))


def scribble_xdog(rgb: np.ndarray, level: float) -> np.ndarray:
    """A scribble from an image by a difference of Gaussians (Winnemöller et al. 2012, "XDoG"): where the
    wide blur (sigma 5) is brighter than the fine one (sigma 0.5) by more than level/2 in every channel,
    i.e. on the dark side of an edge, the map is white. sd-webui-controlnet's sigmas and threshold scale."""
    x = rgb.astype(np.float32)
    difference = np.min(gaussian_blur(x, 5.0) - gaussian_blur(x, 0.5), axis=2)
    # A1111 stores 255 - difference as uint8 (truncated) and takes 255 minus that: the difference rounded up.
    darkness = np.ceil(np.clip(difference, 0, 255))
    return as_rgb(np.where(2 * darkness > level, 255, 0).astype(np.uint8))


def lineart_standard(rgb: np.ndarray) -> np.ndarray:
    """Line art from an image without a network: how much darker each pixel is than its sigma-6 surroundings
    (the least over the channels), scaled so the median line pixel (darkness > 8) maps to 127, never dividing
    by less than 16; white lines on black (sd-webui-controlnet's "lineart_standard")."""
    x = rgb.astype(np.float32)
    darkness = np.clip(np.min(gaussian_blur(x, 6.0) - x, axis=2), 0, 255)
    lines = darkness[darkness > 8]
    scale = max(16.0, float(np.median(lines))) if lines.size else 16.0
    return as_rgb(np.clip(darkness / scale * 127, 0, 255).astype(np.uint8))


def _gamma(channel: np.ndarray, gamma: float) -> np.ndarray:
    return as_rgb(((channel / 255.0) ** gamma * 255.0).clip(0, 255).astype(np.uint8))


def recolor_luminance(rgb: np.ndarray, gamma: float) -> np.ndarray:
    """CIE L* (the lightness of CIELAB, D65 white, sRGB input) as a grey map 0..255, raised to `gamma` (the
    recolour models' input: they put the colours back). sd-webui-controlnet hands OpenCV the RGB image as BGR,
    which weighs red and blue the other way round; this is the lightness as defined."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    y = linear @ np.array([0.212671, 0.715160, 0.072169])
    lightness = np.where(y > 0.008856, 116.0 * np.cbrt(y) - 16.0, 903.3 * y)
    return _gamma(np.rint(lightness * 255.0 / 100.0), gamma)


def recolor_intensity(rgb: np.ndarray, gamma: float) -> np.ndarray:
    """The HSV value (the brightest channel) as a grey map, raised to `gamma`."""
    return _gamma(rgb.max(axis=2).astype(np.float64), gamma)


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of the image (a tile/blur model's input)."""
    return np.clip(np.rint(gaussian_blur(rgb, sigma)), 0, 255).astype(np.uint8)


def downsample(rgb: np.ndarray, rate: float) -> np.ndarray:
    """The image shrunk by `rate` with area averaging (the tile model's "Down Sampling Rate"); under 1.1 it is
    returned as is, as sd-webui-controlnet does."""
    if rate < 1.1:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, int(w / rate)), max(1, int(h / rate)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))


def color_grid(rgb: np.ndarray, cell: int = 64) -> np.ndarray:
    """Pixelate: bicubic down to one pixel per `cell`×`cell` block, then blown up with nearest neighbours (the
    T2I-Adapter colour grid). An image smaller than one cell becomes one colour."""
    h, w = rgb.shape[:2]
    image = Image.fromarray(rgb)
    small = image.resize((max(1, w // cell), max(1, h // cell)), Image.Resampling.BICUBIC)
    return np.asarray(small.resize((w, h), Image.Resampling.NEAREST))


def shuffle(rgb: np.ndarray, seed: int, cell: int = 256) -> np.ndarray:
    """Content shuffle (ControlNet 1.1's shuffle model input): each output pixel samples the image at a point
    given by two smooth random fields (a uniform noise grid with one value per `cell` pixels, upsampled
    bicubically and stretched to span the image), so shapes are scrambled while colours and textures stay.
    Seeded, so a re-run shuffles the same way."""
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(seed)
    x = _noise_field(rng, h, w, cell) * (w - 1)
    y = _noise_field(rng, h, w, cell) * (h - 1)
    return _bilinear(rgb.astype(np.float32), x, y)


def _noise_field(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    grid = rng.uniform(0.0, 1.0, size=(h // cell + 2, w // cell + 2)).astype(np.float32)
    big = np.asarray(Image.fromarray(grid, mode="F").resize((w + 2 * cell, h + 2 * cell), Image.Resampling.BICUBIC))
    field = big[cell:cell + h, cell:cell + w].astype(np.float64)
    field -= field.min()
    top = field.max()
    return field / top if top > 0 else field


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """image sampled at (x, y) (pixel coordinates inside the image) with bilinear weights, as uint8."""
    h, w = image.shape[:2]
    x0 = np.clip(np.floor(x).astype(np.int64), 0, w - 1)
    y0 = np.clip(np.floor(y).astype(np.int64), 0, h - 1)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return np.clip(np.rint(top * (1 - fy) + bottom * fy), 0, 255).astype(np.uint8)
