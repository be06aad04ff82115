"""A reference of AUTOMATIC1111's hires fix written from its documented rules (`processing.py`
StableDiffusionProcessingTxt2Img.sample_hr_pass, `sd_samplers_common.setup_img2img_steps`, `upscaler.py`),
on the independent parts of a1111_reference.py (diffusers' pipeline for the first pass, k-diffusion's Euler
over diffusers' UNet for the second) and no sdstudio code:

1. txt2img at width x height (the pipeline's latents, not decoded);
2. upscale by `scale`: a latent upscaler is `interpolate(latents, (H/8, W/8), mode, antialias)`; Lanczos
   decodes (A1111's 8-bit truncation), resizes with PIL's Lanczos and encodes (posterior mean, as our
   pipeline's documented choice);
3. img2img of that latent: N = hires steps or steps, a schedule of int(N / min(strength, 0.999)) steps whose
   last N run, starting from latent + randn(seed at the new size) * sigma_0, guided at the hires CFG scale
   (Forge's hr_cfg, "Hires CFG Scale"; 0 here: the first pass's); decoded and truncated to 8 bits.
"""

from __future__ import annotations

import torch
from PIL import Image

from tests.engine import a1111_reference as a1111
from tests.engine import kdiffusion_reference

LATENT_MODES = {"Latent": ("bilinear", False), "Latent (bicubic antialiased)": ("bicubic", True),
                "Latent (nearest-exact)": ("nearest-exact", False)}


@torch.no_grad()
def hires(pipe, prompt: str, negative: str, seed: int, steps: int, cfg: float, width: int, height: int,
          scale: float, upscaler: str, strength: float, hires_steps: int = 0, hires_cfg: float = 0) -> Image.Image:
    sampling, _ = kdiffusion_reference.load()
    vae_scale = pipe.vae.config.scaling_factor
    first = pipe(prompt, negative_prompt=negative or None, height=height, width=width,
                 sigmas=a1111.reference_sigmas(steps).tolist(), guidance_scale=cfg,
                 latents=a1111.a1111_noise(seed, height, width), output_type="latent").images
    big_w, big_h = int(width * scale), int(height * scale)
    if upscaler in LATENT_MODES:
        mode, antialias = LATENT_MODES[upscaler]
        start = torch.nn.functional.interpolate(first, size=(big_h // 8, big_w // 8), mode=mode,
                                                antialias=antialias)
    else:
        assert upscaler == "Lanczos"
        small = a1111.a1111_pixels(pipe.vae.decode(first / vae_scale).sample)
        big = small.resize((big_w, big_h), resample=Image.Resampling.LANCZOS)
        start = pipe.vae.encode(a1111._to_model_range(big)).latent_dist.mean * vae_scale
    requested = hires_steps or steps
    total = int(requested / min(strength, 0.999))
    t_enc = requested - 1
    sigmas = a1111.reference_sigmas(total)[total - t_enc - 1:]
    cond, uncond = pipe.encode_prompt(prompt, "cpu", 1, True, negative)
    model = a1111.CFGDenoiser(pipe, cond, uncond, hires_cfg or cfg)  # Forge: p.hr_cfg in the hires pass
    x = start + a1111.a1111_noise(seed, big_h, big_w) * sigmas[0]
    x = sampling.sample_euler(model, x, sigmas, disable=True)
    return a1111.a1111_pixels(pipe.vae.decode(x / vae_scale).sample)
