"""Key -> shape maps of real full-size checkpoints, built on the meta device (no memory, no time)."""

from __future__ import annotations

import torch

from sdstudio.engine.clip_text import CLIPTextModel
from sdstudio.engine.text_encoder import clip_l_config, openclip_bigg_config, openclip_h_config
from sdstudio.engine.unet import UNetConfig, UNetModel
from sdstudio.engine.vae import AutoencoderKL, VAEConfig


def _shapes(module: torch.nn.Module, prefix: str) -> dict[str, tuple[int, ...]]:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def clip_shapes(config, prefix: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = CLIPTextModel(config)
    return {
        prefix + "text_model." + k.removeprefix("text_model."): s
        for k, s in _shapes(model, "").items()
        if not k.endswith("position_ids")
    }


def openclip_shapes(config, prefix: str, projection: bool) -> dict[str, tuple[int, ...]]:
    d, n = config.hidden_size, config.num_hidden_layers
    out = {
        "token_embedding.weight": (config.vocab_size, d),
        "positional_embedding": (77, d),
        "ln_final.weight": (d,),
        "ln_final.bias": (d,),
    }
    for i in range(n):
        b = f"transformer.resblocks.{i}."
        out |= {
            b + "ln_1.weight": (d,),
            b + "ln_1.bias": (d,),
            b + "ln_2.weight": (d,),
            b + "ln_2.bias": (d,),
            b + "attn.in_proj_weight": (3 * d, d),
            b + "attn.in_proj_bias": (3 * d,),
            b + "attn.out_proj.weight": (d, d),
            b + "attn.out_proj.bias": (d,),
            b + "mlp.c_fc.weight": (4 * d, d),
            b + "mlp.c_fc.bias": (4 * d,),
            b + "mlp.c_proj.weight": (d, 4 * d),
            b + "mlp.c_proj.bias": (d,),
        }
    if projection:
        out["text_projection"] = (d, config.projection_dim)
    out["logit_scale"] = ()
    return {prefix + k: v for k, v in out.items()}


def checkpoint_shapes(family: str, in_channels: int = 4) -> dict[str, tuple[int, ...]]:
    unet_cfg = {"sd1": UNetConfig.sd15, "sd2": UNetConfig.sd21, "sdxl": UNetConfig.sdxl}[family](in_channels)
    shapes = _shapes(UNetModel(unet_cfg, device="meta"), "model.diffusion_model.")
    shapes |= _shapes(AutoencoderKL(VAEConfig(), device="meta"), "first_stage_model.")
    if family == "sd1":
        shapes |= clip_shapes(clip_l_config(), "cond_stage_model.transformer.")
    elif family == "sd2":
        shapes |= openclip_shapes(openclip_h_config(), "cond_stage_model.model.", projection=True)
    else:
        shapes |= clip_shapes(clip_l_config(), "conditioner.embedders.0.transformer.")
        shapes |= openclip_shapes(openclip_bigg_config(), "conditioner.embedders.1.model.", projection=True)
    return shapes
