"""diffusers' T2IAdapter (test-only reference) with random weights, and its state dict written in each layout
SD Studio reads: diffusers' own (`adapter.` names) and TencentARC's original full / light layouts."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import T2IAdapter as DiffusersAdapter
from safetensors.torch import save_file
from torch import Tensor

from sdstudio.engine.controlnet_file import TargetModel
from sdstudio.engine.families import family
from sdstudio.engine.unet import UNetConfig
from tests.engine.test_unet import LINEAR, POOLED, TIME_DIM, tiny

DIFFUSERS_KINDS = {"full": "full_adapter", "full_xl": "full_adapter_xl", "light": "light_adapter"}


def reference(kind: str, channels: list[int], blocks: int, in_channels: int = 3, seed: int = 0
              ) -> DiffusersAdapter:
    """A diffusers adapter with random weights (biases too, so none is left at zero)."""
    torch.manual_seed(seed)
    factor = 16 if kind == "full_xl" else 8
    adapter = DiffusersAdapter(in_channels, channels, blocks, factor, DIFFUSERS_KINDS[kind]).eval()
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return adapter


def original_state(adapter: DiffusersAdapter, kind: str) -> dict[str, Tensor]:
    """TencentARC's names for a diffusers adapter's tensors (the inverse of diffusers' converter)."""
    state = {k.removeprefix("adapter."): v for k, v in adapter.state_dict().items()}
    if kind == "light":
        return {re.sub(r"body\.(\d+)\.resnets\.(\d+)\.", r"body.\1.body.\2.", k): v for k, v in state.items()}
    per_level = adapter.config.num_res_blocks
    out = {}
    for key, value in state.items():
        if m := re.match(r"body\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            out[f"body.{int(m[1]) * per_level + int(m[2])}.{m[3]}"] = value
        elif m := re.match(r"body\.(\d+)\.in_conv\.(.*)", key):
            out[f"body.{int(m[1]) * per_level}.in_conv.{m[2]}"] = value
        else:
            out[key] = value
    return out


def write(path: Path, state: dict[str, Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def target(name: str, unet: UNetConfig) -> TargetModel:
    return TargetModel(family(name), unet)


# A tiny SD 1.x-shaped UNet (levels with attention, the last without) and a tiny SDXL-shaped one (no attention
# on the first level, which downsamples, then two levels with it), as the real ones place adapter features.
TINY_SD1 = tiny()
TINY_SD1_3 = tiny(channel_mult=(1, 2, 2), transformer_depth=(1, 1, 0))  # the light adapter pools once more
TINY_SDXL = tiny(channel_mult=(1, 2, 4), transformer_depth=(0, 1, 1), adm_in_channels=POOLED + 6 * TIME_DIM,
                 **LINEAR)
