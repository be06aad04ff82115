"""A1111's "SD upscale": an image already upscaled (by a model or Lanczos) gets a low-strength img2img pass in
overlapping tiles of the model's working size, then the tiles are blended back into one image.

Torch-free: the img2img of one tile is a callable (the CLI and the app pass one that runs the engine), so the
grid and the blend are tested alone. The grid follows A1111's documented split (scripts/sd_upscale.py,
images.split_grid): as many tiles per row as needed for the given overlap, spread evenly so the last one
ends at the image's edge; the blend ramps linearly across each overlap, so no seam is a hard cut.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image

from sdstudio.engine.errors import RequestError

OVERLAP = 64  # A1111's default tile overlap for SD upscale
RunTile = Callable[[Image.Image, int, int], Image.Image]  # (tile, index, count) -> the tile after img2img


def positions(side: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one side: evenly spread, first at 0, last ending at `side`."""
    if tile >= side:
        return [0]
    count = math.ceil((side - overlap) / max(tile - overlap, 1))
    count = max(count, 2)
    step = (side - tile) / (count - 1)
    return [min(int(i * step), side - tile) for i in range(count)]


def tile_size(width: int, height: int, tile_w: int, tile_h: int, multiple: int = 8) -> tuple[int, int]:
    """The tile, shrunk to the image when the image is smaller, kept a multiple of the VAE's factor."""
    w, h = min(tile_w, width) // multiple * multiple, min(tile_h, height) // multiple * multiple
    if w <= 0 or h <= 0:
        raise RequestError(f"the image ({width}x{height}) is smaller than one {multiple}-pixel block; "
                           "nothing to refine")
    return w, h


def _ramp(n: int, overlap: int, start: bool, end: bool) -> np.ndarray:
    """1 inside, rising over `overlap` pixels at an edge that meets another tile (start/end), never 0."""
    x = np.arange(n, dtype=np.float64) + 0.5
    w = np.ones(n)
    if overlap > 0 and start:
        w = np.minimum(w, x / overlap)
    if overlap > 0 and end:
        w = np.minimum(w, (n - x) / overlap)
    return w


def refine_in_tiles(image: Image.Image, tile_w: int, tile_h: int, run_tile: RunTile,
                    overlap: int = OVERLAP) -> Image.Image:
    """`image` with every tile replaced by `run_tile(tile)` (same size), blended across the overlaps."""
    image = image.convert("RGB")
    tile_w, tile_h = tile_size(image.width, image.height, tile_w, tile_h)
    overlap = max(0, min(overlap, tile_w // 2, tile_h // 2))
    xs, ys = positions(image.width, tile_w, overlap), positions(image.height, tile_h, overlap)
    total = np.zeros((image.height, image.width, 3))
    weight = np.zeros((image.height, image.width, 1))
    count = len(xs) * len(ys)
    for r, y in enumerate(ys):
        wy = _ramp(tile_h, overlap, r > 0, r < len(ys) - 1)
        for c, x in enumerate(xs):
            wx = _ramp(tile_w, overlap, c > 0, c < len(xs) - 1)
            done = run_tile(image.crop((x, y, x + tile_w, y + tile_h)), r * len(xs) + c, count)
            if done.size != (tile_w, tile_h):
                raise RequestError(f"a refined tile came back {done.width}x{done.height}, not {tile_w}x{tile_h}")
            w = (wy[:, None] * wx[None, :])[..., None]
            total[y:y + tile_h, x:x + tile_w] += w * np.asarray(done.convert("RGB"), dtype=np.float64)
            weight[y:y + tile_h, x:x + tile_w] += w
    return Image.fromarray(np.clip(np.rint(total / weight), 0, 255).astype(np.uint8), "RGB")
