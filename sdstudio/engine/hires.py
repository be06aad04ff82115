"""Hires fix's rules, as AUTOMATIC1111 applies them (`StableDiffusionProcessingTxt2Img`: calculate_target_resolution,
sample_hr_pass; `sd_samplers_common.setup_img2img_steps`); torch-free, so the UI and CLI check a request with them.

- Size: by a factor, `int(width * scale)` x `int(height * scale)`; or to W x H: one side 0 keeps the aspect
  (`resize_w * height // width`), both set covers W x H at the first pass's aspect and the upscaled latent is
  cropped to W x H, `truncate // 2` off the left/top and the rest off the right/bottom (in latent cells).
- Steps: A1111 always hands the hires pass a step count, N = hires steps or the first pass's steps, so its
  schedule is `int(N / min(strength, 0.999))` steps long and the last N of them run.
- Noise: drawn from the same seeds (and variation seed, seed resize) at the hires latent size.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdstudio.engine.errors import RequestError
from sdstudio.engine.names import canonical_sampler, canonical_scheduler
from sdstudio.engine.request import GenerationRequest

MAX_HIRES_SCALE = 8.0


@dataclass(frozen=True)
class HiresSize:
    """The size the first pass is upscaled to (`upscale_w` x `upscale_h`, pixels) and the latent crop that
    leaves the hires pass's `width` x `height`; `crop_x`/`crop_y` are the latent cells cut in all."""

    upscale_w: int
    upscale_h: int
    crop_x: int
    crop_y: int
    f: int

    @property
    def latent_box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the kept latent cells within the upscaled latent."""
        w, h = self.upscale_w // self.f, self.upscale_h // self.f
        return (self.crop_x // 2, self.crop_y // 2, w - (self.crop_x + 1) // 2, h - (self.crop_y + 1) // 2)

    @property
    def width(self) -> int:
        left, _, right, _ = self.latent_box
        return (right - left) * self.f

    @property
    def height(self) -> int:
        _, top, _, bottom = self.latent_box
        return (bottom - top) * self.f


def hires_size(req: GenerationRequest, f: int = 8) -> HiresSize:
    """A1111's calculate_target_resolution for the request (`f`: the model's latent factor)."""
    w, h = req.width, req.height
    rw, rh = req.hires_resize_w, req.hires_resize_h
    if rw == 0 and rh == 0:
        return HiresSize(int(w * req.hires_scale), int(h * req.hires_scale), 0, 0, f)
    if rh == 0:
        return HiresSize(rw, rw * h // w, 0, 0, f)
    if rw == 0:
        return HiresSize(rh * w // h, rh, 0, 0, f)
    if w / h < rw / rh:
        up_w, up_h = rw, rw * h // w
    else:
        up_w, up_h = rh * w // h, rh
    return HiresSize(up_w, up_h, (up_w - rw) // f, (up_h - rh) // f, f)


def hires_steps(req: GenerationRequest) -> tuple[int, int]:
    """(schedule length, steps that run): the hires pass runs the last `run` steps of a `length`-step schedule."""
    run = req.hires_steps or req.steps
    return int(run / min(float(req.strength), 0.999)), run


def check_hires(req: GenerationRequest, multiple: int = 8, max_side: int = 8192) -> GenerationRequest:
    """The request with its hires sampler/schedule names made canonical; a hires request that cannot run is
    refused before any work (one-line reasons). The upscaler's name is checked by upscale.check_upscaler."""
    if not req.hires:
        return req
    if req.init_image is not None:
        raise RequestError("hires fix is a txt2img second pass: turn it off for img2img and inpainting (or "
                           "upscale the image from the gallery)")
    if not 0.0 < float(req.strength) <= 1.0:
        raise RequestError(f"denoising strength {req.strength} is out of range for hires fix: use a value in (0, 1]")
    scale = req.hires_scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 1.0 <= scale <= MAX_HIRES_SCALE:
        raise RequestError(f"hires scale {scale!r} is out of range: use 1..{MAX_HIRES_SCALE:g}")
    for side, value in (("width", req.hires_resize_w), ("height", req.hires_resize_h)):
        if not isinstance(value, int) or isinstance(value, bool) or not (value == 0 or multiple <= value <= max_side):
            raise RequestError(f"hires resize {side} {value!r} is out of range: use {multiple}..{max_side} "
                               "pixels, or 0")
    if not isinstance(req.hires_steps, int) or isinstance(req.hires_steps, bool) or not 0 <= req.hires_steps <= 500:
        raise RequestError(f"hires steps {req.hires_steps!r} is out of range: use 0..500 (0 = same as steps)")
    size = hires_size(req, multiple)
    for side, value in (("width", size.upscale_w), ("height", size.upscale_h)):
        if value % multiple:
            lower = value - value % multiple
            raise RequestError(f"hires fix would upscale to a {side} of {value} px, not a multiple of {multiple} "
                               f"(the model's latent factor): choose a scale or size that gives {lower} or "
                               f"{lower + multiple}")
    if max(size.upscale_w, size.upscale_h) > max_side:
        raise RequestError(f"hires fix would upscale to {size.upscale_w}x{size.upscale_h} px; the limit is "
                           f"{max_side} px a side")
    if size.width < multiple or size.height < multiple:
        raise RequestError("hires fix would crop the image to nothing: check the hires resize width and height")
    if not isinstance(req.hires_upscaler, str) or not req.hires_upscaler:
        raise RequestError("hires fix needs an upscaler: Latent, Lanczos, Nearest or a model's name")
    try:
        sampler, legacy_schedule = canonical_sampler(req.hires_sampler) if req.hires_sampler else ("", None)
        scheduler = legacy_schedule or req.hires_scheduler
        scheduler = canonical_scheduler(scheduler) if scheduler else ""
    except ValueError as exc:
        raise RequestError(f"hires: {exc}") from None
    return req.replace(hires_sampler=sampler, hires_scheduler=scheduler)
