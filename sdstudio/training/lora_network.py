"""LoRA layers on a loaded model, for training (Hu et al., "LoRA: Low-Rank Adaptation of Large Language
Models", ICLR 2022): a frozen layer W gets a trainable W + (alpha / rank) · up · down, `down` [rank, in]
randomly initialised (Kaiming-uniform, as nn.Linear) and `up` [out, rank] zero, so training starts from the
base model.

What is adapted is what kohya sd-scripts' `networks.lora` adapts:
- UNet: every Linear / 1x1 Conv2d inside the transformer blocks (proj_in/out, attention q/k/v/out,
  feed-forward);
- with `conv` (kohya's LoCon "conv_dim"): also the ResBlocks' convs and linears and the down/upsampler convs;
  a k x k conv gets `down` as a k x k conv (its stride and padding) and `up` as a 1x1 conv;
- with `text_encoder`: every Linear of the CLIP encoder layers (q/k/v/out_proj, fc1, fc2) of each encoder.

The base layers are not replaced: each gets a forward hook adding the LoRA's output, so the model keeps its
module names (the checkpoint keys, from which the file's kohya names derive) and its weights stay
untouched."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sdstudio.engine.attention import SpatialTransformer
from sdstudio.engine.errors import RequestError
from sdstudio.engine.families import UNET, family
from sdstudio.engine.lora_keys import LoraKeys
from sdstudio.engine.patches import text_prefix
from sdstudio.engine.unet import Downsample, ResBlock, Upsample
from sdstudio.training.lora_names import text_name, unet_name

MAX_RANK = 1024


class LoraModule(nn.Module):
    """The low-rank branch of one Linear or Conv2d: forward(x) = scale · up(down(x))."""

    def __init__(self, base: nn.Linear | nn.Conv2d, rank: int, alpha: float) -> None:
        super().__init__()
        if isinstance(base, nn.Linear):
            self.down: nn.Module = nn.Linear(base.in_features, rank, bias=False)
            self.up: nn.Module = nn.Linear(rank, base.out_features, bias=False)
        else:
            self.down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding,
                                  bias=False)
            self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.rank = rank

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x)) * self.scale

    def delta(self) -> Tensor:
        """ΔW = scale · up @ down, shaped as the base weight (float32)."""
        down, up = self.down.weight.detach().float(), self.up.weight.detach().float()
        d = up.flatten(1) @ down.flatten(1)
        return (d * self.scale).reshape(up.shape[0], *down.shape[1:])


@dataclass(frozen=True)
class Target:
    """One adapted layer: its kohya name, the layer, and its weight's patch target (patches.py names)."""

    name: str
    layer: nn.Linear | nn.Conv2d
    weight: str


def _layers(root: nn.Module, kinds: tuple[type, ...], prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """(path, layer) of the Linear / Conv2d layers inside the submodules of `root` of the given kinds."""
    for path, module in root.named_modules():
        if isinstance(module, kinds):
            for sub, layer in module.named_modules():
                if isinstance(layer, (nn.Linear, nn.Conv2d)):
                    yield f"{prefix}{path}.{sub}", layer


def lora_targets(model, text_encoder: bool = False, conv: bool = False) -> list[Target]:
    """The layers a LoRA adapts on `model` (checkpoint.LoadedModel), in a fixed order."""
    fam = model.description.family
    blocks = model.unet.config.num_res_blocks
    kinds: tuple[type, ...] = (SpatialTransformer,)
    if conv:
        kinds = (SpatialTransformer, ResBlock, Downsample, Upsample)
    seen: dict[str, Target] = {}
    for path, layer in _layers(model.unet, kinds):
        seen.setdefault(path, Target(unet_name(fam, path, blocks), layer, f"{UNET}{path}.weight"))
    targets = sorted(seen.values(), key=lambda t: t.weight)
    if text_encoder:
        encoders = model.text.encoders
        for i, encoder in enumerate(encoders):
            for path, layer in encoder.text_model.encoder.named_modules():
                if isinstance(layer, nn.Linear) and ".layers." in f".{path}":
                    full = f"text_model.encoder.{path}"
                    targets.append(Target(text_name(len(encoders), i, full), layer,
                                          f"{text_prefix(i)}{full}.weight"))
    _check_names(model, targets)
    return targets


def _check_names(model, targets: list[Target]) -> None:
    """Every name must lead our own LoRA loader back to its layer: the file is loadable by construction."""
    fam = family(model.description.family)
    keys = LoraKeys(fam, model.weights.shapes(), model.unet.config.num_res_blocks)
    for t in targets:
        resolved = keys.resolve(t.name)
        if resolved is None or resolved.targets() != (t.weight,):
            raise RequestError(f"the LoRA name {t.name} does not lead back to {t.weight}; this model's "
                               "layout cannot be trained yet")


class LoraNetwork(nn.Module):
    """The LoRA branches of a model's adapted layers, by kohya name; `attached()` hooks them in."""

    def __init__(self, targets: list[Target], rank: int, alpha: float) -> None:
        super().__init__()
        if not 1 <= rank <= MAX_RANK:
            raise RequestError(f"a LoRA rank of {rank} makes no sense; choose between 1 and {MAX_RANK} "
                               "(4 to 32 is usual)")
        if not alpha > 0 or not math.isfinite(alpha):
            raise RequestError(f"LoRA alpha must be a positive number, not {alpha}")
        for t in targets:
            width = min(t.layer.weight.shape[:2])
            if rank > width:
                raise RequestError(f"a LoRA rank of {rank} is larger than the layer {t.weight} "
                                   f"({tuple(t.layer.weight.shape)}) it adapts; choose a rank up to {width}")
        self.targets = {t.name: t for t in targets}
        self.loras = nn.ModuleDict({t.name: LoraModule(t.layer, rank, alpha) for t in targets})

    @contextmanager
    def attached(self) -> Iterator[LoraNetwork]:
        """The model computes with the LoRA branches added while inside."""
        handles = []
        try:
            for name, target in self.targets.items():
                lora = self.loras[name]
                handles.append(target.layer.register_forward_hook(
                    lambda _m, args, out, lora=lora: out + lora(args[0])))
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def tensors(self) -> dict[str, Tensor]:
        """kohya's tensors: `<name>.lora_down.weight`, `.lora_up.weight`, `.alpha` (float32, contiguous)."""
        out = {}
        for name, lora in self.loras.items():
            out[f"{name}.lora_down.weight"] = lora.down.weight.detach().float().contiguous()
            out[f"{name}.lora_up.weight"] = lora.up.weight.detach().float().contiguous()
            out[f"{name}.alpha"] = lora.alpha.detach().float().clone()
        return out


def freeze(model) -> None:
    """The base model's weights take no gradients (only the LoRA trains)."""
    model.unet.requires_grad_(False)
    model.vae.requires_grad_(False)
    for encoder in model.text.encoders:
        encoder.requires_grad_(False)


@contextmanager
def checkpointed(unet: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Gradient checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost") of each UNet
    block: activations inside a block are recomputed in the backward pass instead of kept."""
    if not enabled:
        yield
        return
    from torch.utils.checkpoint import checkpoint

    blocks = [*unet.input_blocks, unet.middle_block, *unet.output_blocks]
    for block in blocks:
        plain = block.forward

        def forward(*args, _plain=plain, **kwargs):
            return checkpoint(_plain, *args, use_reentrant=False, **kwargs)

        block.forward = forward
    try:
        yield
    finally:
        for block in blocks:
            del block.forward
