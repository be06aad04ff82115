import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from sdstudio.engine.errors import Cancelled, RequestError
from sdstudio.engine.pipeline import generate, img2img_sigmas
from sdstudio.engine.request import MAX_SEED, GenerationRequest, StepInfo

BASE = GenerationRequest(prompt="a red apple", negative_prompt="blurry", steps=4, cfg_scale=5.0, sampler="Euler",
                         width=64, height=64, seed=7)


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_same_request_gives_the_same_pixels(tiny_model):
    a = generate(tiny_model, BASE).images[0]
    b = generate(tiny_model, BASE).images[0]
    assert np.array_equal(px(a), px(b))


def test_different_seed_or_prompt_gives_different_pixels(tiny_model):
    a = px(generate(tiny_model, BASE).images[0])
    assert np.abs(a - px(generate(tiny_model, BASE.replace(seed=8)).images[0])).max() > 0
    assert np.abs(a - px(generate(tiny_model, BASE.replace(prompt="a green pear")).images[0])).max() > 0


@pytest.mark.parametrize("sampler,size", [("Euler a", (64, 64)), ("DPM++ 2M SDE", (72, 56)), ("DPM++ 2M", (64, 64)),
                                          ("DPM++ SDE", (56, 72)), ("Heun", (64, 64))])
def test_every_batch_image_is_bit_identical_to_its_batch_of_one(tiny_model, sampler, size):
    req = BASE.replace(sampler=sampler, width=size[0], height=size[1], batch_size=3)
    batch = generate(tiny_model, req)
    assert [r.seed for r in batch.requests] == [7, 8, 9]
    for image, single_req in zip(batch.images, batch.requests, strict=True):
        assert np.array_equal(px(image), px(generate(tiny_model, single_req).images[0]))


def test_result_requests_are_canonical_and_reproduce_each_image(tiny_model):
    result = generate(tiny_model, BASE.replace(sampler="DPM++ 2M Karras", batch_size=2))
    assert [(r.sampler, r.scheduler, r.batch_size) for r in result.requests] == [("DPM++ 2M", "karras", 1)] * 2
    for image, request in zip(result.images, result.requests, strict=True):
        assert np.array_equal(px(generate(tiny_model, request).images[0]), px(image))


def test_batch_seeds_wrap_at_the_top_so_each_image_keeps_a_valid_seed(tiny_model):
    result = generate(tiny_model, BASE.replace(seed=MAX_SEED, batch_size=2, steps=1))
    assert [r.seed for r in result.requests] == [MAX_SEED, 0]
    assert np.array_equal(px(result.images[1]), px(generate(tiny_model, result.requests[1]).images[0]))


@pytest.mark.parametrize("sampler", ["Euler", "Euler a"])
def test_variation_strength_zero_is_the_plain_run_and_one_is_the_plain_run_at_the_variation_seed(
        tiny_model, sampler):
    base = BASE.replace(sampler=sampler)
    plain = px(generate(tiny_model, base).images[0])
    assert np.array_equal(px(generate(tiny_model, base.replace(subseed=99, subseed_strength=0.0)).images[0]), plain)
    # Strength 1 is exactly the variation seed's starting noise; ancestral noise still follows the seed (A1111).
    at_one = px(generate(tiny_model, base.replace(subseed=99, subseed_strength=1.0)).images[0])
    at_subseed = px(generate(tiny_model, base.replace(seed=99)).images[0])
    if sampler == "Euler":
        assert np.array_equal(at_one, at_subseed)
    else:
        assert not np.array_equal(at_one, at_subseed) and not np.array_equal(at_one, plain)
    middle = px(generate(tiny_model, base.replace(subseed=99, subseed_strength=0.3)).images[0])
    assert np.abs(middle - plain).max() > 0 and np.abs(middle - at_subseed).max() > 0


def test_a_variation_batch_keeps_the_seed_and_counts_the_variation_seeds_up(tiny_model):
    req = BASE.replace(sampler="Euler a", batch_size=3, subseed=MAX_SEED - 1, subseed_strength=0.25,
                       seed_resize_from_w=48, seed_resize_from_h=72)
    batch = generate(tiny_model, req)
    assert [(r.seed, r.subseed, r.subseed_strength) for r in batch.requests] == [
        (7, MAX_SEED - 1, 0.25), (7, MAX_SEED, 0.25), (7, 0, 0.25)]
    for image, single_req in zip(batch.images, batch.requests, strict=True):
        assert np.array_equal(px(image), px(generate(tiny_model, single_req).images[0]))
    assert not np.array_equal(px(batch.images[0]), px(batch.images[1]))


def test_steps_report_progress_and_previews(tiny_model):
    steps = []
    generate(tiny_model, BASE, on_step=steps.append)
    assert [s.step for s in steps] == [0, 1, 2, 3] and all(s.total == 4 for s in steps)
    assert steps[0].preview is not None and steps[-1].preview is not None
    assert steps[0].sigma > steps[-1].sigma
    assert all(s.pass_name == "first" for s in steps)


def test_step_info_is_plain_data_for_the_ui():
    fields = {f.name for f in dataclasses.fields(StepInfo)}
    assert fields == {"step", "total", "sigma", "preview", "pass_name", "message"}


def test_cancel_stops_within_one_step_and_engine_stays_usable(tiny_model):
    seen = []
    with pytest.raises(Cancelled):
        generate(tiny_model, BASE.replace(steps=10), on_step=seen.append, should_cancel=lambda: len(seen) >= 2)
    assert len(seen) == 2
    assert generate(tiny_model, BASE).images[0].size == (64, 64)


def test_img2img_runs_the_tail_of_the_schedule():
    import torch

    sigmas = torch.arange(21, 0, -1).float()
    assert len(img2img_sigmas(sigmas, 20, 0.75)) - 1 == 16
    assert len(img2img_sigmas(sigmas, 20, 1.0)) - 1 == 20


def test_img2img_strength_sets_how_much_of_the_schedule_runs(tiny_model):
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    low, high = [], []
    generate(tiny_model, BASE.replace(init_image=init, strength=0.3), on_step=low.append)
    generate(tiny_model, BASE.replace(init_image=init, strength=1.0), on_step=high.append)
    assert (len(low), len(high)) == (int(0.3 * 4) + 1, 4)
    assert low[0].sigma < high[0].sigma


def _half_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    return mask


def test_inpainting_leaves_pixels_outside_the_blurred_mask_untouched(tiny_model):
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    out = px(generate(tiny_model, BASE.replace(init_image=init, mask=_half_mask(), mask_blur=4, strength=1.0)).images[0])
    ref = px(init)
    assert np.array_equal(out[:, 48:], ref[:, 48:])  # well beyond blur radius
    assert np.abs(out[:, :24] - ref[:, :24]).mean() > 10  # the painted half was repainted


def test_only_masked_repaints_the_box_and_keeps_the_rest(tiny_model):
    init = Image.new("RGB", (96, 80), (20, 120, 220))
    mask = Image.new("L", (96, 80), 0)
    mask.paste(255, (60, 40, 76, 56))
    out = generate(tiny_model, BASE.replace(init_image=init, mask=mask, only_masked=True, mask_blur=2,
                                            only_masked_padding=8, strength=1.0)).images[0]
    assert out.size == (96, 80)
    o, r = px(out), px(init)
    assert np.array_equal(o[:30], r[:30]) and np.array_equal(o[:, :50], r[:, :50])
    assert np.abs(o[44:52, 64:72] - r[44:52, 64:72]).mean() > 5


def test_nine_channel_inpainting_model(tmp_path):
    from sdstudio.engine.checkpoint import load_checkpoint
    from tests.tiny_checkpoint import write_tiny_checkpoint

    model = load_checkpoint(write_tiny_checkpoint(tmp_path / "inpaint.safetensors", in_channels=9))
    assert model.description.inpainting
    init = Image.new("RGB", (64, 64), (10, 200, 10))
    out = generate(model, BASE.replace(init_image=init, mask=_half_mask(), strength=1.0)).images[0]
    assert np.array_equal(px(out)[:, 48:], px(init)[:, 48:])
    assert generate(model, BASE).images[0].size == (64, 64)  # txt2img works with an inpainting model too


def test_cfg_one_makes_one_unet_call_per_step_and_cfg_batches_both(tiny_model, monkeypatch):
    calls = []
    unet = tiny_model.unet
    original = unet.forward

    def counting(x, *args, **kwargs):
        calls.append(x.shape[0])
        return original(x, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", counting)
    generate(tiny_model, BASE.replace(cfg_scale=1.0))
    assert calls == [1, 1, 1, 1]
    calls.clear()
    generate(tiny_model, BASE)
    assert calls == [2, 2, 2, 2]


def test_prompt_is_not_re_encoded_when_only_the_seed_changes(tiny_model, monkeypatch):
    generate(tiny_model, BASE)
    encoder = tiny_model.text.prompts
    monkeypatch.setattr(encoder, "_encode", lambda *a: pytest.fail("re-encoded a cached prompt"))
    generate(tiny_model, BASE.replace(seed=1234))


@pytest.mark.parametrize("change,message", [
    (dict(width=65), "not a multiple of 8.*use 64 or 72"),
    (dict(height=0), "out of range"),
    (dict(steps=0), "steps 0 is out of range"),
    (dict(cfg_scale=-1.0), "CFG scale"),
    (dict(sampler="Bogus"), "unknown sampler"),
    (dict(scheduler="weird"), "unknown schedule"),
    (dict(seed=-5), "seed"),
    (dict(seed=MAX_SEED + 1), "seed .* use 0..4294967295"),
    (dict(mask=Image.new("L", (64, 64))), "needs an image"),
    (dict(init_image=Image.new("RGB", (64, 64)), mask=Image.new("L", (32, 32))), "must match"),
    (dict(init_image=Image.new("RGB", (64, 64)), strength=0.0), "strength"),
    (dict(subseed_strength=2.0), "variation strength"),
])
def test_bad_requests_get_a_clear_message(tiny_model, change, message):
    with pytest.raises(RequestError, match=message):
        generate(tiny_model, BASE.replace(**change))


@pytest.mark.parametrize("sampler", ["DPM2", "DPM2 a", "DPM++ 3M SDE"])
def test_a1111_drops_the_next_to_last_sigma_for_these_samplers(sampler):
    from sdstudio.engine.pipeline import schedule
    from sdstudio.engine.schedules import ModelSampling, get_sigmas

    ms = ModelSampling()
    sigmas = schedule(GenerationRequest(sampler=sampler, scheduler="karras", steps=6), ms)
    longer = get_sigmas("karras", 7, ms)
    assert len(sigmas) == 7 and torch.equal(sigmas, torch.cat([longer[:-2], longer[-1:]]))
    plain = schedule(GenerationRequest(sampler="Euler", scheduler="karras", steps=6), ms)
    assert torch.equal(plain, get_sigmas("karras", 6, ms))


@pytest.mark.parametrize("sampler", ["DPM fast", "DPM adaptive", "Restart", "PLMS", "UniPC", "UniPC bh2"])
def test_the_a1111_samplers_run_a_job_with_progress_and_reproduce(tiny_model, sampler):
    steps = []
    req = BASE.replace(sampler=sampler, scheduler="karras", steps=6)
    result = generate(tiny_model, req, on_step=steps.append)
    assert steps and all(s.total == 6 and 0 <= s.step < 6 for s in steps)
    assert [s.step for s in steps] == sorted(s.step for s in steps)
    assert np.array_equal(px(result.images[0]), px(generate(tiny_model, result.requests[0]).images[0]))


def test_align_your_steps_reads_the_models_family(tiny_model, monkeypatch):
    """The schedule gets the loaded model's family: the built-in demo model uses the SD 1.5 table, as A1111
    does for every model that is not SDXL."""
    from sdstudio.engine import families, schedules

    seen = []
    real = schedules.family
    monkeypatch.setattr(schedules, "family", lambda name: seen.append(name) or real(name))
    steps = []
    generate(tiny_model, BASE.replace(scheduler="align_your_steps", steps=11), on_step=steps.append)
    assert seen == [tiny_model.description.family]
    assert [s.sigma for s in steps] == pytest.approx(list(families.AYS_SD15), rel=1e-6)
