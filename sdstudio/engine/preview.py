"""Live previews of the denoised latent at each step, with a bounded cost.

With a tiny autoencoder (TAESD, madebyollin) the preview is a real decode; without one, a 4x3 linear map from
latent channels to RGB (each family's `latent_rgb`, as ComfyUI publishes in `comfy/latent_formats.py`) gives a
blurry but faithful colour sketch at latent resolution. Either way the previewer times itself and skips steps
so that preview work stays under `budget` (a fraction) of the time spent sampling. The default of 5 % costs a
full-size model nothing (a TAESD preview is about 1 % of an SD 1.5 step at 512 px, so every step gets one);
it thins out previews only for models whose steps take milliseconds, such as the built-in one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from PIL import Image

from sdstudio.engine import families
from sdstudio.engine.images import from_unit

# Read-only view kept for importers; the factors live in families.FAMILIES. Rows: latent channels,
# columns: R, G, B. Inputs are scaled latents (what the UNet sees).
LATENT_RGB = {f.name: f.latent_rgb for f in families.FAMILIES}


def linear_preview(latent: torch.Tensor, factors: Sequence[Sequence[float]]) -> Image.Image:
    """First image of a (B, 4, h, w) scaled latent -> RGB at latent resolution, through a 4x3 map."""
    factors = torch.tensor(factors, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->rhw", latent[0, :4].float(), factors)
    return from_unit(((rgb + 1) / 2).clamp(0, 1)[None])[0]


class Previewer:
    """Turns denoised latents into small RGB images, never spending more than `budget` of sampling time."""

    def __init__(self, family: str, taesd=None, budget: float = 0.05, max_side: int = 512, max_latent: int = 32,
                 latent_rgb: list[list[float]] | None = None):
        # A model may carry its own map (our demo model fits one at training time); else the family's.
        self.latent_rgb = latent_rgb or families.family(family).latent_rgb
        self.taesd = taesd
        self.budget = budget
        self.max_side = max_side
        self.max_latent = max_latent
        self.spent = 0.0
        self.started = time.perf_counter()
        self.count = 0

    def due(self, step: int, total: int) -> bool:
        """A preview now keeps the total preview time under budget of the elapsed time (the last step always)."""
        if self.count == 0 or step == total - 1:
            return True
        elapsed = time.perf_counter() - self.started
        per_preview = self.spent / self.count
        return self.spent + per_preview <= self.budget * elapsed

    @torch.no_grad()
    def __call__(self, latent: torch.Tensor) -> Image.Image:
        t0 = time.perf_counter()
        if self.taesd is not None:
            x = latent[:1].to(next(self.taesd.parameters()).dtype)
            # A preview needs no more than ~256 px: decoding a pooled latent costs 4-16x less at 512-1024 px.
            k = -(-max(x.shape[-2:]) // self.max_latent)
            if k > 1:
                x = torch.nn.functional.avg_pool2d(x, k, ceil_mode=True)
            image = from_unit(self.taesd.decode(x).float().clamp(0, 1))[0]
        else:
            image = linear_preview(latent, self.latent_rgb)
        if max(image.size) > self.max_side:
            image.thumbnail((self.max_side, self.max_side), Image.Resampling.BILINEAR)
        self.spent += time.perf_counter() - t0
        self.count += 1
        return image
