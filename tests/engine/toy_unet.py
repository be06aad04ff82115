"""A tiny random stand-in for the SD UNet: same call signature, each image computed on its own."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sdstudio.engine.denoiser import UNetConditioning


class ToyUNet(nn.Module):
    """unet(x, t, context, y=None) -> (B, 4, h, w); depends smoothly on x, t, context and y.

    Records every call's inputs so tests can see what the denoiser passed in.
    """

    def __init__(self, in_channels: int = 4, context_dim: int = 8, adm: int = 0, seed: int = 0) -> None:
        super().__init__()
        # Channel mixing of each pixel and its right/lower neighbours: a 3-tap "convolution" without
        # nn.Conv2d, whose thread pool makes tiny calls slow on a busy machine.
        self.mix = nn.Parameter(torch.empty(3, 4, in_channels))
        self.ctx = nn.Linear(context_dim, 4)
        self.adm = nn.Linear(adm, 4) if adm else None
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
        self.calls: list[dict[str, Tensor | None]] = []

    @torch.no_grad()
    def forward(self, x: Tensor, t: Tensor, context: Tensor, y: Tensor | None = None) -> Tensor:
        self.calls.append({"x": x.clone(), "t": t.clone(), "context": context.clone(), "y": y})
        bias = self.ctx(context.mean(dim=1))
        if self.adm is not None:
            bias = bias + self.adm(y)
        t_feature = torch.sin(t / 150.0)[:, None, None, None]
        taps = (x, x.roll(1, dims=-1), x.roll(1, dims=-2))
        mixed = sum(torch.einsum("oc,bchw->bohw", w, tap) for w, tap in zip(self.mix, taps, strict=True))
        return torch.tanh(mixed) * (1 + 0.5 * t_feature) + 0.1 * bias[:, :, None, None]


def toy_conditioning(seed: int, tokens: int = 5, dim: int = 8, batch: int = 1, adm: int = 0) -> UNetConditioning:
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(batch, adm, generator=g) if adm else None
    return UNetConditioning(torch.randn(batch, tokens, dim, generator=g), y)
