"""Which model family a LoRA / LyCORIS file was made for, from its tensor names, shapes and metadata, without
torch (the browser's header-only catalog asks this of every file in a folder).

What decides, first hit wins:
1. metadata the trainer wrote: `modelspec.architecture` (Stability's ModelSpec, e.g.
   "stable-diffusion-xl-v1-base/lora"), then kohya sd-scripts' `ss_base_model_version` ("sd_v1",
   "sd_v2_768_v", "sdxl_base_v1-0") and `ss_v2` ("True" only says SD 2.x; "False" is written by SDXL
   trainers too);
2. names only an SDXL model has: two text encoders (`lora_te1_`/`lora_te2_`, `text_encoder_2.`), the
   `add_embedding` / `label_emb` vector embedding;
3. widths: the UNet's cross-attention context (the input width of an `attn2` to_k/to_v LoRA) and the text
   encoder's width (the input width of a self-attention projection), matched against families.py.
None when nothing tells (e.g. a LoRA touching only UNet self-attention without metadata).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from sdstudio.engine.families import FAMILIES

# (metadata key, value prefix, family): value compared lower-cased; first match wins. None: a model we know
# and do not run (SDXL's refiner has other widths), so its LoRAs match no family.
METADATA_RULES: tuple[tuple[str, str, str | None], ...] = (
    ("modelspec.architecture", "stable-diffusion-xl-v1-refiner", None),
    ("modelspec.architecture", "stable-diffusion-xl-v1", "sdxl"),
    ("modelspec.architecture", "stable-diffusion-v2", "sd2"),
    ("modelspec.architecture", "stable-diffusion-v1", "sd1"),
    ("ss_base_model_version", "sdxl", "sdxl"),
    ("ss_base_model_version", "sd_v2", "sd2"),
    ("ss_base_model_version", "sd_2", "sd2"),
    ("ss_base_model_version", "sd_v1", "sd1"),
    ("ss_base_model_version", "sd_1", "sd1"),
    ("ss_v2", "true", "sd2"),
)

# Key patterns only one family's LoRAs have.
NAME_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^lora_te[12]_"), "sdxl"),
    (re.compile(r"^text_encoder_2\."), "sdxl"),
    (re.compile(r"(^|[._])(add_embedding|label_emb)[._]"), "sdxl"),
)

# Tensor-name suffixes whose last dimension is the input width of the layer the module adapts
# (kohya/LyCORIS down matrices, PEFT lora_A, old diffusers `.down`, LoHa w*_b, full diffs).
_INPUT_SIDE = (r"(lora_down\.weight|lora_A\.weight|lora_A\.default\.weight|down\.weight"
               r"|hada_w1_b|hada_w2_b|diff)")
# Cross-attention k/v of the UNet: their input is the text context.
CONTEXT_KEY = re.compile(r"(^lora_unet_|^unet\.|^lora_unet\.).*attn2[._](processor[._])?to_[kv]"
                         r"(_lora)?[._]" + _INPUT_SIDE + "$")
# Self-attention projections of a single text encoder: their input is the encoder's width.
TEXT_KEY = re.compile(r"^(lora_te_|text_encoder\.).*(self_attn|attn)[._](q_proj|k_proj|v_proj|out_proj)[._]"
                      + _INPUT_SIDE + "$")

CONTEXT_WIDTHS: dict[int, str] = {f.context_dim: f.name for f in FAMILIES if f.context_dim is not None}
TEXT_WIDTHS: dict[int, str] = {f.text_encoders[0].width: f.name for f in FAMILIES
                               if f.context_dim is not None and len(f.text_encoders) == 1}


def lora_family(shapes: Mapping[str, Sequence[int]], metadata: Mapping[str, str]) -> str | None:
    """The family (a families.py name) a LoRA file with these tensor shapes and metadata was made for, or
    None when they do not tell."""
    for key, prefix, name in METADATA_RULES:
        value = metadata.get(key)
        if isinstance(value, str) and value.strip().lower().startswith(prefix):
            return name
    for pattern, name in NAME_RULES:
        if any(pattern.search(k) for k in shapes):
            return name
    for pattern, widths in ((CONTEXT_KEY, CONTEXT_WIDTHS), (TEXT_KEY, TEXT_WIDTHS)):
        for key, shape in shapes.items():
            if pattern.search(key) and len(shape) >= 2 and shape[-1] in widths:
                return widths[shape[-1]]
    return None
