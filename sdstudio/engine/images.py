"""Pixels in and out of the engine: PIL <-> tensors, fitting an init image to the request size, masks.

A mask is an L-mode image where white means repaint (the A1111 convention). Compositing happens in pixel
space through the blurred mask so pixels outside it come back bit-identical to the input.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (1, 3, H, W) float32 in [-1, 1]."""
    a = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_images(x: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> RGB PIL images. Truncates like A1111 and ComfyUI (255 * x, then uint8),
    so the same latents give the same bytes."""
    a = (((x.detach().float() + 1) / 2).clamp(0, 1) * 255).to(torch.uint8)
    return [Image.fromarray(img.permute(1, 2, 0).numpy(), "RGB") for img in a.cpu()]


def from_unit(x: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [0, 1] -> RGB PIL images."""
    return to_images(x * 2 - 1)


def fit(image: Image.Image, width: int, height: int, resample=Image.Resampling.LANCZOS) -> Image.Image:
    """Scale to cover width×height and centre-crop: no distortion, no borders."""
    if image.size == (width, height):
        return image
    return ImageOps.fit(image, (width, height), method=resample, centering=(0.5, 0.5))


def prepare_mask(mask: Image.Image, size: tuple[int, int], blur: int) -> Image.Image:
    """Mask at `size`, L mode, Gaussian-blurred by `blur` pixels (A1111's "Mask blur")."""
    m = fit(mask.convert("L"), *size, resample=Image.Resampling.BILINEAR)
    return m.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else m


def latent_mask(blurred: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, h, w) binary repaint mask at latent `size` (w, h), as A1111 makes it: the blurred mask resized
    with PIL's bicubic filter, then rounded."""
    small = blurred.convert("L").resize(size, Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).round()[None, None]


def mask_tensor(mask: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, h, w) float in [0, 1] at `size` (w, h), area-averaged: 1 = repaint."""
    m = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None]
    return torch.nn.functional.interpolate(m, size=(size[1], size[0]), mode="area")


def composite(generated: Image.Image, original: Image.Image, blurred_mask: Image.Image) -> Image.Image:
    """Generated pixels where the mask is white, the original's elsewhere (exactly, where the mask is 0)."""
    return Image.composite(generated.convert("RGB"), original.convert("RGB"), blurred_mask)


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
