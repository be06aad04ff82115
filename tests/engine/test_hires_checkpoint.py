"""Hires fix with another checkpoint for the second pass: the second pass really runs on the other weights."""

from dataclasses import replace

import numpy as np
import pytest

from sdstudio.engine import api
from sdstudio.engine.api import Engine
from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.errors import RequestError
from sdstudio.engine.hires import hires_size
from sdstudio.engine.model_files import model_hash
from sdstudio.engine.passes import PassRunner
from sdstudio.engine.pipeline import plan
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.schedules import ModelSampling
from sdstudio.engine.upscale import upscale_image, upscale_latent
from tests.tiny_checkpoint import TINY_CONFIG, write_tiny_checkpoint

REQ = GenerationRequest(prompt="apple", steps=3, width=64, height=64, sampler="Euler", seed=5, hires=True,
                        hires_scale=1.5, strength=0.6)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hires_ckpt")
    return (write_tiny_checkpoint(folder / "first.safetensors", seed=0),
            write_tiny_checkpoint(folder / "second.safetensors", seed=1))


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def by_hand(first_path, second_path, req: GenerationRequest):
    """The job written out: the first pass on the first weights, the hires pass on the second's."""
    first_model, second_model = load_checkpoint(first_path), load_checkpoint(second_path)
    sampling = ModelSampling(family=first_model.description.family)
    first, second = plan(req, sampling)
    latents = PassRunner(first_model, req, sampling).sample(first)
    runner = PassRunner(second_model, req, sampling)
    size = hires_size(req)
    if req.hires_upscaler == "Latent":
        start = upscale_latent("Latent", latents, size.upscale_h // 8, size.upscale_w // 8)
    else:
        decoded = PassRunner(first_model, req, sampling).decode(latents)
        start = runner.encode(upscale_image(req.hires_upscaler, decoded[0], size.upscale_w, size.upscale_h))
    return runner.run(replace(second, init_latent=start))[0]


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_the_hires_pass_runs_on_the_hires_checkpoints_weights(models, upscaler):
    first, second = models
    req = REQ.replace(model=str(first), hires_upscaler=upscaler)
    steps = []
    got = Engine().generate(req.replace(hires_checkpoint=str(second)), on_step=steps.append)
    expected = by_hand(first, second, req)
    assert np.abs(pixels(got.images[0]) - pixels(expected)).max() <= 1
    same = Engine().generate(req).images[0]  # the first checkpoint for both passes: another image
    assert np.abs(pixels(got.images[0]) - pixels(same)).mean() > 2
    # The result names the first model, carries the hires checkpoint and its hash, and progress said so.
    assert got.model_name == "first"
    assert got.requests[0].hires_checkpoint == str(second)
    assert got.requests[0].hires_checkpoint_hash == model_hash(second)
    loading = [s for s in steps if s.message]
    assert [s.message for s in loading] == ["Loading the hires checkpoint second…"]
    assert loading[0].step == 2 and steps.index(loading[0]) == 3  # after the first pass's 3 steps


def test_the_next_job_runs_on_its_own_model_again(models):
    first, second = models
    engine = Engine()
    req = REQ.replace(model=str(first))
    engine.generate(req.replace(hires_checkpoint=str(second)))
    assert np.array_equal(pixels(engine.generate(req).images[0]), pixels(Engine().generate(req).images[0]))


def test_a_hires_checkpoint_of_another_latent_space_is_refused_naming_both(models, tmp_path, monkeypatch):
    other = write_tiny_checkpoint(tmp_path / "other.safetensors",
                                  config={**TINY_CONFIG, "scale_factor": 0.25})
    loads = []
    real = api.load_checkpoint
    monkeypatch.setattr(api, "load_checkpoint", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    steps = []
    refusal = r"hires checkpoint other \(.*\) works in another latent space than first \(.*\)"
    with pytest.raises(RequestError, match=refusal):
        Engine().generate(REQ.replace(model=str(models[0]), hires_checkpoint=str(other)),
                          on_step=steps.append)
    assert steps == [] and [str(p) for p in loads] == [str(models[0])]  # refused before any sampling


def test_a_missing_hires_checkpoint_is_refused(models, tmp_path):
    with pytest.raises(RequestError, match="the hires checkpoint gone.safetensors is not a file here"):
        gone = str(tmp_path / "gone.safetensors")
        Engine().generate(REQ.replace(model=str(models[0]), hires_checkpoint=gone))
