"""AutoencoderKL of latent diffusion: images <-> latents.

Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", section 3.1 and
appendix G. Modules carry the names of CompVis' `ldm/modules/diffusionmodules/model.py` (Encoder, Decoder,
ResnetBlock, AttnBlock) and `ldm/models/autoencoder.py`, so the `first_stage_model.*` tensors of a
single-file checkpoint load 1:1 with `strict=True`. SD 1.x, 2.x and SDXL share one configuration
(ch 128, ch_mult (1, 2, 4, 4), 2 residual blocks, 4 latent channels); only the pipeline's latent scale differs.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdstudio.engine.errors import UnsupportedModelError

_GROUPS = 32
_NORM_EPS = 1e-6
# LDM's DiagonalGaussianDistribution clamps the log-variance to this range.
_LOGVAR_MIN, _LOGVAR_MAX = -30.0, 20.0
_ATTENTION_WEIGHTS = ("q", "k", "v", "proj_out")


@dataclass(frozen=True)
class VAEConfig:
    """The `ddconfig` of an LDM first-stage model, plus `embed_dim`."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    in_channels: int = 3
    out_ch: int = 3

    @property
    def downscale(self) -> int:
        """Pixels per latent along each side: every level but the last halves the resolution."""
        return 2 ** (len(self.ch_mult) - 1)


def _norm(channels: int, factory: dict[str, Any]) -> nn.GroupNorm:
    return nn.GroupNorm(_GROUPS, channels, eps=_NORM_EPS, affine=True, **factory)


def _conv3(n_in: int, n_out: int, factory: dict[str, Any]) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **factory)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice plus a skip; a 1x1 `nin_shortcut` when the width changes."""

    def __init__(self, n_in: int, n_out: int, factory: dict[str, Any]):
        super().__init__()
        self.norm1 = _norm(n_in, factory)
        self.conv1 = _conv3(n_in, n_out, factory)
        self.norm2 = _norm(n_out, factory)
        self.conv2 = _conv3(n_out, n_out, factory)
        self.nin_shortcut = nn.Conv2d(n_in, n_out, 1, **factory) if n_in != n_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


def _conv_shaped_attention_weights(module, state_dict, prefix, *_args) -> None:
    """Load-state-dict pre-hook: converted files store q/k/v/proj_out as (C, C) matrices; view them as
    the (C, C, 1, 1) convs they are, so both layouts load under the same names."""
    for name in _ATTENTION_WEIGHTS:
        key = f"{prefix}{name}.weight"
        weight = state_dict.get(key)
        if weight is not None and weight.ndim == 2:
            state_dict[key] = weight[:, :, None, None]


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, with 1x1-conv projections and a residual."""

    def __init__(self, channels: int, factory: dict[str, Any]):
        super().__init__()
        self.norm = _norm(channels, factory)
        self.q = nn.Conv2d(channels, channels, 1, **factory)
        self.k = nn.Conv2d(channels, channels, 1, **factory)
        self.v = nn.Conv2d(channels, channels, 1, **factory)
        self.proj_out = nn.Conv2d(channels, channels, 1, **factory)
        self.register_load_state_dict_pre_hook(_conv_shaped_attention_weights)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # (b, c, h, w) -> (b, 1 head, h*w tokens, c)
        q, k, v = (t.flatten(2).transpose(1, 2).unsqueeze(1) for t in (self.q(y), self.k(y), self.v(y)))
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(y)


class Downsample(nn.Module):
    """Stride-2 3x3 conv. LDM pads only right and bottom (0, 1, 0, 1) and the conv pads nothing."""

    def __init__(self, channels: int, factory: dict[str, Any]):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0, **factory)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int, factory: dict[str, Any]):
        super().__init__()
        self.conv = _conv3(channels, channels, factory)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """`mid`: resnet, attention, resnet at the lowest resolution."""

    def __init__(self, channels: int, factory: dict[str, Any]):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, factory)
        self.attn_1 = AttnBlock(channels, factory)
        self.block_2 = ResnetBlock(channels, channels, factory)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


def _resnet_chain(n_in: int, n_out: int, count: int, factory: dict[str, Any]) -> nn.ModuleList:
    return nn.ModuleList(ResnetBlock(n_in if i == 0 else n_out, n_out, factory) for i in range(count))


class DownLevel(nn.Module):
    """`encoder.down.N`: residual blocks, then a downsample on every level but the last."""

    def __init__(self, n_in: int, n_out: int, blocks: int, last: bool, factory: dict[str, Any]):
        super().__init__()
        self.block = _resnet_chain(n_in, n_out, blocks, factory)
        self.downsample = nn.Identity() if last else Downsample(n_out, factory)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        return self.downsample(x)


class UpLevel(nn.Module):
    """`decoder.up.N`: residual blocks, then an upsample on every level but level 0 (full resolution)."""

    def __init__(self, n_in: int, n_out: int, blocks: int, first: bool, factory: dict[str, Any]):
        super().__init__()
        self.block = _resnet_chain(n_in, n_out, blocks, factory)
        self.upsample = nn.Identity() if first else Upsample(n_out, factory)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        return self.upsample(x)


class Encoder(nn.Module):
    """Image -> (mean, logvar) moments of the latent, before `quant_conv`."""

    def __init__(self, config: VAEConfig, factory: dict[str, Any]):
        super().__init__()
        widths = [config.ch * m for m in config.ch_mult]
        self.conv_in = _conv3(config.in_channels, config.ch, factory)
        n_in = config.ch
        self.down = nn.ModuleList()
        for level, width in enumerate(widths):
            last = level == len(widths) - 1
            self.down.append(DownLevel(n_in, width, config.num_res_blocks, last, factory))
            n_in = width
        self.mid = MidBlock(n_in, factory)
        self.norm_out = _norm(n_in, factory)
        self.conv_out = _conv3(n_in, 2 * config.z_channels, factory)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (after `post_quant_conv`) -> image. Levels run from `up[-1]` (coarsest) to `up[0]`."""

    def __init__(self, config: VAEConfig, factory: dict[str, Any]):
        super().__init__()
        widths = [config.ch * m for m in config.ch_mult]
        n_in = widths[-1]
        self.conv_in = _conv3(config.z_channels, n_in, factory)
        self.mid = MidBlock(n_in, factory)
        levels = []
        for level in reversed(range(len(widths))):
            levels.append(UpLevel(n_in, widths[level], config.num_res_blocks + 1, level == 0, factory))
            n_in = widths[level]
        # LDM inserts each level at the front, so index N is the level at resolution 1/2**N.
        self.up = nn.ModuleList(reversed(levels))
        self.norm_out = _norm(n_in, factory)
        self.conv_out = _conv3(n_in, config.out_ch, factory)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """LDM's KL-regularised autoencoder. Latents here are unscaled: the pipeline multiplies by the
    family's scale factor (0.18215 for SD 1.x/2.x, 0.13025 for SDXL) before the UNet sees them."""

    def __init__(self, config: VAEConfig, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.config = config
        self.encoder = Encoder(config, factory)
        self.decoder = Decoder(config, factory)
        self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1, **factory)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1, **factory)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Image in [-1, 1], (B, in_channels, H, W) -> (mean, logvar) of the latent posterior,
        each (B, embed_dim, H / downscale, W / downscale)."""
        return self.encode_moments(self.encoder(x))

    def encode_moments(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's output -> (mean, clamped logvar); shared with the tiled encode (vae_tiles.py)."""
        mean, logvar = self.quant_conv(h).chunk(2, dim=1)
        return mean, logvar.clamp(_LOGVAR_MIN, _LOGVAR_MAX)

    def decode(self, z: Tensor) -> Tensor:
        """Unscaled latent -> image in about [-1, 1] (not clamped)."""
        return self.decoder(self.post_quant_conv(z))


_DOWN_BLOCK_KEY = re.compile(r"encoder\.down\.(\d+)\.block\.(\d+)\.conv1\.weight")
_LEVEL_ATTENTION_KEY = re.compile(r"(encoder\.down|decoder\.up)\.\d+\.attn\.")
_ATTENTION_WEIGHT_KEY = re.compile(r"(encoder|decoder)\.mid\.attn_1\.(q|k|v|proj_out)\.weight")


def _unsupported(detail: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"Unsupported VAE: {detail}. SD Studio runs the AutoencoderKL of SD 1.x, 2.x and SDXL "
        "(LDM 'first_stage_model' layout)."
    )


def _shape(shapes: Mapping[str, tuple[int, ...]], key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise _unsupported(f"the weights have no '{key}'")
    return tuple(shapes[key])


def _levels(shapes: Mapping[str, tuple[int, ...]]) -> dict[int, int]:
    """Encoder level index -> number of residual blocks seen in it."""
    levels: dict[int, int] = {}
    for key in shapes:
        match = _DOWN_BLOCK_KEY.fullmatch(key)
        if match:
            level, block = int(match[1]), int(match[2])
            levels[level] = max(levels.get(level, 0), block + 1)
    if not levels or sorted(levels) != list(range(len(levels))):
        raise _unsupported(f"encoder levels {sorted(levels)} are not numbered 0..N")
    if len(set(levels.values())) != 1:
        raise _unsupported(f"encoder levels have different residual block counts {levels}")
    return levels


def _config_from_present_keys(shapes: Mapping[str, tuple[int, ...]]) -> VAEConfig:
    ch, in_channels = _shape(shapes, "encoder.conv_in.weight")[:2]
    levels = _levels(shapes)
    widths = [_shape(shapes, f"encoder.down.{i}.block.0.conv1.weight")[0] for i in range(len(levels))]
    if any(width % ch for width in widths):
        raise _unsupported(f"level widths {widths} are not multiples of the base width {ch}")
    if any(width % _GROUPS for width in (ch, *widths)):
        raise _unsupported(f"widths {[ch, *widths]} do not split into {_GROUPS} normalisation groups")
    return VAEConfig(
        ch=ch,
        ch_mult=tuple(width // ch for width in widths),
        num_res_blocks=levels[0],
        z_channels=_shape(shapes, "decoder.conv_in.weight")[1],
        embed_dim=_shape(shapes, "post_quant_conv.weight")[1],
        in_channels=in_channels,
        out_ch=_shape(shapes, "decoder.conv_out.weight")[0],
    )


def _conv_shape(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a tensor has once the attention pre-hook has viewed 2-D projections as 1x1 convs."""
    return (*shape, 1, 1) if _ATTENTION_WEIGHT_KEY.fullmatch(key) and len(shape) == 2 else shape


def vae_config_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> VAEConfig:
    """Read the VAEConfig from tensor shapes (keys without the `first_stage_model.` prefix).

    Raises UnsupportedModelError naming what it saw when the tensors do not form exactly one
    AutoencoderKL of the LDM layout (missing, extra or mis-shaped tensors, attention inside levels).
    """
    attention_in_levels = sorted(k for k in shapes if _LEVEL_ATTENTION_KEY.match(k))
    if attention_in_levels:
        raise _unsupported(f"attention inside resolution levels ('{attention_in_levels[0]}')")
    config = _config_from_present_keys(shapes)
    expected = {k: tuple(t.shape) for k, t in AutoencoderKL(config, device="meta").state_dict().items()}
    seen = {k: _conv_shape(k, tuple(s)) for k, s in shapes.items()}
    missing = sorted(expected.keys() - seen.keys())
    extra = sorted(seen.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & seen.keys() if expected[k] != seen[k])
    if missing or extra or wrong:
        problems = [f"{len(missing)} missing (e.g. '{missing[0]}')" if missing else "",
                    f"{len(extra)} unexpected (e.g. '{extra[0]}')" if extra else "",
                    f"'{wrong[0]}' is {seen[wrong[0]]}, expected {expected[wrong[0]]}" if wrong else ""]
        raise _unsupported(f"tensors do not fit {config}: " + "; ".join(p for p in problems if p))
    return config
