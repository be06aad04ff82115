"""Outpainting as inpainting: the image placed on a larger canvas, the new area filled and masked, so an
ordinary inpainting job (4- or 9-channel model) paints it and blends it in across the seam.

The fills are the ones AUTOMATIC1111's and InvokeAI's outpainting offer in spirit: "edge" repeats the
nearest edge pixel outward (edge colours), "blur" stretches the strip next to each edge across the new area
and blurs it (a blurred stretch), "noise" is seeded Gaussian noise around the border's mean colour. For a
4-channel model the fill is what the sampler starts from (so run it at a high strength, 0.9–1); a 9-channel
inpainting model sees the new area blanked and paints it from the context.

The pipeline composites its result over the init image through the mask blurred by "Mask blur"
(geometry.prepare_mask). Blurred at the seam, that would let the fill show through at the new area's inner
edge, so the mask reaches `blend_band(mask_blur)` pixels into the original along each extended side (A1111's
"Outpainting mk2" likewise draws its mask past the seam by the blur, its latent mask by twice that). The new
area is then all generated, the generated pixels fade into the original within `seam_band(mask_blur)` pixels
of the seam, and every original pixel farther away is kept exactly (tested through the pipeline).

With "Only masked" (A1111's inpaint at full resolution) the job samples only the box around the new area
and the seam (the mask's bounding box plus the padding) and pastes it back through the same blurred mask,
so the original is kept exactly outside the same band; `only_masked_size` is that box's own size, the
sampling size that neither scales it up nor down (a request's width x height is the size the box is
sampled at, as in A1111).

numpy and PIL only, no torch: the canvas in the UI and the command line build the same canvas and mask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageFilter

from sdstudio.engine.errors import RequestError
from sdstudio.engine.validate import MAX_SIDE

SIDES = ("left", "right", "up", "down")
FILLS = ("edge", "blur", "noise")
DEFAULT_FILL = "edge"
MAX_EXTENSION = 4096  # pixels per side; the request's own size limit (validate.MAX_SIDE) applies to the sum
NOISE_STD = 48.0  # the noise fill's spread around the border's mean colour, in 8-bit levels


@dataclass(frozen=True)
class Extension:
    """Pixels added on each side of an image."""

    left: int = 0
    right: int = 0
    up: int = 0
    down: int = 0

    def __post_init__(self) -> None:
        for side in SIDES:
            value = getattr(self, side)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_EXTENSION:
                raise RequestError(f"outpaint {side}={value!r} is out of range: use 0..{MAX_EXTENSION} pixels")

    def __bool__(self) -> bool:
        return any(getattr(self, side) for side in SIDES)

    @classmethod
    def parse(cls, text: str) -> Extension:
        """"left=128,right=128" (any of left, right, up, down; "all=64" for every side; top/bottom name
        up/down); sides not named stay 0."""
        amounts: dict[str, int] = {}
        aliases = {"top": "up", "bottom": "down"}
        for part in filter(None, (p.strip() for p in str(text).split(","))):
            name, eq, value = part.partition("=")
            name = aliases.get(name.strip().lower(), name.strip().lower())
            if not eq or name not in (*SIDES, "all") or not (value.strip().isascii() and value.strip().isdigit()):
                raise RequestError(f"outpaint {part!r} is not SIDE=PIXELS: use e.g. left=128,right=128 (sides: "
                                   f"{', '.join(SIDES)}, or all)")
            for side in SIDES if name == "all" else (name,):
                amounts[side] = int(value)
        ext = cls(**amounts)
        if not ext:
            raise RequestError(f"outpaint {text!r} adds nothing: give at least one side, e.g. right=128")
        return ext

    def text(self) -> str:
        """The form `parse` reads, sides with 0 left out."""
        return ",".join(f"{side}={getattr(self, side)}" for side in SIDES if getattr(self, side))

    def size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The canvas's (width, height) for an image of `image_size`."""
        return (image_size[0] + self.left + self.right, image_size[1] + self.up + self.down)

    def rounded(self, image_size: tuple[int, int], multiple: int) -> Extension:
        """Grown so the canvas's sides are multiples of `multiple` (the model's latent factor): the extra
        pixels go to the right (down) when that side is extended or nothing is, else to the left (up), so
        the image is never scaled and the added pixels are always new, masked area."""
        width, height = self.size(image_size)
        dx, dy = -width % multiple, -height % multiple
        horizontal = {"right": self.right + dx} if self.right or not self.left else {"left": self.left + dx}
        vertical = {"down": self.down + dy} if self.down or not self.up else {"up": self.up + dy}
        return replace(self, **horizontal, **vertical)


def blend_band(mask_blur: int) -> int:
    """How far (pixels) a blurred mask reaches past the edge of its white area, and so how far `extend` lets
    the mask overlap the original: PIL's Gaussian blur (an extended box blur) spreads a step about
    2.6 × radius; 3 × radius + 1 bounds it (tested up to 256)."""
    return 0 if mask_blur <= 0 else 3 * mask_blur + 1


def seam_band(mask_blur: int) -> int:
    """How many pixels of the original next to an extended side may change: the mask's overlap plus the
    blur's reach beyond it. Every original pixel farther from the seam is kept exactly."""
    return 2 * blend_band(mask_blur)


def extend(image: Image.Image, ext: Extension, fill: str = DEFAULT_FILL, seed: int = 0,
           mask: Image.Image | None = None, mask_blur: int = 0) -> tuple[Image.Image, Image.Image]:
    """(canvas, mask): `image` (RGB) at (ext.left, ext.up) on a canvas ext.size(image.size), the new area
    filled by `fill` and white in the mask (L). A `mask` of the image's size (white = repaint) is kept
    inside the image, so a painted area is repainted together with the new one. `seed` draws the noise fill.
    `mask_blur` (the job's) sets how far the mask overlaps the original along each extended side
    (`blend_band`), so the blurred mask is white over the whole new area."""
    if fill not in FILLS:
        raise RequestError(f"outpaint fill {fill!r} is unknown: use one of {', '.join(FILLS)}")
    if mask is not None and mask.size != image.size:
        raise RequestError(f"the mask is {mask.size[0]}x{mask.size[1]} but the image is "
                           f"{image.size[0]}x{image.size[1]}: they must match")
    width, height = ext.size(image.size)
    if max(width, height) > MAX_SIDE:  # said before a canvas of that size is allocated
        raise RequestError(f"the extended image would be {width}x{height}; the limit is {MAX_SIDE} pixels a side: "
                           "extend by less")
    rgb = np.asarray(image.convert("RGB"))
    pads = ((ext.up, ext.down), (ext.left, ext.right), (0, 0))
    if fill == "edge":
        canvas = np.pad(rgb, pads, mode="edge")
    elif fill == "blur":
        canvas = _blurred_stretch(rgb, ext)
    else:
        canvas = _noise(rgb, pads, seed)
    # The original's pixels go back exactly: the fills above only ever decide the new area.
    h, w = rgb.shape[:2]
    canvas[ext.up : ext.up + h, ext.left : ext.left + w] = rgb
    new_area = np.full(canvas.shape[:2], 255, np.uint8)
    new_area[ext.up : ext.up + h, ext.left : ext.left + w] = 0 if mask is None else np.asarray(mask.convert("L"))
    overlap = blend_band(mask_blur)
    for side, (rows, cols) in {
        "left": (slice(None), slice(ext.left, ext.left + overlap)),
        "right": (slice(None), slice(max(ext.left + w - overlap, ext.left), ext.left + w)),
        "up": (slice(ext.up, ext.up + overlap), slice(None)),
        "down": (slice(max(ext.up + h - overlap, ext.up), ext.up + h), slice(None)),
    }.items():
        if getattr(ext, side) and overlap:
            new_area[rows, cols] = 255
    return Image.fromarray(canvas, "RGB"), Image.fromarray(new_area, "L")


def only_masked_size(mask: Image.Image, padding: int, multiple: int) -> tuple[int, int]:
    """(width, height) to sample an outpaint's "Only masked" box at 1:1: the mask's bounding box plus
    `padding` (within the canvas, as geometry.crop_region pads it), rounded up to `multiple` (the model's
    latent factor). The box crop_region then takes for that size is this one, grown by under `multiple`."""
    box = mask.convert("L").point(lambda v: 255 if v > 0 else 0).getbbox()
    if box is None:
        raise RequestError("the outpaint mask is empty: nothing to paint")
    width = min(box[2] + padding, mask.width) - max(box[0] - padding, 0)
    height = min(box[3] + padding, mask.height) - max(box[1] - padding, 0)
    return -(-width // multiple) * multiple, -(-height // multiple) * multiple


def _blurred_stretch(rgb: np.ndarray, ext: Extension) -> np.ndarray:
    """The strip next to each edge (an eighth of the extension deep, at least 4 pixels) stretched across the
    new area, mirrored so the seam's own pixels meet the seam, then blurred by a quarter of the widest
    extension: the model gets the colours and light next to the seam, not its details."""
    h, w = rgb.shape[:2]
    rows = _stretch_index(h, ext.up, ext.down)
    cols = _stretch_index(w, ext.left, ext.right)
    stretched = np.ascontiguousarray(rgb[rows][:, cols])
    radius = max(2, max(ext.left, ext.right, ext.up, ext.down) // 4)
    return np.array(Image.fromarray(stretched, "RGB").filter(ImageFilter.GaussianBlur(radius)))


def _stretch_index(length: int, before: int, after: int) -> np.ndarray:
    """For each canvas position along one axis, the image position it copies: itself inside the image; in
    an extension of e pixels, position d from the seam (0 = next to it) copies the pixel d * k / e in from
    that edge, k = the strip's depth."""
    def depth(e: int) -> np.ndarray:
        k = min(length, max(4, e // 8))
        return (np.arange(e) * k // max(e, 1)).clip(0, length - 1)

    return np.concatenate([depth(before)[::-1], np.arange(length), length - 1 - depth(after)])


def _noise(rgb: np.ndarray, pads, seed: int) -> np.ndarray:
    """Seeded Gaussian noise around the mean colour of the image's outermost pixels."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.float64)
    shape = (rgb.shape[0] + sum(pads[0]), rgb.shape[1] + sum(pads[1]), 3)
    noise = np.random.default_rng(seed).normal(border.mean(axis=0), NOISE_STD, size=shape)
    return np.clip(np.rint(noise), 0, 255).astype(np.uint8)
