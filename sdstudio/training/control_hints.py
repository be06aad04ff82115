"""The companion ControlNet's hints: per dataset image, the maps the app would feed it, made once and cached.

Two kinds, both white lines on black at the engine's pixel size (64x64, the built-in model's size), both made by
the engine's own preprocessor table (preprocessors.run), so training sees exactly what the app computes:
- "canny": the canny map of the emoji itself (sd-webui-controlnet's default thresholds 100/200);
- "outline": the canny map of the emoji's silhouette (every pixel that is not white background), thickened by
  one pixel: a closed stroke around the shape, like a shape a user draws, so drawn scribbles work too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sdstudio.engine import preprocessors

KINDS = ("canny", "outline")
HINT_SIZE = 64
# A pixel is background when every channel is at least this bright (the dataset draws on pure white).
BACKGROUND = 240


def canny_hint(image: np.ndarray) -> np.ndarray:
    """(64, 64) uint8: the engine's canny map of an RGB image, at 64 px (its processor resolution)."""
    found = preprocessors.run("canny", Image.fromarray(image), {"resolution": HINT_SIZE})
    return np.asarray(found.convert("L"))


def dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation (a stroke one pixel wider on each side)."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    return np.stack([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]).any(axis=0)


def silhouette(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: everything but the white background reachable from the border (white inside the shape,
    a smile's teeth, stays in: a drawn outline encloses them too)."""
    white = (image >= BACKGROUND).all(axis=-1)
    outside = np.zeros_like(white)
    outside[[0, -1], :], outside[:, [0, -1]] = white[[0, -1], :], white[:, [0, -1]]
    while True:  # flood fill by repeated dilation inside the white pixels
        grown = dilate(outside) & white
        if (grown == outside).all():
            return ~outside
        outside = grown


def outline_hint(image: np.ndarray) -> np.ndarray:
    """(64, 64) uint8: the silhouette's canny outline, thickened to a drawn stroke."""
    shape = np.where(silhouette(image)[..., None], 0, 255).astype(np.uint8).repeat(3, axis=-1)
    edges = canny_hint(shape) > 127
    return np.where(dilate(edges), 255, 0).astype(np.uint8)


def make_hints(images: np.ndarray) -> np.ndarray:
    """(len(KINDS), N, 64, 64) uint8 maps of every image, in KINDS order."""
    return np.stack([np.stack([canny_hint(im) for im in images]), np.stack([outline_hint(im) for im in images])])


def cached_hints(path: Path, images: np.ndarray) -> np.ndarray:
    """The hints of `images`, computed on the first call and kept in `path` (npz) for every later run."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, hints=make_hints(images))
        tmp.replace(path)
    hints = np.load(path)["hints"]
    if hints.shape[1] != len(images):
        raise ValueError(f"{path} holds hints of {hints.shape[1]} images, the dataset has {len(images)}: delete it")
    return hints
