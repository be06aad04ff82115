"""walk.py: frame requests (pure), and frames on the built-in model that re-run alone to the same pixels."""

import numpy as np
import pytest

from sdstudio.engine.errors import RequestError
from sdstudio.engine.model_files import builtin_model_path
from sdstudio.engine.request import GenerationRequest, GenerationResult
from sdstudio.engine.walk import WalkRequest, check_walk, frame_requests, frame_times, run_walk

A = GenerationRequest(prompt="red apple", negative_prompt="blurry", seed=11, steps=7, cfg_scale=4.0, width=64,
                      height=64, batch_size=3)
B = GenerationRequest(prompt="flag: Japan", seed=12, steps=30, cfg_scale=9.0, width=128, height=128)


def test_frame_times_run_from_0_to_1_evenly():
    assert frame_times(2) == [0.0, 1.0]
    assert frame_times(5) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_prompt_walk_frames_blend_the_prompt_and_keep_everything_else_the_start_s():
    frames = frame_requests(WalkRequest(A, B, frames=5, what="prompt"))
    assert frames[0] == A.replace(batch_size=1)
    assert frames[-1] == A.replace(batch_size=1, prompt=B.prompt)  # a plain run of the end prompt
    for t, frame in zip((0.25, 0.5, 0.75), frames[1:-1], strict=True):
        assert frame == A.replace(batch_size=1, blend_prompt=B.prompt, blend_strength=t)
    assert all(f.seed == A.seed and f.steps == 7 and f.width == 64 for f in frames)


def test_noise_and_both_walk_frames_are_variation_seeds():
    noise = frame_requests(WalkRequest(A, B, frames=3, what="noise"))
    assert noise[0] == A.replace(batch_size=1)
    assert noise[1] == A.replace(batch_size=1, subseed=B.seed, subseed_strength=0.5)
    assert noise[2] == A.replace(batch_size=1, seed=B.seed)
    both = frame_requests(WalkRequest(A, B, frames=3, what="both"))
    assert both[1] == A.replace(batch_size=1, subseed=B.seed, subseed_strength=0.5, blend_prompt=B.prompt,
                                blend_strength=0.5)
    assert both[2] == A.replace(batch_size=1, seed=B.seed, prompt=B.prompt)


def test_both_with_one_seed_moves_only_the_prompt():
    frames = frame_requests(WalkRequest(A, B.replace(seed=A.seed), frames=3, what="both"))
    assert frames[1] == A.replace(batch_size=1, blend_prompt=B.prompt, blend_strength=0.5)


@pytest.mark.parametrize("walk, message", [
    (WalkRequest(A, B, frames=1), "frames 1 is out of range"),
    (WalkRequest(A, B, frames=241), "out of range"),
    (WalkRequest(A, B, frames=True), "out of range"),
    (WalkRequest(A, B, what="seed"), "moves one of noise, prompt, both"),
    (WalkRequest(A, B.replace(prompt=A.prompt), what="prompt"), "same prompt"),
    (WalkRequest(A, B.replace(seed=A.seed), what="noise"), "same seed"),
    (WalkRequest(A, A.replace(batch_size=1), what="both"), "same seed and prompt"),
    (WalkRequest(A.replace(blend_prompt="x", blend_strength=0.5), B, what="prompt"), "start image is itself"),
    (WalkRequest(A.replace(subseed=4, subseed_strength=0.1), B, what="noise"), "start image is itself"),
    (WalkRequest(A, B.replace(blend_prompt="x", blend_strength=0.5), what="prompt"), "end image is itself"),
    (WalkRequest(A, B.replace(prompt="[a:b:3]"), what="both"), "cannot use prompt editing"),
])
def test_walks_that_cannot_be_made_are_refused_in_one_line(walk, message):
    with pytest.raises(RequestError, match=message):
        check_walk(walk)


class FakeEngine:
    def __init__(self):
        self.requests = []

    def generate(self, request, on_step=None, should_cancel=None):
        self.requests.append(request)
        return GenerationResult(images=[f"image {len(self.requests)}"], requests=[request.replace(model_hash="h")],
                                model_name="m", seconds=0.5)


def test_run_walk_renders_each_frame_once_in_order_and_reports_each():
    engine, seen = FakeEngine(), []
    result = run_walk(engine, WalkRequest(A, B, frames=4, what="prompt"), on_frame=lambda k, r: seen.append(k))
    assert engine.requests == frame_requests(WalkRequest(A, B, frames=4, what="prompt"))
    assert seen == [0, 1, 2, 3]
    assert result.images == ["image 1", "image 2", "image 3", "image 4"]
    assert all(r.model_hash == "h" for r in result.requests)
    assert result.ts == frame_times(4) and result.seconds == 2.0 and result.model_name == "m"


def test_a_middle_frame_re_runs_alone_to_the_same_pixels_and_prompts_are_encoded_once(builtin_engine):
    start = GenerationRequest(prompt="red apple", negative_prompt="", steps=6, sampler="Euler", scheduler="normal",
                              seed=3, width=64, height=64, model=str(builtin_model_path()))
    walk = WalkRequest(start, start.replace(prompt="grinning face"), frames=3, what="prompt")
    builtin_engine.load_model(start.model)
    prompts = builtin_engine.model.text.prompts
    encoded = []
    real = prompts._encode
    prompts._encode = lambda prompt, clip_skip: encoded.append(prompt) or real(prompt, clip_skip)
    prompts._cache.clear()
    try:
        result = run_walk(builtin_engine, walk)
    finally:
        del prompts._encode
    assert sorted(encoded) == sorted(["red apple", "grinning face", ""])  # "" is the negative and the padding
    middle = result.requests[1]
    assert middle.blend_prompt == "grinning face" and middle.blend_strength == 0.5
    again = builtin_engine.generate(middle).images[0]
    assert np.array_equal(np.asarray(again), np.asarray(result.images[1]))
    assert not np.array_equal(np.asarray(result.images[0]), np.asarray(result.images[1]))


def test_a_noise_walk_frame_is_the_variation_seed_image_and_ends_at_the_end_seed(builtin_engine):
    start = GenerationRequest(prompt="red apple", steps=6, sampler="Euler", scheduler="normal", seed=3, width=64,
                              height=64, model=str(builtin_model_path()))
    end = start.replace(seed=40, prompt="ignored by a noise walk")
    result = run_walk(builtin_engine, WalkRequest(start, end, frames=3, what="noise"))
    variation = builtin_engine.generate(start.replace(subseed=40, subseed_strength=0.5)).images[0]
    plain_end = builtin_engine.generate(start.replace(seed=40)).images[0]
    assert np.array_equal(np.asarray(result.images[1]), np.asarray(variation))
    assert np.array_equal(np.asarray(result.images[2]), np.asarray(plain_end))
    assert result.requests[2].prompt == "red apple"
    assert not np.array_equal(np.asarray(result.images[0]), np.asarray(result.images[1]))
