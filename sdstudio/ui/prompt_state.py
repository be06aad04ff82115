"""What the prompt panel edits, as a plain dataclass, and how it becomes immutable generation requests."""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from sdstudio.engine import families
from sdstudio.engine.request import MAX_SEED, RANDOM_SEED, ControlUnit, GenerationRequest

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
    draft_decode: bool = _DEFAULTS.draft_decode
    # Hires fix (txt2img only): its own denoising strength here (A1111 shows one per tab); the request has one.
    hires: bool = _DEFAULTS.hires
    hires_scale: float = _DEFAULTS.hires_scale
    hires_resize_w: int = _DEFAULTS.hires_resize_w
    hires_resize_h: int = _DEFAULTS.hires_resize_h
    hires_upscaler: str = _DEFAULTS.hires_upscaler
    hires_steps: int = _DEFAULTS.hires_steps
    hires_strength: float = 0.7  # A1111's hires default
    hires_sampler: str = _DEFAULTS.hires_sampler
    hires_scheduler: str = _DEFAULTS.hires_scheduler
    hires_prompt: str = _DEFAULTS.hires_prompt
    hires_negative_prompt: str = _DEFAULTS.hires_negative_prompt
    hires_cfg_scale: float = _DEFAULTS.hires_cfg_scale
    hires_checkpoint: str = _DEFAULTS.hires_checkpoint  # a checkpoint's path, "" = "Use same checkpoint"


# The "Fast" preset for LCM / LCM-LoRA / turbo-style models: the LCM sampler, 4 steps, CFG 1 (the UNet then
# skips the negative prompt, half the work per step), ComfyUI's LCM schedule (its LCMScheduler node is the
# sgm_uniform BasicScheduler), and the final image decoded by the tiny VAE, which at 4 steps otherwise costs
# more than the sampling.
FAST_PRESET: dict[str, object] = {"sampler": "LCM", "scheduler": "sgm_uniform", "steps": 4, "cfg_scale": 1.0,
                                  "draft_decode": True}
_FAST_LABELS = {"sampler": "sampler", "scheduler": "schedule", "steps": "steps", "cfg_scale": "CFG",
                "draft_decode": "draft decode"}


_HIRES_FIELDS = ("hires_scale", "hires_resize_w", "hires_resize_h", "hires_upscaler", "hires_steps", "hires_sampler",
                 "hires_scheduler", "hires_prompt", "hires_negative_prompt", "hires_cfg_scale",
                 "hires_checkpoint")


def apply_fast_preset(state: PromptState) -> dict[str, object]:
    """Set the Fast preset's values; returns the values they replace (to undo it)."""
    previous = {name: getattr(state, name) for name in FAST_PRESET}
    for name, value in FAST_PRESET.items():
        setattr(state, name, value)
    return previous


def fast_differences(state: PromptState) -> list[str]:
    """What differs from the Fast preset, as "steps 8 (preset 4)"; [] when the state is the preset exactly."""
    return [f"{_FAST_LABELS[name]} {_shown(getattr(state, name))} (preset {_shown(value)})"
            for name, value in FAST_PRESET.items() if getattr(state, name) != value]


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def size_presets(family: str) -> tuple[tuple[int, int], ...]:
    """The presets for a family; unknown families get SD 1.x's."""
    known = {f.name: f.size_presets for f in families.FAMILIES}
    return known.get(family, families.SD1.size_presets)


def build_requests(state: PromptState, init_image: Image.Image | None = None, mask: Image.Image | None = None,
                   rng: random.Random | None = None,
                   units: tuple[ControlUnit, ...] = ()) -> list[GenerationRequest]:
    """One request per batch (batch_count of them), each an independent snapshot.

    Seeds follow A1111: a random base seed is drawn once, batch j starts at base + j * batch_size, so every
    image's seed (base + index) is distinct and reproducible. With a variation strength the seed stays the
    base in every batch and the variation seeds count up instead (request.batch_seeds). The images are
    copied so later edits of the canvas or mask never reach a queued job. `units` are the control layers'
    ControlNet units (ui/control_state.build_units), their images copied per request too.
    """
    rng = rng or random.Random()
    base = rng.randrange(MAX_SEED + 1) if state.seed == RANDOM_SEED else state.seed
    vary = state.subseed_strength != 0
    sub_base = 0
    if vary:
        sub_base = rng.randrange(MAX_SEED + 1) if state.subseed == RANDOM_SEED else state.subseed
    init = init_image.copy() if init_image is not None else None
    use_mask = init is not None and mask is not None
    hires = state.hires and init is None
    strength = state.strength if init is not None else state.hires_strength if hires else _DEFAULTS.strength
    common = GenerationRequest(
        prompt=state.prompt, negative_prompt=state.negative_prompt, model=state.model,
        sampler=state.sampler, scheduler=state.scheduler, steps=state.steps, cfg_scale=state.cfg_scale,
        width=state.width, height=state.height, batch_size=state.batch_size,
        init_image=init, strength=strength,
        mask=mask.copy() if use_mask else None, mask_blur=state.mask_blur,
        only_masked=state.only_masked and use_mask, draft_decode=state.draft_decode,
        subseed_strength=state.subseed_strength, seed_resize_from_w=state.seed_resize_from_w,
        seed_resize_from_h=state.seed_resize_from_h, hires=hires, control_units=units,
        **{name: getattr(state, name) for name in _HIRES_FIELDS},
    )
    step = state.batch_size
    return [common.replace(seed=base if vary else (base + j * step) % (MAX_SEED + 1),
                           subseed=(sub_base + j * step) % (MAX_SEED + 1) if vary else 0,
                           init_image=init.copy() if init is not None else None,
                           mask=common.mask.copy() if common.mask is not None else None,
                           control_units=tuple(_copied(u) for u in units))
            for j in range(state.batch_count)]


def _copied(unit: ControlUnit) -> ControlUnit:
    return unit.replace(image=unit.image.copy() if unit.image is not None else None)


def apply_request(state: PromptState, request: GenerationRequest) -> None:
    """Set the panel values that reproduce `request` (loading parameters from history), in place."""
    for name in ("prompt", "negative_prompt", "model", "sampler", "scheduler", "steps", "cfg_scale", "seed",
                 "width", "height", "batch_size", "strength", "mask_blur", "only_masked", "draft_decode",
                 "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h"):
        setattr(state, name, getattr(request, name))
    state.hires = request.hires
    if request.hires:
        for name in _HIRES_FIELDS:
            setattr(state, name, getattr(request, name))
        state.hires_strength = request.strength
