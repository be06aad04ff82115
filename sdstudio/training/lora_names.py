"""The names a trained LoRA's modules get in the file: kohya sd-scripts' layout, so A1111, ComfyUI, diffusers
and kohya's own tools read it.

kohya names a module `<prefix><module path with . -> _>`: `lora_unet_` for the UNet, `lora_te_` for a single
text encoder, `lora_te1_` / `lora_te2_` for SDXL's two (transformers' CLIP names:
`text_model_encoder_layers_0_self_attn_q_proj`). The UNet path is the one kohya's trainer sees: for SD 1.x /
2.x it trains diffusers' UNet2DConditionModel (`down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q`),
for SDXL its own UNet with the original LDM names (`input_blocks_4_1_transformer_blocks_0_attn1_to_q`).
diffusers' SD 1.x pipeline reads only the former for SD 1.x files, so we write what kohya writes.

Our UNet's module paths are the LDM checkpoint keys; `ldm_to_diffusers` does the block arithmetic of
diffusers' `convert_ldm_unet_checkpoint` backwards (L = num_res_blocks + 1 blocks per level):
- input_blocks.{1 + L*level + i}.{0, 1} -> down_blocks.{level}.{resnets, attentions}.{i};
  input_blocks.{L*(level + 1)}.0.op -> the level's downsampler;
- middle_block.{0, 1, 2} -> mid_block.resnets.0 / attentions.0 / resnets.1;
- output_blocks.{L*level + i} -> up_blocks.{level} (deepest level first), the upsampler after the level's
  last block."""

from __future__ import annotations

import re

from sdstudio.engine.errors import RequestError

# ResBlock layer names (LDM) -> diffusers' ResnetBlock2D names.
RESNET = {"in_layers.2": "conv1", "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj",
          "skip_connection": "conv_shortcut", "in_layers.0": "norm1", "out_layers.0": "norm2"}
# Families whose kohya files carry diffusers UNet names (one text encoder); SDXL keeps the LDM names.
DIFFUSERS_UNET_FAMILIES = ("sd1", "sd2", "demo")


def _resnet(rest: str) -> str:
    for old, new in RESNET.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    raise RequestError(f"no diffusers name for the ResBlock layer {rest!r}")


def ldm_to_diffusers(path: str, num_res_blocks: int) -> str:
    """The diffusers UNet module path (dotted) of one of our UNet module paths."""
    blocks = num_res_blocks + 1
    m = re.fullmatch(r"input_blocks\.(\d+)\.(\d+)\.(.+)", path)
    if m and int(m[1]) > 0:
        level, i = divmod(int(m[1]) - 1, blocks)
        if i == num_res_blocks:  # the level's last input block is its downsampler
            return f"down_blocks.{level}.downsamplers.0.conv"
        if m[2] == "0":
            return f"down_blocks.{level}.resnets.{i}.{_resnet(m[3])}"
        return f"down_blocks.{level}.attentions.{i}.{m[3]}"
    m = re.fullmatch(r"middle_block\.([012])\.(.+)", path)
    if m:
        if m[1] == "1":
            return f"mid_block.attentions.0.{m[2]}"
        return f"mid_block.resnets.{int(m[1]) // 2}.{_resnet(m[2])}"
    m = re.fullmatch(r"output_blocks\.(\d+)\.(\d+)\.(.+)", path)
    if m:
        level, i = divmod(int(m[1]), blocks)
        if m[2] == "0":
            return f"up_blocks.{level}.resnets.{i}.{_resnet(m[3])}"
        if m[3] == "conv":  # Upsample: index 1 on a level without attention, else 2
            return f"up_blocks.{level}.upsamplers.0.conv"
        return f"up_blocks.{level}.attentions.{i}.{m[3]}"
    raise RequestError(f"no diffusers name for the UNet module {path!r}; it is not a LoRA target")


def unet_name(family: str, path: str, num_res_blocks: int) -> str:
    """kohya's name of a UNet module of a model of `family`."""
    if family in DIFFUSERS_UNET_FAMILIES:
        path = ldm_to_diffusers(path, num_res_blocks)
    return "lora_unet_" + path.replace(".", "_")


def text_name(encoders: int, index: int, path: str) -> str:
    """kohya's name of a module (transformers' CLIP path, `text_model.encoder.layers...`) of text encoder
    `index` of a model with `encoders` text encoders."""
    prefix = "lora_te_" if encoders == 1 else f"lora_te{index + 1}_"
    return prefix + path.replace(".", "_")
