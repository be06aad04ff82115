"""Sizes from the model and the estimate that refuses jobs far beyond it: torch-free, so the CLI checks first."""

import subprocess
import sys

import pytest

from sdstudio.engine.job_size import MAX_AREA_RATIO, default_size, estimate, job_problem


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


def test_job_size_does_not_import_torch():
    code = "import sys, sdstudio.engine.job_size, sdstudio.engine.validate; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
