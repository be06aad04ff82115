"""A1111 bodies -> GenerationRequests: A1111's defaults and names, n_iter seeds, hires fields, img2img masks
and resize modes, ControlNet units; what we cannot honour is refused by name."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.errors import RequestError
from sdstudio.server import mapping
from sdstudio.server.checkpoints import Checkpoints


def png64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def models(home):
    checkpoints = Checkpoints()
    return checkpoints.builtin(), checkpoints


def test_a1111_defaults_not_ours(models):
    mapped = mapping.txt2img({}, *models)
    (req,) = mapped.requests
    assert (req.steps, req.cfg_scale, req.sampler, req.batch_size) == (50, 7.0, "Euler", 1)
    assert req.width == mapping.NOT_GIVEN  # the model's native size, filled in by generation.ready
    assert 0 <= req.seed < 2**32 and mapped.send_images and req.model == ""


def test_random_seeds_differ_and_n_iter_counts_on(models):
    seeds = {mapping.txt2img({"seed": -1}, *models).requests[0].seed for _ in range(5)}
    assert len(seeds) > 1
    mapped = mapping.txt2img({"seed": 2**32 - 2, "batch_size": 2, "n_iter": 2}, *models)
    assert [r.seed for r in mapped.requests] == [2**32 - 2, 0]  # 2 seeds on, wrapped
    varied = mapping.txt2img({"seed": 9, "subseed": 20, "subseed_strength": 0.5, "n_iter": 3}, *models)
    assert [(r.seed, r.subseed) for r in varied.requests] == [(9, 20), (9, 21), (9, 22)]


def test_legacy_sampler_names_and_schedules_are_the_engine_s(models):
    (req,) = mapping.txt2img({"sampler_name": "DPM++ 2M Karras", "scheduler": "Automatic"}, *models).requests
    from sdstudio.engine.validate import validate_settings

    checked = validate_settings(req.replace(width=64, height=64))
    assert (checked.sampler, checked.scheduler) == ("DPM++ 2M", "karras")


def test_hires_fields(models):
    (req,) = mapping.txt2img({"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Lanczos",
                              "denoising_strength": 0.4, "hr_second_pass_steps": 3,
                              "hr_sampler_name": "Use same sampler",
                              "hr_scheduler": "karras", "hr_prompt": "detailed", "hr_resize_x": 96,
                              "hr_cfg": 4.0}, *models).requests
    assert req.hires and req.hires_scale == 1.5 and req.hires_upscaler == "Lanczos" and req.strength == 0.4
    assert (req.hires_steps, req.hires_sampler, req.hires_scheduler) == (3, "", "karras")
    assert (req.hires_prompt, req.hires_resize_w, req.hires_resize_h) == ("detailed", 96, 0)
    assert req.hires_cfg_scale == 4.0
    off = mapping.txt2img({"enable_hr": False, "hr_scale": 3, "denoising_strength": 0.3}, *models).requests[0]
    assert not off.hires


def test_img2img_mask_by_alpha_and_inverted(models):
    init = Image.new("RGB", (64, 64), "red")
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 32, 64))  # the left half transparent
    body = {"init_images": [png64(init)], "mask": png64(rgba), "inpainting_fill": 1, "width": 64,
            "height": 64}
    req = mapping.img2img(body, *models).requests[0]
    mask = np.asarray(req.mask)
    assert req.mode == "inpaint" and mask[:, :32].max() == 0 and mask[:, 32:].min() == 255  # alpha, as A1111
    inverted = np.asarray(mapping.img2img(body | {"inpainting_mask_invert": 1}, *models).requests[0].mask)
    assert inverted[:, :32].min() == 255 and inverted[:, 32:].max() == 0
    assert req.only_masked and req.only_masked_padding == 0  # A1111's inpaint_full_res default


def test_img2img_resize_modes(models):
    init = Image.new("RGB", (100, 50))
    init.paste((255, 255, 255), (0, 0, 50, 50))
    body = {"init_images": [png64(init)], "width": 64, "height": 64}
    stretched = mapping.img2img(body | {"resize_mode": 0}, *models).requests[0].init_image
    assert stretched.size == (64, 64)
    stretched = np.asarray(stretched)
    assert stretched[:, :28].min() > 200 and stretched[:, 36:].max() < 50  # still half white
    cropped = mapping.img2img(body | {"resize_mode": 1}, *models).requests[0].init_image
    assert cropped.size == (100, 50)  # the engine covers and crops it (geometry.fit)
    with pytest.raises(RequestError, match="resize_mode 2"):
        mapping.img2img(body | {"resize_mode": 2}, *models)
    own = mapping.img2img({"init_images": [png64(Image.new("RGB", (48, 40)))]}, *models).requests[0]
    assert (own.width, own.height) == (48, 40)  # no size given: the init image's


def test_sampler_noise_settings_at_a1111_defaults_pass_others_are_refused(models):
    mapping.txt2img({"eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1}, *models)
    with pytest.raises(RequestError, match="s_noise 0.5"):
        mapping.txt2img({"s_noise": 0.5}, *models)
    with pytest.raises(RequestError, match="override_settings 'sd_hypernetwork'"):
        mapping.txt2img({"override_settings": {"sd_hypernetwork": "x"}}, *models)


def test_controlnet_units(models, home):
    import torch
    from safetensors.torch import save_file

    folder = home / "models" / "ControlNet"
    folder.mkdir(parents=True)
    save_file({"zero_convs.0.0.weight": torch.zeros(1)}, str(folder / "control_canny.safetensors"))
    hint = png64(Image.new("RGB", (32, 32), "white"))
    args = [False, {"enabled": False, "model": "nothing"},
            {"model": "control_canny [abcdef12]", "image": hint, "module": "canny", "weight": 0.7,
             "threshold_a": 50, "threshold_b": 120, "processor_res": 256, "guidance_start": 0.1,
             "guidance_end": 0.8, "control_mode": 2, "resize_mode": "Resize and Fill"},
            {"model": "control_canny", "image": {"image": hint}, "module": "none"}]
    (req,) = mapping.txt2img({"alwayson_scripts": {"ControlNet": {"args": args}}}, *models).requests
    first, second = req.control_units
    assert first.model == str(folder / "control_canny.safetensors") and first.preprocessor == "canny"
    assert dict(first.preprocessor_params) == {"resolution": 256, "low": 50, "high": 120, "sigma": 0.0}
    assert (first.strength, first.start, first.end) == (0.7, 0.1, 0.8)
    assert (first.mode, first.resize_mode) == ("ControlNet is more important", "Resize and Fill")
    assert second.preprocessor == "none" and second.image.size == (32, 32)
    for bad, words in ((args[2] | {"model": "other"}, "no ControlNet model named"),
                       (args[2] | {"image": None}, "send the unit's image"),
                       (args[2] | {"threshold_a": 999}, "low 999 is out of range"),
                       (args[2] | {"control_mode": 7}, "control_mode must be one of")):
        with pytest.raises(RequestError, match=words):
            mapping.txt2img({"alwayson_scripts": {"controlnet": {"args": [bad]}}}, *models)


def test_a_model_gone_since_listing_is_a_request_error(home, tmp_path):
    from pathlib import Path

    from sdstudio.engine.errors import ModelNotFound
    from sdstudio.server.checkpoints import Checkpoint
    from sdstudio.server.generation import describe

    with pytest.raises(ModelNotFound, match="gone.safetensors cannot be read"):
        describe(Checkpoint("gone.safetensors", Path(tmp_path / "gone.safetensors"), False))
