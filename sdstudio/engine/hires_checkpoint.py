"""Hires fix with another checkpoint for the second pass (A1111's `hr_checkpoint_name`, infotext
"Hires checkpoint"): the first pass's latents go on to a different model's img2img pass.

As A1111 does (`StableDiffusionProcessingTxt2Img.sample`), the first pass runs and, for a pixel upscaler, is
decoded by the first model's VAE; then the hires checkpoint's weights replace the first model's (never both
in memory) and the hires pass runs on them, its prompts encoded by its own text encoders and its start
encoded by its own VAE. That only makes sense when both models share a latent space: the latent is handed
over as it is.
"""

from __future__ import annotations

from pathlib import Path

from sdstudio.engine.detect import ModelDescription, detect
from sdstudio.engine.errors import RequestError
from sdstudio.engine.families import family
from sdstudio.engine.safetensors_file import read_header


def latent_space(desc: ModelDescription) -> tuple[float, int, str]:
    """What a latent means to a model: its VAE's scale factor and downscale and the family's latent format
    (the tiny decoder that reads it: SD 1.x and 2.x share theirs, SDXL has its own)."""
    return float(desc.scale_factor), int(desc.vae_downscale), family(desc.family).taesd_decoder


def check_hires_checkpoint(path: str, first: ModelDescription, prediction: str = "") -> ModelDescription:
    """The hires checkpoint's description when its latents are the first model's; RequestError otherwise
    (one line naming both models and their families)."""
    file = Path(path)
    if not file.is_file():
        raise RequestError(f"the hires checkpoint {file.name} is not a file here ({path}); choose another or "
                           "'Use same checkpoint'")
    if file.suffix.lower() != ".safetensors":
        raise RequestError(f"the hires checkpoint {file.name} must be a .safetensors checkpoint")
    desc = detect(read_header(file), prediction)
    if latent_space(desc) != latent_space(first):
        raise RequestError(f"the hires checkpoint {desc.name} ({desc.family_label}) works in another latent "
                           f"space than {first.name} ({first.family_label}): choose a checkpoint of the same "
                           "family for the second pass")
    return desc
