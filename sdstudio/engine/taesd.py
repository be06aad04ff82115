"""Tiny AutoEncoder for Stable Diffusion (TAESD), used to preview the denoised latent at every step.

Architecture of Ollin Boer Bohan's https://github.com/madebyollin/taesd (`taesd.py`): encoder and decoder
are `nn.Sequential`s with his layer order, so `taesd_encoder.safetensors` / `taesd_decoder.safetensors`
load 1:1, and diffusers' `AutoencoderTiny` files load by prefix stripping (see `load_taesd_state`).
TAESD works on scaled latents (what the UNet sees) and RGB in [0, 1]. About 1.2M parameters per half at the
published width of 64 channels; the width is a parameter (read from a file's first conv on load), so a model
whose UNet step costs milliseconds can ship a narrower preview decoder that costs a fraction of one.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from sdstudio.engine.errors import CheckpointError

WIDTH = 64
# Each stage of the decoder doubles the resolution; three stages undo the VAE's factor 8.
_STAGES = 3


def _conv(n_in: int, n_out: int, bias: bool = True, stride: int = 1, **factory: Any) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, stride=stride, bias=bias, **factory)


class Clamp(nn.Module):
    """Soft clamp to (-3, 3): early-step latents can be far outside the range TAESD was trained on."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """conv-ReLU-conv-ReLU-conv plus a skip, then ReLU."""

    def __init__(self, n_in: int, n_out: int, **factory: Any):
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in, n_out, **factory), nn.ReLU(),
            _conv(n_out, n_out, **factory), nn.ReLU(),
            _conv(n_out, n_out, **factory),
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False, **factory) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


def _blocks(count: int, width: int, **factory: Any) -> list[nn.Module]:
    return [Block(width, width, **factory) for _ in range(count)]


def taesd_encoder(latent_channels: int = 4, width: int = WIDTH, **factory: Any) -> nn.Sequential:
    """RGB in [0, 1] -> scaled latent; three stride-2 convs give factor 8."""
    layers: list[nn.Module] = [_conv(3, width, **factory), *_blocks(1, width, **factory)]
    for _ in range(_STAGES):
        layers += [_conv(width, width, bias=False, stride=2, **factory), *_blocks(3, width, **factory)]
    layers.append(_conv(width, latent_channels, **factory))
    return nn.Sequential(*layers)


def taesd_decoder(latent_channels: int = 4, width: int = WIDTH, **factory: Any) -> nn.Sequential:
    """Scaled latent -> RGB in about [0, 1] (not clamped)."""
    layers: list[nn.Module] = [Clamp(), _conv(latent_channels, width, **factory), nn.ReLU()]
    for _ in range(_STAGES):
        layers += [*_blocks(3, width, **factory), nn.Upsample(scale_factor=2),
                   _conv(width, width, bias=False, **factory)]
    layers += [*_blocks(1, width, **factory), _conv(width, 3, **factory)]
    return nn.Sequential(*layers)


def decoder_shape(state_dict: Mapping[str, Tensor]) -> tuple[int, int]:
    """(latent_channels, width) of the decoder in a TAESD state dict, from its first conv, in any of the
    layouts `load_taesd_state` takes; the published (4, 64) when there is no decoder conv to read."""
    for key in ("1.weight", "layers.0.weight", "decoder.1.weight", "decoder.layers.0.weight"):
        weight = state_dict.get(key)
        if weight is not None and weight.dim() == 4:
            return int(weight.shape[1]), int(weight.shape[0])
    return 4, WIDTH


class TAESD(nn.Module):
    """Both halves; `latent_channels` is 4 for SD 1.x/2.x/XL (the 16-channel variants are other files)."""

    def __init__(self, latent_channels: int = 4, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, width: int = WIDTH):
        super().__init__()
        self.encoder = taesd_encoder(latent_channels, width, device=device, dtype=dtype)
        self.decoder = taesd_decoder(latent_channels, width, device=device, dtype=dtype)

    def encode(self, rgb01: Tensor) -> Tensor:
        """RGB in [0, 1], (B, 3, H, W) -> scaled latent (B, C, H / 8, W / 8)."""
        return self.encoder(rgb01)

    def decode(self, latent: Tensor) -> Tensor:
        """Scaled latent -> RGB clamped to [0, 1], ready to show."""
        return self.decoder(latent).clamp(0, 1)


def _strip(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _diffusers_view(half: nn.Sequential) -> nn.Sequential:
    """The layers diffusers keeps in `layers`: its DecoderTiny applies the clamp in forward() instead of
    as layer 0, so its `layers.N` is madebyollin's layer N + 1. The view shares the modules of `half`."""
    return nn.Sequential(*list(half)[1:]) if isinstance(half[0], Clamp) else half


def _load_half(half: nn.Sequential, state_dict: Mapping[str, Tensor]) -> None:
    if state_dict and all(k.startswith("layers.") for k in state_dict):
        half, state_dict = _diffusers_view(half), _strip(state_dict, "layers.")
    try:
        half.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"These TAESD weights do not fit the tiny autoencoder: {exc}") from exc


def load_taesd_state(module_part: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load TAESD weights strictly, telling the layouts apart by key prefix only.

    `module_part` is a `TAESD` or one of its halves (`.encoder`, `.decoder`):
    - a half takes madebyollin's per-half file (`0.weight`, `1.conv.0.weight`, ...) or diffusers' keys of
      that half without the `encoder.` / `decoder.` prefix (`layers.0.weight`, ...);
    - a TAESD takes a state dict of both halves under `encoder.` and `decoder.`, in either layout
      (`decoder.1.weight` from `TAESD().state_dict()`, or diffusers' `decoder.layers.0.weight`).
    Raises CheckpointError when tensors are missing, extra or of the wrong shape.
    """
    if not isinstance(module_part, TAESD):
        _load_half(module_part, state_dict)
        return
    stray = sorted(k for k in state_dict if not k.startswith(("encoder.", "decoder.")))
    if stray:
        raise CheckpointError(f"These TAESD weights hold a tensor outside encoder/decoder: '{stray[0]}'")
    for name in ("encoder", "decoder"):
        half_state = _strip(state_dict, name + ".")
        if not half_state:
            raise CheckpointError(
                f"These TAESD weights have no '{name}.' tensors; a file holding one half loads into "
                "TAESD().encoder or TAESD().decoder"
            )
        _load_half(getattr(module_part, name), half_state)
