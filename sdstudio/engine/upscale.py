"""Upscalers by name, as AUTOMATIC1111 names them: one registry, name -> how to upscale.

Two kinds (A1111 `shared.latent_upscale_modes` and `modules/upscaler.py`):
- latent upscalers resize the latent with `torch.nn.functional.interpolate` (the names and modes are in
  names.LATENT_UPSCALERS, torch-free for the UI); the hires pass then never decodes its first pass;
- pixel upscalers resize an RGB image. Each is one "step" function (A1111's `do_upscale`: Lanczos and Nearest
  scale by the asked factor, a model by its own factor), and `upscale_image` applies A1111's rule around it.

Model upscalers (upscaler_models.py) are added with `register_source`: a source lists the names it has now
(files in the models folder) and makes the step function for one of them on demand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from PIL import Image
from torch import Tensor

from sdstudio.engine.errors import RequestError
from sdstudio.engine.names import LATENT_UPSCALERS, PIXEL_UPSCALERS
from sdstudio.untrusted import quoted

# One application of a pixel upscaler: (image, the factor asked for) -> a bigger image.
Step = Callable[[Image.Image, float], Image.Image]


@dataclass(frozen=True)
class PixelUpscaler:
    name: str
    step: Step


class UpscalerSource(Protocol):
    """Upscalers found at run time (model files): their names, and one by name (None when not this source's)."""

    def names(self) -> list[str]: ...

    def get(self, name: str) -> PixelUpscaler | None: ...


def _resize(resample: Image.Resampling) -> Step:
    # A1111's UpscalerLanczos/UpscalerNearest: the image times the factor, int() of each side.
    def step(image: Image.Image, scale: float) -> Image.Image:
        return image.resize((int(image.width * scale), int(image.height * scale)), resample=resample)

    return step


_BUILT_IN = {
    "Lanczos": PixelUpscaler("Lanczos", _resize(Image.Resampling.LANCZOS)),
    "Nearest": PixelUpscaler("Nearest", _resize(Image.Resampling.NEAREST)),
}
assert tuple(_BUILT_IN) == PIXEL_UPSCALERS  # one list of names, shared with the torch-free side
_SOURCES: list[UpscalerSource] = []


def register_source(source: UpscalerSource) -> None:
    """Add a source of pixel upscalers (model files). Registering the same source twice is a no-op."""
    if source not in _SOURCES:
        _SOURCES.append(source)


def upscaler_names() -> list[str]:
    """Every upscaler the engine has now: latent, built-in pixel, then the sources' (model files)."""
    names = [*LATENT_UPSCALERS, *PIXEL_UPSCALERS]
    for source in _SOURCES:
        names += [n for n in source.names() if n not in names]
    return names


def is_latent(name: str) -> bool:
    return name in LATENT_UPSCALERS


def pixel_upscaler(name: str) -> PixelUpscaler:
    if name in _BUILT_IN:
        return _BUILT_IN[name]
    for source in _SOURCES:
        found = source.get(name)
        if found is not None:
            return found
    raise RequestError(f"no upscaler named {quoted(name)}: use one of {', '.join(upscaler_names())}")


def check_upscaler(name: str) -> None:
    """Refuse an unknown name before any work."""
    if not is_latent(name):
        pixel_upscaler(name)


def upscale_latent(name: str, latent: Tensor, height: int, width: int) -> Tensor:
    """(B, C, h, w) -> (B, C, height, width) with the named latent mode (A1111's hires fix: float32 in and out)."""
    mode, antialias = LATENT_UPSCALERS[name]
    return torch.nn.functional.interpolate(latent, size=(height, width), mode=mode, antialias=antialias)


def upscale_image(name: str, image: Image.Image, width: int, height: int) -> Image.Image:
    """`image` upscaled to width x height with a pixel upscaler, by A1111's rule (images.resize_image with
    "Just resize", Upscaler.upscale): when it must grow, apply the step up to three times until the image
    reaches the target rounded down to 8, Lanczos to that size if it missed, then Lanczos to width x height."""
    image = image.convert("RGB")
    scale = max(width / image.width, height / image.height)
    if scale > 1.0:
        step = pixel_upscaler(name).step
        dest = (int((image.width * scale) // 8 * 8), int((image.height * scale) // 8 * 8))
        for _ in range(3):
            if image.width >= dest[0] and image.height >= dest[1]:
                break
            before = image.size
            image = step(image, scale)
            if image.size == before:
                break
        if image.size != dest:
            image = image.resize(dest, resample=Image.Resampling.LANCZOS)
    if image.size != (width, height):
        image = image.resize((width, height), resample=Image.Resampling.LANCZOS)
    return image
