"""Choosing models in the main window: a model that fails to load is never kept, and added models can go."""

from sdstudio.ui.model_list import add_extra_model, extra_models
from sdstudio.ui.settings import open_settings
from tests.ui.fake_engine import failing_once


def saved_model() -> str:
    return str(open_settings().value("prompt/model", ""))


def write_models(home):
    models = home / "models"
    models.mkdir(parents=True)
    good = models / "good.safetensors"
    good.write_bytes((16).to_bytes(8, "little") + b"{}" + b" " * 14)  # a header the fake engine accepts
    broken = models / "broken.safetensors"
    broken.write_bytes(b"\xff" * 100)
    return str(good), str(broken)


def pick(window, path):
    combo = window.panel.model_combo
    index = combo.findData(path)
    assert index >= 0, path
    combo.setCurrentIndex(index)
    combo.activated.emit(index)


def test_a_model_that_fails_to_load_falls_back_and_is_never_remembered(qtbot, make_window, engine, home):
    good, broken = write_models(home)
    window = make_window()
    window.refresh_models()
    with qtbot.waitSignal(window.worker.modelLoaded, timeout=5000):
        pick(window, good)
    assert saved_model() == good
    with qtbot.waitSignal(window.worker.jobFailed, timeout=5000):
        pick(window, broken)
        assert saved_model() == good  # not even while it loads
    assert window.state.model == good and window.panel.model_combo.currentData() == good
    assert saved_model() == good
    banner = window.canvas_panel.banner.text.text()
    assert "broken.safetensors" in banner and "Back to good" in banner
    qtbot.waitUntil(lambda: engine.loaded[-1:] == [good], timeout=5000)
    qtbot.waitUntil(lambda: window.panel.model_info.text().startswith("good:"), timeout=5000)
    assert window.panel.model_combo.findData(broken) >= 0  # still listed, so it can be fixed or removed
    window.close()
    again = make_window()
    assert again.state.model == good and again.panel.model_combo.currentData() == good


def test_a_saved_model_that_no_longer_loads_falls_back_to_the_built_in_one(qtbot, make_window, engine, home):
    good, _broken = write_models(home)
    first = make_window()
    first.refresh_models()
    with qtbot.waitSignal(first.worker.modelLoaded, timeout=5000):
        pick(first, good)
    first.close()
    (home / "models" / "good.safetensors").write_bytes(b"\xff" * 100)  # damaged since
    window = make_window()
    assert window.state.model == good
    with qtbot.waitSignal(window.worker.jobFailed, timeout=5000):
        window.load_model(window.state.model)
    assert window.state.model == "" and window.panel.model_combo.currentData() == ""
    assert saved_model() == ""
    assert "Back to SD Studio emoji" in window.canvas_panel.banner.text.text()
    qtbot.waitUntil(lambda: engine.loaded[-1:] == [""], timeout=5000)


def test_a_failure_that_is_not_the_models_keeps_the_chosen_model(qtbot, make_window, engine, home):
    good, _broken = write_models(home)
    window = make_window(factory=failing_once(engine))
    window.refresh_models()
    with qtbot.waitSignal(window.worker.jobFailed, timeout=5000):
        pick(window, good)
    assert window.state.model == good  # the engine failed to start, not the model
    assert "Back to" not in window.canvas_panel.banner.text.text()


def test_remove_from_list_forgets_an_added_model(qtbot, window, home, tmp_path):
    added = tmp_path / "elsewhere.safetensors"
    added.write_bytes((16).to_bytes(8, "little") + b" " * 16)
    add_extra_model(window.settings, str(added))
    window.refresh_models()
    with qtbot.waitSignal(window.worker.modelLoaded, timeout=5000):
        pick(window, str(added))
    actions = window.panel.remove_button.menu().actions()
    assert [a.text() for a in actions] == ["Remove “elsewhere.safetensors” from list"]
    assert window.panel.remove_button.isEnabled()
    actions[0].trigger()
    assert window.panel.model_combo.findData(str(added)) < 0
    assert extra_models(window.settings) == [] and added.exists()
    assert window.state.model == "" and saved_model() == ""
    assert not window.panel.remove_button.isEnabled()


def test_the_status_bar_says_loading_until_the_model_has_loaded(qtbot, make_window, engine):
    engine.load_steps, engine.load_step_seconds = 3, 0.05
    window = make_window()
    window.load_model("")
    assert window.job_status.message.text().startswith("Loading")
    assert window.job_status.bar.isVisible()
    qtbot.waitUntil(lambda: window.job_status.message.text() == "Model ready", timeout=5000)
    assert not window.job_status.bar.isVisible()
