import random

from PIL import Image

from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.prompt_state import RANDOM_SEED, PromptState, apply_request, build_requests, size_presets
from sdstudio.ui.settings import load_prompt_state, open_settings, save_prompt_state


def test_batch_count_makes_one_request_per_batch_with_consecutive_seed_blocks():
    state = PromptState(prompt="cat", seed=10, batch_size=3, batch_count=3)
    assert [r.seed for r in build_requests(state)] == [10, 13, 16]


def test_random_seed_is_drawn_once_per_generate():
    state = PromptState(seed=RANDOM_SEED, batch_count=2)
    reqs = build_requests(state, rng=random.Random(1))
    base = random.Random(1).randrange(2**32)
    assert [r.seed for r in reqs] == [base, base + 1]


def test_requests_copy_the_images_so_later_edits_do_not_leak_in():
    init, mask = Image.new("RGB", (8, 8), "red"), Image.new("L", (8, 8), 255)
    req = build_requests(PromptState(strength=0.4, only_masked=True), init, mask)[0]
    init.paste((0, 0, 255), (0, 0, 8, 8))
    mask.paste(0, (0, 0, 8, 8))
    assert req.init_image.getpixel((0, 0)) == (255, 0, 0) and req.mask.getpixel((0, 0)) == 255
    assert req.mode == "inpaint" and req.strength == 0.4 and req.only_masked


def test_mask_without_init_image_is_ignored():
    req = build_requests(PromptState(only_masked=True), None, Image.new("L", (8, 8), 255))[0]
    assert req.mode == "txt2img" and req.mask is None and not req.only_masked


def test_apply_request_round_trips_the_panel_values():
    state = PromptState(prompt="a", seed=5, steps=12, cfg_scale=6.0, width=96, height=64, sampler="Heun")
    req = build_requests(state)[0]
    other = PromptState()
    apply_request(other, req)
    assert build_requests(other)[0] == req
    assert isinstance(req, GenerationRequest)


def test_presets_per_family_start_with_the_default_size():
    assert size_presets("sdxl")[0] == (1024, 1024) and size_presets("demo")[0] == (64, 64)
    assert size_presets("unknown") == size_presets("sd1")


def test_settings_round_trip_through_the_ini_file_under_home(qapp, tmp_path, monkeypatch):
    monkeypatch.setenv("SDSTUDIO_HOME", str(tmp_path))
    state = PromptState(prompt="line one\nline: two, three", negative_prompt="blurry", seed=2**32 - 1,
                        cfg_scale=7.5, only_masked=True, scheduler="exponential")
    settings = open_settings()
    save_prompt_state(settings, state)
    settings.sync()
    assert (tmp_path / "settings.ini").is_file()
    assert load_prompt_state(open_settings()) == state


def test_unreadable_settings_keep_the_defaults(qapp, tmp_path, monkeypatch):
    monkeypatch.setenv("SDSTUDIO_HOME", str(tmp_path))
    (tmp_path / "settings.ini").write_text("[prompt]\nsteps=lots\ncfg_scale=4.5\n")
    state = load_prompt_state(open_settings())
    assert state.steps == PromptState().steps and state.cfg_scale == 4.5


def test_variation_keeps_the_seed_and_counts_the_variation_seed_up_across_batches():
    state = PromptState(seed=10, subseed=100, subseed_strength=0.2, batch_size=2, batch_count=3,
                        seed_resize_from_w=48, seed_resize_from_h=56)
    reqs = build_requests(state)
    assert [(r.seed, r.subseed, r.subseed_strength) for r in reqs] == [(10, 100, 0.2), (10, 102, 0.2),
                                                                       (10, 104, 0.2)]
    assert {r.seed_resize_from for r in reqs} == {(48, 56)}
    # Images of a batch: the seed, and variation seeds 100, 101 (the engine's batch rule, as A1111).
    assert [(r.seed, r.subseed) for r in reqs[0].image_requests(2)] == [(10, 100), (10, 101)]


def test_a_random_variation_seed_is_drawn_once_per_generate_and_only_when_varying():
    reqs = build_requests(PromptState(seed=1, subseed=RANDOM_SEED, subseed_strength=0.5, batch_count=2),
                          rng=random.Random(3))
    sub = random.Random(3).randrange(2**32)
    assert [r.subseed for r in reqs] == [sub, sub + 1]
    plain = build_requests(PromptState(seed=1, subseed=RANDOM_SEED), rng=random.Random(3))[0]
    assert (plain.subseed, plain.subseed_strength) == (0, 0.0)


def test_apply_request_carries_the_variation_settings():
    req = GenerationRequest(seed=4, subseed=9, subseed_strength=0.7, seed_resize_from_w=64, seed_resize_from_h=80)
    state = PromptState()
    apply_request(state, req)
    assert (state.subseed, state.subseed_strength, state.seed_resize_from_w, state.seed_resize_from_h) == (
        9, 0.7, 64, 80)
