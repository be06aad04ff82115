"""How big a job is before it starts: the image size a request defaults to, and whether a size is far beyond
what the model and the machine were made for. No torch here: the CLI decides before the engine loads.

Sizes default the way A1111's "resize to" does: the model's native square, or for an init image its aspect
ratio at about the model's native area. A job's cost is measured against one native image at 20 steps;
sampling time grows at least with pixels x steps x batch, and working memory with pixels x batch.

The CLI checks a job (`job_problem`) before the model loads, against this machine's RAM; the engine checks its
memory again before each job (`fit_memory`, called by Engine.generate, so the app's jobs are checked too)
against the memory of the device it runs on.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdstudio.engine.errors import RequestError
from sdstudio.engine.hires import hires_size
from sdstudio.engine.request import GenerationRequest

if TYPE_CHECKING:
    from sdstudio.engine.detect import ModelDescription

REFERENCE_STEPS = 20
# A latent this many times the native area no longer makes one coherent picture (the model tiles its subject)
# and runs for at least as many times as long: refuse unless the user confirms.
MAX_AREA_RATIO = 16
# Working memory per output pixel of one image through the UNet in fp32, classifier-free guidance's doubled
# batch included: 4x the 0.23 GiB bench/bench_unet_vae.py measured for a 512x512 SD 1.5 step at batch 2
# (bench/README.md), rounded up. Rough and generous: it only has to tell a job that fits from one too big.
BYTES_PER_PIXEL = 2 << 10
# Peak working memory of one untiled fp32 VAE decode per output pixel (decoder activations, weights not
# included): bench/vae_tiles.py measured 3.8-4.0 KiB on the SD 1.5 configuration (256-512 px), taken 1.5x.
# Images decode one at a time, so the batch does not multiply it. The tiled decode (vae_tiles.py) holds less.
VAE_DECODE_BYTES_PER_PIXEL = 6 << 10
# Tiled VAE settings (request.tiled_vae, --tiled-vae, the app's setting): "auto" tiles above AUTO_TILE_PIXELS
# (A1111 users meet VAE out-of-memory around here on 8 GB GPUs) or when the untiled decode would not fit the
# memory free on the VAE's device.
TILED_VAE_MODES = ("auto", "on", "off")
AUTO_TILE_PIXELS = 1536 * 1536


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def default_size(width: int | None, height: int | None, native: int, multiple: int = 8,
                 init_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """(width, height) with the sides not given filled in: from the init image's aspect ratio at about the
    model's native area when there is one, else the model's native side. Given sides are kept as given."""
    if width is not None and height is not None:
        return width, height
    if init_size is None or min(init_size) < 1:
        return (native if width is None else width), (native if height is None else height)
    aspect = init_size[0] / init_size[1]
    if width is not None:
        return width, _round_to(width / aspect, multiple)
    if height is not None:
        return _round_to(height * aspect, multiple), height
    w = math.sqrt(native * native * aspect)
    return _round_to(w, multiple), _round_to(w / aspect, multiple)


@dataclass(frozen=True)
class JobEstimate:
    width: int
    height: int
    batch: int
    steps: int
    native: int
    area_ratio: float  # one image's pixels over the native square's
    work_ratio: float  # pixels x steps x batch over one native image at REFERENCE_STEPS
    memory_bytes: int  # working memory of the sampling, weights not included
    pixel_bytes: int = BYTES_PER_PIXEL  # of that, per pixel of one image (the UNet's dtype's share)

    def describe(self) -> str:
        return (f"{self.width}x{self.height} is {self.area_ratio:.0f}x the model's native "
                f"{self.native}x{self.native} area; with {self.steps} steps x {self.batch} images that is about "
                f"{self.work_ratio:.0f}x the work of one native image and {self.memory_bytes / 2**30:.1f} GiB of "
                "working memory")


def estimate(width: int, height: int, steps: int, batch: int, native: int, element_size: int = 4) -> JobEstimate:
    """The job's cost; `element_size`: bytes per number of the UNet's dtype (BYTES_PER_PIXEL is for fp32)."""
    area_ratio = width * height / (native * native)
    pixel_bytes = BYTES_PER_PIXEL * element_size // 4
    return JobEstimate(width, height, batch, steps, native, area_ratio,
                       area_ratio * batch * steps / REFERENCE_STEPS, width * height * batch * pixel_bytes,
                       pixel_bytes)


def largest_pass(req: GenerationRequest, f: int) -> tuple[int, int]:
    """(width, height) of the job's biggest pass (`f`: the model's latent factor), what its memory estimate is
    for."""
    if not req.hires:
        return req.width, req.height
    size = hires_size(req, f)
    return max(req.width, size.upscale_w), max(req.height, size.upscale_h)


def vae_decode_bytes(width: int, height: int) -> int:
    """Rough peak working memory of one untiled fp32 VAE decode at width x height."""
    return width * height * VAE_DECODE_BYTES_PER_PIXEL


def fitting_side(memory: int, bytes_per_pixel: int, multiple: int = 64) -> int:
    """The largest square side (a multiple of `multiple`, 0 if none) whose pixels x bytes_per_pixel fit."""
    return int(math.sqrt(max(0, memory) / bytes_per_pixel)) // multiple * multiple


def physical_memory() -> int | None:
    """This machine's RAM in bytes, or None where the OS does not say (os.sysconf is POSIX only)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _would_fit(side: int) -> str:
    return f"about {side}x{side}" if side else "not even 64x64"


def memory_problem(job: JobEstimate, memory: int | None, tiled_vae: str = "auto",
                   where: str = "this machine's") -> str | None:
    """Why the job would not fit `memory` bytes (None: unknown, not checked; `where` names whose memory it is),
    in words for the user with the size that would fit; None when it fits. With the tiled VAE "auto" or "on"
    the decode is tiled when short of memory, so only "off" checks the untiled decode."""
    if memory is None:
        return None
    if job.memory_bytes > memory:
        side = fitting_side(memory // max(1, job.batch), job.pixel_bytes)
        return (f"{job.describe()}, more than {where} {memory / 2**30:.1f} GiB of memory "
                f"({_would_fit(side)} per image would fit)")
    need = vae_decode_bytes(job.width, job.height)
    if tiled_vae == "off" and need > memory:
        side = fitting_side(memory, VAE_DECODE_BYTES_PER_PIXEL)
        return (f"the untiled VAE decode of {job.width}x{job.height} needs about {need / 2**30:.1f} GiB, more "
                f"than {where} {memory / 2**30:.1f} GiB of memory: turn the tiled VAE on (or auto), "
                f"or choose at most {_would_fit(side)}")
    return None


def job_problem(job: JobEstimate, memory: int | None, tiled_vae: str = "auto") -> str | None:
    """Why the job is far beyond the model's native size or this machine (`memory` bytes of RAM; None:
    unknown, not checked), in words for the user with the size that would fit; None when it is not (see
    memory_problem). A front end refuses such a job unless the user confirms it."""
    problem = memory_problem(job, memory, tiled_vae)
    if problem is None and job.area_ratio > MAX_AREA_RATIO:
        return f"{job.describe()}, more than {MAX_AREA_RATIO}x the native area"
    return problem


def fit_memory(req: GenerationRequest, desc: ModelDescription, memory: int | None, element_size: int = 4,
               where: str = "this machine's") -> GenerationRequest:
    """The request as it will run in `memory` bytes (None: unknown, not checked) on the UNet's device
    (`element_size`: bytes per number of the UNet's dtype; the VAE always decodes in fp32): with the tiled VAE
    on "auto" and an untiled decode of its largest pass too big, tiled from the start ("on"); a job whose
    sampling (or, tiled VAE "off", decode) would not fit raises RequestError saying what would. Only memory is
    checked: a job far beyond the native size but within memory is the user's choice."""
    width, height = largest_pass(req, desc.vae_downscale)
    if req.tiled_vae == "auto" and memory is not None and vae_decode_bytes(width, height) > memory:
        req = req.replace(tiled_vae="on")
    job = estimate(width, height, req.steps, req.batch_size, desc.default_size, element_size)
    problem = memory_problem(job, memory, req.tiled_vae, where)
    if problem:
        raise RequestError(problem)
    return req
