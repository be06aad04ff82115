"""Checking a request before any work starts: every bad parameter gets a message that says what to change."""

from __future__ import annotations

from sdstudio.engine.errors import RequestError
from sdstudio.engine.extra_networks import tag_spans
from sdstudio.engine.hires import check_hires
from sdstudio.engine.job_size import TILED_VAE_MODES
from sdstudio.engine.names import canonical_sampler, canonical_scheduler
from sdstudio.engine.prompt_schedule import texts
from sdstudio.engine.request import MAX_SEED, GenerationRequest
from sdstudio.engine.walk import blend_text

MAX_SIDE = 4096
# Prompt and negative prompt together stay well inside the 1 MiB text chunk readers accept (history/png.py).
MAX_TEXT_BYTES = 256 * 1024


def validate(req: GenerationRequest, multiple: int = 8) -> GenerationRequest:
    """Return the request with sampler/schedule names made canonical; raise RequestError otherwise."""
    check_side("width", req.width, multiple)
    check_side("height", req.height, multiple)
    return check_hires(validate_settings(req), multiple, MAX_SIDE)


def check_side(side: str, value, multiple: int = 8) -> None:
    """`multiple` is the model's latent factor; 1 checks only the range (before the model is known)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < multiple or value > MAX_SIDE:
        raise RequestError(f"{side} {value} is out of range: use {multiple}..{MAX_SIDE} pixels")
    if value % multiple:
        lower = value - value % multiple
        raise RequestError(f"{side} {value} is not a multiple of {multiple} (the model's latent factor); "
                           f"use {lower} or {lower + multiple}")


def validate_settings(req: GenerationRequest) -> GenerationRequest:
    """Everything `validate` checks except the image size, which depends on the model: callers that do not
    know the model yet (the CLI before it loads one) check the rest first."""
    for name, text in (("prompt", req.prompt), ("negative prompt", req.negative_prompt),
                       ("blend prompt", req.blend_prompt)):
        check_text(name, text)
    if not 0.0 <= float(req.blend_strength) <= 1.0:
        raise RequestError(f"blend strength {req.blend_strength} is out of range: use 0..1")
    if tag_spans(req.blend_prompt):
        raise RequestError("the blend prompt cannot hold <lora:…> tags: put them in the prompt, they apply to the "
                           "whole job")
    _range("steps", req.steps, 1, 500)
    # prompt editing: a hostile prompt (brackets nested too deep, a step that is no number) fails here
    texts(req.prompt, req.steps)
    texts(req.negative_prompt, req.steps, split=False)
    if req.blend_strength:
        blend_text(req.blend_prompt, req.steps)  # one point to move towards: no editing, alternation or AND
    if req.hires:
        check_hires_prompts(req)
    _range("batch size", req.batch_size, 1, 64)
    _range("clip skip", req.clip_skip, 1, 12)
    _range("mask blur", req.mask_blur, 0, 256)
    _range("only-masked padding", req.only_masked_padding, 0, MAX_SIDE)
    if not isinstance(req.seed, int) or isinstance(req.seed, bool) or not 0 <= req.seed <= MAX_SEED:
        raise RequestError(f"seed {req.seed} is out of range: use 0..{MAX_SEED}")
    check_variation(req)
    if not 0.0 <= float(req.cfg_scale) <= 100.0:
        raise RequestError(f"CFG scale {req.cfg_scale} is out of range: use 0..100 (typical 5-9; 1 for turbo/LCM)")
    if not 0.0 <= float(req.hires_cfg_scale) <= 100.0:
        raise RequestError(f"hires CFG scale {req.hires_cfg_scale} is out of range: use 0..100 (0: the same as "
                           "the CFG scale)")
    try:
        sampler, legacy_schedule = canonical_sampler(req.sampler)
        scheduler = canonical_scheduler(legacy_schedule or req.scheduler)
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    if req.tiled_vae not in TILED_VAE_MODES:
        raise RequestError(f"tiled VAE {req.tiled_vae!r} must be one of {', '.join(TILED_VAE_MODES)}")
    if req.prediction not in ("", "eps", "v"):
        raise RequestError(f"prediction {req.prediction!r} must be eps or v (or empty to detect)")
    if req.mask is not None and req.init_image is None:
        raise RequestError("a mask needs an image to inpaint: give an init image too")
    if req.init_image is not None:
        if not 0.0 < float(req.strength) <= 1.0:
            raise RequestError(f"strength {req.strength} is out of range: use a value in (0, 1]")
        if min(req.init_image.size) < 1:
            raise RequestError("the init image is empty")
    if req.mask is not None and req.mask.size != req.init_image.size:
        raise RequestError(f"the mask is {req.mask.size[0]}x{req.mask.size[1]} but the image is "
                           f"{req.init_image.size[0]}x{req.init_image.size[1]}: they must match")
    return check_hires(req.replace(sampler=sampler, scheduler=scheduler), 8, MAX_SIDE)


def check_hires_prompts(req: GenerationRequest) -> None:
    for name, text in (("hires prompt", req.hires_prompt), ("hires negative prompt", req.hires_negative_prompt)):
        check_text(name, text)
    if tag_spans(req.hires_prompt) or tag_spans(req.hires_negative_prompt):
        raise RequestError("the hires prompt cannot hold <lora:…> tags: put them in the prompt, they apply to the "
                           "whole job")
    texts(req.hires_prompt, req.steps)
    texts(req.hires_negative_prompt, req.steps, split=False)


def check_variation(req: GenerationRequest) -> None:
    """Variation seed and seed resize (A1111's "Extra" seed options)."""
    if not isinstance(req.subseed, int) or isinstance(req.subseed, bool) or not 0 <= req.subseed <= MAX_SEED:
        raise RequestError(f"variation seed {req.subseed} is out of range: use 0..{MAX_SEED}")
    strength = req.subseed_strength
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise RequestError(f"variation strength {strength!r} is out of range: use 0..1 (0 = off)")
    sizes = (req.seed_resize_from_w, req.seed_resize_from_h)
    if sizes == (0, 0):
        return
    for side, value in zip(("width", "height"), sizes, strict=True):
        if not isinstance(value, int) or isinstance(value, bool) or not 8 <= value <= MAX_SIDE:
            raise RequestError(f"seed resize {side} {value!r} is out of range: use 8..{MAX_SIDE} pixels, "
                               "or 0 for both to turn it off")


def _range(name: str, value, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise RequestError(f"{name} {value!r} is out of range: use {lo}..{hi}")


def check_text(name: str, text) -> None:
    """Text that cannot be written as UTF-8 (lone surrogates: bytes a shell passed that are not valid in its
    encoding), or more of it than an image's text chunk holds, would fail only when the image's parameters
    are saved, after the whole job."""
    if not isinstance(text, str):
        raise RequestError(f"the {name} must be text, not {type(text).__name__}")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise RequestError(f"the {name} is not valid text (character {exc.start + 1} is a stray byte, not a "
                           "character): check the terminal's encoding and type it again") from None
    if size > MAX_TEXT_BYTES:
        raise RequestError(f"the {name} is {size // 1024} KiB long; the limit is {MAX_TEXT_BYTES // 1024} KiB "
                           "(an image's parameters must stay readable by other tools)")
