from PySide6.QtGui import QImage

from sdstudio.ui.screenshot import ScreenshotRun, generating_path


def test_screenshot_run_saves_the_window_mid_generation_and_after(qtbot, window, engine, tmp_path, monkeypatch):
    monkeypatch.setattr("sdstudio.ui.screenshot.SETTLE_MS", 10)
    engine.step_seconds = 0.03
    window.panel.prompt_edit.setPlainText("cat face")
    window.panel.steps_spin.setValue(20)
    path = tmp_path / "shots" / "window.png"
    run = ScreenshotRun(window, path)
    with qtbot.waitSignal(run.done, timeout=10_000) as blocker:
        run.start()
    assert blocker.args == [0]
    mid, final = QImage(str(generating_path(path))), QImage(str(path))
    assert not mid.isNull() and not final.isNull()
    assert mid.size() == final.size() == window.grab().size()
    assert mid != final
