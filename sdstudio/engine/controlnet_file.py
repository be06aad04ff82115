"""ControlNet single files into our `ControlNet` (controlnet.py), checked against the loaded checkpoint.

Two layouts are read:
- lllyasviel's original (`cldm`): `input_hint_block.*`, `zero_convs.N.0`, `middle_block_out.0` beside the
  encoder copy under ldm names, optionally under `control_model.` (the .pth files of ControlNet 1.0/1.1, some
  of which also hold a whole SD model: only `control_model.*` is taken then);
- diffusers' `ControlNetModel` (`diffusion_pytorch_model.safetensors`): `controlnet_cond_embedding.*`,
  `controlnet_down_blocks.N`, `controlnet_mid_block` and diffusers UNet block names, renamed into ours by the
  table `_DIFFUSERS_RULES`.
The family comes from shapes (context width, SDXL's `y` width) through `families.FAMILIES`, the same facts
that identify checkpoints; a ControlNet of another family than the checkpoint's is refused naming both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sdstudio.engine.controlnet import ControlNet, ControlNetConfig
from sdstudio.engine.errors import UnsupportedModelError
from sdstudio.engine.families import FAMILIES, Family, HeadLayout
from sdstudio.engine.model_files import legacy_model_hash
from sdstudio.engine.safetensors_file import PICKLE_SUFFIXES, read_header
from sdstudio.engine.unet import UNetConfig, UNetModel, _level_layout, _levels, _transformer_depths
from sdstudio.engine.weights import load_state_dict_file, load_tensors, place

ORIGINAL_PREFIX = "control_model."
ORIGINAL_MARK = "input_hint_block.0.weight"
DIFFUSERS_MARK = "controlnet_cond_embedding.conv_in.weight"

# diffusers ResnetBlock2D layer names -> ldm ResBlock layer names.
_RESNET = (("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("time_emb_proj.", "emb_layers.1."),
           ("norm2.", "out_layers.0."), ("conv2.", "out_layers.3."), ("conv_shortcut.", "skip_connection."))

# (pattern on the diffusers key, (match, blocks per level) -> our prefix, renames inside the block).
# Blocks per level L = layers_per_block + 1 (the downsampler). Attention blocks name their layers alike.
_Rule = tuple[re.Pattern[str], Callable[[re.Match[str], int], str], tuple[tuple[str, str], ...]]
_DIFFUSERS_RULES: tuple[_Rule, ...] = (
    (re.compile(r"controlnet_cond_embedding\.conv_in\."), lambda m, L: "input_hint_block.0.", ()),
    (re.compile(r"controlnet_cond_embedding\.blocks\.(\d+)\."), lambda m, L: f"input_hint_block.{2 * int(m[1]) + 2}.",
     ()),
    (re.compile(r"controlnet_cond_embedding\.conv_out\."), lambda m, L: "input_hint_block.14.", ()),
    (re.compile(r"controlnet_down_blocks\.(\d+)\."), lambda m, L: f"zero_convs.{m[1]}.0.", ()),
    (re.compile(r"controlnet_mid_block\."), lambda m, L: "middle_block_out.0.", ()),
    (re.compile(r"conv_in\."), lambda m, L: "input_blocks.0.0.", ()),
    (re.compile(r"time_embedding\.linear_([12])\."), lambda m, L: f"time_embed.{2 * int(m[1]) - 2}.", ()),
    (re.compile(r"add_embedding\.linear_([12])\."), lambda m, L: f"label_emb.0.{2 * int(m[1]) - 2}.", ()),
    (re.compile(r"down_blocks\.(\d+)\.resnets\.(\d+)\."),
     lambda m, L: f"input_blocks.{1 + L * int(m[1]) + int(m[2])}.0.", _RESNET),
    (re.compile(r"down_blocks\.(\d+)\.attentions\.(\d+)\."),
     lambda m, L: f"input_blocks.{1 + L * int(m[1]) + int(m[2])}.1.", ()),
    (re.compile(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\."), lambda m, L: f"input_blocks.{L * (int(m[1]) + 1)}.0.op.",
     ()),
    (re.compile(r"mid_block\.resnets\.(\d+)\."), lambda m, L: f"middle_block.{2 * int(m[1])}.", _RESNET),
    (re.compile(r"mid_block\.attentions\.0\."), lambda m, L: "middle_block.1.", ()),
)


def _unsupported(name: str, what: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{name}: not a ControlNet SD Studio can run ({what}). Supported: SD 1.x, SD 2.x "
                                 "and SDXL ControlNets in lllyasviel's original or diffusers' layout.")


def original_layout(state: Mapping[str, Tensor], name: str) -> dict[str, Tensor]:
    """The ControlNet's tensors under our (original) names, from either layout."""
    if any(k.startswith(ORIGINAL_PREFIX) for k in state):
        state = {k[len(ORIGINAL_PREFIX):]: v for k, v in state.items() if k.startswith(ORIGINAL_PREFIX)}
    if ORIGINAL_MARK in state:
        return dict(state)
    if DIFFUSERS_MARK in state:
        return from_diffusers(state, name)
    first = next(iter(state), None)
    raise _unsupported(name, f"neither {ORIGINAL_MARK!r} nor {DIFFUSERS_MARK!r} among {len(state)} tensors "
                             f"(first: {first!r})")


def from_diffusers(state: Mapping[str, Tensor], name: str) -> dict[str, Tensor]:
    """diffusers' ControlNetModel names -> ours; a key no rule knows is refused, never dropped."""
    resnets = {int(m[1]) for k in state if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)\.", k))}
    if not resnets:
        raise _unsupported(name, "a diffusers ControlNet without down_blocks.0.resnets")
    per_level = max(resnets) + 2
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        for pattern, prefix, renames in _DIFFUSERS_RULES:
            m = pattern.match(key)
            if m is None:
                continue
            rest = key[m.end():]
            for theirs, ours in renames:
                if rest.startswith(theirs):
                    rest = ours + rest[len(theirs):]
                    break
            out[prefix(m, per_level) + rest] = value
            break
        else:
            raise _unsupported(name, f"unknown diffusers key {key!r}")
    return out


def family_of(shapes: Mapping[str, tuple[int, ...]], name: str) -> Family | None:
    """The family whose UNet this ControlNet copies (context width and SDXL's `y` width), None if no known one."""
    context = _shape(shapes, "middle_block.1.transformer_blocks.0.attn2.to_k.weight", name)[1]
    adm = shapes.get("label_emb.0.0.weight")
    return next((f for f in FAMILIES if f.matches(context, None if adm is None else adm[1])), None)


def _shape(shapes: Mapping[str, tuple[int, ...]], key: str, name: str) -> tuple[int, ...]:
    if key not in shapes:
        raise _unsupported(name, f"no {key!r}")
    return shapes[key]


def config_from_shapes(shapes: Mapping[str, tuple[int, ...]], heads: HeadLayout, name: str) -> ControlNetConfig:
    """Encoder widths, levels and attention depths read as unet.unet_config_from_shapes reads a UNet's; the
    head layout (not in any shape) is the family's."""
    model_channels, in_channels = _shape(shapes, "input_blocks.0.0.weight", name)[:2]
    hint_channels = _shape(shapes, ORIGINAL_MARK, name)[1]
    depths = _transformer_depths(shapes)
    try:
        num_res_blocks, mult, depth = _level_layout(_levels(shapes, depths), model_channels)
        return ControlNetConfig(UNetConfig(
            in_channels=in_channels, out_channels=4, model_channels=model_channels, channel_mult=tuple(mult),
            num_res_blocks=num_res_blocks, transformer_depth=tuple(depth),
            transformer_depth_middle=depths.get("middle_block", 0),
            context_dim=_shape(shapes, "middle_block.1.transformer_blocks.0.attn2.to_k.weight", name)[1],
            num_heads=heads.num_heads, num_head_channels=heads.num_head_channels,
            use_linear_in_transformer=len(_shape(shapes, "middle_block.1.proj_in.weight", name)) == 2,
            adm_in_channels=None if (adm := shapes.get("label_emb.0.0.weight")) is None else adm[1],
        ), hint_channels)
    except (ValueError, UnsupportedModelError) as error:
        raise _unsupported(name, str(error)) from None


@dataclass(frozen=True)
class TargetModel:
    """What a ControlNet must fit: the checkpoint's family (name, label) and its UNet's config."""

    family: Family
    unet: UNetConfig

    @classmethod
    def of(cls, family: Family, unet: UNetModel) -> TargetModel:
        return cls(family, unet.config)


def check_fits(config: ControlNetConfig, found: Family | None, target: TargetModel, name: str) -> None:
    """Refuse a ControlNet made for another family (both named), or whose residuals do not fit the UNet."""
    cn = config.unet
    label = found.label if found is not None else f"an unknown family (context width {cn.context_dim})"
    if target.family.context_dim is not None and (found is None or found.name != target.family.name):
        raise UnsupportedModelError(f"{name} is a ControlNet for {label}; the checkpoint is {target.family.label}: "
                                    f"choose a {target.family.label} ControlNet")
    unet = target.unet
    ours = (cn.model_channels, cn.channel_mult, cn.num_res_blocks, cn.context_dim, cn.adm_in_channels)
    theirs = (unet.model_channels, unet.channel_mult, unet.num_res_blocks, unet.context_dim, unet.adm_in_channels)
    if ours != theirs:
        raise UnsupportedModelError(
            f"{name} is a ControlNet for {label} whose residuals do not fit this checkpoint's UNet ({target.family.label}): "
            f"(width, levels, blocks, context, y) {ours} vs {theirs}")


def _read(path: Path, allow_pickle: bool, dtype: torch.dtype | None, device: torch.device | str) -> dict[str, Tensor]:
    """The file's tensors; of a file that also holds a whole SD model (ControlNet 1.0) only `control_model.*`
    is read and converted."""
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        header = read_header(path)
        prefix = ORIGINAL_PREFIX if any(k.startswith(ORIGINAL_PREFIX) for k in header.tensors) else ""
        return {prefix + k: v for k, v in load_tensors(header, prefix, dtype, device=device).items()}
    state, _ = load_state_dict_file(path, allow_pickle=allow_pickle)  # memory-mapped on the CPU
    if any(k.startswith(ORIGINAL_PREFIX) for k in state):
        state = {k: v for k, v in state.items() if k.startswith(ORIGINAL_PREFIX)}
    return {k: place(v, dtype, device) for k, v in state.items()}


@dataclass
class LoadedControlNet:
    """A ControlNet ready to run on the checkpoint it was checked against; `hash` is A1111's 8-hex model hash
    that sd-webui-controlnet writes beside the model's name."""

    path: str
    net: ControlNet
    family: str
    hash: str

    @property
    def name(self) -> str:
        return Path(self.path).stem


def load_controlnet(path: str | Path, target: TargetModel, device: torch.device | str = "cpu",
                    dtype: torch.dtype | None = None, allow_pickle: bool = False) -> LoadedControlNet:
    """Read, convert, check against `target` and build the ControlNet of `path` on `device` in `dtype`."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise UnsupportedModelError(f"ControlNet file not found: {path}")
    state = _read(path, allow_pickle, dtype, device)
    state = original_layout(state, name)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    found = family_of(shapes, name)
    heads = found.unet_heads if found is not None else HeadLayout(target.unet.num_heads, target.unet.num_head_channels)
    if target.family.context_dim is None:  # a metadata-described checkpoint: its own heads
        heads = HeadLayout(target.unet.num_heads, target.unet.num_head_channels)
    config = config_from_shapes(shapes, heads, name)
    check_fits(config, found, target, name)
    net = ControlNet(config, device="meta")
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise _unsupported(name, " ".join(str(error).split())[:300]) from None
    family_name = found.name if found is not None else target.family.name
    return LoadedControlNet(str(path), net.eval(), family_name, legacy_model_hash(path))


def file_family(path: str | Path) -> Family | None:
    """The family a ControlNet .safetensors file was made for, from its header alone (no tensor is read), for
    pickers that list the files fitting the loaded checkpoint; None when its context width is no known
    family's. Raises like `load_controlnet` when the file is no ControlNet."""
    path = Path(path)
    header = read_header(path)
    shapes = original_layout({k: e.shape for k, e in header.tensors.items()}, path.name)
    return family_of(shapes, path.name)
