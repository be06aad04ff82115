"""Augmentations that keep a caption true: small shifts and scales on white, no flips, no colour changes
(colours and orientation are part of emoji names: "red apple", "left arrow")."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_tensor(images_uint8: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1], the autoencoder's input range."""
    return images_uint8.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def shift_scale(x: torch.Tensor, generator: torch.Generator, max_shift: float = 0.06,
                scale_range: tuple[float, float] = (0.9, 1.05)) -> torch.Tensor:
    """Randomly shift (fraction of the image size) and scale each image; uncovered borders become white."""
    n = x.shape[0]
    scale = torch.empty(n).uniform_(*scale_range, generator=generator)
    shift = torch.empty(n, 2).uniform_(-max_shift, max_shift, generator=generator) * 2
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1 / scale
    theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Sampling (x - 1) pads with 0, which is white (+1) after adding 1 back.
    return F.grid_sample(x - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1
