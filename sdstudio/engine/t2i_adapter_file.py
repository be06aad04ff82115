"""T2I-Adapter single files into our `T2IAdapter` (t2i_adapter.py), checked against the loaded checkpoint.

Three layouts are read:
- diffusers' `T2IAdapter` (`diffusion_pytorch_model.safetensors`): our names under `adapter.`;
- TencentARC's original full adapter (`t2iadapter_*_sd14v1.pth`, the `Adapter` class): `conv_in`, a flat
  `body.K` of residual blocks (`block1`, `block2`, `in_conv` where the width changes), K = level *
  blocks-per-level + block; blocks-per-level is the first K whose `in_conv` changes the width;
- TencentARC's original light adapter (`Adapter_light`): `body.N.in_conv`, `body.N.body.M.block1/2`,
  `body.N.out_conv`.
The architecture and family come from shapes through t2i_adapter_keys.KINDS: the first conv's input width is
the hint's channels times the pixel-unshuffle factor squared (8 for SD 1.x, 16 for SDXL). What is refused, in
one line: another family than the checkpoint's, features that do not fit its UNet, a key no layout knows, a
missing or mis-shaped tensor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sdstudio.engine.controlnet import HINT_DOWNSCALE
from sdstudio.engine.controlnet_file import TargetModel
from sdstudio.engine.errors import UnsupportedModelError
from sdstudio.engine.families import FAMILIES
from sdstudio.engine.model_files import legacy_model_hash
from sdstudio.engine.residuals import Residuals
from sdstudio.engine.t2i_adapter import AdapterConfig, T2IAdapter, injection_points
from sdstudio.engine.t2i_adapter_keys import (
    DIFFUSERS_MARK,
    DIFFUSERS_PREFIX,
    FULL,
    FULL_MARK,
    FULL_XL,
    LIGHT,
    LIGHT_MARK,
    UNSHUFFLED,
)
from sdstudio.engine.weights import load_state_dict_file, place

_ORIGINAL_FULL_KEY = re.compile(r"body\.(\d+)\.(block1|block2|in_conv)\.(weight|bias)$")
_ORIGINAL_LIGHT_KEY = re.compile(r"body\.(\d+)\.body\.(\d+)\.")


def _unsupported(name: str, what: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{name}: not a T2I-Adapter SD Studio can run ({what}). Supported: TencentARC's "
        "full and light adapters (SD 1.x) and diffusers' T2IAdapter (SD 1.x, SDXL)."
    )


def our_layout(state: Mapping[str, Tensor], name: str) -> dict[str, Tensor]:
    """The adapter's tensors under our names, from any of the three layouts (a key no rule knows is refused,
    never dropped)."""
    if DIFFUSERS_MARK in state:
        stray = next((k for k in state if not k.startswith(DIFFUSERS_PREFIX)), None)
        if stray is not None:
            raise _unsupported(name, f"unknown diffusers key {stray!r}")
        return {k[len(DIFFUSERS_PREFIX) :]: v for k, v in state.items()}
    if LIGHT_MARK in state:
        return {_ORIGINAL_LIGHT_KEY.sub(r"body.\1.resnets.\2.", k): v for k, v in state.items()}
    if FULL_MARK in state:
        return _from_original_full(state, name)
    raise _unsupported(name, f"none of {DIFFUSERS_MARK!r}, {FULL_MARK!r}, {LIGHT_MARK!r}")


def _from_original_full(state: Mapping[str, Tensor], name: str) -> dict[str, Tensor]:
    widening = sorted(
        int(m[1])
        for k, v in state.items()
        if (m := _ORIGINAL_FULL_KEY.match(k))
        and m[2] == "in_conv"
        and m[3] == "weight"
        and v.shape[0] != v.shape[1]
    )
    if not widening or widening[0] == 0:
        raise _unsupported(
            name, "cannot tell its blocks per level: no body.K.in_conv that widens, after body.0"
        )
    per_level = widening[0]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("conv_in."):
            out[key] = value
            continue
        m = _ORIGINAL_FULL_KEY.match(key)
        if m is None:
            raise _unsupported(name, f"unknown key {key!r}")
        level, block = divmod(int(m[1]), per_level)
        if m[2] == "in_conv":
            if block != 0:
                raise _unsupported(
                    name, f"{key!r}: an in_conv inside a level (TencentARC's sk=False variant)"
                )
            out[f"body.{level}.in_conv.{m[3]}"] = value
        else:
            out[f"body.{level}.resnets.{block}.{m[2]}.{m[3]}"] = value
    return out


def _shape(shapes: Mapping[str, tuple[int, ...]], key: str, name: str) -> tuple[int, ...]:
    if key not in shapes:
        raise _unsupported(name, f"no {key!r}")
    return shapes[key]


def config_from_shapes(shapes: Mapping[str, tuple[int, ...]], name: str) -> AdapterConfig:
    """Architecture, hint channels, widths and depth from our-layout shapes (t2i_adapter_keys.KINDS)."""
    light = "body.0.out_conv.weight" in shapes
    first = _shape(shapes, "body.0.in_conv.weight" if light else "conv_in.weight", name)
    if len(first) != 4 or first[1] not in UNSHUFFLED:
        raise _unsupported(
            name, f"its first conv takes {first[1:2]} channels, not a hint pixel-unshuffled 8x or 16x"
        )
    in_channels, unshuffle = UNSHUFFLED[first[1]]
    kind = LIGHT if light else FULL_XL if unshuffle == 16 else FULL
    if light and unshuffle != 8:
        raise _unsupported(name, "a light adapter with a 16x pixel-unshuffle")
    levels = 1 + max(int(m[1]) for k in shapes if (m := re.match(r"body\.(\d+)\.", k)))
    if levels > 4:
        raise _unsupported(name, f"{levels} levels; adapters have at most 4")
    width_key = "body.{}.out_conv.weight" if light else "body.{}.resnets.0.block1.weight"
    channels = tuple(_shape(shapes, width_key.format(i), name)[0] for i in range(levels))
    blocks = 1 + max(int(m[1]) for k in shapes if (m := re.match(r"body\.0\.resnets\.(\d+)\.", k)))
    kernel = 3 if light else _shape(shapes, "body.0.resnets.0.block2.weight", name)[-1]
    return AdapterConfig(kind, in_channels, channels, blocks, kernel)


@dataclass(frozen=True)
class Placement:
    """Where each feature goes: an input block index (Residuals.encoder) or, for one past the UNet's
    levels (the SDXL adapter's fourth), the middle block's output."""

    blocks: tuple[int, ...]
    middle: bool


def placement(config: AdapterConfig, target: TargetModel, name: str) -> Placement:
    """Refuse an adapter of another family (both named), or whose features do not fit the UNet's levels in
    width and resolution; else where each feature goes."""
    arch = config.architecture
    ours = next(f for f in FAMILIES if f.name == arch.family)
    if target.family.context_dim is not None and target.family.name != ours.name:
        raise UnsupportedModelError(
            f"{name} is a T2I-Adapter for {ours.label}; the checkpoint is "
            f"{target.family.label}: choose a {target.family.label} adapter"
        )
    points = injection_points(target.unet)
    unet = target.unet
    wanted = [(width, HINT_DOWNSCALE * scale) for _, width, scale in points]
    wanted.append((unet.model_channels * unet.channel_mult[-1], HINT_DOWNSCALE * 2 ** (len(points) - 1)))
    got = list(zip(config.channels, config.scales(), strict=True))
    if len(got) > len(wanted) or got != wanted[: len(got)]:
        raise UnsupportedModelError(
            f"{name}: its features (width, pixels per feature pixel) {got} do not fit "
            f"this checkpoint's UNet ({target.family.label}), which takes {wanted}"
        )
    return Placement(tuple(index for index, _, _ in points[: len(got)]), len(got) > len(points))


@dataclass
class LoadedAdapter:
    """An adapter ready to run on the checkpoint it was checked against; `hash` is A1111's 8-hex model
    hash."""

    path: str
    adapter: T2IAdapter
    family: str
    hash: str
    placement: Placement

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @torch.no_grad()
    def residuals(self, hint: Tensor) -> Residuals:
        """The features of `hint` ((1, 3, H, W) in [0, 1], pixel size), laid out for the UNet (batch 1). A
        one-channel adapter (sketch, canny) gets the hint's luma, as PIL's "L" (ITU-R 601)."""
        module = self.adapter
        weight = module.body[0].resnets[0].block1.weight
        hint = hint[:, :3].to(weight.device, weight.dtype)
        if module.config.in_channels == 1:
            luma = torch.tensor([0.299, 0.587, 0.114], device=hint.device, dtype=hint.dtype)
            hint = (hint * luma[:, None, None]).sum(dim=1, keepdim=True)
        unshuffle = module.config.architecture.unshuffle
        if hint.shape[-1] % unshuffle or hint.shape[-2] % unshuffle:
            raise UnsupportedModelError(
                f"{self.name}: the image size {hint.shape[-1]}x{hint.shape[-2]} must be a "
                f"multiple of {unshuffle} for this T2I-Adapter"
            )
        features = [f.float() for f in module(hint)]
        blocks = self.placement.blocks
        encoder = tuple(zip(blocks, features[: len(blocks)], strict=True))
        return Residuals((), features[-1] if self.placement.middle else None, encoder)


def load_adapter(
    path: str | Path,
    target: TargetModel,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
) -> LoadedAdapter:
    """Read, convert, check against `target` and build the adapter of `path` on `device` in `dtype`."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise UnsupportedModelError(f"T2I-Adapter file not found: {path}")
    state, _ = load_state_dict_file(path, allow_pickle=allow_pickle)  # pickle files only when allowed
    state = our_layout({k: place(v, dtype, device) for k, v in state.items()}, name)
    config = config_from_shapes({k: tuple(v.shape) for k, v in state.items()}, name)
    where = placement(config, target, name)
    adapter = T2IAdapter(config, device="meta")
    try:
        adapter.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise _unsupported(name, " ".join(str(error).split())[:300]) from None
    return LoadedAdapter(
        str(path), adapter.eval(), config.architecture.family, legacy_model_hash(path), where
    )
