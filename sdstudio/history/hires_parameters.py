"""Hires fix in A1111's infotext (its txt2img `extra_generation_params`): written and read back.

A1111 writes "Hires upscale" (the factor) or "Hires resize" (WxH, when a size was asked), "Hires steps" when
set, "Hires upscaler", and "Hires sampler" / "Hires schedule type" / "Hires prompt" / "Hires negative prompt"
only where they differ from the first pass's; "Denoising strength" is the hires pass's strength and "Size"
stays the first pass's size. "Hires CFG Scale" (Forge and A1111's later versions, `hr_cfg`; Forge writes it
always) is written here only where it differs from "CFG scale". "Hires checkpoint" is written only for another
checkpoint than the first pass's, as A1111's `short_title`: the file's stem and, when known, its short hash in
brackets ("anime_v2 [4c8e2d31fa]"); A1111's own "Use same checkpoint" reads as none. Any hires key read back
turns hires fix on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PureWindowsPath

from sdstudio.engine.errors import RequestError
from sdstudio.engine.names import SCHEDULER_LABELS, canonical_sampler, canonical_scheduler
from sdstudio.engine.request import GenerationRequest
from sdstudio.history import parameters as p

KEYS = ("Hires upscale", "Hires resize", "Hires steps", "Hires upscaler", "Hires sampler", "Hires schedule type",
        "Hires prompt", "Hires negative prompt", "Hires CFG Scale", "Hires checkpoint")
SAME_CHECKPOINT = "Use same checkpoint"  # A1111's choice (and value) for none
_SHORT_TITLE = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]$")


def checkpoint_name(path: str) -> str:
    """A checkpoint's name as A1111 writes it: the file name without folders and without a checkpoint suffix
    (only those: "v1.5-pruned" keeps its dot)."""
    name = PureWindowsPath(path).name  # a path from either system
    for suffix in (".safetensors", ".ckpt", ".pt"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def checkpoint_title(path: str, short_hash: str) -> str:
    """A1111's short_title of a checkpoint: its name, then " [hash]" when the hash is known."""
    name = checkpoint_name(path)
    return f"{name} [{short_hash}]" if short_hash else name


def parse_checkpoint_title(text: str) -> tuple[str, str]:
    """(name, hash) from a "Hires checkpoint" value; ("", "") for A1111's "Use same checkpoint"."""
    text = text.strip()
    if not text or text == SAME_CHECKPOINT:
        return "", ""
    match = _SHORT_TITLE.match(text)
    if match is None:
        return checkpoint_name(text), ""
    return checkpoint_name(match.group("name")), match.group("hash").lower()


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
    if request.hires_checkpoint:
        fields["Hires checkpoint"] = checkpoint_title(request.hires_checkpoint, request.hires_checkpoint_hash)
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
    checkpoint, checkpoint_hash = parse_checkpoint_title(params.get("Hires checkpoint", ""))
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
        # A name, resolved to a file in the models folder by the reader (file_parameters.py), like "Model".
        "hires_checkpoint": checkpoint,
        "hires_checkpoint_hash": checkpoint_hash,
    }
