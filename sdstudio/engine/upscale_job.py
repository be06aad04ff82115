"""One "Upscale" job, as the command line (`python -m sdstudio upscale`) and the gallery's action run it: an
image upscaled by a named upscaler (upscale.py's registry: Lanczos, Nearest or a model file) to `scale` times
its size, then optionally refined by A1111's SD upscale (sd_upscale.py: low-strength img2img in tiles).

The result keeps the source's request (prompt, seed, model) and says what was done in A1111's postprocessing
keys ("Postprocess upscaler", "Postprocess upscale by"), plus ours for the SD pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import GenerationRequest, StepInfo
from sdstudio.engine.sd_upscale import OVERLAP, refine_in_tiles, tile_size

MAX_SCALE = 8.0
MAX_SIDE = 8192  # pixels; an upscale past this is refused before work (a 8192² RGB image is 200 MB in fp32)


@dataclass(frozen=True)
class UpscaleSettings:
    upscaler: str
    scale: float = 2.0
    sd_strength: float = 0.0  # 0 = no SD upscale pass
    overlap: int = OVERLAP

    def check(self, width: int, height: int) -> tuple[int, int]:
        """The target size; RequestError for values no run should start with."""
        if not 1.0 <= self.scale <= MAX_SCALE:
            raise RequestError(f"upscale factor {self.scale:g} is outside 1..{MAX_SCALE:g}")
        if not 0.0 <= self.sd_strength <= 1.0:
            raise RequestError(f"SD upscale strength {self.sd_strength:g} is outside 0..1")
        if self.overlap < 0:
            raise RequestError("the SD upscale overlap cannot be negative")
        target = int(width * self.scale), int(height * self.scale)
        if max(target) > MAX_SIDE:
            raise RequestError(f"{width}x{height} × {self.scale:g} = {target[0]}x{target[1]} is over {MAX_SIDE} "
                               "pixels a side: choose a smaller factor")
        return target

    def infotext(self, tile: tuple[int, int] | None = None) -> dict[str, object]:
        pairs: dict[str, object] = {"Postprocess upscaler": self.upscaler, "Postprocess upscale by": _number(self.scale)}
        if self.sd_strength > 0:
            pairs["SD upscale strength"] = _number(self.sd_strength)
            pairs["SD upscale overlap"] = self.overlap
            if tile is not None:
                pairs["SD upscale tile"] = f"{tile[0]}x{tile[1]}"
        return pairs


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value  # A1111 writes "Postprocess upscale by: 4"


def upscale(image: Image.Image, settings: UpscaleSettings) -> Image.Image:
    """The image at scale × its size with the named upscaler (A1111's rule: the model's own factor, repeated
    up to three times, then Lanczos to the exact size)."""
    from sdstudio.engine.upscale import upscale_image

    width, height = settings.check(image.width, image.height)
    return upscale_image(settings.upscaler, image.convert("RGB"), width, height)


def sd_refine(image: Image.Image, request: GenerationRequest, settings: UpscaleSettings, engine,
              on_step: Callable[[StepInfo], None] | None = None,
              on_tile: Callable[[int, int], None] | None = None,
              should_cancel: Callable[[], bool] | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """SD upscale of an already upscaled image: each tile (the request's width × height, A1111's img2img
    size) is an img2img at `sd_strength` with the request's prompt and seed; returns (image, tile size).
    The source's hires fix and ControlNet units belong to its txt2img and are not used on the tiles."""
    tile = tile_size(image.width, image.height, request.width, request.height)

    def run_tile(part: Image.Image, index: int, count: int) -> Image.Image:
        if on_tile is not None:
            on_tile(index, count)
        job = request.replace(init_image=part, mask=None, width=tile[0], height=tile[1], batch_size=1,
                              strength=settings.sd_strength, parent_id="", hires=False, control_units=())
        return engine.generate(job, on_step=on_step, should_cancel=should_cancel).images[0]

    return refine_in_tiles(image, tile[0], tile[1], run_tile, settings.overlap), tile
