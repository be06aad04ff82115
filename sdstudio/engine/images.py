"""Pixels in and out of the engine: PIL <-> tensors, fitting an init image to the request size, masks.

A mask is an L-mode image where white means repaint (the A1111 convention). Compositing happens in pixel
space through the blurred mask so pixels outside it come back bit-identical to the input.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sdstudio.engine.geometry import (  # noqa: F401 (re-exported: the engine's one module for pixels)
    crop_padded,
    crop_region,
    fit,
    paste_region,
    prepare_mask,
)


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
