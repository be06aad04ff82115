"""Reference models read from a single-file checkpoint without any sdstudio code: diffusers' UNet and VAE
and transformers' CLIP, configured from the original LDM/sgm YAML configs and the published text-encoder
configs, with weights converted by diffusers' own single-file functions (`diffusers.loaders.
single_file_utils`: `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`,
`convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint`, `create_*_diffusers_config_from_ldm`),
which is what `from_single_file` does once its configs are downloaded. Tensors come from the file
through the `safetensors` library.

Modules are built on the meta device and receive the converted tensors with `assign=True`, so a reference
costs one copy of its weights (in fp32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
    create_unet_diffusers_config_from_ldm,
    create_vae_diffusers_config_from_ldm,
    infer_diffusers_model_type,
)
from safetensors import safe_open
from torch import Tensor, nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from tests.engine.full_size import CLIP_L_SD1, CLIP_L_SDXL, OPENCLIP_SD2, OPENCLIP_SDXL, UNET, VAE

# first_stage_config.params of every SD 1.x / 2.x / XL YAML.
_VAE_PARAMS = {"embed_dim": 4, "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 256,
                                            "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4],
                                            "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}}
_SD1_UNET = {"image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
             "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4],
             "num_heads": 8, "use_spatial_transformer": True, "transformer_depth": 1, "context_dim": 768,
             "legacy": False}


def ldm_config(unet_key: str, unet: dict, scale_factor: float, vae: dict | None = None) -> dict:
    """The part of an LDM/sgm YAML `model:` section that diffusers' config functions read."""
    return {"model": {"params": {"scale_factor": scale_factor, unet_key: {"params": unet},
                                 "first_stage_config": {"params": vae or _VAE_PARAMS}}}}


# The `model:` section of CompVis `v1-inference.yaml`, runwayml `v1-inpainting-inference.yaml`,
# Stability `v2-inference-v.yaml` and generative-models `sd_xl_base.yaml` (fields diffusers reads).
ORIGINAL_CONFIGS = {
    "sd15": ldm_config("unet_config", _SD1_UNET, 0.18215),
    "sd15_inpaint": ldm_config("unet_config", {**_SD1_UNET, "in_channels": 9}, 0.18215),
    "sd21": ldm_config("unet_config", {
        "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
        "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4],
        "num_head_channels": 64, "use_spatial_transformer": True, "use_linear_in_transformer": True,
        "transformer_depth": 1, "context_dim": 1024, "legacy": False}, 0.18215),
    "sdxl": ldm_config("network_config", {
        "adm_in_channels": 2816, "num_classes": "sequential", "in_channels": 4, "out_channels": 4,
        "model_channels": 320, "attention_resolutions": [4, 2], "num_res_blocks": 2,
        "channel_mult": [1, 2, 4], "num_head_channels": 64, "use_spatial_transformer": True,
        "use_linear_in_transformer": True, "transformer_depth": [1, 2, 10], "context_dim": 2048,
        "legacy": False}, 0.13025),
}
DIFFUSERS_MODEL_TYPE = {"sd15": "v1", "sd15_inpaint": "inpainting", "sd21": "v2", "sdxl": "xl_base"}


def _text_config(hidden: int, layers: int, heads: int, mlp: int, act: str, proj: int) -> CLIPTextConfig:
    # bos 0 / eos 2 as in the published configs: transformers then pools at argmax(token id), i.e. EOS.
    return CLIPTextConfig(vocab_size=49408, hidden_size=hidden, num_hidden_layers=layers,
                          num_attention_heads=heads, intermediate_size=mlp, hidden_act=act,
                          projection_dim=proj, max_position_embeddings=77, layer_norm_eps=1e-5,
                          bos_token_id=0, eos_token_id=2, pad_token_id=1)


# text_encoder/config.json of stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0 (CLIP ViT-L/14),
# stable-diffusion-2-1 (OpenCLIP ViT-H without its last layer: diffusers reads the penultimate as the last),
# and stable-diffusion-xl-base-1.0 text_encoder_2 (OpenCLIP ViT-bigG with projection).
CLIP_L = _text_config(768, 12, 12, 3072, "quick_gelu", 768)
OPENCLIP_H_23 = _text_config(1024, 23, 16, 4096, "gelu", 512)
OPENCLIP_BIGG = _text_config(1280, 32, 20, 5120, "gelu", 1280)


@dataclass(frozen=True)
class TextReference:
    """How a family reads one encoder: diffusers' pipelines take `hidden_states[layer]` (-1: last, normed)."""

    name: str
    prefix: str
    openclip: bool
    config: CLIPTextConfig
    layer: int
    pad_token: int
    pooled: bool = False


TEXT_REFERENCES = {
    "sd15": (TextReference("CLIP-L", CLIP_L_SD1, False, CLIP_L, -1, 49407),),
    "sd15_inpaint": (TextReference("CLIP-L", CLIP_L_SD1, False, CLIP_L, -1, 49407),),
    "sd21": (TextReference("OpenCLIP-H", OPENCLIP_SD2, True, OPENCLIP_H_23, -1, 0),),
    "sdxl": (TextReference("CLIP-L", CLIP_L_SDXL, False, CLIP_L, -2, 49407),
             TextReference("OpenCLIP-bigG", OPENCLIP_SDXL, True, OPENCLIP_BIGG, -2, 0, pooled=True)),
}


def read_tensors(path, prefix: str) -> dict[str, Tensor]:
    """Every tensor under `prefix` (full keys), floating ones as float32."""
    out = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            if key.startswith(prefix):
                t = f.get_tensor(key)
                out[key] = t.float() if t.is_floating_point() else t
    return out


def shapes_only(path) -> dict[str, Tensor]:
    """The file's tensors as meta tensors: what diffusers' model-type inference looks at."""
    with safe_open(str(path), framework="pt") as f:
        return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}


def model_type(path) -> str:
    return infer_diffusers_model_type(shapes_only(path))


def _assign(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise AssertionError(f"reference weights missing for {left[:3]}")
    return model.eval().requires_grad_(False)


def reference_unet(path, original_config: dict) -> UNet2DConditionModel:
    config = create_unet_diffusers_config_from_ldm(original_config, shapes_only(path))
    converted = convert_ldm_unet_checkpoint(read_tensors(path, UNET), config)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    return _assign(unet, converted)


def reference_vae(path, original_config: dict) -> AutoencoderKL:
    config = create_vae_diffusers_config_from_ldm(original_config, shapes_only(path))
    converted = convert_ldm_vae_checkpoint(read_tensors(path, VAE), config)
    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    return _assign(vae, converted)


def reference_text(path, ref: TextReference) -> CLIPTextModel | CLIPTextModelWithProjection:
    cls = CLIPTextModelWithProjection if ref.pooled else CLIPTextModel
    with torch.device("meta"):
        model = cls(ref.config)
    tensors = read_tensors(path, ref.prefix)
    if ref.openclip:
        state = convert_open_clip_checkpoint(model, tensors, prefix=ref.prefix)
    else:
        state = convert_ldm_clip_checkpoint(tensors)
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    if not hasattr(model, "text_model"):  # transformers 5 flattened CLIPTextModel, as diffusers handles it
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    embeddings = (model.text_model if hasattr(model, "text_model") else model).embeddings
    embeddings.position_ids = torch.arange(ref.config.max_position_embeddings)[None]
    return _assign(model, state)


@torch.no_grad()
def run_text(model, ref: TextReference, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
    out = model(input_ids=tokens, output_hidden_states=True)
    hidden = out.last_hidden_state if ref.layer == -1 else out.hidden_states[ref.layer]
    return hidden, (out.text_embeds if ref.pooled else None)
