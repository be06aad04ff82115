"""Response bodies shaped as A1111 shapes them (modules/api/models.py, modules/processing.py Processed.js,
modules/api/api.py progressapi), so clients read them unchanged."""

from __future__ import annotations

import json
import time
from typing import Any

from sdstudio import __version__
from sdstudio.engine.model_files import upscaler_model_names
from sdstudio.engine.names import LATENT_UPSCALERS, PIXEL_UPSCALERS, SAMPLERS, SCHEDULER_LABELS, SCHEDULERS
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.parameters import format_parameters
from sdstudio.server.body import encode_png, image_png
from sdstudio.server.generation import Made
from sdstudio.server.jobs import Progress
from sdstudio.server.mapping import Mapped

VERSION = f"sdstudio-{__version__}"


def generation_response(mapped: Mapped, made: Made) -> dict[str, Any]:
    """`images` (the history PNGs, infotext inside, base64), `parameters` (the body with A1111's defaults),
    `info` (a JSON string, as A1111's Processed.js)."""
    images = [encode_png(path.read_bytes()) for path in made.files] if mapped.send_images else []
    return {"images": images, "parameters": mapped.echo, "info": json.dumps(info(mapped, made))}


def info(mapped: Mapped, made: Made) -> dict[str, Any]:
    requests = made.requests or mapped.requests[:1]
    first: GenerationRequest = requests[0]
    return {
        "prompt": first.prompt, "all_prompts": [r.prompt for r in made.requests],
        "negative_prompt": first.negative_prompt,
        "all_negative_prompts": [r.negative_prompt for r in made.requests],
        "seed": first.seed, "all_seeds": [r.seed for r in made.requests],
        "subseed": first.subseed, "all_subseeds": [r.subseed for r in made.requests],
        "subseed_strength": first.subseed_strength, "width": first.width, "height": first.height,
        "sampler_name": first.sampler, "scheduler": SCHEDULER_LABELS.get(first.scheduler, first.scheduler),
        "cfg_scale": first.cfg_scale, "steps": first.steps, "batch_size": first.batch_size,
        "restore_faces": False, "face_restoration_model": None, "sd_model_name": made.model_name or None,
        "sd_model_hash": first.model_hash or None, "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": first.seed_resize_from_w or -1,
        "seed_resize_from_h": first.seed_resize_from_h or -1,
        "denoising_strength": mapped.denoising_strength, "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": [format_parameters(r, made.model_name) for r in made.requests],
        "styles": [], "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": first.clip_skip,
        "is_using_inpainting_conditioning": False, "version": VERSION, "interrupted": made.interrupted,
    }


def progress_response(p: Progress, skip_current_image: bool = False) -> dict[str, Any]:
    """GET /sdapi/v1/progress: A1111's ProgressResponse; `state.queued` (jobs waiting) is ours."""
    fraction = p.fraction
    elapsed = time.time() - p.started if p.started else 0.0
    eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
    stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(p.started)) if p.started else "0"
    state = {"skipped": False, "interrupted": p.interrupted, "stopping_generation": False, "job": p.job,
             "job_count": p.job_count, "job_timestamp": stamp, "job_no": p.job_no,
             "sampling_step": p.sampling_step, "sampling_steps": p.sampling_steps, "queued": p.queued}
    preview = None if skip_current_image or p.preview is None else image_png(p.preview)
    return {"progress": fraction, "eta_relative": eta, "state": state, "current_image": preview,
            "textinfo": None}


def upscalers() -> list[dict[str, Any]]:
    """GET /sdapi/v1/upscalers (A1111's UpscalerItem): the hires fix's pixel upscalers and model files."""
    rows = [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
            for name in PIXEL_UPSCALERS]
    return rows + [{"name": name, "model_name": name, "model_path": None, "model_url": None, "scale": 4}
                   for name in upscaler_model_names()]


def latent_upscale_modes() -> list[dict[str, str]]:
    """GET /sdapi/v1/latent-upscale-modes."""
    return [{"name": name} for name in LATENT_UPSCALERS]


def samplers() -> list[dict[str, Any]]:
    """GET /sdapi/v1/samplers (A1111's SamplerItem)."""
    return [{"name": name, "aliases": [], "options": {}} for name in SAMPLERS]


def schedulers() -> list[dict[str, Any]]:
    """GET /sdapi/v1/schedulers (A1111's SchedulerItem), with A1111's "Automatic" first: the sampler's own."""
    rows = [{"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1,
             "need_inner_model": False}]
    return rows + [{"name": name, "label": SCHEDULER_LABELS[name], "aliases": None, "default_rho": -1,
                    "need_inner_model": False} for name in SCHEDULERS]
