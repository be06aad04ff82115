"""A reference Stable Diffusion pipeline assembled from independent parts, following AUTOMATIC1111's
conventions (`modules/processing.py`, `sd_samplers_kdiffusion.py`, `sd_samplers_cfg_denoiser.py`).

- Weights: reference_models.py (diffusers' UNet/VAE and transformers' CLIP from the file, no sdstudio code).
- Schedule: k-diffusion's `DiscreteSchedule.get_sigmas(steps)` over LDM's float32 alphas_cumprod, which is
  A1111's schedule for Euler; the starting noise is `torch.randn((1, 4, H/8, W/8), generator=cpu(seed))`.
- txt2img: diffusers' StableDiffusion(XL)Pipeline with an EulerDiscreteScheduler given those sigmas.
- img2img / inpainting: k-diffusion's `sample_euler` over `DiscreteEpsDDPMDenoiser` wrapping diffusers' UNet,
  with A1111's CFGDenoiser (cond and uncond batched, denoised = u + (c - u) * s, known region re-imposed on
  the denoised estimate), A1111's img2img schedule tail `sigmas[steps - t_enc - 1:]` with
  t_enc = int(min(strength, 0.999) * steps), its latent mask (mask resized to latent size as RGB, rounded),
  its inpainting-model conditioning, and its final overlay through the blurred mask (RGBa paste and
  alpha_composite).
  Two points follow our pipeline's documented choices instead: the init image is encoded with the posterior
  mean (A1111 samples it), and "mask blur" is PIL's GaussianBlur (A1111 runs cv2.GaussianBlur).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from PIL import Image, ImageFilter, ImageOps
from torch import Tensor

from tests.engine import kdiffusion_reference
from tests.engine import reference_models as ref
from tests.engine.transformers_reference import reference_tokenizer


def ldm_alphas_cumprod() -> Tensor:
    """LDM `register_schedule` ("linear" in sqrt-beta, computed in float64, stored as a float32 buffer)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0).float()


def reference_sigmas(steps: int) -> Tensor:
    _, external = kdiffusion_reference.load()
    alphas_cumprod = ldm_alphas_cumprod()
    return external.DiscreteSchedule(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5, False).get_sigmas(steps)


def a1111_noise(seed: int, height: int, width: int, factor: int = 8) -> Tensor:
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((1, 4, height // factor, width // factor), generator=generator)


def _scheduler() -> EulerDiscreteScheduler:
    # "linspace" makes init_noise_sigma = sigmas[0], so the pipeline starts at noise * sigmas[0] like A1111.
    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  timestep_spacing="linspace", steps_offset=1)


def sd_pipeline(path, original_config: dict, text: ref.TextReference) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline(
        vae=ref.reference_vae(path, original_config), text_encoder=ref.reference_text(path, text),
        tokenizer=reference_tokenizer(), unet=ref.reference_unet(path, original_config),
        scheduler=_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sdxl_pipeline(path, original_config: dict) -> StableDiffusionXLPipeline:
    clip_l, bigg = ref.TEXT_REFERENCES["sdxl"]
    tokenizer_2 = copy.deepcopy(reference_tokenizer())
    tokenizer_2.pad_token = "!"  # OpenCLIP pads with token 0, "!" (diffusers' SDXL tokenizer_2)
    pipe = StableDiffusionXLPipeline(
        vae=ref.reference_vae(path, original_config), text_encoder=ref.reference_text(path, clip_l),
        text_encoder_2=ref.reference_text(path, bigg), tokenizer=reference_tokenizer(),
        tokenizer_2=tokenizer_2,
        unet=ref.reference_unet(path, original_config), scheduler=_scheduler(), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def txt2img(pipe, prompt: str, negative: str, seed: int, steps: int, cfg: float, width: int,
            height: int, latents: Tensor | None = None) -> Image.Image:
    """An empty negative prompt is passed as None: SDXL then uses zeros (A1111's force-zero negative).
    `latents` replaces the seed's starting noise (variation seeds: tests/engine/a1111_rng.py)."""
    latents = a1111_noise(seed, height, width) if latents is None else latents
    return pipe(prompt, negative_prompt=negative or None, height=height, width=width,
                sigmas=reference_sigmas(steps).tolist(), guidance_scale=cfg,
                latents=latents, output_type="pil").images[0]


def _to_model_range(image: Image.Image) -> Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return 2.0 * torch.from_numpy(np.moveaxis(array, 2, 0))[None] - 1.0


def latent_mask(blurred: Image.Image, width: int, height: int) -> Tensor:
    """A1111 `latmask`: the blurred mask as RGB resized to latent size (PIL default filter), rounded."""
    small = blurred.convert("RGB").resize((width, height))
    return torch.from_numpy(np.around(np.asarray(small, dtype=np.float32)[..., 0] / 255))[None, None]


def inpainting_conditioning(pipe, image: Tensor, blurred: Image.Image | None, latent_hw) -> Tensor:
    """A1111 `inpainting_image_conditioning` with inpainting_mask_weight 1: [mask, latent of masked image]."""
    if blurred is None:
        mask = torch.ones(1, 1, *image.shape[-2:])
    else:
        pixels = np.asarray(blurred.convert("L"), dtype=np.float32) / 255.0
        mask = torch.round(torch.from_numpy(pixels)[None, None])
    masked = pipe.vae.encode(image * (1.0 - mask)).latent_dist.mean * pipe.vae.config.scaling_factor
    return torch.cat([torch.nn.functional.interpolate(mask, size=latent_hw), masked], dim=1)


class CFGDenoiser:
    """A1111's CFGDenoiser (without its extras) over a k-diffusion denoiser of diffusers' UNet."""

    def __init__(self, pipe, cond, uncond, scale, image_cond=None, init_latent=None, nmask=None):
        _, external = kdiffusion_reference.load()
        self.denoiser = external.DiscreteEpsDDPMDenoiser(self._eps, ldm_alphas_cumprod(), quantize=False)
        self.unet = pipe.unet
        self.cond, self.uncond, self.scale = cond, uncond, scale
        self.image_cond, self.init_latent, self.nmask = image_cond, init_latent, nmask

    def _eps(self, x, t, cond, image_cond=None):
        x = x if image_cond is None else torch.cat([x, image_cond], dim=1)
        return self.unet(x, t, encoder_hidden_states=cond).sample

    def __call__(self, x, sigma):
        extra = {} if self.image_cond is None else {"image_cond": torch.cat([self.image_cond] * 2)}
        cond = torch.cat([self.cond, self.uncond])
        out = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=cond, **extra)
        cond_out, uncond_out = out.chunk(2)
        denoised = uncond_out + (cond_out - uncond_out) * self.scale
        if self.nmask is not None:
            denoised = self.init_latent * (1 - self.nmask) + self.nmask * denoised
        return denoised


def a1111_pixels(decoded: Tensor) -> Image.Image:
    """A1111's `sample_to_image`: clamp((x + 1) / 2, 0, 1) * 255, truncated to uint8 (diffusers rounds)."""
    x = torch.clamp((decoded[0].float() + 1.0) / 2.0, min=0.0, max=1.0)
    return Image.fromarray((255.0 * np.moveaxis(x.numpy(), 0, 2)).astype(np.uint8))


def overlay(generated: Image.Image, original: Image.Image, blurred: Image.Image) -> Image.Image:
    """A1111's `apply_overlay`: the original pasted as RGBa outside the blurred mask, composited on top."""
    masked = Image.new("RGBa", original.size)
    masked.paste(original.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(blurred.convert("L")))
    out = generated.convert("RGBA")
    out.alpha_composite(masked.convert("RGBA"))
    return out.convert("RGB")


@torch.no_grad()
def img2img(pipe, prompt: str, negative: str, seed: int, steps: int, cfg: float, init: Image.Image,
            strength: float, mask: Image.Image | None = None, mask_blur: int = 4) -> Image.Image:
    """A1111 img2img, inpainting when `mask` is given (9-channel UNets get the inpainting conditioning)."""
    sampling, _ = kdiffusion_reference.load()
    width, height = init.size
    t_enc = int(min(strength, 0.999) * steps)
    sigmas = reference_sigmas(steps)[steps - t_enc - 1:]
    cond, uncond = pipe.encode_prompt(prompt, "cpu", 1, True, negative)
    scale = pipe.vae.config.scaling_factor
    image = _to_model_range(init)
    init_latent = pipe.vae.encode(image).latent_dist.mean * scale
    blurred = mask.filter(ImageFilter.GaussianBlur(mask_blur)) if mask is not None else None
    latent_h, latent_w = init_latent.shape[-2:]
    nmask = latent_mask(blurred, latent_w, latent_h) if blurred is not None else None
    image_cond = None
    if pipe.unet.config.in_channels == 9:
        image_cond = inpainting_conditioning(pipe, image, blurred, init_latent.shape[-2:])
    model = CFGDenoiser(pipe, cond, uncond, cfg, image_cond, init_latent, nmask)
    x = init_latent + a1111_noise(seed, height, width) * sigmas[0]
    x = sampling.sample_euler(model, x, sigmas, disable=True)
    if nmask is not None:
        x = x * nmask + init_latent * (1 - nmask)
    generated = a1111_pixels(pipe.vae.decode(x / scale).sample)
    return overlay(generated, init, blurred) if blurred is not None else generated
