"""ControlNet units in a job: A1111's weights per mode, start/end, several units, and the whole image equal to a
reference loop (A1111's CFG + sd-webui-controlnet's hook over diffusers' UNet and ControlNetModel, see
controlnet_reference.py) within 1/255 on the tiny demo-family checkpoint."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.control_job import ControlNetCache, ControlSource, check_unit, unit_scales
from sdstudio.engine.controlnet import ControlNet, ControlNetConfig
from sdstudio.engine.errors import RequestError, UnsupportedModelError
from sdstudio.engine.pipeline import generate
from sdstudio.engine.request import ControlUnit, GenerationRequest
from sdstudio.engine.schedules import ModelSampling, get_sigmas
from tests.engine import a1111_reference as a1111
from tests.engine.controlnet_reference import ReferenceUnit, controlled_txt2img, diffusers_twin
from tests.engine.full_size import random_tensor
from tests.engine.test_reference_pipeline import TINY_ORIGINAL, TINY_TEXT_REFERENCE, compare
from tests.tiny_checkpoint import TINY_CONFIG, TINY_UNET, tiny_state_dict

SIZE = 64
BASE = GenerationRequest(prompt="a photo of a cat, highly detailed", negative_prompt="blurry", steps=4,
                         cfg_scale=7.0, sampler="Euler", scheduler="normal", seed=1234, width=SIZE, height=SIZE)
BALANCED, PROMPT, CONTROL = "Balanced", "My prompt is more important", "ControlNet is more important"


def test_balanced_weights_are_the_strength_everywhere():
    assert unit_scales(0.7, BALANCED, 13) == [0.7] * 13


def test_soft_ladder_counts_from_the_first_input_block():
    sd = unit_scales(2.0, PROMPT, 13)
    assert sd[-1] == 2.0 and sd[0] == pytest.approx(2.0 * 0.825**12) and sd[0] == pytest.approx(0.19883, abs=1e-5)
    assert all(a < b for a, b in zip(sd, sd[1:], strict=False))
    assert unit_scales(1.0, CONTROL, 13) == unit_scales(1.0, PROMPT, 13)
    xl = unit_scales(1.0, PROMPT, 10)  # SDXL: 9 skips + middle; A1111 zips its 13 scales, so the middle gets 0.825^3
    assert xl[-1] == pytest.approx(0.825**3)


@pytest.mark.parametrize("changes,message", [({"mode": "Loud"}, "control mode"), ({"start": 0.6, "end": 0.5}, "start"),
                                             ({"end": 1.5}, "start"), ({"strength": -1}, "strength"),
                                             ({"strength": float("nan")}, "strength")])
def test_bad_units_are_refused(changes, message):
    with pytest.raises(RequestError, match=message):
        check_unit(ControlUnit("x.safetensors").replace(**changes))


def test_step_is_a1111s_counter_of_reported_steps():
    source = ControlSource(type("Job", (), {"units": ()})(), 64, 64, get_sigmas("karras", 10, ModelSampling()))
    seen = []
    callback = source.following(lambda i, sigma, x, denoised: seen.append((i, source.sampling_step)))
    assert source.sampling_step == 0  # the first two steps' calls both count as step 0
    for i in range(3):
        callback(i, 1.0, None, None)
    assert seen == [(0, 0), (1, 1), (2, 2)] and source.steps == 10


def control_image(seed: int) -> Image.Image:
    """Shapes on a gradient, as a control map at the job's size (so every resize mode is the identity)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    rgb = np.stack([x, 1 - y, 0.5 + 0.5 * np.cos(5 * x * (seed + 1))], axis=-1) * 255
    image = Image.fromarray(rgb.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((8 + 4 * seed, 10, 40, 50), fill=(255, 255, 255))
    draw.line((0, 60, 63, 4 * seed), fill=(0, 0, 0), width=3)
    return image


def tiny_controlnet(seed: int) -> ControlNet:
    g = torch.Generator().manual_seed(100 + seed)
    net = ControlNet(ControlNetConfig(TINY_UNET))
    net.load_state_dict({k: random_tensor(k, tuple(v.shape), g) for k, v in net.state_dict().items()})
    return net.eval()


@pytest.fixture(scope="module")
def tiny():
    """The tiny checkpoint as (our model, reference pipeline) and two ControlNet files with their diffusers
    twins."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        g = torch.Generator().manual_seed(4)
        state = {k: random_tensor(k, tuple(v.shape), g) if v.is_floating_point() else v
                 for k, v in tiny_state_dict(0, 4).items()}
        path = f"{folder}/tiny.safetensors"
        save_file(state, path, metadata={"sdstudio.config": json.dumps(TINY_CONFIG)})
        pipe = a1111.sd_pipeline(path, json.loads(json.dumps(TINY_ORIGINAL)), TINY_TEXT_REFERENCE)
        nets = []
        for seed in range(2):
            net = tiny_controlnet(seed)
            cn_path = f"{folder}/cn{seed}.safetensors"
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, cn_path)
            nets.append((cn_path, diffusers_twin(net)))
        yield load_checkpoint(path), pipe, nets
    torch.set_num_threads(previous)


def hint(seed: int) -> torch.Tensor:
    a = np.asarray(control_image(seed), dtype=np.float32) / 255
    return torch.from_numpy(a).permute(2, 0, 1)[None]


CASES = {
    "balanced": [dict(strength=1.0)],
    "prompt more important, 0-0.3": [dict(strength=3.0, end=0.3, mode=PROMPT)],
    "controlnet more important": [dict(strength=1.3, mode=CONTROL)],
    "two units": [dict(strength=0.6, end=0.5), dict(strength=0.9, start=0.5, mode=CONTROL)],
}


@pytest.mark.parametrize("case", CASES)
def test_controlled_image_equals_the_reference_loop(tiny, case):
    model, pipe, nets = tiny
    specs = CASES[case]
    units = tuple(ControlUnit(nets[i][0], image=control_image(i), **spec) for i, spec in enumerate(specs))
    req = BASE.replace(control_units=units)
    result = generate(model, req)
    refs = [ReferenceUnit(nets[i][1], hint(i), **spec) for i, spec in enumerate(specs)]
    expected = controlled_txt2img(pipe, refs, req.prompt, req.negative_prompt, req.seed, req.steps, req.cfg_scale,
                                  SIZE, SIZE)
    assert compare(f"tiny ControlNet {case}", result.images[0], expected) <= 1
    plain = generate(model, BASE).images[0]
    assert np.abs(np.asarray(plain, np.int16) - np.asarray(result.images[0], np.int16)).max() > 8, "no effect"
    assert all(len(u.model_hash) == 8 for u in result.requests[0].control_units)


def test_units_outside_their_window_change_nothing(tiny):
    model, _, nets = tiny
    late = ControlUnit(nets[0][0], image=control_image(0), start=0.9, end=1.0)  # 4 steps: 0, 0, 1/4, 2/4
    zero = ControlUnit(nets[1][0], image=control_image(1), strength=0.0)
    plain = generate(model, BASE).images[0]
    assert np.array_equal(np.asarray(generate(model, BASE.replace(control_units=(late, zero))).images[0]),
                          np.asarray(plain))


def test_cache_keeps_the_last_jobs_controlnets(tiny):
    model, _, nets = tiny
    cache = ControlNetCache()
    first = cache.load([nets[0][0], nets[1][0]], model)
    again = cache.load([nets[1][0]], model)
    assert again[0] is first[1] and len(cache._nets) == 1


def test_missing_image_and_preprocessor_are_refused(tiny):
    model, _, nets = tiny
    with pytest.raises(RequestError, match="no control image"):
        generate(model, BASE.replace(control_units=(ControlUnit(nets[0][0]),)))
    with pytest.raises(UnsupportedModelError, match="not found"):
        generate(model, BASE.replace(control_units=(ControlUnit("/nowhere/cn.safetensors", image=control_image(0)),)))


def test_nine_channel_inpainting_unet_feeds_the_controlnet_its_latent_channels(tmp_path):
    from tests.tiny_checkpoint import write_tiny_checkpoint

    model = load_checkpoint(write_tiny_checkpoint(tmp_path / "inpaint.safetensors", in_channels=9))
    cn = tmp_path / "cn.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_controlnet(0).state_dict().items()}, str(cn))
    req = BASE.replace(steps=2, cfg_scale=1.0)
    controlled = generate(model, req.replace(control_units=(ControlUnit(str(cn), image=control_image(0)),)))
    assert controlled.images[0].size == (SIZE, SIZE)
    assert not np.array_equal(np.asarray(controlled.images[0]), np.asarray(generate(model, req).images[0]))


def test_engine_runs_units_and_hires_pass_gets_its_own_hint_size(tiny, tmp_path, monkeypatch):
    from sdstudio.engine import control_hint
    from sdstudio.engine.api import Engine

    model, _, nets = tiny
    sizes = []
    real_fit = control_hint.fit_hint
    monkeypatch.setattr(control_hint, "fit_hint", lambda im, w, h, mode: sizes.append((w, h)) or real_fit(im, w, h, mode))
    engine = Engine(device="cpu")
    engine.model, engine._key = model, engine._model_key(model.description.path, "", "", "")
    unit = ControlUnit(nets[0][0], image=control_image(0), resize_mode="Resize and Fill")
    req = BASE.replace(model=model.description.path, steps=2, hires=True, hires_scale=1.5, strength=0.5,
                       control_units=(unit,))
    result = engine.generate(req)
    assert result.images[0].size == (96, 96) and sizes == [(64, 64), (96, 96)]
    assert result.requests[0].control_units[0].model_hash == engine._controlnets.load([nets[0][0]], model)[0].hash


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory):
    """A T2I-Adapter (TencentARC's original layout, random weights) whose features fit the tiny checkpoint's
    UNet: 32 channels at 1/8 of the image, 64 at 1/16."""
    from tests.engine.t2i_adapter_reference import original_state, reference, write

    return str(write(tmp_path_factory.mktemp("adapter") / "t2iadapter_tiny.safetensors",
                     original_state(reference("full", [32, 64], 1, seed=7), "full")))


def _adapter_source(model, unit: ControlUnit, steps: int = 4):
    from sdstudio.engine.control_job import ControlJob

    job = ControlJob(model, BASE.replace(control_units=(unit,)))
    return job, job.source(SIZE, SIZE, get_sigmas("normal", steps, ModelSampling()))


def test_an_adapter_unit_gives_its_features_on_the_encoder_path_scaled_and_windowed(tiny, adapter_file):
    from sdstudio.engine.denoiser import UNetConditioning

    model = tiny[0]
    unit = ControlUnit(adapter_file, image=control_image(0), strength=0.6, end=0.5)
    job, source = _adapter_source(model, unit)
    features = job.nets[0].residuals(job.hints[0].at(SIZE, SIZE))
    x, t = torch.zeros(2, 4, 8, 8), torch.zeros(2)
    cond = UNetConditioning(torch.zeros(2, 3, 32))
    found = source(x, t, cond)
    assert found.skips == () and found.middle is None and [i for i, _ in found.encoder] == [1, 3]
    for (_, ours), (_, theirs) in zip(found.encoder, features.encoder, strict=True):
        assert ours.shape[0] == 2 and torch.equal(ours[1], 0.6 * theirs[0]) and torch.equal(ours[0], ours[1])
    source.sampling_step = 3  # 3/4 > end 0.5
    assert source(x, t, cond) is None
    _, control_more = _adapter_source(model, unit.replace(mode=CONTROL))
    halves = control_more(x, t, cond).encoder[0][1]
    assert halves[0].abs().max() > 0 and halves[1].abs().max() == 0  # the prompt half only


def test_an_adapter_unit_steers_the_image_and_is_recorded(tiny, adapter_file):
    model = tiny[0]
    unit = ControlUnit(adapter_file, image=control_image(0), strength=1.0)
    result = generate(model, BASE.replace(control_units=(unit,)))
    plain = generate(model, BASE).images[0]
    assert np.abs(np.asarray(plain, np.int16) - np.asarray(result.images[0], np.int16)).max() > 8, "no effect"
    assert len(result.requests[0].control_units[0].model_hash) == 8
    with pytest.raises(RequestError, match="T2I-Adapter.*soft-injection"):
        generate(model, BASE.replace(control_units=(unit.replace(mode=PROMPT),)))


def test_an_adapter_that_does_not_fit_the_unet_is_refused(tiny, tmp_path):
    from tests.engine.t2i_adapter_reference import reference, write

    wide = write(tmp_path / "t2iadapter_wide.safetensors", reference("full", [64, 128], 1).state_dict())
    unit = ControlUnit(str(wide), image=control_image(0))
    with pytest.raises(UnsupportedModelError, match=r"t2iadapter_wide.safetensors: its features .* not fit"):
        generate(tiny[0], BASE.replace(control_units=(unit,)))
