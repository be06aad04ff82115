"""Writing the built-in model: one single-file checkpoint in the original LDM key layout, plus its tiny
preview decoder in madebyollin's `taesd_decoder.safetensors` layout, both fp16.

What tensor shapes cannot tell (latent scale, head counts, activation, padding token, text layer) goes in
the safetensors metadata under `sdstudio.config`, which the engine's loader reads; `latent_rgb` there is
this model's 4x3 latent-to-RGB preview map.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from sdstudio.engine.clip_text import CLIPTextModel
from sdstudio.engine.detect import CONFIG_KEY
from sdstudio.engine.unet import UNetModel
from sdstudio.engine.vae import AutoencoderKL
from sdstudio.training.plan import TrainingPlan

MODEL_NAME = "sdstudio-emoji"
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
# transformers 5 keeps CLIPTextModel's weights at its top level; checkpoints nest them under `text_model.`.
TEXT_PREFIX = "cond_stage_model.transformer.text_model."


def model_paths(out_dir: Path) -> tuple[Path, Path]:
    """(checkpoint, preview decoder) file paths in `out_dir`."""
    return out_dir / f"{MODEL_NAME}.safetensors", out_dir / f"{MODEL_NAME}.taesd_decoder.safetensors"


def controlnet_path(out_dir: Path) -> Path:
    """The companion ControlNet beside the model, in the built-in ControlNet folder (paths.builtin_controlnet_dir);
    the name ends in `_canny` so the preprocessor pairing picks canny for it."""
    return out_dir / "ControlNet" / f"{MODEL_NAME}_canny.safetensors"


def _fp16(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()
            if not k.endswith("position_ids")}


def latent_rgb_factors(scaled_latents: torch.Tensor, images: torch.Tensor) -> list[list[float]]:
    """Least-squares 4x3 map from scaled latents to the RGB (in [-1, 1]) of the pixels each covers: the
    cheapest preview, in the form ComfyUI's latent_formats.py publishes for other families."""
    factor = images.shape[-1] // scaled_latents.shape[-1]
    target = F.avg_pool2d(images, factor).permute(0, 2, 3, 1).reshape(-1, 3)
    source = scaled_latents.permute(0, 2, 3, 1).reshape(-1, scaled_latents.shape[1])
    return torch.linalg.lstsq(source.double(), target.double()).solution.float().tolist()


def model_config(plan: TrainingPlan, scale_factor: float, latent_rgb: list[list[float]]) -> dict:
    """The `sdstudio.config` metadata of the checkpoint."""
    return {
        "family": "demo",
        "scale_factor": scale_factor,
        "prediction": "eps",
        "default_size": 64,
        "unet": {"num_head_channels": plan.unet_head_channels},
        "text": {"num_attention_heads": plan.text_heads, "pad": "eos",
                 "hidden_act": plan.text_config().hidden_act, "layer": "last"},
        "latent_rgb": [[round(v, 4) for v in row] for row in latent_rgb],
    }


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.chmod(0o644)  # safetensors creates owner-only files; the model ships to every user
    tmp.replace(path)


def export_model(plan: TrainingPlan, out_dir: Path, unet: UNetModel, vae: AutoencoderKL, text: CLIPTextModel,
                 preview_decoder: nn.Sequential, scale_factor: float, latent_rgb: list[list[float]],
                 provenance: dict) -> tuple[Path, Path]:
    """Write both files (atomically) and return their paths."""
    checkpoint, preview = model_paths(out_dir)
    tensors = {**_fp16(UNET_PREFIX, unet), **_fp16(VAE_PREFIX, vae), **_fp16(TEXT_PREFIX, text)}
    metadata = {CONFIG_KEY: json.dumps(model_config(plan, scale_factor, latent_rgb)),
                "sdstudio.training": json.dumps(provenance)}
    _save(tensors, checkpoint, metadata)
    _save(_fp16("", preview_decoder), preview, {"sdstudio.training": json.dumps(provenance)})
    return checkpoint, preview


def export_controlnet(out_dir: Path, net: nn.Module, provenance: dict) -> Path:
    """The ControlNet in lllyasviel's original layout without a prefix (`input_hint_block.*`, `zero_convs.N.0`,
    ...), fp16, with `sdstudio.config` naming the family its model is (the header alone cannot tell it)."""
    path = controlnet_path(out_dir)
    _save(_fp16("", net), path, {CONFIG_KEY: json.dumps({"family": "demo", "base_model": MODEL_NAME}),
                                 "sdstudio.training": json.dumps(provenance)})
    return path
