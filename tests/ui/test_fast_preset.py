"""The Fast preset (LCM, 4 steps, CFG 1, sgm_uniform, draft decode) and the Draft decode box in the prompt panel."""

import pytest

from sdstudio.engine.names import SAMPLERS, SCHEDULERS
from sdstudio.ui.prompt_panel import PromptPanel
from sdstudio.ui.prompt_state import FAST_PRESET, PromptState, apply_request, build_requests, fast_differences
from sdstudio.ui.settings import load_prompt_state, open_settings, save_prompt_state
from sdstudio.ui.token_counter import LazyTokenCounter


@pytest.fixture
def panel(qtbot, home):
    panel = PromptPanel(PromptState(steps=30, cfg_scale=7.5, sampler="DPM++ 2M"),
                        LazyTokenCounter(loader=lambda: None))
    qtbot.addWidget(panel)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def test_the_preset_names_a_sampler_and_schedule_we_offer():
    assert FAST_PRESET["sampler"] in SAMPLERS and FAST_PRESET["scheduler"] in SCHEDULERS
    assert fast_differences(PromptState(**FAST_PRESET)) == []
    assert fast_differences(PromptState(**{**FAST_PRESET, "steps": 8})) == ["steps 8 (preset 4)"]


def test_one_click_sets_every_value_and_the_requests_carry_them(panel):
    assert not panel.fast.fast_button.isChecked()
    panel.fast.fast_button.click()
    s = panel.state
    assert (s.sampler, s.scheduler, s.steps, s.cfg_scale, s.draft_decode) == ("LCM", "sgm_uniform", 4, 1.0, True)
    assert panel.sampler_combo.currentText() == "LCM" and panel.scheduler_combo.currentData() == "sgm_uniform"
    assert (panel.steps_spin.value(), panel.cfg_spin.value()) == (4, 1.0)
    assert panel.fast.draft_check.isChecked() and panel.fast.fast_button.isChecked()
    req = build_requests(s)[0]
    assert (req.sampler, req.steps, req.cfg_scale, req.scheduler, req.draft_decode) == ("LCM", 4, 1.0,
                                                                                         "sgm_uniform", True)


@pytest.mark.parametrize("change", [
    lambda p: p.steps_spin.setValue(6),
    lambda p: p.cfg_spin.setValue(1.5),
    lambda p: p.scheduler_combo.setCurrentIndex(p.scheduler_combo.findData("karras")),
    lambda p: p.fast.draft_check.setChecked(False),
    lambda p: p.sampler_combo.setCurrentText("Euler a"),
])
def test_changing_any_value_shows_the_preset_is_no_longer_exact(panel, change):
    panel.fast.fast_button.click()
    change(panel)
    button = panel.fast.fast_button
    assert not button.isChecked()
    assert button.text() == "⚡ Fast (changed)" and panel.fast.changed_from_preset
    assert "Differs from the Fast preset" in button.toolTip()
    button.click()  # applies the preset again
    assert button.isChecked() and button.text() == "⚡ Fast" and fast_differences(panel.state) == []


def test_clicking_an_exact_preset_puts_the_previous_values_back(panel):
    panel.fast.fast_button.click()
    panel.fast.fast_button.click()
    s = panel.state
    assert (s.sampler, s.steps, s.cfg_scale, s.draft_decode) == ("DPM++ 2M", 30, 7.5, False)
    assert panel.steps_spin.value() == 30 and not panel.fast.fast_button.isChecked()
    assert panel.fast.fast_button.text() == "⚡ Fast"  # not "changed": the preset is out of play


def test_draft_decode_box_alone_and_from_a_loaded_request(panel):
    panel.fast.draft_check.setChecked(True)
    assert panel.state.draft_decode and build_requests(panel.state)[0].draft_decode
    assert panel.fast.fast_button.text() == "⚡ Fast"  # a draft decode alone is no changed preset
    other = PromptState()
    apply_request(other, build_requests(PromptState(**FAST_PRESET))[0])
    panel.state.__dict__.update(other.__dict__)
    panel.refresh()
    assert panel.fast.fast_button.isChecked() and panel.fast.draft_check.isChecked()


def test_draft_decode_is_saved_with_the_panel(qapp, home):
    settings = open_settings()
    save_prompt_state(settings, PromptState(draft_decode=True))
    settings.sync()
    assert load_prompt_state(open_settings()).draft_decode is True
