"""Building a checkpoint's text side from its family's text encoder specs (families.py says which encoders a
family has, where their weights live and what they read) and applying the family's conditioning rules.
"""

from __future__ import annotations

import torch

from sdstudio.engine import denoiser
from sdstudio.engine.conditioning import PromptEmbedding, PromptEncoder, sdxl_y
from sdstudio.engine.detect import ModelDescription
from sdstudio.engine.errors import CheckpointError
from sdstudio.engine.families import FAMILIES, EncoderSpec, Family, family
from sdstudio.engine.safetensors_file import SafetensorsHeader
from sdstudio.engine.text_encoder import (
    TextEncoder,
    build_text_encoder,
    openclip_to_transformers,
    text_config_from_shapes,
)
from sdstudio.engine.weights import OnBytes, load_tensors

# Read-only view kept for importers; the specs live in families.FAMILIES.
TEXT_SPECS: dict[str, tuple[EncoderSpec, ...]] = {f.name: f.text_encoders for f in FAMILIES}


class TextStack:
    """The prompt side of a loaded model: prompts -> the denoiser's (cond, uncond) UNetConditioning."""

    def __init__(self, encoders: list[TextEncoder], family: Family, dtype: torch.dtype):
        self.encoders = encoders
        self.family = family
        self.prompts = PromptEncoder(encoders, zero_empty_negative=family.zero_empty_negative)

    def conditioning(self, prompt: str, negative: str, clip_skip: int,
                     size: tuple[int, int]) -> tuple[denoiser.UNetConditioning, denoiser.UNetConditioning]:
        cond, uncond = self.prompts.encode_pair(prompt, negative, clip_skip)
        return self.unet_conditioning(cond, size), self.unet_conditioning(uncond, size)

    def unet_conditioning(self, embedding: PromptEmbedding, size: tuple[int, int]) -> denoiser.UNetConditioning:
        """What the UNet gets for one encoded prompt at image size (h, w)."""
        if not self.family.needs_y:
            return denoiser.UNetConditioning(embedding.context)
        # SDXL: no crop, original size = target size (A1111's and ComfyUI's defaults).
        return denoiser.UNetConditioning(embedding.context, sdxl_y(embedding.pooled, size, (0, 0), size))


def build_text_stack(header: SafetensorsHeader, desc: ModelDescription, dtype: torch.dtype,
                     device: torch.device | str | None = None, on_bytes: OnBytes | None = None) -> TextStack:
    fam = family(desc.family).configured(desc.config)
    encoders = []
    for spec in fam.text_encoders:
        state = load_tensors(header, spec.prefix, dtype, skip=("position_ids",), device=device, on_bytes=on_bytes)
        if spec.openclip:
            state = openclip_to_transformers(state)
        shapes = header.shapes(spec.prefix)
        try:
            config = text_config_from_shapes(shapes, spec.openclip, hidden_act=spec.hidden_act,
                                             num_heads=spec.num_heads)
            encoders.append(build_text_encoder(config, state, pad_token=spec.pad, layer_mode=spec.layer,
                                               projection=spec.projection))
        except CheckpointError as exc:
            raise CheckpointError(f"{header.path.name}: {exc}") from None
    return TextStack(encoders, fam, dtype)
