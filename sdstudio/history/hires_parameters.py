"""Hires fix in A1111's infotext (its txt2img `extra_generation_params`): written and read back.

A1111 writes "Hires upscale" (the factor) or "Hires resize" (WxH, when a size was asked), "Hires steps" when
set, "Hires upscaler", and "Hires sampler" / "Hires schedule type" / "Hires prompt" / "Hires negative prompt"
only where they differ from the first pass's; "Denoising strength" is the hires pass's strength and "Size"
stays the first pass's size. "Hires CFG Scale" (Forge and A1111's later versions, `hr_cfg`; Forge writes it
always) is written here only where it differs from "CFG scale". Any hires key read back turns hires fix on.
"""

from __future__ import annotations

from collections.abc import Mapping

from sdstudio.engine.errors import RequestError
from sdstudio.engine.names import SCHEDULER_LABELS, canonical_sampler, canonical_scheduler
from sdstudio.engine.request import GenerationRequest
from sdstudio.history import parameters as p

KEYS = ("Hires upscale", "Hires resize", "Hires steps", "Hires upscaler", "Hires sampler", "Hires schedule type",
        "Hires prompt", "Hires negative prompt", "Hires CFG Scale")


def hires_fields(request: GenerationRequest) -> dict[str, object]:
    if not request.hires:
        return {}
    fields: dict[str, object] = {}
    if request.hires_resize_w or request.hires_resize_h:
        fields["Hires resize"] = f"{request.hires_resize_w}x{request.hires_resize_h}"
    else:
        fields["Hires upscale"] = p._number(request.hires_scale)
    if request.hires_steps:
        fields["Hires steps"] = request.hires_steps
    fields["Hires upscaler"] = request.hires_upscaler
    if request.hires_sampler and request.hires_sampler != request.sampler:
        fields["Hires sampler"] = request.hires_sampler
    if request.hires_scheduler and request.hires_scheduler != request.scheduler:
        fields["Hires schedule type"] = SCHEDULER_LABELS.get(request.hires_scheduler, request.hires_scheduler)
    if request.hires_prompt and request.hires_prompt != request.prompt:
        fields["Hires prompt"] = request.hires_prompt
    if request.hires_negative_prompt and request.hires_negative_prompt != request.negative_prompt:
        fields["Hires negative prompt"] = request.hires_negative_prompt
    if request.hires_cfg_scale and request.hires_cfg_scale != request.cfg_scale:
        fields["Hires CFG Scale"] = p._number(request.hires_cfg_scale)
    return fields


def hires_settings(params: Mapping[str, str]) -> dict[str, object]:
    """The request's hires fields from parsed parameters ({} when the image had no hires pass)."""
    if not any(key in params for key in KEYS):
        return {}
    defaults = GenerationRequest()
    resize_w, resize_h = 0, 0
    resize = params.get("Hires resize", "").strip()
    if resize:
        match = p._RESIZE.match(resize)
        if match is None:
            raise RequestError(f"Hires resize must look like 1024x768, got {p._shown(resize)}")
        resize_w, resize_h = p._whole_number(match.group(1)), p._whole_number(match.group(2))
    sampler, schedule = "", ""
    try:
        if params.get("Hires sampler", "").strip():
            sampler, legacy = canonical_sampler(params["Hires sampler"].strip())
            schedule = legacy or ""
        if params.get("Hires schedule type", "").strip():
            schedule = canonical_scheduler(params["Hires schedule type"].strip())
    except ValueError as exc:
        raise RequestError(f"hires: {exc}") from None
    return {
        "hires": True,
        "hires_scale": p._float(params, "Hires upscale", defaults.hires_scale),
        "hires_resize_w": resize_w,
        "hires_resize_h": resize_h,
        "hires_steps": p._int(params, "Hires steps", defaults.hires_steps),
        "hires_upscaler": params.get("Hires upscaler", defaults.hires_upscaler).strip() or defaults.hires_upscaler,
        "hires_sampler": sampler,
        "hires_scheduler": schedule,
        "hires_prompt": params.get("Hires prompt", ""),
        "hires_negative_prompt": params.get("Hires negative prompt", ""),
        "hires_cfg_scale": p._float(params, "Hires CFG Scale", defaults.hires_cfg_scale),
    }
