"""A request as a job: the passes it needs, run in order (see passes.py for what one pass does).

txt2img, img2img and inpainting (4- and 9-channel models) are one first pass with options: an init image
runs the tail of the schedule (A1111's img2img convention), a mask makes it inpaint, "Only masked" samples
the mask's box at the request's size and pastes it back. Hires fix (hires.py) is a second pass: the first
pass's latents are upscaled (upscale.py: in latent space, or decoded, upscaled as pixels and encoded again),
cropped to the hires size and sampled as img2img with their own schedule and share of the job's steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from sdstudio import paths
from sdstudio.engine import families
from sdstudio.engine.checkpoint import LoadedModel
from sdstudio.engine.control_job import ControlJob, ControlNetCache
from sdstudio.engine.errors import Cancelled, RequestError
from sdstudio.engine.hires import hires_size, hires_steps
from sdstudio.engine.images import crop_region, fit
from sdstudio.engine.passes import OnStep, Pass, PassRunner, ShouldCancel
from sdstudio.engine.request import GenerationRequest, GenerationResult, StepInfo
from sdstudio.engine.residuals import ResidualInput
from sdstudio.engine.samplers import DISCARD_NEXT_TO_LAST_SIGMA
from sdstudio.engine.schedules import ModelSampling, get_sigmas
from sdstudio.engine.upscale import check_upscaler, is_latent, upscale_image, upscale_latent
from sdstudio.engine.validate import validate


def img2img_sigmas(sigmas: torch.Tensor, steps: int, strength: float) -> torch.Tensor:
    """A1111's img2img schedule: the tail of the full schedule, int(strength * steps) + 1 steps long."""
    t_enc = int(min(strength, 0.999) * steps)
    return sigmas[steps - t_enc - 1:]


def schedule(req: GenerationRequest, model_sampling: ModelSampling) -> torch.Tensor:
    """The request's `steps + 1` sigmas, as A1111 makes them for its sampler."""
    return sampler_sigmas(req.sampler, req.scheduler, req.steps, model_sampling)


def sampler_sigmas(sampler: str, scheduler: str, steps: int, model_sampling: ModelSampling) -> torch.Tensor:
    if sampler not in DISCARD_NEXT_TO_LAST_SIGMA:
        return get_sigmas(scheduler, steps, model_sampling)
    sigmas = get_sigmas(scheduler, steps + 1, model_sampling)
    return torch.cat([sigmas[:-2], sigmas[-1:]])


def hires_pass(req: GenerationRequest, model_sampling: ModelSampling, f: int = 8) -> Pass:
    """The hires fix pass (hires.py): its size after the crop, the tail of its own schedule, its sampler and
    prompts (edits counted on from the first pass, SDXL told the upscaled size, as A1111) and CFG scale (Forge's
    hr_cfg; 0: the first pass's); the starting latent is filled in by `generate` from the first pass's."""
    size = hires_size(req, f)
    length, run = hires_steps(req)
    sampler = req.hires_sampler or req.sampler
    sigmas = sampler_sigmas(sampler, req.hires_scheduler or req.scheduler, length, model_sampling)
    return Pass("hires", size.width, size.height, sigmas[length - run:], sampler=sampler,
                prompt=req.hires_prompt or None, negative_prompt=req.hires_negative_prompt or None,
                prompt_steps=run, prompt_first=req.steps, cond_size=(size.upscale_w, size.upscale_h),
                cfg_scale=req.hires_cfg_scale or None)


def plan(req: GenerationRequest, model_sampling: ModelSampling, f: int = 8) -> list[Pass]:
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
    if req.hires:
        return number_steps([first, hires_pass(req, model_sampling, f)])
    return number_steps([first])


def number_steps(passes: list[Pass]) -> list[Pass]:
    """The passes with each step numbered over the whole job, so progress runs 0..total once."""
    total = sum(p.steps for p in passes)
    starts = [sum(p.steps for p in passes[:i]) for i in range(len(passes))]
    return [replace(p, first_step=start, job_steps=total) for p, start in zip(passes, starts, strict=True)]


def generate(model: LoadedModel, request: GenerationRequest, on_step: OnStep | None = None,
             should_cancel: ShouldCancel | None = None, residuals: ResidualInput = None,
             controlnets: ControlNetCache | None = None,
             hires_model: Callable[[], LoadedModel] | None = None) -> GenerationResult:
    """Run a request; the result holds one request per image (seed, seed + 1, ...; see request.batch_seeds)
    for exact re-runs.

    A request with a hires checkpoint needs `hires_model`: called once the first pass is done (and decoded,
    for a pixel upscaler), it returns that checkpoint loaded (hires_checkpoint.py; the caller frees `model`).

    `residuals` (residuals.py) reach every UNet call, for control models. The request's ControlNet units
    (control_job.py) load their files through `controlnets` (the engine's cache; a fresh one if None) and
    the result's requests carry each unit's model hash."""
    t0 = time.perf_counter()
    req = validate(request, multiple=model.description.vae_downscale)
    if req.draft_decode and model.taesd is None:
        stem = families.family(model.description.family).taesd_decoder or "taesd_decoder"
        raise RequestError(f"Draft decode needs a preview decoder (TAESD) and this model has none: put "
                           f"{stem}.safetensors in {paths.approx_decoders_dir()} (or give --taesd FILE), or "
                           "turn Draft decode off")
    if req.hires:
        check_upscaler(req.hires_upscaler)
    model_sampling = ModelSampling(family=model.description.family)
    control = None
    if req.control_units:
        control = ControlJob(model, req, controlnets)
        req = req.replace(control_units=control.units)
    runner = PassRunner(model, req, model_sampling, on_step, should_cancel, residuals, control)
    desc = model.description  # the result names the first pass's model, as A1111's "Model" does
    passes = plan(req, model_sampling, model.description.vae_downscale)
    if req.hires and req.hires_checkpoint:
        if hires_model is None:
            raise RequestError("this engine cannot load a hires checkpoint: use the same checkpoint")
        first, second = passes
        latents = runner.sample(first)
        decoded = None if is_latent(req.hires_upscaler) else runner.decode(latents, draft=False)
        del runner, model, control  # the caller may now drop the first model
        runner_check_cancel(should_cancel)
        if on_step is not None:
            on_step(StepInfo(step=first.steps - 1, total=first.job_steps, sigma=0.0, pass_name="hires",
                             message=f"Loading the hires checkpoint {Path(req.hires_checkpoint).stem}…"))
        model = hires_model()
        control = ControlJob(model, req, controlnets) if req.control_units else None
        sampling = ModelSampling(family=model.description.family)
        runner = PassRunner(model, req, sampling, on_step, should_cancel, residuals, control)
        start = hires_start(runner, latents, req, decoded)
        images = runner.run(replace(second, init_latent=start))
    elif req.hires:
        first, second = passes
        start = hires_start(runner, runner.sample(first), req)
        images = runner.run(replace(second, init_latent=start))
    else:
        images = runner.run(passes[0])
    requests = req.image_requests(len(images))
    return GenerationResult(images=images, requests=requests, model_name=desc.name,
                            seconds=time.perf_counter() - t0,
                            info={"family": desc.family, "prediction": desc.prediction})


def runner_check_cancel(should_cancel: ShouldCancel | None) -> None:
    if should_cancel is not None and should_cancel():
        raise Cancelled("Generation cancelled.")


def hires_start(runner: PassRunner, latents: torch.Tensor, req: GenerationRequest,
                decoded: list | None = None) -> torch.Tensor:
    """The hires pass's starting latents: the first pass's upscaled to the hires size (A1111's sample_hr_pass),
    in latent space for a latent upscaler, else decoded (`decoded`: already, by the first pass's model),
    upscaled as 8-bit images and encoded by `runner`'s model; then cropped."""
    f = runner.f
    size = hires_size(req, f)
    if is_latent(req.hires_upscaler):
        big = upscale_latent(req.hires_upscaler, latents.float(), size.upscale_h // f, size.upscale_w // f)
    else:
        if decoded is None:
            decoded = runner.decode(latents, draft=False)  # draft decode is for final images
        images = [upscale_image(req.hires_upscaler, image, size.upscale_w, size.upscale_h)
                  for image in decoded]
        big = torch.cat([runner.encode(image) for image in images])
    left, top, right, bottom = size.latent_box
    return big[:, :, top:bottom, left:right]
