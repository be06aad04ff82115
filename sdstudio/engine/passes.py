"""One pass of a job: sample a batch of latents down a schedule and decode them, the latent diffusion loop of
Rombach et al. (2022), "High-Resolution Image Synthesis with Latent Diffusion Models" (arXiv:2112.10752),
with classifier-free guidance and k-diffusion samplers.

Conventions follow AUTOMATIC1111 so its parameters reproduce its images: per-image CPU noise (noise.SeededNoise),
`x = noise * sigmas[0]` without an init image, `x = init_latent + noise * sigmas[0]` with one; inpainting
re-imposes the known region on the denoised estimate each step and composites the final pixels through the
blurred mask. The init image is encoded with the posterior mean (deterministic, as ComfyUI).

Each component (UNet, VAE, text encoders, tiny VAE) may live on its own device and dtype: inputs move to a
component at the call, results come back as float32 (latents on the UNet's device, pixels on the CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from sdstudio.engine.checkpoint import LoadedModel
from sdstudio.engine.control_job import ControlJob
from sdstudio.engine.denoiser import CFGDenoiser, Denoiser
from sdstudio.engine.devices import module_device, module_dtype
from sdstudio.engine.errors import Cancelled, GenerationError
from sdstudio.engine.families import family
from sdstudio.engine.images import (
    composite,
    crop_padded,
    from_unit,
    latent_mask,
    mask_tensor,
    paste_region,
    prepare_mask,
    to_images,
    to_tensor,
)
from sdstudio.engine.noise import SeededNoise
from sdstudio.engine.preview import Previewer
from sdstudio.engine.request import GenerationRequest, StepInfo, batch_seeds
from sdstudio.engine.residuals import ResidualInput
from sdstudio.engine.samplers import sample
from sdstudio.engine.schedules import ModelSampling
from sdstudio.engine.step_conditioning import ScheduledConditioning, scheduled_conditioning
from sdstudio.engine.vae_tiles import tiled_decode, tiled_encode, use_tiles

OnStep = Callable[[StepInfo], None]
ShouldCancel = Callable[[], bool]


@dataclass(frozen=True)
class Pass:
    """One sampling run over all images of a job, at width x height, down `sigmas`.

    `init` is the source image (img2img, inpainting) at width x height, or with `region` ("Only masked") the
    whole image the region is cut from: then the box `region` (images.crop_region) is sampled at
    width x height and pasted back where it came from. `init_latent` (B or 1, 4, h, w), when given, is the
    starting latent instead of encoding `init`. `mask` is the unblurred repaint mask (L, white = repaint)
    at init's size, blurred by `mask_blur` at the pass's size. Steps are reported as `first_step + i` of
    `job_steps` so that progress counts over the whole job. `sampler`, `prompt` and `negative_prompt` replace
    the request's when set (hires fix), and the prompt schedule runs over `prompt_steps` (0 = the request's)
    counting on from `prompt_first` steps (hires fix); `cond_size` (w, h) is the size SDXL's conditioning
    is told (default: the pass's); `cfg_scale` replaces the request's when set (hires fix).
    """

    name: str
    width: int
    height: int
    sigmas: Tensor
    init: Image.Image | None = None
    init_latent: Tensor | None = None
    mask: Image.Image | None = None
    mask_blur: int = 4
    region: tuple[int, int, int, int] | None = None
    first_step: int = 0
    job_steps: int = 0
    sampler: str = ""
    prompt: str | None = None
    negative_prompt: str | None = None
    prompt_steps: int = 0
    prompt_first: int | None = None
    cond_size: tuple[int, int] | None = None
    cfg_scale: float | None = None

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1


def check_finite(t: Tensor, what: str, causes: str) -> None:
    """Refuse NaN/inf before it becomes pixels: converted to 8 bits they save as a black image that
    looks like a result."""
    if not bool(torch.isfinite(t).all()):
        raise GenerationError(f"the model produced NaN/inf values in the {what} (likely cause: {causes}); "
                              "nothing was saved")


class PassRunner:
    """Runs the passes of one request on one model: its prompts, seeds, guidance, progress and cancel."""

    def __init__(
        self,
        model: LoadedModel,
        req: GenerationRequest,
        model_sampling: ModelSampling,
        on_step: OnStep | None = None,
        should_cancel: ShouldCancel | None = None,
        residuals: ResidualInput = None,
        control: ControlJob | None = None,
    ) -> None:
        self.model, self.req, self.model_sampling = model, req, model_sampling
        self.on_step, self.should_cancel = on_step, should_cancel
        self.residuals = residuals
        self.control = control  # the request's ControlNet units: a residual source per pass, at its size
        desc = model.description
        self.scale = desc.scale_factor
        self.f = desc.vae_downscale
        self.unet_device, self.unet_dtype = module_device(model.unet), module_dtype(model.unet)
        self.vae_device, self.vae_dtype = module_device(model.vae), module_dtype(model.vae)
        pairs = batch_seeds(req.seed, req.subseed, req.subseed_strength, req.batch_size)
        self.seeds, self.subseeds = [s for s, _ in pairs], [v for _, v in pairs]
        self.previewer = None
        if on_step is not None:
            # Our own exports may carry their preview colours in metadata; the family's otherwise.
            latent_rgb = family(desc.family).configured(desc.config).latent_rgb
            self.previewer = Previewer(desc.family, model.taesd, latent_rgb=latent_rgb)

    def run(self, p: Pass) -> list[Image.Image]:
        """The pass's images (the whole init image with the region repainted, for "Only masked")."""
        if p.region is None:
            return self.render(p, p.init, p.mask)
        size = (p.width, p.height)
        init = crop_padded(p.init.convert("RGB"), p.region).resize(size, Image.Resampling.LANCZOS)
        mask = crop_padded(p.mask.convert("L"), p.region, edge=False).resize(size, Image.Resampling.BILINEAR)
        patches = self.render(p, init, mask)
        blurred = prepare_mask(p.mask, p.init.size, p.mask_blur)
        return [composite(paste_region(p.init, patch, p.region), p.init, blurred) for patch in patches]

    def render(self, p: Pass, init: Image.Image | None, mask: Image.Image | None) -> list[Image.Image]:
        """Sample and decode at the pass's size; init and mask are at that size."""
        blurred = prepare_mask(mask, (p.width, p.height), p.mask_blur) if mask is not None else None
        images = self.decode(self.sample(p, init, blurred))
        if blurred is not None:
            images = [composite(img, init, blurred) for img in images]
        return images

    def sample(self, p: Pass, init: Image.Image | None = None, blurred: Image.Image | None = None) -> Tensor:
        """The pass's sampled latents (B, 4, h, w), not decoded; init and the blurred mask at the pass's size."""
        w, h, batch = p.width, p.height, len(self.seeds)
        latent_size = (w // self.f, h // self.f)
        conditioning = self.conditioning(p)
        # Sigmas stay on the CPU: the schedule maths then gives the same numbers on every device.
        sigmas = p.sigmas
        rng = SeededNoise(self.seeds, (4, latent_size[1], latent_size[0]), device=self.unet_device)
        noise = rng.first(self.subseeds, float(self.req.subseed_strength), self.noise_resize_from())
        init_latent = p.init_latent
        if init_latent is None and init is not None:
            init_latent = self.encode(init)
        if init_latent is None:
            x = noise * sigmas[0]
        else:
            init_latent = init_latent.to(self.unet_device, torch.float32).expand(batch, -1, -1, -1)
            x = init_latent + noise * sigmas[0]
        extra = self.inpaint_channels(init, blurred, w, h) if self.model.description.inpainting else None
        denoiser = Denoiser(self.unet_fn, self.model_sampling, self.model.description.prediction)
        first = conditioning.at(0)
        cfg = self.req.cfg_scale if p.cfg_scale is None else p.cfg_scale
        residuals, callback = self.residuals, self.callback(p)
        if self.control is not None:
            if residuals is not None:
                raise GenerationError("ControlNet units cannot be combined with other residuals in one job")
            residuals = self.control.source(w, h, sigmas)
            callback = residuals.following(callback)  # the units' start/end count the steps reported
        guided = CFGDenoiser(denoiser, first.conds[0][0], first.uncond, float(cfg), extra,
                             self.should_cancel, residuals, schedule=conditioning)
        model_fn = guided
        if blurred is not None:
            keep = 1 - latent_mask(blurred, latent_size).to(self.unet_device)

            def model_fn(x: Tensor, sigma: Tensor) -> Tensor:
                # A1111: the known region of the denoised estimate is the init latent, every step.
                return init_latent * keep + (1 - keep) * guided(x, sigma)

        x = sample(p.sampler or self.req.sampler, model_fn, x, sigmas, callback=callback, noise_sampler=rng)
        check_finite(x, "latent", "a broken checkpoint, an fp16 overflow in the UNet or an extreme CFG scale")
        return x

    def noise_resize_from(self) -> tuple[int, int] | None:
        """The latent (height, width) of "seed resize from", floored to the latent grid as A1111 does."""
        size = self.req.seed_resize_from
        return None if size is None else (size[1] // self.f, size[0] // self.f)

    def conditioning(self, p: Pass) -> ScheduledConditioning:
        """The prompts per model call (prompt editing, alternation, AND), scheduled over the request's steps
        as A1111 does (also for img2img, whose sampler runs only the last part of them), blended towards
        the request's blend prompt. A pass may bring its own prompts and step count (hires fix)."""
        req = self.req
        prompt = req.prompt if p.prompt is None else p.prompt
        negative = req.negative_prompt if p.negative_prompt is None else p.negative_prompt
        w, h = p.cond_size or (p.width, p.height)
        return scheduled_conditioning(self.model.text, prompt, negative, req.clip_skip, (h, w),
                                      p.prompt_steps or req.steps, self.unet_device,
                                      (req.blend_prompt, float(req.blend_strength)), p.prompt_first)

    @torch.no_grad()
    def encode(self, image: Image.Image) -> Tensor:
        """(1, 4, h, w) float32 scaled latent on the UNet's device."""
        mean, _ = self.vae_encode(to_tensor(image).to(self.vae_device, self.vae_dtype))
        return mean.float().to(self.unet_device) * self.scale

    def tiled(self, height: int, width: int) -> bool:
        return use_tiles(self.req.tiled_vae, width, height, self.vae_device, self.vae_dtype.itemsize)

    def vae_encode(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """The VAE's (mean, logvar), tiled (vae_tiles.py) as the request's tiled_vae and the memory say."""
        if self.tiled(*pixels.shape[-2:]):
            return tiled_encode(self.model.vae, pixels, storage=self.tile_storage)
        return self.model.vae.encode(pixels)

    def vae_decode(self, z: Tensor) -> Tensor:
        if self.tiled(z.shape[-2] * self.f, z.shape[-1] * self.f):
            return tiled_decode(self.model.vae, z, storage=self.tile_storage)
        return self.model.vae.decode(z)

    @property
    def tile_storage(self) -> torch.device:
        """Tiled runs keep their whole-image tensors in RAM when the VAE is on an accelerator."""
        return torch.device("cpu")

    @torch.no_grad()
    def decode(self, latents: Tensor, draft: bool | None = None) -> list[Image.Image]:
        """The latents' images through the full VAE, or the preview VAE with `draft` (default: the request's
        draft decode)."""
        if self.req.draft_decode if draft is None else draft:
            return self.draft_decode(latents)
        out = []
        for z in latents.split(1):
            self.check_cancel()
            pixels = self.vae_decode((z / self.scale).to(self.vae_device, self.vae_dtype))
            check_finite(pixels, "image", "an fp16 overflow in the VAE (try the fp32 VAE) or a broken VAE")
            out += to_images(pixels.float().cpu())
        return out

    @torch.no_grad()
    def draft_decode(self, latents: Tensor) -> list[Image.Image]:
        """The final images through the tiny preview VAE (TAESD takes the scaled latent the UNet sees): at
        four steps the full VAE decode costs more than sampling. pipeline.generate refuses the request
        before sampling when the model has no preview decoder."""
        taesd = self.model.taesd
        device, dtype = module_device(taesd), module_dtype(taesd)
        out = []
        for z in latents.split(1):
            self.check_cancel()
            pixels = taesd.decode(z.to(device, dtype)).float()
            if pixels.shape[-2:] != (z.shape[-2] * self.f, z.shape[-1] * self.f):
                raise GenerationError(f"the preview decoder upscales by {pixels.shape[-1] // z.shape[-1]}, the "
                                      f"model's VAE by {self.f}: draft decode cannot stand in for it")
            check_finite(pixels, "image", "an fp16 overflow in the preview decoder or a broken TAESD file")
            out += from_unit(pixels.cpu())
        return out

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("Generation cancelled.")

    def unet_fn(self, x: Tensor, t: Tensor, context: Tensor, y: Tensor | None = None, residuals=None) -> Tensor:
        dtype = self.unet_dtype
        return self.model.unet(
            x.to(dtype), t, context.to(dtype), None if y is None else y.to(dtype),
            residuals=None if residuals is None else residuals.to(self.unet_device, dtype),
        ).float()

    @torch.no_grad()
    def inpaint_channels(self, init: Image.Image | None, mask: Image.Image | None, w: int, h: int) -> Tensor:
        """9-channel models: (mask at latent size, latent of the image with the repaint area blanked), batch 1.

        Without a mask the whole image counts as masked (A1111's conditioning for txt2img/img2img)."""
        pixel_mask = torch.ones(1, 1, h, w) if mask is None else mask_tensor(mask, (w, h)).round()
        source = to_tensor(init) if init is not None else torch.zeros(1, 3, h, w)
        blanked = (source * (1 - pixel_mask)).to(self.vae_device, self.vae_dtype)
        mean, _ = self.vae_encode(blanked)
        small_mask = torch.nn.functional.interpolate(pixel_mask, size=(h // self.f, w // self.f))
        return torch.cat([small_mask.to(self.unet_device), mean.float().to(self.unet_device) * self.scale], dim=1)

    def callback(self, p: Pass):
        total = p.job_steps or p.steps
        preview_device = module_device(self.model.taesd) if self.model.taesd is not None else torch.device("cpu")

        def on_step(i: int, sigma: float, x: Tensor, denoised: Tensor) -> None:
            self.check_cancel()
            if self.on_step is None:
                return
            step = p.first_step + i
            preview = None
            if self.previewer.due(step, total):
                preview = self.previewer(denoised[:1].to(preview_device))
            self.on_step(StepInfo(step=step, total=total, sigma=float(sigma), preview=preview, pass_name=p.name))

        return on_step
