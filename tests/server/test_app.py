"""The server driven by an independent A1111 client (the `webuiapi` package) over real HTTP: its images equal
the engine's for the same request, img2img with a mask, progress with a preview while a job runs, interrupt,
model listing and switching, png-info, and every image in the server's history."""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

webuiapi = pytest.importorskip("webuiapi")

from sdstudio.engine.request import GenerationRequest  # noqa: E402

FAST = dict(steps=4, width=64, height=64, cfg_scale=5.0, sampler_name="Euler a", scheduler="karras")


def same_request(**changes) -> GenerationRequest:
    return GenerationRequest(steps=4, width=64, height=64, cfg_scale=5.0, sampler="Euler a",
                             scheduler="karras").replace(**changes)


@pytest.fixture(scope="module")
def api(port):
    return webuiapi.WebUIApi(port=port)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_txt2img_equals_the_engine_and_lands_in_history(api, server, builtin_engine):
    result = api.txt2img(prompt="red apple", seed=7, batch_size=2, **FAST)
    expected = builtin_engine.generate(same_request(prompt="red apple", seed=7, batch_size=2))
    assert len(result.images) == 2
    for got, want in zip(result.images, expected.images, strict=True):
        assert np.array_equal(pixels(got), pixels(want))
    assert not np.array_equal(pixels(result.images[0]), pixels(result.images[1]))  # seeds 7 and 8 differ
    assert result.info["all_seeds"] == [7, 8]
    assert result.info["seed"] == 7 and result.info["sd_model_name"] == "sdstudio-emoji"
    assert "Seed: 8" in result.info["infotexts"][1]
    assert result.images[0].info["parameters"] == result.info["infotexts"][0]  # the infotext is in the PNG
    assert result.parameters["prompt"] == "red apple" and result.parameters["steps"] == 4
    history = [Image.open(p).info.get("parameters", "") for p in server.store.root.rglob("*.png")
               if ".thumbnails" not in p.parts and not p.stem.endswith(("-init", "-mask"))]
    assert set(result.info["infotexts"]) <= set(history)  # every image is in the server's history


def test_n_iter_counts_seeds_on_as_a1111(api, builtin_engine):
    result = api.txt2img(prompt="blue car", seed=100, n_iter=2, **FAST)
    assert result.info["all_seeds"] == [100, 101]
    expected = builtin_engine.generate(same_request(prompt="blue car", seed=101))
    assert np.array_equal(pixels(result.images[1]), pixels(expected.images[0]))


def test_img2img_with_a_mask_equals_the_engine(api, builtin_engine):
    init = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    result = api.img2img(images=[init], mask_image=mask, inpainting_fill=1, inpaint_full_res=False,
                         denoising_strength=0.8, mask_blur=2, prompt="smiling face", seed=3, **FAST)
    expected = builtin_engine.generate(same_request(prompt="smiling face", seed=3, init_image=init, mask=mask,
                                                    strength=0.8, mask_blur=2, only_masked=False,
                                                    only_masked_padding=0))
    got = pixels(result.image)
    assert np.array_equal(got, pixels(expected.images[0]))
    inside = np.abs(got[24:40, 24:40].astype(int) - pixels(init)[24:40, 24:40]).mean()
    assert inside > 10  # the masked square was repainted
    infotext = result.info["infotexts"][0]
    assert "Mask blur: 2" in infotext and "Denoising strength: 0.8" in infotext
    assert result.parameters["init_images"] is None  # not echoed back, as A1111


def test_progress_shows_a_preview_and_interrupt_stops_the_job(api, port):
    outcome = {}
    job = threading.Thread(target=lambda: outcome.update(result=api.txt2img(
        prompt="green frog", seed=1, steps=300, width=64, height=64, sampler_name="Euler")))
    job.start()
    poll = webuiapi.WebUIApi(port=port)  # a second connection, as a second client would
    seen = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and job.is_alive():
        progress = poll.get_progress()
        if progress["current_image"] and progress["state"]["sampling_step"] > 0:
            seen = progress
            break
        time.sleep(0.01)
    assert seen is not None, "no preview while the job ran"
    assert 0 < seen["progress"] < 1
    assert seen["state"]["sampling_steps"] == 300 and seen["state"]["job_count"] == 1
    preview = Image.open(io.BytesIO(base64.b64decode(seen["current_image"])))
    assert preview.size == (64, 64)
    assert poll.interrupt() == {}
    job.join(timeout=60)
    result = outcome["result"]
    assert result.images == [] and result.info["interrupted"] is True
    idle = poll.get_progress()
    assert idle["state"]["job_count"] == 0 and idle["progress"] == 0 and idle["current_image"] is None


def test_models_samplers_schedulers_and_switching(api):
    titles = api.util_get_model_names()
    assert len(titles) == 1 and titles[0].startswith("sdstudio-emoji.safetensors [")  # the built-in, hashed
    assert {"Euler a", "DPM++ 2M"} <= set(api.util_get_sampler_names())
    assert "karras" in api.util_get_scheduler_names()
    assert {"Lanczos", "Nearest"} <= {u["name"] for u in api.get_upscalers()}
    assert "Latent (bicubic)" in {m["name"] for m in api.get_latent_upscale_modes()}
    assert api.set_options({"sd_model_checkpoint": "sdstudio-emoji"}) is None  # a name, as A1111 takes it
    assert api.util_get_current_model() == titles[0]


def test_a_missing_lora_is_refused_before_the_job(api):
    with pytest.raises(RuntimeError) as refused:
        api.txt2img(prompt="<lora:no-such-lora:0.8> cat", seed=1, **FAST)
    status, text = refused.value.args
    assert status == 400 and "no-such-lora" in text


def test_png_info_reads_a_generated_image(api):
    result = api.txt2img(prompt="cat", seed=5, **FAST)
    info = api.png_info(result.image)
    assert info.info.startswith("cat\nSteps: 4") and info.json["parameters"]["Seed"] == "5"


def test_hires_fix_and_variation_seed_equal_the_engine(api, builtin_engine):
    result = api.txt2img(prompt="sun", seed=11, subseed=12, subseed_strength=0.3, enable_hr=True,
                         hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=2, denoising_strength=0.5,
                         **FAST)
    expected = builtin_engine.generate(same_request(prompt="sun", seed=11, subseed=12, subseed_strength=0.3,
                                                    hires=True, hires_scale=1.5, hires_upscaler="Latent",
                                                    hires_steps=2, strength=0.5))
    assert result.image.size == (96, 96)
    assert np.array_equal(pixels(result.image), pixels(expected.images[0]))
    infotext = result.info["infotexts"][0]
    assert "Variation seed: 12" in infotext and "Hires upscale: 1.5" in infotext


def test_controlnet_unit_through_the_api_equals_the_engine(api, served_home, builtin_engine):
    """A checkpoint and a ControlNet put in the server's models folder, chosen by name over HTTP: the image
    equals the engine's with the same ControlUnit, and differs from the one without it. (Last in the module:
    it leaves the tiny model loaded.)"""
    import torch
    from safetensors.torch import save_file

    from sdstudio.engine.controlnet import ControlNet, ControlNetConfig
    from sdstudio.engine.request import ControlUnit
    from tests.tiny_checkpoint import TINY_UNET, write_tiny_checkpoint

    models = served_home / "models"
    (models / "ControlNet").mkdir(parents=True, exist_ok=True)
    checkpoint = write_tiny_checkpoint(models / "tiny.safetensors", seed=3)
    net = ControlNet(ControlNetConfig(TINY_UNET))
    g = torch.Generator().manual_seed(5)
    state = {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in net.state_dict().items()}
    save_file(state, str(models / "ControlNet" / "tiny_cn.safetensors"))
    hint = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(hint).rectangle((10, 10, 40, 50), fill="white")
    unit = webuiapi.ControlNetUnit(image=hint, module="none", model="tiny_cn", weight=0.8, guidance_end=0.75,
                                   resize_mode="Just Resize", control_mode=0)
    body = dict(prompt="cat", seed=2, override_settings={"sd_model_checkpoint": "tiny"}, **FAST)
    result = api.txt2img(controlnet_units=[unit], **body)
    base = same_request(prompt="cat", seed=2, model=str(checkpoint))
    expected = builtin_engine.generate(base.replace(control_units=(ControlUnit(
        str(models / "ControlNet" / "tiny_cn.safetensors"), image=hint, strength=0.8, end=0.75,
        resize_mode="Just Resize"),)))
    plain = builtin_engine.generate(base)
    assert np.array_equal(pixels(result.image), pixels(expected.images[0]))
    assert not np.array_equal(pixels(result.image), pixels(plain.images[0]))
    assert "ControlNet 0" in result.info["infotexts"][0] and "tiny_cn" in result.info["infotexts"][0]
