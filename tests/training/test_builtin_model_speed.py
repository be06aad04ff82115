"""Speed of the shipped built-in model (issue 4; targets in docs/training.md): `perf`, not `slow`, because they
are timings on a shared machine. `python -m pytest -q -m perf -s` prints the figures; the bounds asserted are
generous multiples of the targets, so only a real regression fails, not a busy neighbour.
"""

import time

import pytest

from sdstudio.engine.api import builtin_model_path, builtin_taesd_path
from sdstudio.engine.request import GenerationRequest
from sdstudio.training.evaluate import request_for, speed

pytestmark = pytest.mark.perf


def test_twenty_steps_with_guidance_take_under_two_seconds(builtin_engine):
    request = request_for("red apple", 5.0, str(builtin_model_path()))
    builtin_engine.generate(request)  # load and warm up
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        builtin_engine.generate(request)
        timings.append(time.perf_counter() - start)
    print(f"\nbuilt-in model, 20 steps with CFG: best {min(timings):.2f} s of {len(timings)} (target 2 s)")
    assert min(timings) < 4.0, timings


def test_previews_add_under_a_tenth_to_sampling(builtin_engine):
    request = GenerationRequest(prompt="red apple", steps=20, cfg_scale=5.0, width=64, height=64,
                                model=str(builtin_model_path()), taesd=str(builtin_taesd_path()))
    previews = []

    def best_of_three(on_step):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            builtin_engine.generate(request, on_step)
            best = min(best, time.perf_counter() - start)
        return best

    builtin_engine.generate(request)
    plain = best_of_three(None)
    with_previews = best_of_three(lambda info: previews.append(info.preview))
    print(f"\nbuilt-in model, 20 steps: {plain:.3f} s plain, {with_previews:.3f} s with previews "
          f"(+{100 * (with_previews / plain - 1):.1f} %, target +10 %)")
    assert any(p is not None for p in previews)
    assert with_previews < 1.3 * plain, (with_previews, plain)


def test_one_preview_costs_under_a_tenth_of_a_step(builtin_engine):
    timing = speed(builtin_engine, str(builtin_model_path()))
    print(f"\nbuilt-in model: step {timing['step_ms']:.1f} ms, preview {timing['preview_ms']:.2f} ms "
          f"({100 * timing['preview_share_of_step']:.1f} % of a step, target 10 %; it sits near the target)")
    assert timing["preview_share_of_step"] < 0.25, timing
