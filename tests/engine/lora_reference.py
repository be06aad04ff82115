"""Random LoRA files of our own (kohya sd-scripts and PEFT/diffusers formats) and diffusers' own loader as
the reference that applies them: `load_lora_weights` + `fuse_lora` on a diffusers pipeline built from the
same checkpoint file (reference_models.py), so no sdstudio code decides what a key means or how it scales.

Our patched weights are in LDM names; diffusers' are in diffusers names. `diffusers_names` maps one to the
other with diffusers' own single-file converter, run on marker tensors (tensor i holds the value i).
"""

from __future__ import annotations

import math

import torch
from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers
from diffusers.loaders.single_file_utils import LDM_UNET_KEY, convert_ldm_unet_checkpoint
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

RANK = 4
RANKS = (4, 8, 2)
ALPHA = 3.0


def lora_modules(model: nn.Module, skip: tuple[str, ...] = ()) -> dict[str, nn.Module]:
    """Every Linear / Conv2d of `model` by module path: what kohya's LoRA + LoCon training wraps."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d)) and not any(s in name for s in skip)}


def _pair(module: nn.Module, rank: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """(down, up) with fan-in scaled entries: ΔW is a sizeable fraction of W, so any error shows."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        fan_in = module.in_channels * kh * kw
        down = torch.randn(rank, module.in_channels, kh, kw, generator=g) / math.sqrt(fan_in)
        up = torch.randn(module.out_channels, rank, 1, 1, generator=g) / math.sqrt(rank)
    else:
        down = torch.randn(rank, module.in_features, generator=g) / math.sqrt(module.in_features)
        up = torch.randn(module.out_features, rank, generator=g) / math.sqrt(rank)
    return down, up


def kohya_tensors(modules: dict[str, nn.Module], prefix: str, seed: int, alpha: float = ALPHA,
                  name_of=None) -> dict[str, Tensor]:
    """kohya sd-scripts tensors `<prefix><path with _>.lora_down/lora_up/alpha` for each module, ranks varying
    over RANKS, one alpha for the file (never equal to a rank).

    One alpha because diffusers 0.42 keys a per-module alpha of a kohya attention or text-encoder module by a
    name peft never matches (`…processor.to_q_lora.down.weight`, peft_utils.get_peft_kwargs), so those
    modules silently get the file's most common alpha; kohya's trainers write one alpha per file (per
    kind). Per-module alphas are proven by test_lora_image.py against an independent merge."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, (path, module) in enumerate(sorted(modules.items())):
        name = prefix + (name_of(path) if name_of else path).replace(".", "_")
        down, up = _pair(module, RANKS[i % len(RANKS)], g)
        out[f"{name}.lora_down.weight"], out[f"{name}.lora_up.weight"] = down, up
        out[f"{name}.alpha"] = torch.tensor(alpha)
    return out


def peft_tensors(modules: dict[str, nn.Module], prefix: str, seed: int,
                 rank: int = RANK) -> dict[str, Tensor]:
    """diffusers/PEFT tensors `<prefix><path>.lora_A.weight` / `.lora_B.weight` (no alpha: scale 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for path, module in sorted(modules.items()):
        down, up = _pair(module, rank, g)
        out[f"{prefix}{path}.lora_A.weight"], out[f"{prefix}{path}.lora_B.weight"] = down, up
    return out


def write_lora(path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata or {})
    return path


@torch.no_grad()
def diffusers_fused(pipe, lora_path, ldm_names: bool = False) -> tuple[dict[str, dict[str, Tensor]],
                                                                      dict[str, dict[str, float]]]:
    """The pipeline's UNet and text-encoder weights after diffusers applies the file: load_lora_weights,
    fuse_lora (scale 1), unload_lora_weights (the fused weights stay). Returns ({component: state dict},
    {component: {weight name: max |ΔW| / max |W| for each weight diffusers put an adapter on}}); text-encoder
    names without transformers' `text_model.`.

    `ldm_names`: kohya UNet names in the LDM dialect (`input_blocks_4_1_…`). diffusers' SDXL pipeline maps
    them with `_maybe_map_sgm_blocks_to_diffusers`; its SD 1.x pipeline does not (kohya trains SD 1.x on
    diffusers names), so for SD 1.x we run that same diffusers function first."""
    source = str(lora_path)
    if ldm_names and not hasattr(pipe, "text_encoder_2"):
        source = _maybe_map_sgm_blocks_to_diffusers(load_file(source), pipe.unet.config)
    pipe.load_lora_weights(source, adapter_name="under_test")
    parts = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}
    if getattr(pipe, "text_encoder_2", None) is not None:
        parts["text_encoder_2"] = pipe.text_encoder_2
    before = {name: {_plain(path) + ".weight": m.get_base_layer().weight.detach().clone()
                     for path, m in model.named_modules() if isinstance(m, BaseTunerLayer)}
              for name, model in parts.items()}
    pipe.fuse_lora(lora_scale=1.0)
    pipe.unload_lora_weights()
    fused = {name: {_plain(k): v for k, v in m.state_dict().items()} for name, m in parts.items()}
    changes = {name: {k: float((fused[name][k] - w).abs().max() / w.abs().max()) for k, w in weights.items()}
               for name, weights in before.items()}
    return fused, changes


def _plain(name: str) -> str:
    return name.removeprefix("text_model.")


def diffusers_names(ldm_shapes: dict[str, tuple[int, ...]], config: dict) -> dict[str, str]:
    """LDM UNet key (without the `model.diffusion_model.` prefix) -> diffusers key, as diffusers' single-file
    converter renames it."""
    keys = sorted(ldm_shapes)
    markers = {LDM_UNET_KEY + k: torch.full(ldm_shapes[k], float(i)) if len(ldm_shapes[k]) <= 1
               else torch.full((1,) * len(ldm_shapes[k]), float(i)).expand(ldm_shapes[k])
               for i, k in enumerate(keys)}
    converted = convert_ldm_unet_checkpoint(markers, config)
    names = {}
    for new, t in converted.items():
        values = t.reshape(-1).unique()
        assert values.numel() == 1, f"diffusers' converter mixed tensors into {new}"
        names[keys[int(values.item())]] = new
    return names
