"""HED soft edges (Xie & Tu 2015, "Holistically-Nested Edge Detection", arXiv:1504.06375) with the user's
ControlNetHED.pth: lllyasviel's Apache-2.0 retrain that ControlNet 1.1's softedge and scribble models were
trained on, and sd-webui-controlnet's softedge_hed / softedge_hedsafe / scribble_hed.

The network is five VGG-style blocks (2, 2, 3, 3, 3 ReLU convs of 64, 128, 256, 512, 512 channels, a 2×2 max
pool before each block but the first) on the raw 0..255 RGB values minus a learned per-channel offset
(`norm`); each block's 1×1 projection is one side output. The side outputs are resized bilinearly to the
image (pixel centres aligned), averaged and passed through a sigmoid. As in sd-webui-controlnet the image is
first padded at its bottom and right edges to a multiple of 64 by repeating the edge pixels, and the map
cropped back. Weights are read as plain tensors (torch's weights-only loader for .pth); the network runs
on the CPU in float32, once per job.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from sdstudio.engine import annotator_files
from sdstudio.engine.preprocessor_maps import as_rgb, gaussian_blur

_WIDTHS = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))  # (in, out, convs)
_PAD = 64


class _Block(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, convs: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels_in if i == 0 else channels_out, channels_out, 3, padding=1) for i in range(convs))
        self.projection = nn.Conv2d(channels_out, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for conv in self.convs:
            x = torch.relu(conv(x))
        return x, self.projection(x)


class HEDNetwork(nn.Module):
    """ControlNetHED.pth's layout: `norm`, `block1..5.convs.N`, `block1..5.projection`."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        for n, (channels_in, channels_out, convs) in enumerate(_WIDTHS, start=1):
            self.add_module(f"block{n}", _Block(channels_in, channels_out, convs))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (1, 3, H, W) RGB in 0..255 → the five side outputs, each (1, 1, H/2^k, W/2^k)."""
        h, sides = x - self.norm, []
        for n in range(1, len(_WIDTHS) + 1):
            if n > 1:
                h = nn.functional.max_pool2d(h, 2, 2)
            h, side = getattr(self, f"block{n}")(h)
            sides.append(side)
        return sides


def load_network(path: Path) -> HEDNetwork:
    return annotator_files.load_network(path, HEDNetwork, "ControlNetHED.pth (HED annotator)")


def edge_probability(rgb: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) float64 edge probability of an RGB uint8 image."""
    h, w = rgb.shape[:2]
    padded = np.pad(rgb, ((0, -h % _PAD), (0, -w % _PAD), (0, 0)), mode="edge")
    x = torch.from_numpy(padded.astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        sides = load_network(path)(x)
        size = x.shape[2:]
        resized = [nn.functional.interpolate(s, size=size, mode="bilinear", align_corners=False) for s in sides]
        mean = torch.cat(resized, 1)[0].double().mean(0)
    return torch.sigmoid(mean).numpy()[:h, :w]


def softedge(rgb: np.ndarray, files: tuple[Path, ...], safe: bool = False) -> np.ndarray:
    """The soft-edge map; `safe` quantises it to 0, 0.5 and 1 (sd-webui-controlnet's "hedsafe", which keeps
    fewer faint textures)."""
    edge = edge_probability(rgb, files[0])
    if safe:
        edge = np.floor(edge.astype(np.float32) * 3) / 2
    return as_rgb((edge * 255.0).clip(0, 255).astype(np.uint8))


def softedge_safe(rgb: np.ndarray, files: tuple[Path, ...]) -> np.ndarray:
    return softedge(rgb, files, safe=True)


def thin_lines(x: np.ndarray, level: float, sigma: float) -> np.ndarray:
    """Non-maximum suppression of a soft map along four line directions: after a Gaussian blur, a pixel stays
    where it equals the maximum of its 3-pixel horizontal, vertical or diagonal line, and above `level`."""
    blurred = gaussian_blur(x.astype(np.float32), sigma)
    p = np.pad(blurred, 1, mode="edge")
    h, w = blurred.shape

    def at(di: int, dj: int) -> np.ndarray:
        return p[1 + di:1 + di + h, 1 + dj:1 + dj + w]

    peak = np.zeros(blurred.shape, dtype=bool)
    for (a, b) in (((0, -1), (0, 1)), ((-1, 0), (1, 0)), ((-1, -1), (1, 1)), ((-1, 1), (1, -1))):
        peak |= (blurred >= at(*a)) & (blurred >= at(*b))
    return np.where(peak & (blurred > level), 255, 0).astype(np.uint8)


def scribble(rgb: np.ndarray, files: tuple[Path, ...]) -> np.ndarray:
    """A scribble from HED's soft edges (sd-webui-controlnet's scribble_hed): thinned at 127 after a sigma-3
    blur, blurred again (sigma 3) and everything above 4 made white, so lines are bold like a hand's."""
    soft = softedge(rgb, files)[..., 0]
    lines = gaussian_blur(thin_lines(soft, 127, 3.0), 3.0, reach=3.0)  # OpenCV blurs uint8 over 3 sigmas
    return as_rgb(np.where(np.rint(lines) > 4, 255, 0).astype(np.uint8))
