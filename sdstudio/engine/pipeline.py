"""txt2img, img2img and inpainting over a loaded model: the latent diffusion sampling loop of
Rombach et al. (2022), "High-Resolution Image Synthesis with Latent Diffusion Models" (arXiv:2112.10752),
with classifier-free guidance and k-diffusion samplers.

Conventions follow AUTOMATIC1111 so its parameters reproduce its images: per-image CPU noise (samplers.SeededNoise),
`x = noise * sigmas[0]`, img2img runs the last int(strength * steps) + 1 sigmas of a `steps`-long schedule,
inpainting re-imposes the known region on the denoised estimate each step and composites the final pixels
through the blurred mask. The init image is encoded with the posterior mean (deterministic, as ComfyUI).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from PIL import Image

from sdstudio.engine.checkpoint import LoadedModel
from sdstudio.engine.denoiser import CFGDenoiser, Denoiser
from sdstudio.engine.errors import Cancelled
from sdstudio.engine.images import (
    composite,
    crop_region,
    fit,
    latent_mask,
    mask_tensor,
    prepare_mask,
    to_images,
    to_tensor,
)
from sdstudio.engine.preview import Previewer
from sdstudio.engine.request import GenerationRequest, GenerationResult, StepInfo
from sdstudio.engine.samplers import SeededNoise, sample
from sdstudio.engine.schedules import ModelSampling, get_sigmas
from sdstudio.engine.validate import validate

OnStep = Callable[[StepInfo], None]
ShouldCancel = Callable[[], bool]


def img2img_sigmas(sigmas: torch.Tensor, steps: int, strength: float) -> torch.Tensor:
    """A1111's img2img schedule: the tail of the full schedule, int(strength * steps) + 1 steps long."""
    t_enc = int(min(strength, 0.999) * steps)
    return sigmas[steps - t_enc - 1:]


class Job:
    """One request on one model: everything the sampling loop needs, prepared once."""

    def __init__(self, model: LoadedModel, req: GenerationRequest, on_step: OnStep | None,
                 should_cancel: ShouldCancel | None):
        self.model, self.req = model, req
        self.on_step, self.should_cancel = on_step, should_cancel
        desc = model.description
        self.scale = desc.scale_factor
        self.f = desc.vae_downscale
        self.dtype = model.dtype
        self.previewer = Previewer(desc.family, model.taesd, latent_rgb=desc.config.get("latent_rgb")) if on_step else None

    @torch.no_grad()
    def encode(self, image: Image.Image) -> torch.Tensor:
        mean, _ = self.model.vae.encode(to_tensor(image).to(self.dtype))
        return mean.float() * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        out = []
        for z in latents.split(1):
            self.check_cancel()
            out += to_images(self.model.vae.decode((z / self.scale).to(self.dtype)).float())
        return out

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("Generation cancelled.")

    def unet_fn(self, x, t, context, y=None):
        return self.model.unet(x.to(self.dtype), t, context.to(self.dtype),
                               None if y is None else y.to(self.dtype)).float()

    def inpaint_channels(self, init: Image.Image | None, mask: Image.Image | None, batch: int) -> torch.Tensor:
        """9-channel models: (mask at latent size, latent of the image with the repaint area blanked).

        Without a mask the whole image counts as masked (A1111's conditioning for txt2img/img2img)."""
        w, h = self.req.width, self.req.height
        if mask is None:
            pixel_mask = torch.ones(1, 1, h, w)
        else:
            pixel_mask = mask_tensor(mask, (w, h)).round()
        source = to_tensor(init) if init is not None else torch.zeros(1, 3, h, w)
        with torch.no_grad():
            mean, _ = self.model.vae.encode((source * (1 - pixel_mask)).to(self.dtype))
        small_mask = torch.nn.functional.interpolate(pixel_mask, size=(h // self.f, w // self.f))
        extra = torch.cat([small_mask, mean.float() * self.scale], dim=1)
        return extra.expand(batch, *extra.shape[1:])

    def run(self) -> list[Image.Image]:
        req, model = self.req, self.model
        w, h = req.width, req.height
        batch = req.batch_size
        cond, uncond = model.text.conditioning(req.prompt, req.negative_prompt, req.clip_skip, (h, w))
        ms = ModelSampling()
        sigmas = get_sigmas(req.scheduler, req.steps, ms)
        rng = SeededNoise([req.seed + i for i in range(batch)], (4, h // self.f, w // self.f))
        noise = rng.draw()
        init = fit(req.init_image.convert("RGB"), w, h) if req.init_image is not None else None
        blurred = prepare_mask(req.mask, (w, h), req.mask_blur) if req.mask is not None else None
        if init is None:
            x = noise * sigmas[0]
            init_latent = None
        else:
            sigmas = img2img_sigmas(sigmas, req.steps, req.strength)
            init_latent = self.encode(init).expand(batch, -1, -1, -1)
            x = init_latent + noise * sigmas[0]
        extra = None
        if model.description.inpainting:
            extra = self.inpaint_channels(init, blurred, batch)
        denoiser = Denoiser(self.unet_fn, ms, model.description.prediction)
        guided = CFGDenoiser(denoiser, cond, uncond, float(req.cfg_scale), extra, self.should_cancel)
        model_fn = guided
        if blurred is not None:
            keep = 1 - latent_mask(blurred, (w // self.f, h // self.f))

            def model_fn(x, sigma):
                # A1111: the known region of the denoised estimate is the init latent, every step.
                return init_latent * keep + (1 - keep) * guided(x, sigma)

        total = len(sigmas) - 1
        x = sample(req.sampler, model_fn, x, sigmas, callback=self.callback(total), noise_sampler=rng)
        images = self.decode(x)
        if blurred is not None:
            images = [composite(img, init, blurred) for img in images]
        return images

    def callback(self, total: int):
        def on_step(step: int, sigma: float, x: torch.Tensor, denoised: torch.Tensor) -> None:
            self.check_cancel()
            if self.on_step is None:
                return
            preview = self.previewer(denoised) if self.previewer.due(step, total) else None
            self.on_step(StepInfo(step=step, total=total, sigma=float(sigma), denoised=denoised, preview=preview))

        return on_step


def _only_masked(model: LoadedModel, req: GenerationRequest, on_step, should_cancel) -> list[Image.Image]:
    """A1111's "Inpaint area: Only masked": repaint the mask's box at full request resolution, paste back."""
    image, mask = req.init_image.convert("RGB"), req.mask.convert("L")
    box = crop_region(mask, req.only_masked_padding, req.width, req.height)
    sub = req.replace(init_image=image.crop(box), mask=mask.crop(box), only_masked=False)
    patches = Job(model, sub, on_step, should_cancel).run()
    blurred = prepare_mask(mask, image.size, req.mask_blur)
    out = []
    for patch in patches:
        canvas = image.copy()
        canvas.paste(patch.resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.LANCZOS), box[:2])
        out.append(composite(canvas, image, blurred))
    return out


def generate(model: LoadedModel, request: GenerationRequest, on_step: OnStep | None = None,
             should_cancel: ShouldCancel | None = None) -> GenerationResult:
    """Run a request; the result holds one request per image (seed, seed + 1, ...) for exact re-runs."""
    t0 = time.perf_counter()
    req = validate(request, multiple=model.description.vae_downscale)
    if req.mode == "inpaint" and req.only_masked:
        images = _only_masked(model, req, on_step, should_cancel)
    else:
        images = Job(model, req, on_step, should_cancel).run()
    requests = [req.replace(seed=req.seed + i, batch_size=1) for i in range(len(images))]
    return GenerationResult(images=images, requests=requests, model_name=model.description.name,
                            seconds=time.perf_counter() - t0,
                            info={"family": model.description.family, "prediction": model.description.prediction})
