"""Both themes reach every part of the window (theme.apply_theme), also when switched at run time."""

import pytest
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow

from sdstudio.ui.theme import apply_theme


@pytest.fixture
def restore_theme():
    yield
    apply_theme(QApplication.instance(), "dark")


def lightness(window: QMainWindow, widget) -> float:
    shot = window.grab().toImage()
    centre = widget.geometry().center()
    point = widget.parentWidget().mapTo(window, centre) if widget.parentWidget() is not window else centre
    return shot.pixelColor(point.x() + widget.width() // 3, point.y()).lightnessF()


@pytest.mark.parametrize(("first", "then"), [("dark", "light"), ("light", "dark")])
def test_menu_bar_and_status_bar_follow_the_theme(qtbot, restore_theme, first, then) -> None:
    app = QApplication.instance()
    apply_theme(app, first)
    window = QMainWindow()
    qtbot.addWidget(window)
    window.setCentralWidget(QLabel("canvas"))
    window.menuBar().addMenu("&File")
    window.statusBar().showMessage("Ready")
    window.resize(400, 300)
    window.show()
    qtbot.waitExposed(window)
    apply_theme(app, then)
    QApplication.processEvents()
    for bar in (window.menuBar(), window.statusBar()):
        value = lightness(window, bar)
        assert (value > 0.7) if then == "light" else (value < 0.3), (type(bar).__name__, value)
