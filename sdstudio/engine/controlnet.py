"""ControlNet (Zhang, Rao & Agrawala 2023, "Adding Conditional Control to Text-to-Image Diffusion Models",
arXiv:2302.05543) with the original lllyasviel `cldm` module names.

A ControlNet is a trainable copy of the UNet's encoder (`time_embed`, `label_emb` for SDXL, `input_blocks`,
`middle_block`, named as in ldm so the UNet's own blocks are reused) plus
- `input_hint_block`: eight 3x3 convolutions with SiLU between them that bring the hint image (pixel size,
  values in [0, 1]) down 8x to the latent grid, the last one into `model_channels` features;
- `zero_convs.N.0`: one 1x1 convolution per input block, whose outputs are the skip residuals;
- `middle_block_out.0`: a 1x1 convolution after the middle block, the middle residual.
The hint features are added once, to the output of the first input block (the latent's input conv).
Its outputs are `residuals.Residuals`, which the UNet adds where the decoder consumes its skips.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sdstudio.engine.residuals import Residuals
from sdstudio.engine.unet import (
    ResBlock,
    TimestepEmbedSequential,
    UNetConfig,
    _input_blocks,
    _transformer,
    timestep_embedding,
)

# (in, out, stride) of each conv of cldm's input_hint_block after the first (hint_channels -> 16, stride 1);
# a SiLU follows every conv but the last, so the convs sit at even indices 0, 2, ..., 14.
HINT_CONVS = ((16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 96, 2), (96, 96, 1), (96, 256, 2))
HINT_WIDTH = 16
HINT_DOWNSCALE = 8  # three stride-2 convs: the hint is at pixel size, the features at latent size


@dataclass(frozen=True)
class ControlNetConfig:
    """The encoder's UNetConfig (out_channels unused) and the hint image's channel count."""

    unet: UNetConfig
    hint_channels: int = 3


def _hint_block(hint_channels: int, model_channels: int) -> TimestepEmbedSequential:
    layers: list[nn.Module] = [nn.Conv2d(hint_channels, HINT_WIDTH, 3, padding=1), nn.SiLU()]
    for c_in, c_out, stride in HINT_CONVS:
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, stride=stride), nn.SiLU()]
    layers.append(nn.Conv2d(HINT_CONVS[-1][1], model_channels, 3, padding=1))
    return TimestepEmbedSequential(*layers)


def _zero_conv(channels: int) -> TimestepEmbedSequential:
    return TimestepEmbedSequential(nn.Conv2d(channels, channels, 1))


class ControlNet(nn.Module):
    """(latent x, hint, timesteps, context[, y]) -> Residuals for the UNet (one per input block + middle).

    Built on `device="meta"` it allocates nothing; the loader assigns the file's tensors.
    """

    def __init__(self, config: ControlNetConfig, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.config = config
        with contextlib.nullcontext() if device is None else torch.device(device):
            self._build(config)
        if dtype is not None:
            self.to(dtype)

    def _build(self, config: ControlNetConfig) -> None:
        unet = config.unet
        mc = unet.model_channels
        emb_dim = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = None
        if unet.adm_in_channels is not None:
            self.label_emb = nn.Sequential(
                nn.Sequential(nn.Linear(unet.adm_in_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)))
        self.input_hint_block = _hint_block(config.hint_channels, mc)
        self.input_blocks, skip_channels = _input_blocks(unet, emb_dim)
        self.zero_convs = nn.ModuleList(_zero_conv(ch) for ch in skip_channels)
        ch = mc * unet.channel_mult[-1]
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb_dim, ch), _transformer(unet, ch, unet.transformer_depth_middle), ResBlock(ch, emb_dim, ch))
        self.middle_block_out = _zero_conv(ch)

    @property
    def skip_channels(self) -> list[int]:
        """The width of each skip residual, in input-block order (what a UNet must match)."""
        return [zc[0].out_channels for zc in self.zero_convs]

    def forward(self, x: Tensor, hint: Tensor, timesteps: Tensor, context: Tensor,
                y: Tensor | None = None) -> Residuals:
        """x (B, 4, h, w) the UNet's scaled input without inpainting channels; hint (1 or B, C, 8h, 8w) in [0, 1]."""
        if (y is None) != (self.label_emb is None):
            raise ValueError("y is required exactly when the ControlNet has adm_in_channels (SDXL)")
        mc = self.config.unet.model_channels
        emb = self.time_embed(timestep_embedding(timesteps, mc).to(x.dtype))
        if self.label_emb is not None:
            emb = emb + self.label_emb(y)
        guided = self.input_hint_block(hint.to(x.dtype), emb, context)
        if guided.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"hint features {tuple(guided.shape[-2:])} do not cover the latent {tuple(x.shape[-2:])}:"
                             f" the hint must be {HINT_DOWNSCALE}x the latent size")
        outs = []
        h = x
        for n, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs, strict=True)):
            h = block(h, emb, context)
            if n == 0:
                h = h + guided
            outs.append(zero_conv(h, emb, context))
        h = self.middle_block(h, emb, context)
        return Residuals(tuple(outs), self.middle_block_out(h, emb, context))
