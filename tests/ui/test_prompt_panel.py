"""The prompt panel: guidance for the built-in model, plain-language tooltips, a model line that does not jump."""

import pytest

from sdstudio import paths
from sdstudio.ui.prompt_panel import BUILTIN_EXAMPLES, PromptPanel
from sdstudio.ui.prompt_state import PromptState
from sdstudio.ui.token_counter import LazyTokenCounter


@pytest.fixture
def panel(qtbot, home):
    panel = PromptPanel(PromptState(), LazyTokenCounter(loader=lambda: None))
    qtbot.addWidget(panel)
    panel.set_models([("SD Studio emoji (built-in)", ""), ("real", "/models/real.safetensors")])
    panel.resize(420, 900)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def test_the_built_in_model_says_what_it_knows_and_where_real_checkpoints_go(qtbot, panel):
    guide = panel.builtin_guide
    assert guide.isVisible()
    text = guide.text()
    assert "emoji" in text and "64×64" in text and "Open Models Folder" in text
    assert str(paths.models_dir()) in text
    for prompt in BUILTIN_EXAMPLES:
        assert f'href="{prompt}"' in text
    guide.linkActivated.emit("flag: Japan")
    assert panel.state.prompt == "flag: Japan" and panel.prompt_edit.toPlainText() == "flag: Japan"
    index = panel.model_combo.findData("/models/real.safetensors")
    panel.model_combo.setCurrentIndex(index)
    panel.model_combo.activated.emit(index)
    assert not guide.isVisible()
    panel.state.model = ""
    panel.refresh()
    assert guide.isVisible()


def test_sampling_controls_and_the_model_explain_themselves(panel):
    for widget in (panel.model_combo, panel.sampler_combo, panel.scheduler_combo, panel.steps_spin, panel.cfg_spin):
        assert len(widget.toolTip().split()) >= 8, widget


def test_every_sampler_and_schedule_is_offered_and_dpm_adaptive_says_it_ignores_steps(panel):
    from PySide6.QtCore import Qt

    from sdstudio.engine.names import SAMPLERS, SCHEDULERS

    combo = panel.sampler_combo
    assert [combo.itemText(i) for i in range(combo.count())] == list(SAMPLERS)
    schedules = panel.scheduler_combo
    assert [schedules.itemData(i) for i in range(schedules.count())] == list(SCHEDULERS)
    for name in ("UniPC", "PLMS", "Restart", "DPM fast", "DPM adaptive"):
        assert combo.itemData(combo.findText(name), Qt.ItemDataRole.ToolTipRole)
    assert "Ignores Steps" in combo.itemData(combo.findText("DPM adaptive"), Qt.ItemDataRole.ToolTipRole)
    assert panel.scheduler_combo.findText("Align Your Steps") >= 0


def test_the_model_description_arriving_does_not_move_the_controls_below(qtbot, panel):
    before = panel.sampler_combo.mapTo(panel.scroll.widget(), panel.sampler_combo.rect().topLeft()).y()
    panel.set_model_info("real: Stable Diffusion 1.x · eps prediction · float16 · 860M UNet parameters, "
                         "default size 512 × 512", "sd1")
    qtbot.wait(10)
    after = panel.sampler_combo.mapTo(panel.scroll.widget(), panel.sampler_combo.rect().topLeft()).y()
    assert after == before


def test_variation_and_extra_open_compact_rows_that_edit_the_state(qtbot, panel):
    extras = panel.seed_extras
    assert not extras.variation_row.isVisible() and not extras.resize_row.isVisible()
    extras.variation_toggle.click()
    assert extras.variation_row.isVisible()
    extras.subseed_spin.setValue(1234)
    extras.strength_slider.setValue(30)
    assert (panel.state.subseed, panel.state.subseed_strength) == (1234, 0.3)
    assert extras.strength_label.text() == "0.3"
    extras.extra_toggle.click()
    extras.resize_w_spin.setValue(512)
    extras.resize_h_spin.setValue(768)
    assert (panel.state.seed_resize_from_w, panel.state.seed_resize_from_h) == (512, 768)
    # Closing a row turns its option off, so nothing hidden reaches the request.
    extras.variation_toggle.click()
    extras.extra_toggle.click()
    assert panel.state.subseed_strength == 0.0
    assert (panel.state.seed_resize_from_w, panel.state.seed_resize_from_h) == (0, 0)
    assert not extras.variation_row.isVisible() and not extras.resize_row.isVisible()


def test_loaded_variation_parameters_open_the_rows_and_keep_a_strength_finer_than_the_slider(qtbot, panel):
    panel.state.subseed, panel.state.subseed_strength = 77, 0.125
    panel.state.seed_resize_from_w, panel.state.seed_resize_from_h = 448, 384
    panel.refresh()
    extras = panel.seed_extras
    assert extras.variation_row.isVisible() and extras.resize_row.isVisible()
    panel.seed_spin.setValue(5)  # any edit stores the whole panel again
    assert (panel.state.subseed, panel.state.subseed_strength) == (77, 0.125)
    assert extras.strength_label.text() == "0.125"
    extras.strength_slider.setValue(40)
    assert panel.state.subseed_strength == 0.4
