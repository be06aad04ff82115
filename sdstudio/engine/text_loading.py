"""Building a checkpoint's text side: which encoders a family has, where their weights live, what they read.

| family | prefix                                   | layout       | pad | layer               | pooled |
|--------|------------------------------------------|--------------|-----|---------------------|--------|
| sd1    | cond_stage_model.transformer.            | transformers | EOS | last                | -      |
| demo   | cond_stage_model.transformer.            | transformers | metadata          | -      |
| sd2    | cond_stage_model.model.                  | OpenCLIP     | 0   | penultimate         | -      |
| sdxl   | conditioner.embedders.0.transformer.     | transformers | EOS | penultimate_no_norm | -      |
|        | conditioner.embedders.1.model.           | OpenCLIP     | 0   | penultimate_no_norm | bigG   |
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdstudio.engine import denoiser
from sdstudio.engine.conditioning import PromptEncoder, sdxl_y
from sdstudio.engine.detect import SD1_TEXT, SD2_TEXT, SDXL_TEXT_G, SDXL_TEXT_L, ModelDescription
from sdstudio.engine.errors import CheckpointError
from sdstudio.engine.safetensors_file import SafetensorsHeader
from sdstudio.engine.text_encoder import (
    TextEncoder,
    build_text_encoder,
    openclip_to_transformers,
    text_config_from_shapes,
)
from sdstudio.engine.tokenizer import EOS, OPENCLIP_PAD
from sdstudio.engine.weights import OnBytes, load_tensors


@dataclass(frozen=True)
class EncoderSpec:
    prefix: str
    openclip: bool
    pad: int
    layer: str
    projection: bool = False


TEXT_SPECS = {
    "sd1": (EncoderSpec(SD1_TEXT, False, EOS, "last"),),
    "demo": (EncoderSpec(SD1_TEXT, False, EOS, "last"),),
    "sd2": (EncoderSpec(SD2_TEXT, True, OPENCLIP_PAD, "penultimate"),),
    "sdxl": (EncoderSpec(SDXL_TEXT_L, False, EOS, "penultimate_no_norm"),
             EncoderSpec(SDXL_TEXT_G, True, OPENCLIP_PAD, "penultimate_no_norm", projection=True)),
}


class TextStack:
    """The prompt side of a loaded model: prompts -> the denoiser's (cond, uncond) Conditioning."""

    def __init__(self, encoders: list[TextEncoder], family: str, dtype: torch.dtype):
        self.encoders = encoders
        self.family = family
        self.prompts = PromptEncoder(encoders, zero_empty_negative=family == "sdxl")

    def conditioning(self, prompt: str, negative: str, clip_skip: int,
                     size: tuple[int, int]) -> tuple[denoiser.Conditioning, denoiser.Conditioning]:
        cond, uncond = self.prompts.encode_pair(prompt, negative, clip_skip)
        if self.family != "sdxl":
            return denoiser.Conditioning(cond.context), denoiser.Conditioning(uncond.context)
        # SDXL: no crop, original size = target size (A1111's and ComfyUI's defaults).
        return tuple(denoiser.Conditioning(c.context, sdxl_y(c.pooled, size, (0, 0), size)) for c in (cond, uncond))


def _spec_for_demo(desc: ModelDescription) -> EncoderSpec:
    text = desc.config.get("text", {})
    pad = {"eos": EOS, "0": OPENCLIP_PAD, 0: OPENCLIP_PAD}.get(text.get("pad", "eos"), EOS)
    return EncoderSpec(SD1_TEXT, False, pad, text.get("layer", "last"))


def build_text_stack(header: SafetensorsHeader, desc: ModelDescription, dtype: torch.dtype,
                     device: torch.device | str | None = None, on_bytes: OnBytes | None = None) -> TextStack:
    specs = TEXT_SPECS[desc.family]
    if desc.family == "demo":
        specs = (_spec_for_demo(desc),)
    text_cfg = desc.config.get("text", {}) if desc.family == "demo" else {}
    encoders = []
    for spec in specs:
        state = load_tensors(header, spec.prefix, dtype, skip=("position_ids",), device=device, on_bytes=on_bytes)
        if spec.openclip:
            state = openclip_to_transformers(state)
        shapes = header.shapes(spec.prefix)
        try:
            config = text_config_from_shapes(shapes, spec.openclip, hidden_act=text_cfg.get("hidden_act"),
                                             num_heads=text_cfg.get("num_attention_heads"))
            encoders.append(build_text_encoder(config, state, pad_token=spec.pad, layer_mode=spec.layer,
                                               projection=spec.projection))
        except CheckpointError as exc:
            raise CheckpointError(f"{header.path.name}: {exc}") from None
    return TextStack(encoders, desc.family, dtype)
