"""The history dock's width (app.size_gallery_dock): a share of the window, never set by its contents."""

from PIL import Image
from PySide6.QtWidgets import QApplication

from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.app import DOCK_SHARE
from tests.ui.test_app_history import close, open_history


def settle(qtbot) -> None:
    for _ in range(5):
        QApplication.processEvents()
        qtbot.wait(10)


def test_the_dock_shrinks_with_a_small_window_and_ignores_long_model_names(window, home, monkeypatch, qtbot):
    link = open_history(window, monkeypatch)
    dock = window.gallery_dock
    window.resize(1200, 760)
    settle(qtbot)
    wide = dock.width()
    long_name = "a-model-with-a-very-very-long-file-name-v1.5-pruned-emaonly-fp16-ema"
    entry = link.store.add(Image.new("RGB", (16, 16), (200, 20, 20)), GenerationRequest(prompt="x", width=16,
                                                                                       height=16), long_name)
    dock.widget().add_entry(entry)
    settle(qtbot)
    assert dock.width() == wide  # the new model in the filter list does not widen the dock
    window.resize(800, 560)
    settle(qtbot)
    assert dock.width() <= max(dock.minimumSizeHint().width(), 800 * DOCK_SHARE)
    assert window.canvas_panel.canvas.width() >= 200
    window.resize(1200, 760)
    settle(qtbot)
    assert dock.width() == wide  # and grows back when there is room again
    close(link)
