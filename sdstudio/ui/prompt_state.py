"""What the prompt panel edits, as a plain dataclass, and how it becomes immutable generation requests."""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from sdstudio.engine import families
from sdstudio.engine.request import MAX_SEED, RANDOM_SEED, GenerationRequest

# Width x height presets per model family (read-only view of families.FAMILIES); the first is the default.
SIZE_PRESETS: dict[str, tuple[tuple[int, int], ...]] = {f.name: f.size_presets for f in families.FAMILIES}


_DEFAULTS = GenerationRequest()  # the one set of defaults, shared with `sdstudio generate`


@dataclass
class PromptState:
    """Every value the prompt panel shows. Mutable: the panel edits it; requests are snapshots of it.

    Width and height are the built-in model's size; the panel sets them from the chosen model's presets."""

    prompt: str = _DEFAULTS.prompt
    negative_prompt: str = _DEFAULTS.negative_prompt
    model: str = _DEFAULTS.model  # checkpoint path, "" = the built-in model
    sampler: str = _DEFAULTS.sampler
    scheduler: str = _DEFAULTS.scheduler
    steps: int = _DEFAULTS.steps
    cfg_scale: float = _DEFAULTS.cfg_scale
    seed: int = RANDOM_SEED
    # Variation seed (RANDOM_SEED: drawn per generate, like the seed) and its strength (0 = off); seed resize.
    subseed: int = RANDOM_SEED
    subseed_strength: float = _DEFAULTS.subseed_strength
    seed_resize_from_w: int = _DEFAULTS.seed_resize_from_w
    seed_resize_from_h: int = _DEFAULTS.seed_resize_from_h
    width: int = 64
    height: int = 64
    batch_size: int = _DEFAULTS.batch_size
    batch_count: int = 1
    strength: float = _DEFAULTS.strength
    mask_blur: int = _DEFAULTS.mask_blur
    only_masked: bool = _DEFAULTS.only_masked


def size_presets(family: str) -> tuple[tuple[int, int], ...]:
    """The presets for a family; unknown families get SD 1.x's."""
    known = {f.name: f.size_presets for f in families.FAMILIES}
    return known.get(family, families.SD1.size_presets)


def build_requests(state: PromptState, init_image: Image.Image | None = None, mask: Image.Image | None = None,
                   rng: random.Random | None = None) -> list[GenerationRequest]:
    """One request per batch (batch_count of them), each an independent snapshot.

    Seeds follow A1111: a random base seed is drawn once, batch j starts at base + j * batch_size, so every
    image's seed (base + index) is distinct and reproducible. With a variation strength the seed stays the
    base in every batch and the variation seeds count up instead (request.batch_seeds). The images are
    copied so later edits of the canvas or mask never reach a queued job.
    """
    rng = rng or random.Random()
    base = rng.randrange(MAX_SEED + 1) if state.seed == RANDOM_SEED else state.seed
    vary = state.subseed_strength != 0
    sub_base = 0
    if vary:
        sub_base = rng.randrange(MAX_SEED + 1) if state.subseed == RANDOM_SEED else state.subseed
    init = init_image.copy() if init_image is not None else None
    use_mask = init is not None and mask is not None
    common = GenerationRequest(
        prompt=state.prompt, negative_prompt=state.negative_prompt, model=state.model,
        sampler=state.sampler, scheduler=state.scheduler, steps=state.steps, cfg_scale=state.cfg_scale,
        width=state.width, height=state.height, batch_size=state.batch_size,
        init_image=init, strength=state.strength if init is not None else 0.75,
        mask=mask.copy() if use_mask else None, mask_blur=state.mask_blur,
        only_masked=state.only_masked and use_mask,
        subseed_strength=state.subseed_strength, seed_resize_from_w=state.seed_resize_from_w,
        seed_resize_from_h=state.seed_resize_from_h,
    )
    step = state.batch_size
    return [common.replace(seed=base if vary else (base + j * step) % (MAX_SEED + 1),
                           subseed=(sub_base + j * step) % (MAX_SEED + 1) if vary else 0,
                           init_image=init.copy() if init is not None else None,
                           mask=common.mask.copy() if common.mask is not None else None)
            for j in range(state.batch_count)]


def apply_request(state: PromptState, request: GenerationRequest) -> None:
    """Set the panel values that reproduce `request` (loading parameters from history), in place."""
    for name in ("prompt", "negative_prompt", "model", "sampler", "scheduler", "steps", "cfg_scale", "seed",
                 "width", "height", "batch_size", "strength", "mask_blur", "only_masked", "subseed",
                 "subseed_strength", "seed_resize_from_w", "seed_resize_from_h"):
        setattr(state, name, getattr(request, name))
