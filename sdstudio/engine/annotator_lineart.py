"""Line art from a photo with the user's sk_model.pth (lineart_realistic) or sk_model2.pth (lineart_coarse):
the informative-drawings generator (Chan, Durand & Isola 2022, "Learning to generate line drawings that
convey geometry and semantics", arXiv:2203.12691) that ControlNet 1.1's lineart model was trained on.

The network is a ResNet-style image-to-image generator (Johnson et al. 2016): a 7×7 convolution to 64
channels, two stride-2 convolutions (128, 256), three residual blocks, two stride-2 transposed convolutions
back (128, 64) and a 7×7 convolution to one channel with a sigmoid; instance norm (no weights) and ReLU after
every inner convolution, reflection padding around the 7×7 and residual ones. Input RGB in 0..1; the output is
dark lines on white, which sd-webui-controlnet inverts to white lines on black. As there, the image is padded
at its bottom and right edges to a multiple of 64 (edge pixels repeated) and the map cropped back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from sdstudio.engine import annotator_files
from sdstudio.engine.preprocessor_maps import as_rgb

_PAD = 64
_RESIDUAL_BLOCKS = 3


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _down(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.InstanceNorm2d(cout), nn.ReLU()]


def _up(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(cout), nn.ReLU()]


class LineartNetwork(nn.Module):
    """sk_model.pth's layout: model0 (7×7 in), model1 (down), model2.N.conv_block (residual), model3 (up),
    model4 (7×7 out)."""

    def __init__(self) -> None:
        super().__init__()
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 64, 7), nn.InstanceNorm2d(64), nn.ReLU())
        self.model1 = nn.Sequential(*_down(64, 128), *_down(128, 256))
        self.model2 = nn.Sequential(*(_Residual(256) for _ in range(_RESIDUAL_BLOCKS)))
        self.model3 = nn.Sequential(*_up(256, 128), *_up(128, 64))
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(64, 1, 7), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in (self.model0, self.model1, self.model2, self.model3, self.model4):
            x = stage(x)
        return x


def load_network(path: Path) -> LineartNetwork:
    return annotator_files.load_network(path, LineartNetwork, "line-art annotator")


def lines(rgb: np.ndarray, files: tuple[Path, ...]) -> np.ndarray:
    """White lines on black from an RGB uint8 image."""
    h, w = rgb.shape[:2]
    padded = np.pad(rgb, ((0, -h % _PAD), (0, -w % _PAD), (0, 0)), mode="edge")
    x = torch.from_numpy(padded.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        drawing = load_network(files[0])(x)[0, 0].numpy()
    dark_on_white = (drawing * 255.0).clip(0, 255).astype(np.uint8)
    return as_rgb(255 - dark_on_white[:h, :w])
