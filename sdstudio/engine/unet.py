"""The latent-diffusion UNet of SD 1.x, SD 2.x and SDXL, with the original LDM/sgm module names.

Follows `ldm/modules/diffusionmodules/openaimodel.py` (Rombach et al., "High-Resolution Image Synthesis
with Latent Diffusion Models", CVPR 2022) and its SDXL extension in Stability AI's `sgm` (Podell et al.,
"SDXL", 2023). Module paths equal the keys under `model.diffusion_model.` in single-file checkpoints,
so weights load with `load_state_dict(strict=True)` and no key table.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdstudio.engine.attention import SpatialTransformer
from sdstudio.engine.errors import UnsupportedModelError
from sdstudio.engine.families import HeadLayout
from sdstudio.engine.residuals import Residuals

GROUPS = 32  # every GroupNorm in the LDM UNet uses 32 groups


@dataclass(frozen=True)
class UNetConfig:
    """The hyper-parameters of an LDM UNet, named as in the original YAML configs."""

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    transformer_depth: tuple[int, ...]  # per level, 0 = no attention at that level
    transformer_depth_middle: int
    context_dim: int
    num_heads: int = -1  # SD 1.x fixes the number of heads ...
    num_head_channels: int = -1  # ... SD 2.x and SDXL the width of a head; exactly one is set
    use_linear_in_transformer: bool = False
    adm_in_channels: int | None = None  # SDXL: width of the `y` vector (pooled text + size embeddings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "transformer_depth", tuple(self.transformer_depth))
        if (self.num_heads > 0) == (self.num_head_channels > 0):
            raise ValueError("set exactly one of num_heads and num_head_channels")
        if len(self.transformer_depth) != len(self.channel_mult):
            raise ValueError(
                f"{len(self.channel_mult)} levels but transformer_depth {self.transformer_depth}"
            )
        if self.num_res_blocks < 1 or self.transformer_depth_middle < 1:
            raise ValueError("need at least one res block per level and one middle transformer block")
        if self.model_channels % GROUPS:
            raise ValueError(f"model_channels {self.model_channels} is not a multiple of {GROUPS}")
        for channels in self.attention_channels():
            heads, dim_head = self.heads_at(channels)
            if heads < 1 or heads * dim_head != channels:
                raise ValueError(f"{channels} channels do not split into heads of this config")

    def attention_channels(self) -> list[int]:
        """Feature widths that carry a transformer: each attended level and the middle."""
        levels = [
            self.model_channels * m
            for m, d in zip(self.channel_mult, self.transformer_depth, strict=True)
            if d
        ]
        return levels + [self.model_channels * self.channel_mult[-1]]

    def heads_at(self, channels: int) -> tuple[int, int]:
        """(heads, dim_head) for a transformer on `channels` features, as LDM derives them."""
        if self.num_head_channels > 0:
            return channels // self.num_head_channels, self.num_head_channels
        return self.num_heads, channels // self.num_heads

    @classmethod
    def sd15(cls, in_channels: int = 4) -> UNetConfig:
        """SD 1.x (`v1-inference.yaml`); in_channels 9 for the inpainting model."""
        return cls(
            in_channels=in_channels,
            out_channels=4,
            model_channels=320,
            channel_mult=(1, 2, 4, 4),
            num_res_blocks=2,
            transformer_depth=(1, 1, 1, 0),
            transformer_depth_middle=1,
            context_dim=768,
            num_heads=8,
        )

    @classmethod
    def sd21(cls, in_channels: int = 4) -> UNetConfig:
        """SD 2.x (`v2-inference(-v).yaml`): SD 1.x with OpenCLIP context, 64-wide heads, linear projections."""
        return replace(
            cls.sd15(in_channels),
            context_dim=1024,
            num_heads=-1,
            num_head_channels=64,
            use_linear_in_transformer=True,
        )

    @classmethod
    def sdxl(cls, in_channels: int = 4) -> UNetConfig:
        """SDXL base (`sd_xl_base.yaml`): three levels, deep transformers on the lower two, a `y` input."""
        return replace(
            cls.sd21(in_channels),
            channel_mult=(1, 2, 4),
            transformer_depth=(0, 2, 10),
            transformer_depth_middle=10,
            context_dim=2048,
            adm_in_channels=2816,
        )


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017) in LDM's layout: cos of all frequencies, then sin.

    Frequencies are max_period^(-i/half) for i in 0..half-1. Also embeds SDXL's size and crop numbers
    (sgm's ConcatTimestepEmbedderND uses the same function), see conditioning.sdxl_y.
    """
    half = dim // 2
    # LDM's operation order (scale, then divide): at t near 1000 a reordering shifts the phase by ~1e-4.
    steps = torch.arange(half, dtype=torch.float32, device=timesteps.device)
    args = timesteps.float()[:, None] * torch.exp(-math.log(max_period) * steps / half)[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with the time embedding added in between (Ho et al., DDPM), plus a skip."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            nn.GroupNorm(GROUPS, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        # Index 2 held a Dropout in LDM; an Identity keeps the last conv at its checkpoint name `out_layers.3`.
        self.out_layers = nn.Sequential(
            nn.GroupNorm(GROUPS, out_channels),
            nn.SiLU(),
            nn.Identity(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        same = out_channels == channels
        self.skip_connection = nn.Identity() if same else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    """Halve the resolution with a strided 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: torch.Size | None) -> Tensor:
        # Upsampling to the skip's size rather than x2 lets latents of odd size round-trip the strides.
        if size is None:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    """One UNet block: hands each layer the input it needs (time embedding, text, or target size)."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor, size: torch.Size | None = None) -> Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, Upsample):
                x = layer(x, size)
            else:
                x = layer(x)
        return x


def _transformer(config: UNetConfig, channels: int, depth: int) -> SpatialTransformer:
    heads, dim_head = config.heads_at(channels)
    return SpatialTransformer(
        channels, heads, dim_head, depth, config.context_dim, config.use_linear_in_transformer
    )


def _input_blocks(config: UNetConfig, emb_dim: int) -> tuple[nn.ModuleList, list[int]]:
    """The encoder half, and the width of each skip connection it leaves for the decoder."""
    ch = config.model_channels
    blocks = [TimestepEmbedSequential(nn.Conv2d(config.in_channels, ch, 3, padding=1))]
    skip_channels = [ch]
    for level, (mult, depth) in enumerate(zip(config.channel_mult, config.transformer_depth, strict=True)):
        for _ in range(config.num_res_blocks):
            layers: list[nn.Module] = [ResBlock(ch, emb_dim, config.model_channels * mult)]
            ch = config.model_channels * mult
            if depth:
                layers.append(_transformer(config, ch, depth))
            blocks.append(TimestepEmbedSequential(*layers))
            skip_channels.append(ch)
        if level != len(config.channel_mult) - 1:
            blocks.append(TimestepEmbedSequential(Downsample(ch)))
            skip_channels.append(ch)
    return nn.ModuleList(blocks), skip_channels


def _output_blocks(config: UNetConfig, emb_dim: int, skip_channels: list[int]) -> nn.ModuleList:
    """The decoder half: each block takes its input concatenated with one skip, deepest first."""
    skips = list(skip_channels)
    ch = config.model_channels * config.channel_mult[-1]
    blocks = []
    for level in reversed(range(len(config.channel_mult))):
        out_ch = config.model_channels * config.channel_mult[level]
        for i in range(config.num_res_blocks + 1):
            layers: list[nn.Module] = [ResBlock(ch + skips.pop(), emb_dim, out_ch)]
            ch = out_ch
            if config.transformer_depth[level]:
                layers.append(_transformer(config, ch, config.transformer_depth[level]))
            if level and i == config.num_res_blocks:
                layers.append(Upsample(ch))
            blocks.append(TimestepEmbedSequential(*layers))
    return nn.ModuleList(blocks)


class UNetModel(nn.Module):
    """eps/v-prediction UNet: (noisy latent, timestep, text context[, y]) -> prediction of latent shape.

    Built on `device="meta"` it allocates nothing; the loader then assigns checkpoint tensors.
    `dtype` is applied after construction, which costs nothing on meta.
    """

    def __init__(
        self, config: UNetConfig, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.config = config
        with contextlib.nullcontext() if device is None else torch.device(device):
            self._build(config)
        if dtype is not None:
            self.to(dtype)

    def _build(self, config: UNetConfig) -> None:
        mc = config.model_channels
        emb_dim = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = None
        if config.adm_in_channels is not None:
            self.label_emb = nn.Sequential(
                nn.Sequential(
                    nn.Linear(config.adm_in_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
                )
            )
        self.input_blocks, skip_channels = _input_blocks(config, emb_dim)
        ch = mc * config.channel_mult[-1]
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb_dim, ch),
            _transformer(config, ch, config.transformer_depth_middle),
            ResBlock(ch, emb_dim, ch),
        )
        self.output_blocks = _output_blocks(config, emb_dim, skip_channels)
        self.out = nn.Sequential(
            nn.GroupNorm(GROUPS, mc), nn.SiLU(), nn.Conv2d(mc, config.out_channels, 3, padding=1)
        )

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        context: Tensor,
        y: Tensor | None = None,
        residuals: Residuals | None = None,
    ) -> Tensor:
        """x (B, in, H, W); timesteps float (B,) in [0, 1000); context (B, T, context_dim); y (B, adm) for SDXL.

        `residuals` (batch B, see residuals.py) are added to each skip as the decoder consumes it and to the
        middle block's output, as in ldm's ControlledUnetModel, and (`encoder`) to input blocks' outputs on
        the encoder path, as diffusers' down_intrablock_additional_residuals.
        """
        if (y is None) != (self.label_emb is None):
            raise ValueError("y is required exactly when the UNet has adm_in_channels (SDXL)")
        if residuals is not None and residuals.skips and len(residuals.skips) != len(self.input_blocks):
            raise ValueError(
                f"{len(residuals.skips)} skip residuals for a UNet with {len(self.input_blocks)} input blocks"
            )
        inject = {} if residuals is None else dict(residuals.encoder)
        if inject and not set(inject) <= set(range(len(self.input_blocks))):
            raise ValueError(f"encoder residuals for input blocks {sorted(inject)}; the UNet has "
                             f"{len(self.input_blocks)}")
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(x.dtype))
        if self.label_emb is not None:
            emb = emb + self.label_emb(y)
        skips = []
        h = x
        for i, block in enumerate(self.input_blocks):
            h = block(h, emb, context)
            if i in inject:
                if inject[i].shape[1:] != h.shape[1:]:
                    raise ValueError(f"an encoder residual of shape {tuple(inject[i].shape[1:])} for input "
                                     f"block {i}, whose output is {tuple(h.shape[1:])}")
                h = h + inject[i]
            skips.append(h)
        h = self.middle_block(h, emb, context)
        extra = [] if residuals is None else list(residuals.skips)
        if residuals is not None and residuals.middle is not None:
            h = h + residuals.middle
        for block in self.output_blocks:
            skip = skips.pop()
            if extra:
                skip = skip + extra.pop()
            h = torch.cat([h, skip], dim=1)
            h = block(h, emb, context, skips[-1].shape[-2:] if skips else None)
        return self.out(h)


_TRANSFORMER_KEY = re.compile(
    r"^(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.\d+\.transformer_blocks\.(\d+)\."
)


def _transformer_depths(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """Number of transformer blocks under each block prefix ('input_blocks.4', 'middle_block', ...)."""
    depths: dict[str, int] = {}
    for key in shapes:
        match = _TRANSFORMER_KEY.match(key)
        if match:
            depths[match[1]] = max(depths.get(match[1], 0), int(match[2]) + 1)
    return depths


def _unsupported(what: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"The UNet in this file has a layout SD Studio does not run: {what}. "
        "Supported: SD 1.x, SD 2.x and SDXL base UNets (including 9-channel inpainting models)."
    )


def _levels(shapes: Mapping[str, tuple[int, ...]], depths: dict[str, int]) -> list[list[tuple[int, int]]]:
    """Input blocks after the first conv, split at each Downsample: per level, (width, depth) per res block."""
    levels: list[list[tuple[int, int]]] = [[]]
    i = 1
    while f"input_blocks.{i}.0.op.weight" in shapes or f"input_blocks.{i}.0.out_layers.3.weight" in shapes:
        if f"input_blocks.{i}.0.op.weight" in shapes:
            levels.append([])
        else:
            width = shapes[f"input_blocks.{i}.0.out_layers.3.weight"][0]
            levels[-1].append((width, depths.get(f"input_blocks.{i}", 0)))
        i += 1
    if not levels[-1]:
        raise _unsupported(f"input block {i - 1} is a downsample with no level after it")
    return levels


def _level_layout(
    levels: list[list[tuple[int, int]]], model_channels: int
) -> tuple[int, list[int], list[int]]:
    """(num_res_blocks, channel_mult, transformer_depth) from the per-level res blocks, if they are uniform."""
    num_res_blocks = len(levels[0])
    mult, depth = [], []
    for n, blocks in enumerate(levels):
        if len(blocks) != num_res_blocks or len(set(blocks)) != 1:
            raise _unsupported(f"level {n} has res blocks (width, attention depth) {blocks}")
        width, level_depth = blocks[0]
        if width % model_channels:
            raise _unsupported(
                f"level {n} width {width} is not a multiple of model_channels {model_channels}"
            )
        mult.append(width // model_channels)
        depth.append(level_depth)
    return num_res_blocks, mult, depth


def _check_output_blocks(
    shapes: Mapping[str, tuple[int, ...]],
    depths: dict[str, int],
    num_res_blocks: int,
    transformer_depth: list[int],
) -> None:
    """The decoder mirrors the encoder in LDM; pruned UNets (SSD-1B, Vega) do not and are refused."""
    expected = [d for d in reversed(transformer_depth) for _ in range(num_res_blocks + 1)]
    found = [depths.get(f"output_blocks.{i}", 0) for i in range(len(expected))]
    if found != expected or f"output_blocks.{len(expected)}.0.out_layers.3.weight" in shapes:
        raise _unsupported(f"output blocks have attention depths {found}, expected {expected}")


def unet_config_from_shapes(shapes: Mapping[str, tuple[int, ...]], heads: HeadLayout) -> UNetConfig:
    """Read a UNetConfig from the tensor shapes of a UNet state dict (keys without `model.diffusion_model.`).

    Widths come from conv weights, levels from the `op` downsamplers, attention depth from counting
    `transformer_blocks.K`, context width from `attn2.to_k`, linear vs conv projection from the rank of
    `proj_in.weight`, SDXL's `y` width from `label_emb.0.0`. The head layout is not visible in any shape
    (q/k/v are square): it is the family's fact (`Family.unet_heads`), passed in as `heads`.
    """
    for key in (
        "input_blocks.0.0.weight",
        "out.2.weight",
        "middle_block.1.proj_in.weight",
        "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
    ):
        if key not in shapes:
            raise _unsupported(
                f"no {key!r} among {len(shapes)} tensors (first: {next(iter(shapes), None)!r})"
            )
    model_channels, in_channels = shapes["input_blocks.0.0.weight"][:2]
    depths = _transformer_depths(shapes)
    num_res_blocks, mult, transformer_depth = _level_layout(_levels(shapes, depths), model_channels)
    _check_output_blocks(shapes, depths, num_res_blocks, transformer_depth)
    linear = len(shapes["middle_block.1.proj_in.weight"]) == 2
    adm = shapes.get("label_emb.0.0.weight")
    try:
        return UNetConfig(
            in_channels=in_channels,
            out_channels=shapes["out.2.weight"][0],
            model_channels=model_channels,
            channel_mult=tuple(mult),
            num_res_blocks=num_res_blocks,
            transformer_depth=tuple(transformer_depth),
            transformer_depth_middle=depths["middle_block"],
            context_dim=shapes["middle_block.1.transformer_blocks.0.attn2.to_k.weight"][1],
            num_heads=heads.num_heads,
            num_head_channels=heads.num_head_channels,
            use_linear_in_transformer=linear,
            adm_in_channels=None if adm is None else adm[1],
        )
    except ValueError as error:
        raise _unsupported(str(error)) from error
