"""The plain dataclasses that cross layer boundaries: what to generate, each step, what came out.

No torch here: the UI and history import these without loading the engine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

# Seeds are 0..2**32-1, as AUTOMATIC1111 draws them, so its seeds paste in and ours paste there. Image i of a
# batch uses image_seed(seed, i), which wraps past the top so every batch member is itself a valid seed.
# How an image was made (GenerationRequest.mode); history records and filters by it.
MODES = ("txt2img", "img2img", "inpaint")
MAX_SEED = 2**32 - 1
RANDOM_SEED = -1  # a seed setting, not a seed: draw one at random for each job (app and CLI alike)


def image_seed(seed: int, index: int) -> int:
    """The seed of image `index` of a batch that starts at `seed`: seed + index (A1111), wrapped to 0..MAX_SEED."""
    return (seed + index) % (MAX_SEED + 1)


def batch_seeds(seed: int, subseed: int, subseed_strength: float, count: int) -> list[tuple[int, int]]:
    """(seed, variation seed) of each image of a batch, A1111's rule: without variation the seeds count up
    from `seed`; with it every image keeps `seed` and the variation seeds count up from `subseed`, so a batch
    is variations of one image."""
    if subseed_strength == 0:
        return [(image_seed(seed, i), subseed) for i in range(count)]
    return [(seed, image_seed(subseed, i)) for i in range(count)]


# ControlNet (A1111's sd-webui-controlnet names, written to infotext as they are).
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
CONTROL_RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet unit (Zhang et al. 2023, arXiv:2302.05543): a control model, its hint image and how
    strongly and when it steers the UNet. Several units sum their residuals.

    `image` is the source image as the user gave it (before the preprocessor); `preprocessor` names an entry
    of the engine's preprocessor table ("none" = use the image as the map), with its settings as
    (name, value) pairs. `start`/`end` are fractions of the schedule (A1111's guidance start/end).
    """

    model: str  # path of the ControlNet file
    image: Image.Image | None = field(default=None, compare=False, repr=False)
    preprocessor: str = "none"
    preprocessor_params: tuple[tuple[str, float], ...] = ()
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    mode: str = "Balanced"
    resize_mode: str = "Crop and Resize"
    model_hash: str = ""  # filled in by the engine, like GenerationRequest.model_hash

    def replace(self, **changes: Any) -> ControlUnit:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class GenerationRequest:
    """Everything that determines an image. Same request + same model => same pixels.

    The field defaults are SD Studio's defaults, the one set the app's prompt panel (ui/prompt_state.py) and
    `sdstudio generate` start from; the seed is drawn at random (RANDOM_SEED) unless one is given.
    """

    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    cfg_scale: float = 5.0
    sampler: str = "Euler a"
    scheduler: str = "karras"
    seed: int = 0
    width: int = 512
    height: int = 512
    batch_size: int = 1
    clip_skip: int = 1
    # Variation seed (A1111's subseed): the starting noise is slerp(subseed_strength, noise(seed),
    # noise(subseed)); strength 0 turns it off. Seed resize from: the noise as drawn for an image of this
    # size (pixels; 0 = off), pasted centred, so the composition survives a size change.
    subseed: int = 0
    subseed_strength: float = 0.0
    seed_resize_from_w: int = 0
    seed_resize_from_h: int = 0
    # img2img / inpainting: an RGB init image; strength is the fraction of the schedule that runs.
    init_image: Image.Image | None = field(default=None, compare=False, repr=False)
    strength: float = 0.75
    # inpainting: an L-mode mask at the init image's size, white = repaint.
    mask: Image.Image | None = field(default=None, compare=False, repr=False)
    mask_blur: int = 4
    only_masked: bool = False
    only_masked_padding: int = 32
    # The model: a path, or "" for the built-in model. model_hash is filled in by the engine.
    model: str = ""
    vae: str = ""
    taesd: str = ""
    model_hash: str = ""
    prediction: str = ""  # "" = detect, "eps" or "v"
    parent_id: str = ""  # history entry this image was made from (img2img/inpaint), if any
    # The latent walk (ui/walk_link.py) this image is a frame of, "" for none: like parent_id it is provenance,
    # not a parameter (the gallery groups a walk's frames by it); a re-run clears it.
    walk_id: str = ""
    # Filled in by the engine, like model_hash: (name, A1111 short hash) of each LoRA / embedding the prompt
    # used, written as A1111's "Lora hashes" / "TI hashes" so a re-run finds renamed files.
    lora_hashes: tuple[tuple[str, str], ...] = ()
    ti_hashes: tuple[tuple[str, str], ...] = ()
    # Decode the final image with the tiny preview VAE (fast path): at 4 steps the full VAE decode costs more
    # than sampling.
    draft_decode: bool = False
    # Prompt blending (conditioning.lerp_embeddings): the prompt's conditioning moved by blend_strength towards
    # blend_prompt's, 0 = off. A prompt walk's frames (walk.py) are written with these, so each re-runs alone.
    blend_prompt: str = ""
    blend_strength: float = 0.0
    # Hires fix (A1111's enable_hr; txt2img only): the first pass upscaled by hires_scale, or to
    # hires_resize_w x hires_resize_h (either 0 = keep the aspect; both set = cover and crop), then sampled
    # again as img2img with `strength` (A1111's "Denoising strength") over hires_steps (0 = steps).
    # "" for the sampler, schedule, prompt or negative prompt means the first pass's.
    hires: bool = False
    hires_scale: float = 2.0
    hires_resize_w: int = 0
    hires_resize_h: int = 0
    hires_upscaler: str = "Latent"
    hires_steps: int = 0
    hires_sampler: str = ""
    hires_scheduler: str = ""
    hires_prompt: str = ""
    hires_negative_prompt: str = ""
    # CFG scale of the hires pass (A1111/Forge "Hires CFG Scale"); 0 = the first pass's cfg_scale.
    hires_cfg_scale: float = 0.0
    # Another checkpoint for the hires pass (A1111's "Hires checkpoint"): a path like `model`, "" = the
    # same checkpoint; it must share the model's latent space (engine/hires_checkpoint.py). Its hash is
    # filled in by the engine, like model_hash.
    hires_checkpoint: str = ""
    hires_checkpoint_hash: str = ""
    # Tiled VAE (vae_tiles.py): "auto" (tiles when large or short of memory), "on" or "off" (job_size.py's
    # TILED_VAE_MODES). The pixels equal the untiled ones within float rounding, so it is not written to PNGs.
    tiled_vae: str = "auto"
    # ControlNet units (ControlUnit above), applied together; () = none.
    control_units: tuple[ControlUnit, ...] = ()

    @property
    def mode(self) -> str:
        if self.init_image is None:
            return "txt2img"
        return "inpaint" if self.mask is not None else "img2img"

    @property
    def seed_resize_from(self) -> tuple[int, int] | None:
        """(width, height) the noise is drawn at, or None when off (A1111: both must be set)."""
        if self.seed_resize_from_w > 0 and self.seed_resize_from_h > 0:
            return self.seed_resize_from_w, self.seed_resize_from_h
        return None

    def image_requests(self, count: int) -> list[GenerationRequest]:
        """One batch-of-one request per image, each re-running to that image's pixels."""
        return [self.replace(seed=seed, subseed=subseed, batch_size=1)
                for seed, subseed in batch_seeds(self.seed, self.subseed, self.subseed_strength, count)]

    def replace(self, **changes: Any) -> GenerationRequest:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class StepInfo:
    """One sampler step as seen by progress and preview callbacks: plain data, no tensors.

    `step` (0-based) and `total` count over the whole job, across all its passes; `pass_name` says which
    pass the step belongs to ("first", later "hires", ...). `preview` is set when the engine made a preview
    image for this step. `message`, when set, says what the job does between steps (loading a hires
    checkpoint); `step` is then the last step done.
    """

    step: int
    total: int
    sigma: float
    preview: Image.Image | None = field(default=None, repr=False)
    pass_name: str = "first"
    message: str = ""


@dataclass(frozen=True)
class GenerationResult:
    """Images and the exact parameters that made them: one request per image (seed, seed+1, ...)."""

    images: list[Image.Image]
    requests: list[GenerationRequest]
    model_name: str = ""
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
