"""Tiny random-weight checkpoints in the original single-file layout, for fast tests of the whole engine.

The tiny model is of our "demo" family (configuration in the `sdstudio.config` metadata, as the built-in
model's), so it goes through exactly the loader and pipeline a real checkpoint does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from sdstudio.engine.unet import UNetConfig, UNetModel
from sdstudio.engine.vae import AutoencoderKL, VAEConfig

TINY_UNET = UNetConfig(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                       transformer_depth=(1, 1), transformer_depth_middle=1, context_dim=32, num_heads=2)
TINY_VAE = VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1)
TINY_TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407)
TINY_CONFIG = {"family": "demo", "scale_factor": 0.5, "prediction": "eps", "default_size": 64,
               "unet": {"num_heads": 2},
               "text": {"num_attention_heads": 2, "pad": "eos", "hidden_act": "quick_gelu", "layer": "last"}}


def _randomise(module: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in module.state_dict().items():
        if name.endswith("position_ids"):
            continue
        if t.is_floating_point():
            std = 0.02 if t.ndim > 1 else 0.01
            base = 1.0 if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm3.weight",
                                         "norm_out.weight", "layer_norm1.weight", "layer_norm2.weight",
                                         "final_layer_norm.weight", "in_layers.0.weight", "out_layers.0.weight",
                                         "out.0.weight")) else 0.0
            out[name] = base + std * torch.randn(t.shape, generator=generator)
        else:
            out[name] = t.clone()
    return out


def tiny_state_dict(seed: int = 0, in_channels: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    unet = UNetModel(UNetConfig(**{**TINY_UNET.__dict__, "in_channels": in_channels}))
    vae = AutoencoderKL(TINY_VAE)
    text = CLIPTextModel(CLIPTextConfig(**TINY_TEXT))
    sd = {}
    sd.update({"model.diffusion_model." + k: v for k, v in _randomise(unet, g).items()})
    sd.update({"first_stage_model." + k: v for k, v in _randomise(vae, g).items()})
    # Real checkpoints name CLIP-L `cond_stage_model.transformer.text_model.*` whatever transformers calls it.
    sd.update({"cond_stage_model.transformer.text_model." + k.removeprefix("text_model."): v
               for k, v in _randomise(text, g).items()})
    return sd


def write_tiny_checkpoint(path: Path, seed: int = 0, in_channels: int = 4, dtype=torch.float32,
                          config: dict | None = None) -> Path:
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tiny_state_dict(seed, in_channels).items()}
    save_file(sd, str(path), metadata={"sdstudio.config": json.dumps(config or TINY_CONFIG)})
    return path
