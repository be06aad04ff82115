"""T2I-Adapter (Mou et al. 2023, "T2I-Adapter: Learning Adapters to Dig out More Controllable Ability for
Text-to-Image Diffusion Models", arXiv:2302.08453).

An adapter turns the hint image into one feature map per UNet encoder level, once per job (it sees neither
the latent nor the timestep), and the UNet adds them on its encoder path (residuals.Residuals.encoder), where
a ControlNet's residuals go to the skips instead. Module names are diffusers' `T2IAdapter` ones without its
`adapter.` prefix (`conv_in`, `body.N.in_conv`, `body.N.resnets.M.block1/block2`, light's `body.N.out_conv`),
since they group the blocks as the features come out; t2i_adapter_file.py renames TencentARC's originals.

- full (SD 1.x): pixel-unshuffle 8, `conv_in` 3x3, then per level an average-pool (not on the first), a 1x1
  `in_conv` where the width changes, and residual blocks h + block2(relu(block1(h))), block1 3x3, block2 1x1;
- full XL (SDXL): the same blocks after a pixel-unshuffle 16, pooling only before the third level;
- light (TencentARC's `Adapter_light`, e.g. the colour adapter): no `conv_in`; each level pools (not the
  first), 1x1 `in_conv` to a quarter of its width, residual blocks with two 3x3 convs, 1x1 `out_conv`.
TencentARC's `sk=False` variant (an `in_conv` in every block and a `skep` conv instead of the identity) was
never released and is not built.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sdstudio.engine.t2i_adapter_keys import AdapterKind, kind
from sdstudio.engine.unet import UNetConfig


@dataclass(frozen=True)
class AdapterConfig:
    """kind: a KINDS name; in_channels: the hint's channels (1 or 3); channels: each level's output width;
    kernel: the width of `block2` and `in_conv` in full adapters (TencentARC's ksize, 1 in every released
    file)."""

    kind: str
    in_channels: int
    channels: tuple[int, ...]
    num_res_blocks: int
    kernel: int = 1

    @property
    def architecture(self) -> AdapterKind:
        return kind(self.kind)

    def scales(self) -> list[int]:
        """How many pixels of the hint make one pixel of each level's feature."""
        scale, out = self.architecture.unshuffle, []
        for down in self.architecture.downs[: len(self.channels)]:
            scale *= 2 if down else 1
            out.append(scale)
        return out


def _conv(c_in: int, c_out: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=k // 2)


class ResnetBlock(nn.Module):
    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.block1 = _conv(channels, channels, 3)
        self.block2 = _conv(channels, channels, kernel)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block2(F.relu(self.block1(x)))


class AdapterBlock(nn.Module):
    """One level: pool, `in_conv`, residual blocks, and (light) `out_conv` back to the level's width."""

    def __init__(self, c_in: int, c_out: int, config: AdapterConfig, down: bool) -> None:
        super().__init__()
        light = config.architecture.light
        self.down = down
        width = c_out // 4 if light else c_out
        self.in_conv = _conv(c_in, width, 1 if light else config.kernel) if light or c_in != c_out else None
        self.resnets = nn.Sequential(*(ResnetBlock(width, 3 if light else config.kernel)
                                       for _ in range(config.num_res_blocks)))
        self.out_conv = _conv(width, c_out, 1) if light else None

    def forward(self, x: Tensor) -> Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2, 2, ceil_mode=True)
        if self.in_conv is not None:
            x = self.in_conv(x)
        x = self.resnets(x)
        return x if self.out_conv is None else self.out_conv(x)


class T2IAdapter(nn.Module):
    """hint (B, in_channels, H, W) in [0, 1] -> one feature per level. Built on `device="meta"` it allocates
    nothing; the loader assigns the file's tensors."""

    def __init__(self, config: AdapterConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.config = config
        arch = config.architecture
        with contextlib.nullcontext() if device is None else torch.device(device):
            unshuffled = config.in_channels * arch.unshuffle ** 2
            self.conv_in = None if arch.light else _conv(unshuffled, config.channels[0], 3)
            widths = [unshuffled if arch.light else config.channels[0], *config.channels]
            self.body = nn.ModuleList(AdapterBlock(widths[i], widths[i + 1], config, arch.downs[i])
                                      for i in range(len(config.channels)))

    def forward(self, hint: Tensor) -> list[Tensor]:
        x = F.pixel_unshuffle(hint, self.config.architecture.unshuffle)
        if self.conv_in is not None:
            x = self.conv_in(x)
        features = []
        for block in self.body:
            x = block(x)
            features.append(x)
        return features


def injection_points(unet: UNetConfig) -> list[tuple[int, int, int]]:
    """(input block index, width, latent pixels per feature pixel) where each encoder level takes its
    adapter feature, as diffusers' UNet2DConditionModel adds down_intrablock_additional_residuals (and
    sd-webui-controlnet's t2i injection, blocks 2, 5, 8, 11 on SD 1.x, 3, 5, 8 on SDXL): after the level's
    last attention block; a level without attention (diffusers' DownBlock2D) takes it after its
    downsampler, when it has one."""
    points, n, levels = [], unet.num_res_blocks, len(unet.channel_mult)
    for level, mult in enumerate(unet.channel_mult):
        last = level * (n + 1) + n  # input block 0 is the latent's conv
        after_down = unet.transformer_depth[level] == 0 and level < levels - 1
        points.append((last + after_down, unet.model_channels * mult, 2 ** (level + after_down)))
    return points
