"""Passes: only-masked geometry through the whole pipeline, and progress counted over a job of several passes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from safetensors.torch import save_file

from sdstudio.cli import main
from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.errors import GenerationError
from sdstudio.engine.passes import Pass, PassRunner, check_finite
from sdstudio.engine.pipeline import generate, number_steps, plan
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.schedules import ModelSampling, get_sigmas
from tests.engine.test_images import textured
from tests.tiny_checkpoint import TINY_CONFIG, tiny_state_dict

BASE = GenerationRequest(prompt="a red apple", negative_prompt="blurry", steps=3, cfg_scale=5.0, sampler="Euler", scheduler="normal",
                         width=64, height=64, seed=7)


@pytest.mark.parametrize("request_size,rect", [((64, 64), (70, 100, 130, 120)), ((96, 48), (0, 20, 12, 100))])
def test_only_masked_with_an_identity_model_gives_the_image_back(tiny_model, monkeypatch, request_size, rect):
    """A stand-in for sampling that returns the init crop it is given: what comes back is the original,
    outside the mask exactly and inside up to resampling, with a mask touching the image edge."""
    seen = []

    def identity(self, p, init, mask):
        seen.append((init.size, mask.size))
        return [init] * len(self.seeds)

    monkeypatch.setattr(PassRunner, "render", identity)
    image = textured(160, 120)
    mask = Image.new("L", image.size, 0)
    mask.paste(255, rect)
    req = BASE.replace(width=request_size[0], height=request_size[1], init_image=image, mask=mask,
                       only_masked=True, only_masked_padding=32, mask_blur=4, batch_size=2)
    out = [np.asarray(im, dtype=np.int16) for im in generate(tiny_model, req).images]
    ref = np.asarray(image, dtype=np.int16)
    assert seen == [(request_size, request_size)]
    near = np.asarray(mask.filter(ImageFilter.MaxFilter(13))) > 0  # the mask and its blur
    for o in out:
        assert o.shape == ref.shape
        assert np.array_equal(o[~near], ref[~near])
        assert np.abs(o[near] - ref[near]).mean() < 2.0


def test_only_masked_plans_one_pass_over_the_whole_image_with_a_region():
    image, mask = textured(160, 120), Image.new("L", (160, 120), 0)
    mask.paste(255, (150, 0, 160, 10))
    (p,) = plan(BASE.replace(init_image=image, mask=mask, only_masked=True), ModelSampling())
    assert p.init.size == (160, 120) and p.region is not None and p.region[2] <= 160
    (q,) = plan(BASE.replace(init_image=image, mask=mask), ModelSampling())
    assert q.init.size == (64, 64) and q.region is None


def test_steps_count_over_every_pass_of_a_job(tiny_model):
    ms = ModelSampling()
    req = BASE.replace(sampler="Euler")
    first = Pass("first", 64, 64, get_sigmas("normal", 3, ms))
    second = Pass("hires", 64, 64, get_sigmas("normal", 5, ms)[2:], init=Image.new("RGB", (64, 64), (9, 99, 199)))
    passes = number_steps([first, second])
    assert [(p.first_step, p.job_steps) for p in passes] == [(0, 6), (3, 6)]
    steps = []
    runner = PassRunner(tiny_model, req, ms, on_step=steps.append)
    for p in passes:
        runner.run(p)
    assert [s.step for s in steps] == list(range(6)) and {s.total for s in steps} == {6}
    assert [s.pass_name for s in steps] == ["first"] * 3 + ["hires"] * 3
    assert steps[-1].preview is not None


def test_a_pass_can_start_from_a_given_latent(tiny_model):
    import torch

    ms = ModelSampling()
    sigmas = get_sigmas("normal", 3, ms)[-2:]
    runner = PassRunner(tiny_model, BASE, ms)
    start = torch.zeros(1, 4, 8, 8)
    a = runner.run(Pass("first", 64, 64, sigmas, init_latent=start))[0]
    b = runner.run(Pass("first", 64, 64, sigmas, init_latent=start + 2.0))[0]
    c = runner.run(Pass("first", 64, 64, sigmas, init_latent=start))[0]
    assert np.array_equal(np.asarray(a), np.asarray(c))
    assert np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max() > 0


def _poisoned(tmp_path, key):
    sd = tiny_state_dict()
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("nan")
    p = tmp_path / "nan.safetensors"
    save_file(sd, str(p), metadata={"sdstudio.config": json.dumps(TINY_CONFIG)})
    return p


@pytest.mark.parametrize("key,where", [("model.diffusion_model.out.2.bias", "latent"),
                                       ("first_stage_model.decoder.conv_out.bias", "image")])
def test_nan_in_the_weights_is_refused_rather_than_saved_as_black(tmp_path, key, where):
    model = load_checkpoint(_poisoned(tmp_path, key))
    with pytest.raises(GenerationError, match=f"NaN/inf values in the {where} .*nothing was saved"):
        generate(model, BASE.replace(steps=2))


def test_the_cli_saves_nothing_from_a_model_that_produces_nan(tmp_path, capsys):
    out = tmp_path / "out"
    p = _poisoned(tmp_path, "first_stage_model.decoder.conv_out.bias")
    assert main(["generate", "--model", str(p), "--prompt", "x", "--steps", "2", "--out", str(out)]) == 2
    last = capsys.readouterr().err.rstrip("\n").split("\n")[-1]  # after the progress lines
    assert last.startswith("error: the model produced NaN/inf values in the image")
    assert not out.exists() or not any(out.rglob("*.png"))


def test_check_finite_lets_finite_tensors_through_and_catches_one_inf():
    x = torch.randn(1, 4, 8, 8)
    check_finite(x, "latent", "test")
    x[0, 3, 7, 7] = float("inf")
    with pytest.raises(GenerationError, match="NaN/inf"):
        check_finite(x, "latent", "test")
