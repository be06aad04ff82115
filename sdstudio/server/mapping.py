"""A1111's txt2img / img2img bodies -> GenerationRequests, one per batch of the body's `n_iter`.

Field names and defaults are A1111's (modules/api/models.py, modules/processing.py): a client that leaves a
field out gets what A1111 would do (50 steps, CFG 7, Euler), not SD Studio's defaults; a size left out is
the model's native one (A1111's 512 is SD 1.x's native size). A field we
cannot honour is refused with its name rather than dropped: a client asking for face restoration, tiling, a
script, another inpainting fill or sampler noise settings other than A1111's defaults gets a 4xx saying so.
The result is checked by the engine's own validate; sizes against the model happen in the app (needs its
header).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import MAX_SEED, RANDOM_SEED, GenerationRequest, batch_seeds
from sdstudio.engine.validate import check_variation
from sdstudio.server.body import Body, decode_image, shown
from sdstudio.server.checkpoints import Checkpoint, Checkpoints
from sdstudio.server.control import control_units

MAX_N_ITER = 100
MAX_BATCH = 64  # validate's limit too
# A1111's defaults for the fields we read (StableDiffusionProcessing and the API models).
COMMON_DEFAULTS: dict[str, Any] = {
    "prompt": "", "negative_prompt": "", "styles": [], "seed": -1, "subseed": -1, "subseed_strength": 0.0,
    "seed_resize_from_h": -1, "seed_resize_from_w": -1, "sampler_name": None, "scheduler": None,
    "batch_size": 1, "n_iter": 1, "steps": 50, "cfg_scale": 7.0, "width": None, "height": None,
    "restore_faces": None, "tiling": None, "eta": None, "s_churn": 0.0, "s_tmax": None, "s_tmin": 0.0,
    "s_noise": 1.0, "override_settings": None, "override_settings_restore_afterwards": True,
    "sampler_index": "Euler", "script_name": None, "script_args": [], "send_images": True,
    "save_images": False, "alwayson_scripts": {},
}
TXT2IMG_DEFAULTS: dict[str, Any] = COMMON_DEFAULTS | {
    "enable_hr": False, "denoising_strength": 0.75, "firstphase_width": 0, "firstphase_height": 0,
    "hr_scale": 2.0, "hr_upscaler": None, "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0,
    "hr_checkpoint_name": None, "hr_sampler_name": None, "hr_scheduler": None, "hr_prompt": "",
    "hr_negative_prompt": "",
}
IMG2IMG_DEFAULTS: dict[str, Any] = COMMON_DEFAULTS | {
    "init_images": None, "resize_mode": 0, "denoising_strength": 0.75, "image_cfg_scale": None, "mask": None,
    "mask_blur": 4, "inpainting_fill": 0, "inpaint_full_res": True, "inpaint_full_res_padding": 0,
    "inpainting_mask_invert": 0, "initial_noise_multiplier": None, "include_init_images": False,
}
# A1111's sampler-noise settings at which our samplers are A1111's (k-diffusion's defaults).
_NOISE_DEFAULTS = {"eta": (1.0,), "s_churn": (0.0,), "s_tmin": (0.0,), "s_noise": (1.0,),
                   "s_tmax": (0.0, float("inf"))}
_SAME = ("", "use same sampler", "use same scheduler", "use same checkpoint")
OVERRIDES = ("sd_model_checkpoint", "CLIP_stop_at_last_layers", "sd_vae")
RESIZE_JUST, RESIZE_CROP = 0, 1
# A width or height left out: the model's native size (A1111's 512 is SD 1.x's), filled in by generation.py
# once the model's header is read.
NOT_GIVEN = 0
FILL_ORIGINAL = 1


@dataclass
class Mapped:
    """What a body asks for: one request per batch (n_iter), the model, whether to send the images, and the
    body with A1111's defaults filled in (the response's `parameters`)."""

    requests: list[GenerationRequest]
    checkpoint: Checkpoint
    send_images: bool
    echo: dict[str, Any] = field(default_factory=dict)
    denoising_strength: float | None = None


def txt2img(data: Any, current: Checkpoint, checkpoints: Checkpoints) -> Mapped:
    body = Body(data)
    base, checkpoint = _common(body, current, checkpoints)
    if body.flag("enable_hr"):
        base = base.replace(hires=True, strength=body.number("denoising_strength", 0.75), **_hires(body))
    mapped = _batches(body, base, checkpoint, TXT2IMG_DEFAULTS)
    mapped.denoising_strength = base.strength if base.hires else None
    return mapped


def img2img(data: Any, current: Checkpoint, checkpoints: Checkpoints) -> Mapped:
    body = Body(data)
    base, checkpoint = _common(body, current, checkpoints)
    images = body.items("init_images")
    if len(images) != 1:
        raise RequestError(f"init_images must hold one image, got {len(images)}")
    init = decode_image(images[0], "init_images[0]").convert("RGB")
    mask = _mask(body, init) if body.has("mask") else None
    if NOT_GIVEN in (base.width, base.height):  # the init image's own size, as A1111's UI starts from
        base = base.replace(width=base.width or init.size[0], height=base.height or init.size[1])
    init, mask = _resized(body.integer("resize_mode", 0), init, mask, base.width, base.height)
    initial_noise = body.number("initial_noise_multiplier", 1.0)
    if initial_noise != 1.0:
        raise RequestError(f"initial_noise_multiplier {initial_noise:g} is not available: send 1")
    base = base.replace(init_image=init, mask=mask, strength=body.number("denoising_strength", 0.75),
                        mask_blur=body.integer("mask_blur", 4),
                        only_masked=body.flag("inpaint_full_res", True),
                        only_masked_padding=body.integer("inpaint_full_res_padding", 0))
    mapped = _batches(body, base, checkpoint, IMG2IMG_DEFAULTS)
    mapped.echo.update(init_images=None, mask=None)  # as A1111: the response does not echo the images
    mapped.denoising_strength = base.strength
    return mapped


def _common(body: Body, current: Checkpoint,
            checkpoints: Checkpoints) -> tuple[GenerationRequest, Checkpoint]:
    _refuse_unsupported(body)
    overrides = body.mapping("override_settings")
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise RequestError(f"override_settings {shown(unknown[0])} is not available here; these are: "
                           f"{', '.join(OVERRIDES)}")
    named = overrides.get("sd_model_checkpoint")
    checkpoint = checkpoints.find(named) if named else current
    if str(overrides.get("sd_vae", "Automatic")).lower() not in ("automatic", "none"):
        raise RequestError("override_settings sd_vae: only Automatic (the checkpoint's own VAE) is available")
    clip_skip = Body(overrides, "override_settings").integer("CLIP_stop_at_last_layers", 1)
    sampler = body.text("sampler_name") or body.text("sampler_index", "Euler")
    resize = (body.integer("seed_resize_from_w", -1), body.integer("seed_resize_from_h", -1))
    req = GenerationRequest(
        prompt=body.text("prompt"), negative_prompt=body.text("negative_prompt"),
        steps=body.integer("steps", 50), cfg_scale=body.number("cfg_scale", 7.0), sampler=sampler,
        scheduler=body.text("scheduler", "Automatic") or "Automatic", seed=_seed(body, "seed"),
        subseed=_seed(body, "subseed"), subseed_strength=body.number("subseed_strength", 0.0),
        width=body.integer("width", NOT_GIVEN), height=body.integer("height", NOT_GIVEN),
        batch_size=body.integer("batch_size", 1), clip_skip=clip_skip, model=checkpoint.engine_path,
        control_units=control_units(body.mapping("alwayson_scripts")),
    )
    if min(resize) > 0:  # A1111: -1 (or 0) for either side turns it off
        req = req.replace(seed_resize_from_w=resize[0], seed_resize_from_h=resize[1])
    return req, checkpoint


def _refuse_unsupported(body: Body) -> None:
    for key in ("restore_faces", "tiling"):
        if body.flag(key):
            raise RequestError(f"{key} is not available in SD Studio: send false")
    if body.items("styles"):
        raise RequestError("styles are not stored on this server: put the style's text in the prompt")
    if body.text("script_name"):
        raise RequestError(f"script {shown(body.text('script_name'))} is not available here (no scripts are)")
    for key, allowed in _NOISE_DEFAULTS.items():
        if body.has(key) and body.number(key, allowed[0]) not in allowed:
            raise RequestError(f"{key} {body.number(key, 0):g} is not available: SD Studio's samplers use "
                               f"A1111's default ({allowed[0]:g}); leave it out")


def _seed(body: Body, key: str) -> int:
    seed = body.integer(key, RANDOM_SEED)
    if seed == RANDOM_SEED:
        return random.randrange(MAX_SEED + 1)
    return seed  # out-of-range seeds are refused by validate, with the range


def _hires(body: Body) -> dict[str, Any]:
    checkpoint = body.text("hr_checkpoint_name")
    if checkpoint.lower() not in _SAME:
        raise RequestError("hr_checkpoint_name: the hires pass uses the same checkpoint here; leave it out")
    sampler, scheduler = body.text("hr_sampler_name"), body.text("hr_scheduler")
    return dict(
        hires_scale=body.number("hr_scale", 2.0), hires_upscaler=body.text("hr_upscaler") or "Latent",
        hires_steps=body.integer("hr_second_pass_steps", 0), hires_resize_w=body.integer("hr_resize_x", 0),
        hires_resize_h=body.integer("hr_resize_y", 0),
        hires_sampler="" if sampler.lower() in _SAME else sampler,
        hires_scheduler="" if scheduler.lower() in _SAME else scheduler,
        hires_prompt=body.text("hr_prompt"), hires_negative_prompt=body.text("hr_negative_prompt"),
        hires_cfg_scale=body.number("hr_cfg", 0.0),  # Forge's field; A1111 has none (0 = the first pass's)
    )


def _mask(body: Body, init: Image.Image) -> Image.Image:
    """The mask as A1111 reads it: an image with transparency is masked by its alpha, any other by its
    lightness (white = repaint); inpainting_mask_invert swaps them."""
    fill = body.integer("inpainting_fill", 0)
    if fill != FILL_ORIGINAL:
        raise RequestError(f"inpainting_fill {fill} is not available: SD Studio inpaints from the original "
                           f"pixels; send inpainting_fill {FILL_ORIGINAL} (original)")
    mask = decode_image(body.data["mask"], "mask")
    if mask.mode in ("RGBA", "LA") and mask.getchannel("A").getextrema()[0] < 255:
        mask = mask.getchannel("A")
    mask = mask.convert("L")
    if body.flag("inpainting_mask_invert"):
        mask = mask.point(lambda v: 255 - v)
    if mask.size != init.size:
        raise RequestError(f"the mask is {mask.size[0]}x{mask.size[1]} but the init image is "
                           f"{init.size[0]}x{init.size[1]}: they must match")
    return mask


def _resized(mode: int, init: Image.Image, mask: Image.Image | None, width: int, height: int):
    """A1111's resize_mode: 0 stretches the image to the size (done here), 1 covers and crops (the engine's
    own fit); "resize and fill" and the latent modes are refused unless the image already has the size."""
    if init.size == (width, height) or mode == RESIZE_CROP:
        return init, mask
    if mode != RESIZE_JUST:
        raise RequestError(f"resize_mode {mode} is not available: send 0 (just resize) or 1 (crop and "
                           "resize), or an init image of the requested width and height")
    if not (8 <= width <= 8192 and 8 <= height <= 8192):
        raise RequestError(f"width x height {width}x{height} is out of range")  # before resizing to it
    stretched = init.resize((width, height), Image.Resampling.LANCZOS)
    return stretched, None if mask is None else mask.resize((width, height), Image.Resampling.LANCZOS)


def _batches(body: Body, base: GenerationRequest, checkpoint: Checkpoint, defaults: dict) -> Mapped:
    """One request per batch: batch n starts n * batch_size seeds on (A1111's all_seeds/all_subseeds)."""
    n_iter = body.integer("n_iter", 1)
    if not 1 <= n_iter <= MAX_N_ITER:
        raise RequestError(f"n_iter {n_iter} is out of range: use 1..{MAX_N_ITER}")
    # The seeds and batch size are checked before they are counted on (the rest once the size is known).
    check_variation(base)
    if not isinstance(base.seed, int) or not 0 <= base.seed <= MAX_SEED:
        raise RequestError(f"seed {base.seed} is out of range: use 0..{MAX_SEED}, or -1 for a random one")
    size = base.batch_size
    if not 1 <= size <= MAX_BATCH:
        raise RequestError(f"batch_size {size} is out of range: use 1..{MAX_BATCH}")
    seeds = batch_seeds(base.seed, base.subseed, base.subseed_strength, n_iter * size)
    requests = [base.replace(seed=seeds[n * size][0], subseed=seeds[n * size][1]) for n in range(n_iter)]
    echo = dict(defaults) | dict(body.data)
    return Mapped(requests, checkpoint, body.flag("send_images", True), echo)
