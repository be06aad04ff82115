"""Hires fix's rules (A1111's target size, crop, step rule), its checks, and the pass in the pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from sdstudio.engine.errors import RequestError
from sdstudio.engine.hires import hires_size, hires_steps
from sdstudio.engine.pipeline import generate, plan
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.schedules import ModelSampling, get_sigmas
from sdstudio.engine.validate import validate

BASE = GenerationRequest(prompt="a red apple", negative_prompt="blurry", steps=3, cfg_scale=5.0, sampler="Euler",
                         scheduler="normal", width=64, height=64, seed=7, hires=True, strength=0.5)


@pytest.mark.parametrize("size,changes,upscaled,final", [
    ((512, 512), {"hires_scale": 2.0}, (1024, 1024), (1024, 1024)),
    ((512, 768), {"hires_scale": 1.5}, (768, 1152), (768, 1152)),
    ((512, 768), {"hires_resize_w": 1024}, (1024, 1536), (1024, 1536)),
    ((512, 768), {"hires_resize_h": 1024}, (682, 1024), None),  # 682 is off the grid: refused by the check
    ((512, 512), {"hires_resize_w": 1024, "hires_resize_h": 768}, (1024, 1024), (1024, 768)),
    ((512, 512), {"hires_resize_w": 768, "hires_resize_h": 1024}, (1024, 1024), (768, 1024)),
    ((640, 384), {"hires_resize_w": 960, "hires_resize_h": 960}, (1600, 960), (960, 960)),
    ((640, 384), {"hires_resize_w": 1000, "hires_resize_h": 1000}, (1666, 1000), None),
])
def test_target_size_and_crop_are_a1111s(size, changes, upscaled, final):
    req = BASE.replace(width=size[0], height=size[1], **changes)
    s = hires_size(req)
    assert (s.upscale_w, s.upscale_h) == upscaled
    if final is not None and all(v % 8 == 0 for v in upscaled):
        assert (s.width, s.height) == final


def test_the_crop_takes_the_smaller_half_off_the_left_and_top():
    """A1111: truncate // 2 cells off the start, (truncate + 1) // 2 off the end."""
    s = hires_size(BASE.replace(width=512, height=512, hires_resize_w=1024, hires_resize_h=744))
    assert s.crop_y == (1024 - 744) // 8 == 35
    assert s.latent_box == (0, 17, 128, 128 - 18) and s.height == 93 * 8


@pytest.mark.parametrize("steps,hires,strength,expected", [(20, 0, 0.5, (40, 20)), (20, 10, 0.3, (33, 10)),
                                                           (7, 0, 1.0, (7, 7)), (3, 4, 0.7, (5, 4))])
def test_the_step_rule_is_a1111s(steps, hires, strength, expected):
    assert hires_steps(BASE.replace(steps=steps, hires_steps=hires, strength=strength)) == expected


def test_the_plan_has_a_hires_pass_with_its_own_schedule_sampler_and_prompts():
    ms = ModelSampling()
    req = BASE.replace(steps=4, hires_steps=3, strength=0.6, hires_sampler="euler_a", hires_scheduler="Karras",
                       hires_prompt="a green apple", hires_negative_prompt="dull")
    first, second = plan(validate(req), ms)
    assert (first.first_step, second.first_step, second.job_steps) == (0, 4, 7)
    assert (second.width, second.height, second.sampler) == (128, 128, "Euler a")
    assert (second.prompt, second.negative_prompt, second.prompt_steps) == ("a green apple", "dull", 3)
    assert np.allclose(second.sigmas, get_sigmas("karras", 5, ms)[2:])
    plain = plan(validate(BASE.replace(hires_prompt="")), ms)[1]
    assert plain.prompt is None and plain.negative_prompt is None and plain.sampler == "Euler"
    assert plain.cfg_scale is None and first.cfg_scale is None  # the request's
    assert plan(validate(BASE.replace(hires_cfg_scale=2.5)), ms)[1].cfg_scale == 2.5


@pytest.mark.parametrize("changes,message", [
    ({"hires_scale": 0.5}, "hires scale 0.5 is out of range"),
    ({"hires_scale": 1.3}, "would upscale to a width of 83 px, not a multiple of 8.*80 or 88"),
    ({"hires_resize_w": 4}, "hires resize width 4 is out of range"),
    ({"hires_resize_w": 8000}, "hires resize width 8000 is out of range"),
    ({"hires_steps": -1}, "hires steps -1 is out of range"),
    ({"strength": 0.0}, "denoising strength 0.0 is out of range"),
    ({"hires_sampler": "Magic"}, "hires: .*Magic"),
    ({"hires_prompt": "x <lora:foo:1>"}, "hires prompt cannot hold <lora"),
    ({"hires_negative_prompt": "bad \udcff byte"}, "hires negative prompt is not valid text"),
    ({"hires_upscaler": ""}, "needs an upscaler"),
    ({"hires_cfg_scale": -1.0}, "hires CFG scale -1.0 is out of range"),
    ({"hires_cfg_scale": 101}, "hires CFG scale 101 is out of range"),
])
def test_bad_hires_settings_are_refused_before_any_work(changes, message):
    with pytest.raises(RequestError, match=message):
        validate(BASE.replace(**changes))


def test_hires_is_refused_for_img2img():
    from PIL import Image

    with pytest.raises(RequestError, match="txt2img second pass"):
        validate(BASE.replace(init_image=Image.new("RGB", (64, 64))))


def test_hires_off_ignores_its_settings():
    assert validate(BASE.replace(hires=False, hires_scale=0.1, hires_sampler="Magic")).hires_scale == 0.1


def test_an_unknown_upscaler_is_refused_before_sampling(tiny_model):
    steps = []
    with pytest.raises(RequestError, match="no upscaler named"):
        generate(tiny_model, BASE.replace(hires_upscaler="4x_Nothing"), on_step=steps.append)
    assert steps == []


def test_a_hires_job_counts_its_steps_over_both_passes_and_comes_out_bigger(tiny_model):
    steps = []
    req = BASE.replace(batch_size=2, hires_steps=2, hires_resize_w=96, hires_resize_h=128)
    result = generate(tiny_model, req, on_step=steps.append)
    assert [im.size for im in result.images] == [(96, 128)] * 2
    assert [s.step for s in steps] == list(range(5)) and {s.total for s in steps} == {5}
    assert [s.pass_name for s in steps] == ["first"] * 3 + ["hires"] * 2
    # image 2 of the batch is a batch-of-one run at its seed, hires pass included
    alone = generate(tiny_model, result.requests[1]).images[0]
    assert np.array_equal(np.asarray(alone), np.asarray(result.images[1]))


def test_the_hires_settings_change_the_image(tiny_model):
    base = np.asarray(generate(tiny_model, BASE).images[0], dtype=np.int16)
    for changes in ({"hires_upscaler": "Nearest"}, {"hires_prompt": "a blue car"}, {"strength": 0.9},
                    {"hires_sampler": "Heun"}, {"hires_cfg_scale": 9.0}):
        other = np.asarray(generate(tiny_model, BASE.replace(**changes)).images[0], dtype=np.int16)
        assert np.abs(other - base).max() > 0, changes


@pytest.mark.parametrize("prompt,expected", [
    ("[cat:dog:0.5]", [(4, "dog")]),  # a first-pass fraction has passed before the hires pass starts
    ("[cat:dog:1.5]", [(2, "cat"), (4, "dog")]),  # half-way through the hires pass
    ("[cat:dog:22]", [(2, "cat"), (4, "dog")]),  # step 22 of the job: the hires pass's second
    ("[cat:dog:5]", [(4, "dog")]),
])
def test_prompt_editing_in_the_hires_pass_counts_on_from_the_first_pass(prompt, expected):
    """A1111 (prompt_parser with hires_steps): fractions less 1, step numbers less the first pass's steps."""
    from sdstudio.engine.prompt_schedule import schedule

    assert schedule(prompt, 4, first=20) == expected
    assert schedule(prompt, 4) != expected or prompt == "[cat:dog:5]"


def test_the_hires_pass_conditions_on_the_upscaled_size_and_counts_from_the_first_pass():
    req = validate(BASE.replace(width=64, height=64, hires_resize_w=128, hires_resize_h=96))
    second = plan(req, ModelSampling())[1]
    assert (second.width, second.height, second.cond_size, second.prompt_first) == (128, 96, (128, 128), 3)


def test_the_hires_pass_guides_with_the_hires_cfg_scale(tiny_model, monkeypatch):
    from sdstudio.engine import passes

    scales = []
    real = passes.CFGDenoiser

    def spy(denoiser, cond, uncond, scale, *args, **kwargs):
        scales.append(scale)
        return real(denoiser, cond, uncond, scale, *args, **kwargs)

    monkeypatch.setattr(passes, "CFGDenoiser", spy)
    generate(tiny_model, BASE.replace(hires_cfg_scale=1.0))
    generate(tiny_model, BASE)
    assert scales == [5.0, 1.0, 5.0, 5.0]  # 0: the first pass's
