"""Where pixels go between an image and a job's size: fitting an init image (or its mask) to the request, and
the "Only masked" box cut out of the input and pasted back.

numpy and PIL only, no torch: the UI maps masks and live previews with the same functions the engine uses
(engine/images.py re-exports them), so what the canvas shows lines up with what the engine makes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps


def fit(image: Image.Image, width: int, height: int, resample=Image.Resampling.LANCZOS) -> Image.Image:
    """Scale to cover width×height and centre-crop: no distortion, no borders."""
    if image.size == (width, height):
        return image
    return ImageOps.fit(image, (width, height), method=resample, centering=(0.5, 0.5))


def prepare_mask(mask: Image.Image, size: tuple[int, int], blur: int) -> Image.Image:
    """Mask at `size`, L mode, Gaussian-blurred by `blur` pixels (A1111's "Mask blur")."""
    m = fit(mask.convert("L"), *size, resample=Image.Resampling.BILINEAR)
    return m.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else m


def crop_region(mask: Image.Image, padding: int, width: int, height: int) -> tuple[int, int, int, int]:
    """A1111's "Only masked" box: the mask's bounding box plus padding, grown to exactly the request's aspect
    ratio width:height (to the pixel), then moved, never clipped, to lie inside the image, so the patch
    scales back without distortion. Where the image is too small for the box in a dimension the box is
    centred there and reaches past the edges (crop_padded fills them). An empty mask gives the whole image.
    """
    W, H = mask.size
    box = mask.convert("L").point(lambda v: 255 if v > 0 else 0).getbbox() or (0, 0, W, H)
    # Padding past the image edge would only add pixels that are not there.
    x1, y1 = max(box[0] - padding, 0), max(box[1] - padding, 0)
    x2, y2 = min(box[2] + padding, W), min(box[3] + padding, H)
    cw, ch = x2 - x1, y2 - y1
    if cw * height < ch * width:
        cw = max(1, round(ch * width / height))
    else:
        ch = max(1, round(cw * height / width))
    left, top = _place(x1, x2, cw, W), _place(y1, y2, ch, H)
    return (left, top, left + cw, top + ch)


def _place(lo: int, hi: int, size: int, limit: int) -> int:
    """Start of a span of `size` centred on lo..hi and moved to lie within 0..limit (centred on 0..limit
    when it is longer)."""
    if size >= limit:
        return (limit - size) // 2
    return min(max(round((lo + hi - size) / 2), 0), limit - size)


def crop_padded(image: Image.Image, box: tuple[int, int, int, int], edge: bool = True) -> Image.Image:
    """image.crop(box) for a box that may reach past the image: outside pixels repeat the nearest edge pixel
    (edge=True, so a model sees no artificial border) or are 0."""
    W, H = image.size
    left, top, right, bottom = box
    if left >= 0 and top >= 0 and right <= W and bottom <= H:
        return image.crop(box)
    a = np.asarray(image)
    pads = [(max(0, -top), max(0, bottom - H)), (max(0, -left), max(0, right - W))] + [(0, 0)] * (a.ndim - 2)
    padded = np.pad(a, pads, mode="edge") if edge else np.pad(a, pads)
    x0, y0 = left + pads[1][0], top + pads[0][0]
    return Image.fromarray(padded[y0 : y0 + bottom - top, x0 : x0 + right - left], image.mode)


def paste_region(canvas: Image.Image, patch: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """A copy of canvas with patch scaled to the box's size and pasted at its place (parts outside dropped)."""
    out = canvas.copy()
    size = (box[2] - box[0], box[3] - box[1])
    scaled = patch if patch.size == size else patch.resize(size, Image.Resampling.LANCZOS)
    out.paste(scaled.convert(out.mode), box[:2])
    return out
