"""LoRA files for tests, built from a loaded model's own parameter names, in every dialect found in the wild,
with the ΔW each target should receive computed here independently of sdstudio's LoRA code.

- `tiny_family_checkpoint(path, "sd1" | "sd2" | "sdxl")`: a tiny checkpoint of that family's layout (SD 2.x:
  OpenCLIP text tower and linear transformer projections; SDXL: two text encoders, `label_emb`, a first level
  without attention), the family named in `sdstudio.config` since tiny widths cannot show it.
- `lora_tensors(model, dialect, ...)` -> (file tensors, {target: expected ΔW = alpha / rank * up @ down}).
  Dialects: "kohya_ldm" (LDM UNet names), "kohya_diffusers" (diffusers block names), "kohya_openclip" (text in
  OpenCLIP names with a fused q/k/v `attn_in_proj`), "peft" (lora_A/lora_B), "diffusers_old"
  (`processor.to_q_lora.down`, `lora_linear_layer`), "lora_dot" (`to_q.lora.down`).
- `write_lora(path, tensors, metadata)`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from sdstudio.engine.unet import UNetConfig, UNetModel
from sdstudio.engine.vae import AutoencoderKL
from tests.engine.family_shapes import openclip_shapes
from tests.tiny_checkpoint import TINY_CONFIG, TINY_TEXT, TINY_UNET, TINY_VAE, _randomise

UNET = "model.diffusion_model."
DIALECTS = ("kohya_ldm", "kohya_diffusers", "kohya_openclip", "peft", "diffusers_old", "lora_dot")

# Tiny UNets of each family's layout (SD 1.x: attention on every level but the last, as the real one).
TINY_UNETS = {
    "sd1": UNetConfig(**{**TINY_UNET.__dict__, "channel_mult": (1, 2, 2), "transformer_depth": (1, 1, 0),
                         "num_res_blocks": 2}),
    "sd2": UNetConfig(**{**TINY_UNET.__dict__, "use_linear_in_transformer": True}),
    "sdxl": UNetConfig(**{**TINY_UNET.__dict__, "transformer_depth": (0, 2), "transformer_depth_middle": 2,
                          "use_linear_in_transformer": True, "adm_in_channels": 48}),
}


def _openclip_state(g: torch.Generator, projection: bool) -> dict[str, torch.Tensor]:
    config = CLIPTextConfig(**{**TINY_TEXT, "projection_dim": 24})
    out = {}
    for key, shape in openclip_shapes(config, "", projection).items():
        if key.endswith(("ln_1.weight", "ln_2.weight", "ln_final.weight")):
            out[key] = 1.0 + 0.01 * torch.randn(shape, generator=g)
        elif key == "logit_scale":
            out[key] = torch.tensor(4.6)
        else:
            out[key] = 0.02 * torch.randn(shape, generator=g)
    return out


def tiny_family_state_dict(family: str, seed: int = 0, in_channels: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    unet = UNetModel(UNetConfig(**{**TINY_UNETS[family].__dict__, "in_channels": in_channels}))
    sd = {UNET + k: v for k, v in _randomise(unet, g).items()}
    sd |= {"first_stage_model." + k: v for k, v in _randomise(AutoencoderKL(TINY_VAE), g).items()}
    clip = {"text_model." + k.removeprefix("text_model."): v
            for k, v in _randomise(CLIPTextModel(CLIPTextConfig(**TINY_TEXT)), g).items()}
    if family == "sd1":
        sd |= {"cond_stage_model.transformer." + k: v for k, v in clip.items()}
    elif family == "sd2":
        sd |= {"cond_stage_model.model." + k: v for k, v in _openclip_state(g, projection=False).items()}
    else:
        sd |= {"conditioner.embedders.0.transformer." + k: v for k, v in clip.items()}
        sd |= {"conditioner.embedders.1.model." + k: v for k, v in _openclip_state(g, projection=True).items()}
    return sd


def tiny_family_checkpoint(path: Path, family: str, seed: int = 0, in_channels: int = 4) -> Path:
    config = {**TINY_CONFIG, "family": family}
    if family != "sd1":  # OpenCLIP towers: gelu, padding token 0, the family's layer
        config["text"] = {"num_attention_heads": 2}
    save_file(tiny_family_state_dict(family, seed, in_channels), str(path),
              metadata={"sdstudio.config": json.dumps(config)})
    return path


# --- module names in each dialect, from a target (independent of sdstudio.engine.lora_keys) ---

def lora_targets(model, components: tuple[str, ...] = ("unet", "text")) -> list[str]:
    """Every weight a LoRA can adapt: UNet convs and linears, text-encoder layer linears (not embeddings)."""
    out = []
    for target, shape in model.weights.shapes().items():
        if not target.endswith(".weight") or len(shape) not in (2, 4):
            continue
        if target.startswith(UNET) and "unet" in components:
            out.append(target)
        elif target.startswith("text.") and ".encoder.layers." in target and "text" in components:
            out.append(target)
    return out


_RESNET = {"in_layers.2": "conv1", "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj",
           "skip_connection": "conv_shortcut"}


def ldm_to_diffusers(path: str, num_res_blocks: int) -> str:
    """A dotted LDM UNet module path as diffusers names it."""
    per_level = num_res_blocks + 1
    fixed = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
             "label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2",
             "input_blocks.0.0": "conv_in", "out.2": "conv_out"}
    if path in fixed:
        return fixed[path]
    if m := re.fullmatch(r"input_blocks\.(\d+)\.0\.op", path):
        return f"down_blocks.{int(m[1]) // per_level - 1}.downsamplers.0.conv"
    if m := re.fullmatch(r"output_blocks\.(\d+)\.[12]\.conv", path):
        return f"up_blocks.{int(m[1]) // per_level}.upsamplers.0.conv"
    if m := re.fullmatch(r"(input_blocks|middle_block|output_blocks)\.(\d+)\.?(\d*)\.(.+)", path):
        where, n, sub, rest = m[1], int(m[2]), m[3], m[4]
        if where == "middle_block":
            rest = f"{m[3]}.{rest}" if m[3] else rest
            block = "mid_block." + ("attentions.0" if n == 1 else f"resnets.{n // 2}")
        elif where == "input_blocks":
            kind = "attentions" if sub == "1" else "resnets"
            block = f"down_blocks.{(n - 1) // per_level}.{kind}.{(n - 1) % per_level}"
        else:
            kind = "attentions" if sub == "1" else "resnets"
            block = f"up_blocks.{n // per_level}.{kind}.{n % per_level}"
        if "resnets" in block:
            for old, new in _RESNET.items():
                if rest.startswith(old):
                    rest = new + rest[len(old):]
        return f"{block}.{rest}"
    raise ValueError(f"no diffusers name for {path}")


def _openclip(path: str) -> str:
    """A transformers CLIP layer path as OpenCLIP names it (q/k/v handled by the caller: fused)."""
    path = re.sub(r"^text_model\.encoder\.layers\.(\d+)\.", r"transformer.resblocks.\1.", path)
    return path.replace("self_attn.out_proj", "attn.out_proj").replace("mlp.fc1", "mlp.c_fc").replace(
        "mlp.fc2", "mlp.c_proj")


def module_name(model, target: str, dialect: str) -> str:
    """The module name of `target`'s LoRA in `dialect` (target: a patch target ending in .weight)."""
    path = target.removesuffix(".weight")
    encoders = len(model.text.encoders)
    if path.startswith(UNET):
        path = path[len(UNET):]
        if dialect in ("kohya_ldm", "kohya_openclip"):
            return "lora_unet_" + path.replace(".", "_")
        diffusers = ldm_to_diffusers(path, model.unet.config.num_res_blocks)
        if dialect == "kohya_diffusers":
            return "lora_unet_" + diffusers.replace(".", "_")
        if dialect == "diffusers_old" and (m := re.fullmatch(r"(.*attn[12])\.(to_[qkv]|to_out)(\.0)?", diffusers)):
            return f"unet.{m[1]}.processor.{m[2]}_lora"
        if dialect == "diffusers_old":
            return f"unet.{diffusers}.lora_linear_layer"
        return f"unet.{diffusers}" + (".lora" if dialect == "lora_dot" else "")
    index, path = int(path.split(".")[1]), path.split(".", 2)[2]
    if dialect.startswith("kohya"):
        prefix = "lora_te_" if encoders == 1 else f"lora_te{index + 1}_"
        if dialect == "kohya_openclip" and model.text.family.text_encoders[index].openclip:
            path = _openclip(path)
        return prefix + path.replace(".", "_")
    prefix = "text_encoder." if index == 0 else f"text_encoder_{index + 1}."
    if dialect == "diffusers_old":
        return prefix + path + ".lora_linear_layer"
    return prefix + path + (".lora" if dialect == "lora_dot" else "")


_SUFFIXES = {"peft": (".lora_A.weight", ".lora_B.weight"), "diffusers_old": (".down.weight", ".up.weight"),
             "lora_dot": (".down.weight", ".up.weight")}


def _low_rank(g: torch.Generator, shape: tuple[int, ...], rank: int, mid: bool, flat_1x1: bool,
              in_channels: int | None = None) -> dict[str, torch.Tensor]:
    out_dim, in_dim = shape[0], in_channels or shape[1]
    if len(shape) == 2 or (flat_1x1 and shape[2:] == (1, 1)):
        return {"down": torch.randn(rank, in_dim, generator=g) * 0.1, "up": torch.randn(out_dim, rank, generator=g) * 0.1}
    kh, kw = shape[2:]
    if mid and (kh, kw) != (1, 1):
        return {"down": torch.randn(rank, in_dim, 1, 1, generator=g) * 0.1,
                "mid": torch.randn(rank, rank, kh, kw, generator=g) * 0.1,
                "up": torch.randn(out_dim, rank, 1, 1, generator=g) * 0.1}
    return {"down": torch.randn(rank, in_dim, kh, kw, generator=g) * 0.1,
            "up": torch.randn(out_dim, rank, 1, 1, generator=g) * 0.1}


def expected_delta(parts: dict[str, torch.Tensor], scale: float) -> torch.Tensor:
    """ΔW written out element by element with einsum (not as sdstudio computes it)."""
    down, up = parts["down"].double(), parts["up"].double()
    if down.ndim == 2:
        return (scale * torch.einsum("or,ri->oi", up.flatten(1), down)).float()
    if "mid" in parts:
        return (scale * torch.einsum("oa,abhw,bi->oihw", up.flatten(1), parts["mid"].double(),
                                     down.flatten(1))).float()
    return (scale * torch.einsum("or,rihw->oihw", up.flatten(1), down)).float()


def lora_tensors(model, dialect: str, *, targets: list[str] | None = None, components=("unet", "text"), rank: int = 4,
                 alpha: float | None = 3.0, seed: int = 0, mid: bool = False, flat_1x1: bool = False,
                 dtype: torch.dtype = torch.float32, conv_in_channels: int | None = None,
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A LoRA for `targets` (default: every adaptable weight) in `dialect`, and the ΔW each target should get
    (alpha / rank applied; no alpha => 1). kohya_openclip fuses each layer's q/k/v into one `attn_in_proj`
    module. `conv_in_channels`: make the conv_in LoRA for that many input channels (inpainting pad test)."""
    g = torch.Generator().manual_seed(seed)
    shapes = model.weights.shapes()
    targets = targets if targets is not None else lora_targets(model, components)
    scale = 1.0 if alpha is None else alpha / rank
    tensors: dict[str, torch.Tensor] = {}
    expected: dict[str, torch.Tensor] = {}
    fused: dict[str, list[str]] = {}
    for target in targets:
        if dialect == "kohya_openclip" and (m := re.match(r"(text\.(\d+)\..*)\.self_attn\.([qkv])_proj\.weight$",
                                                          target)) \
                and model.text.family.text_encoders[int(m[2])].openclip:
            fused.setdefault(m[1], []).append(target)
            continue
        in_ch = conv_in_channels if target == UNET + "input_blocks.0.0.weight" else None
        parts = _low_rank(g, shapes[target], rank, mid, flat_1x1, in_ch)
        name = module_name(model, target, dialect)
        _store(tensors, name, parts, dialect, alpha, dtype)
        delta = expected_delta({k: v.to(dtype) for k, v in parts.items()}, scale)
        if in_ch is not None and in_ch < shapes[target][1]:
            delta = torch.nn.functional.pad(delta, (0, 0, 0, 0, 0, shapes[target][1] - in_ch))
        expected[target] = delta.reshape(shapes[target])
    for layer, qkv in fused.items():
        index = int(layer.split(".")[1])
        width = shapes[qkv[0]][1]
        parts = _low_rank(g, (3 * width, width), rank, False, False)
        name = f"lora_te{'' if len(model.text.encoders) == 1 else index + 1}_" + \
            _openclip(layer.split(".", 2)[2] + ".attn.in_proj").replace(".", "_")
        _store(tensors, name, parts, dialect, alpha, dtype)
        delta = expected_delta({k: v.to(dtype) for k, v in parts.items()}, scale)
        for i, q in enumerate("qkv"):
            expected[f"{layer}.self_attn.{q}_proj.weight"] = delta[i * width:(i + 1) * width]
    return tensors, expected


def _store(tensors, name, parts, dialect, alpha, dtype) -> None:
    down_suffix, up_suffix = _SUFFIXES.get(dialect, (".lora_down.weight", ".lora_up.weight"))
    tensors[name + down_suffix] = parts["down"].to(dtype)
    tensors[name + up_suffix] = parts["up"].to(dtype)
    if "mid" in parts:
        tensors[name + ".lora_mid.weight"] = parts["mid"].to(dtype)
    if alpha is not None:
        tensors[name + ".alpha"] = torch.tensor(alpha, dtype=dtype)


def write_lora(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path
