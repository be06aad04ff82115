"""The prompt panel's Hires fix group: collapsed and off by default, its values reach the request, a loaded
hires image opens it with every value, and it is disabled while there is an input image."""

import pytest
from PIL import Image

from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.prompt_panel import PromptPanel
from sdstudio.ui.prompt_state import PromptState, apply_request, build_requests
from sdstudio.ui.settings import load_prompt_state, open_settings, save_prompt_state
from sdstudio.ui.token_counter import LazyTokenCounter


@pytest.fixture
def panel(qtbot, home):
    panel = PromptPanel(PromptState(), LazyTokenCounter(loader=lambda: None))
    qtbot.addWidget(panel)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def test_collapsed_and_off_by_default(panel):
    assert not panel.hires.toggle.isChecked() and not panel.hires.rows.isVisible()
    assert not build_requests(panel.state)[0].hires


def test_the_values_set_in_the_group_reach_the_request(panel):
    h = panel.hires
    h.toggle.click()
    assert h.rows.isVisible()
    h.upscaler_combo.setCurrentText("Lanczos")
    h.scale_spin.setValue(1.5)
    h.steps_spin.setValue(12)
    h.strength_spin.setValue(0.4)
    h.sampler_combo.setCurrentIndex(h.sampler_combo.findData("Heun"))
    h.scheduler_combo.setCurrentIndex(h.scheduler_combo.findData("exponential"))
    h.prompt_edit.setText("sharp details")
    assert h.cfg_spin.value() == 0 and h.cfg_spin.text() == "same"
    assert build_requests(panel.state)[0].hires_cfg_scale == 0
    h.cfg_spin.setValue(3.5)
    req = build_requests(panel.state)[0]
    assert (req.hires, req.hires_upscaler, req.hires_scale, req.hires_steps, req.strength) == (True, "Lanczos", 1.5,
                                                                                               12, 0.4)
    assert (req.hires_sampler, req.hires_scheduler, req.hires_prompt) == ("Heun", "exponential", "sharp details")
    assert req.hires_cfg_scale == 3.5
    h.toggle.click()  # closing turns it off
    assert not build_requests(panel.state)[0].hires and not h.rows.isVisible()


def test_a_loaded_hires_request_opens_the_group_with_its_values(panel):
    req = GenerationRequest(prompt="x", hires=True, hires_resize_w=1024, hires_resize_h=768, strength=0.33,
                            hires_upscaler="4x_SomeModel", hires_sampler="DPM++ 2M", hires_cfg_scale=4.5)
    apply_request(panel.state, req)
    panel.refresh()
    h = panel.hires
    assert h.toggle.isChecked() and h.rows.isVisible()
    assert (h.resize_w_spin.value(), h.resize_h_spin.value(), h.strength_spin.value()) == (1024, 768, 0.33)
    assert h.upscaler_combo.currentText() == "4x_SomeModel" and h.sampler_combo.currentData() == "DPM++ 2M"
    assert h.cfg_spin.value() == 4.5
    again = build_requests(panel.state)[0]
    for name in ("hires", "hires_resize_w", "hires_resize_h", "hires_upscaler", "hires_sampler", "strength",
                 "hires_cfg_scale"):
        assert getattr(again, name) == getattr(req, name), name


def test_disabled_with_an_input_image_and_never_sent_for_img2img(panel):
    panel.hires.toggle.click()
    panel.set_input_state(True, False)
    assert not panel.hires.isEnabled()
    req = build_requests(panel.state, init_image=Image.new("RGB", (64, 64)))[0]
    assert not req.hires and req.strength == panel.state.strength
    panel.set_input_state(False, False)
    assert panel.hires.isEnabled()


def test_the_hires_values_persist_in_the_settings(home):
    state = PromptState(hires=True, hires_scale=1.75, hires_upscaler="Latent (bicubic)", hires_strength=0.45,
                        hires_cfg_scale=2.5)
    settings = open_settings()
    save_prompt_state(settings, state)
    back = load_prompt_state(open_settings())
    assert (back.hires, back.hires_scale, back.hires_upscaler, back.hires_strength) == (True, 1.75,
                                                                                         "Latent (bicubic)", 0.45)
    assert back.hires_cfg_scale == 2.5


def test_model_upscalers_can_be_listed_and_the_choice_is_kept(panel):
    panel.hires.upscaler_combo.setCurrentText("Nearest")
    panel.hires.set_upscalers(["Latent", "Lanczos", "Nearest", "4x-UltraSharp"])
    assert panel.hires.upscaler_combo.currentText() == "Nearest"
    assert panel.hires.upscaler_combo.findText("4x-UltraSharp") >= 0


def test_the_hires_checkpoint_picker_defaults_to_the_same_and_its_choice_reaches_the_request(panel):
    h = panel.hires
    h.set_checkpoints([("Built-in", ""), ("anime", "/m/anime.safetensors"), ("real", "/m/real.safetensors")])
    assert [h.checkpoint_combo.itemText(i) for i in range(h.checkpoint_combo.count())] == [
        "Use same checkpoint", "anime", "real"]  # the built-in model is not a choice
    h.toggle.click()
    assert build_requests(panel.state)[0].hires_checkpoint == ""
    h.checkpoint_combo.setCurrentIndex(h.checkpoint_combo.findData("/m/real.safetensors"))
    assert build_requests(panel.state)[0].hires_checkpoint == "/m/real.safetensors"
    h.set_checkpoints([("real", "/m/real.safetensors")])  # a refreshed list keeps the choice
    assert h.checkpoint_combo.currentData() == "/m/real.safetensors"


def test_a_rerun_restores_the_hires_checkpoint_even_one_not_listed(panel):
    panel.hires.set_checkpoints([("anime", "/m/anime.safetensors")])
    loaded = GenerationRequest(prompt="x", hires=True, hires_checkpoint="/elsewhere/other.safetensors")
    apply_request(panel.state, loaded)
    panel.refresh()
    assert panel.hires.checkpoint_combo.currentText() == "other.safetensors"
    assert build_requests(panel.state)[0].hires_checkpoint == "/elsewhere/other.safetensors"
    apply_request(panel.state, loaded.replace(hires_checkpoint=""))
    panel.refresh()
    assert panel.hires.checkpoint_combo.currentText() == "Use same checkpoint"
