"""A request as a job: the passes it needs, run in order (see passes.py for what one pass does).

txt2img, img2img and inpainting (4- and 9-channel models) are one first pass with options: an init image
runs the tail of the schedule (A1111's img2img convention), a mask makes it inpaint, "Only masked" samples
the mask's box at the request's size and pastes it back. Later passes (hires fix, upscale) are planned
here too, each with its own size, schedule and share of the job's steps; today a job is its first pass.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from sdstudio.engine.checkpoint import LoadedModel
from sdstudio.engine.images import crop_region, fit
from sdstudio.engine.passes import OnStep, Pass, PassRunner, ShouldCancel
from sdstudio.engine.request import GenerationRequest, GenerationResult
from sdstudio.engine.residuals import ResidualInput
from sdstudio.engine.samplers import DISCARD_NEXT_TO_LAST_SIGMA
from sdstudio.engine.schedules import ModelSampling, get_sigmas
from sdstudio.engine.validate import validate


def img2img_sigmas(sigmas: torch.Tensor, steps: int, strength: float) -> torch.Tensor:
    """A1111's img2img schedule: the tail of the full schedule, int(strength * steps) + 1 steps long."""
    t_enc = int(min(strength, 0.999) * steps)
    return sigmas[steps - t_enc - 1:]


def schedule(req: GenerationRequest, model_sampling: ModelSampling) -> torch.Tensor:
    """The request's `steps + 1` sigmas, as A1111 makes them for its sampler."""
    if req.sampler not in DISCARD_NEXT_TO_LAST_SIGMA:
        return get_sigmas(req.scheduler, req.steps, model_sampling)
    sigmas = get_sigmas(req.scheduler, req.steps + 1, model_sampling)
    return torch.cat([sigmas[:-2], sigmas[-1:]])


def plan(req: GenerationRequest, model_sampling: ModelSampling) -> list[Pass]:
    """The passes of a validated request, with job-wide step numbering."""
    sigmas = schedule(req, model_sampling)
    init, mask, region = None, None, None
    if req.init_image is not None:
        sigmas = img2img_sigmas(sigmas, req.steps, req.strength)
        init = req.init_image.convert("RGB")
        mask = None if req.mask is None else req.mask.convert("L")
        if mask is not None and req.only_masked:
            region = crop_region(mask, req.only_masked_padding, req.width, req.height)
        else:
            init = fit(init, req.width, req.height)
    first = Pass("first", req.width, req.height, sigmas, init=init, mask=mask, mask_blur=req.mask_blur,
                 region=region)
    return number_steps([first])


def number_steps(passes: list[Pass]) -> list[Pass]:
    """The passes with each step numbered over the whole job, so progress runs 0..total once."""
    total = sum(p.steps for p in passes)
    starts = [sum(p.steps for p in passes[:i]) for i in range(len(passes))]
    return [replace(p, first_step=start, job_steps=total) for p, start in zip(passes, starts, strict=True)]


def generate(model: LoadedModel, request: GenerationRequest, on_step: OnStep | None = None,
             should_cancel: ShouldCancel | None = None, residuals: ResidualInput = None) -> GenerationResult:
    """Run a request; the result holds one request per image (seed, seed + 1, ...; see request.batch_seeds)
    for exact re-runs.

    `residuals` (residuals.py) reach every UNet call, for control models."""
    t0 = time.perf_counter()
    req = validate(request, multiple=model.description.vae_downscale)
    model_sampling = ModelSampling(family=model.description.family)
    runner = PassRunner(model, req, model_sampling, on_step, should_cancel, residuals)
    images = []
    for p in plan(req, model_sampling):
        images = runner.run(p)
    requests = req.image_requests(len(images))
    return GenerationResult(images=images, requests=requests, model_name=model.description.name,
                            seconds=time.perf_counter() - t0,
                            info={"family": model.description.family, "prediction": model.description.prediction})
