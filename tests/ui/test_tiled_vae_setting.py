"""The Generate > Tiled VAE menu: saved in the settings, given to every job queued after."""

import pytest

from sdstudio.ui.settings import load_tiled_vae, open_settings, save_tiled_vae


def test_tiled_vae_defaults_to_auto_and_unknown_values_read_as_auto(home):
    settings = open_settings()
    assert load_tiled_vae(settings) == "auto"
    settings.setValue("engine/tiled_vae", "sometimes")
    assert load_tiled_vae(settings) == "auto"
    with pytest.raises(ValueError, match="tiled VAE"):
        save_tiled_vae(settings, "sometimes")


def test_the_menu_choice_is_saved_and_reaches_each_queued_request(qtbot, make_window, engine):
    window = make_window()
    actions = window.tiled_vae_actions
    assert set(actions) == {"auto", "on", "off"} and actions["auto"].isChecked()
    actions["off"].trigger()
    assert actions["off"].isChecked() and not actions["auto"].isChecked()
    assert load_tiled_vae(window.settings) == "off"
    window.panel.prompt_edit.setPlainText("cat face")
    window.panel.steps_spin.setValue(2)
    with qtbot.waitSignal(window.resultReady, timeout=10000):
        window.generate()
    assert [r.tiled_vae for r in engine.generated] == ["off"]
    again = make_window()
    assert again.tiled_vae_actions["off"].isChecked()
