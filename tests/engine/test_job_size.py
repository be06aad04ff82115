"""Sizes from the model and the estimate that refuses jobs far beyond it: torch-free, so the CLI checks first."""

import subprocess
import sys

import pytest

from sdstudio.engine.errors import RequestError
from sdstudio.engine.job_size import (
    BYTES_PER_PIXEL,
    MAX_AREA_RATIO,
    VAE_DECODE_BYTES_PER_PIXEL,
    default_size,
    estimate,
    fit_memory,
    job_problem,
    largest_pass,
    memory_problem,
)
from sdstudio.engine.request import GenerationRequest
from tests.ui.fake_engine import fake_description


@pytest.mark.parametrize(
    "width,height,init,expected",
    [
        (None, None, None, (64, 64)),
        (None, 128, None, (64, 128)),  # one side given: the other is the model's, not SD 1.5's 512
        (96, None, None, (96, 64)),
        (40, 24, (4000, 4000), (40, 24)),  # both given: kept as given
        (None, None, (4000, 4000), (64, 64)),  # a huge init image: the model's area, not 4000x4000
        (None, None, (600, 300), (88, 48)),  # 2:1 at about 64*64 pixels
        (None, None, (7, 3000), (8, 1328)),  # a sliver: never below the multiple
        (None, 32, (600, 300), (64, 32)),  # one side given: the other from the image's aspect
        (100, None, (300, 600), (100, 200)),
    ],
)
def test_default_size(width, height, init, expected):
    assert default_size(width, height, 64, 8, init) == expected


def test_default_size_rounds_to_the_models_multiple():
    assert default_size(None, None, 512, 16, (1920, 1080)) == (688, 384)
    w, h = default_size(None, None, 1024, 8, (1000, 1000))
    assert (w, h) == (1024, 1024)


def test_estimate_scales_with_pixels_steps_and_batch():
    native = estimate(512, 512, 20, 1, 512)
    assert native.area_ratio == 1 and native.work_ratio == 1
    big = estimate(1024, 512, 40, 3, 512)
    assert big.area_ratio == 2 and big.work_ratio == 12 and big.memory_bytes == 6 * native.memory_bytes


def test_job_problem_names_the_size_and_the_reason():
    assert job_problem(estimate(512, 512, 20, 1, 512), memory=64 << 30) is None
    at_bound = estimate(2048, 2048, 20, 1, 512)
    assert at_bound.area_ratio == MAX_AREA_RATIO and job_problem(at_bound, None) is None
    over = job_problem(estimate(4000, 4000, 20, 1, 64), None)
    assert over.startswith("4000x4000 is 3906x the model's native 64x64 area") and "native area" in over
    # Within the area bound but not within this machine's memory.
    short = job_problem(estimate(1024, 1024, 20, 8, 512), memory=1 << 30)
    assert "1024x1024" in short and "more than this machine's 1.0 GiB of memory" in short
    assert job_problem(estimate(1024, 1024, 20, 8, 512), memory=None) is None


def test_estimate_counts_the_unets_dtype():
    fp32, fp16 = estimate(768, 512, 20, 3, 512), estimate(768, 512, 20, 3, 512, element_size=2)
    assert fp16.memory_bytes * 2 == fp32.memory_bytes == 768 * 512 * 3 * BYTES_PER_PIXEL
    assert fp16.pixel_bytes * 2 == fp32.pixel_bytes


def test_largest_pass_is_the_hires_size_when_hires_is_on():
    req = GenerationRequest(width=512, height=384, hires_scale=1.5)
    assert largest_pass(req, 8) == (512, 384)
    assert largest_pass(req.replace(hires=True), 8) == (768, 576)
    # Resize to 640x640 covers it at 853x640 before the crop: the memory is the cover's.
    assert largest_pass(req.replace(hires=True, hires_resize_w=640, hires_resize_h=640), 8) == (853, 640)


def test_memory_problem_says_whose_memory_and_what_would_fit():
    job = estimate(1024, 1024, 20, 4, 512, element_size=2)  # 4 GiB at fp16
    assert memory_problem(job, None) is None and memory_problem(job, 4 << 30) is None
    short = memory_problem(job, 1 << 30, where="the GPU's free")
    assert "more than the GPU's free 1.0 GiB of memory (about 512x512 per image would fit)" in short
    assert short.startswith("1024x1024 is 4x the model's native 512x512 area")
    hopeless = memory_problem(job, 1 << 20)
    assert hopeless.endswith("(not even 64x64 per image would fit)")
    # Far beyond the native area but within memory: not a memory problem (job_problem's area rule is the CLI's).
    assert memory_problem(estimate(4000, 4000, 20, 1, 64), 64 << 30) is None


# The tiny demo family: 64 px native, latent factor 8.
DEMO = fake_description("tiny")
BIG = GenerationRequest(width=512, height=512, batch_size=2)  # sampling 1 GiB (fp32), decode 1.5 GiB


def test_fit_memory_keeps_a_job_that_fits_as_it_is():
    assert fit_memory(BIG, DEMO, 8 << 30) is BIG
    assert fit_memory(BIG, DEMO, None) is BIG  # unknown memory: not checked
    assert fit_memory(BIG.replace(tiled_vae="off"), DEMO, 2 << 30).tiled_vae == "off"


def test_fit_memory_tiles_the_vae_on_auto_when_the_untiled_decode_would_not_fit():
    need = 512 * 512 * VAE_DECODE_BYTES_PER_PIXEL
    assert fit_memory(BIG, DEMO, need).tiled_vae == "auto"  # exactly fits
    assert fit_memory(BIG, DEMO, need - 1).tiled_vae == "on"
    assert fit_memory(BIG.replace(tiled_vae="on"), DEMO, need - 1).tiled_vae == "on"
    # The hires pass is the largest: its decode is what must fit.
    hires = GenerationRequest(width=256, height=256, hires=True, hires_scale=2.0)
    assert fit_memory(hires, DEMO, need - 1).tiled_vae == "on"
    assert fit_memory(hires.replace(hires=False), DEMO, need - 1).tiled_vae == "auto"


def test_fit_memory_refuses_an_untiled_decode_that_does_not_fit_and_says_what_would():
    with pytest.raises(RequestError, match=r"untiled VAE decode of 512x512 .* turn the tiled VAE on \(or auto\), "
                                           r"or choose at most about 384x384$"):
        fit_memory(BIG.replace(tiled_vae="off"), DEMO, 1 << 30)


def test_fit_memory_refuses_sampling_that_does_not_fit_whatever_the_vae():
    for mode in ("auto", "on", "off"):
        with pytest.raises(RequestError, match=r"more than the GPU's free 0\.5 GiB of memory "
                                               r"\(about 320x320 per image would fit\)$"):
            fit_memory(BIG.replace(tiled_vae=mode), DEMO, 512 << 20, where="the GPU's free")
    # The same job in fp16 needs half: it fits where fp32 did not.
    assert fit_memory(BIG, DEMO, 600 << 20, element_size=2).tiled_vae == "on"
    with pytest.raises(RequestError):
        fit_memory(BIG, DEMO, 600 << 20, element_size=4)


def test_job_size_does_not_import_torch():
    code = "import sys, sdstudio.engine.job_size, sdstudio.engine.validate; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
