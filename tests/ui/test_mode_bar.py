"""The mode next to Generate, in the window: it follows the input and mask, and clears the input in one click."""

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from sdstudio.ui.imageconv import pil_to_qimage
from sdstudio.ui.mode_bar import IMG2IMG, INPAINT, TXT2IMG, input_mode


def textured(width, height) -> QImage:
    # Built in numpy: per-pixel QImage.setPixelColor trips a PySide refcount bug on None after ~50k calls.
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 7) % 256, (y * 5) % 256, (x * y) % 256], axis=-1).astype(np.uint8)
    return pil_to_qimage(Image.fromarray(rgb))


def paint(window, x=10, y=10):
    window.mask.begin_stroke(4, 1.0)
    window.mask.stroke_to(x, y)
    window.mask.end_stroke()


def test_input_mode_follows_input_and_mask():
    assert input_mode(False, False) == TXT2IMG
    assert input_mode(False, True) == TXT2IMG  # a mask without an input image does nothing
    assert input_mode(True, False) == IMG2IMG
    assert input_mode(True, True) == INPAINT


def test_the_bar_shows_each_mode_and_its_button_clears_the_input(qtbot, window, tmp_path):
    bar = window.mode_bar
    assert bar.mode == TXT2IMG and not bar.clear_button.isVisible()
    assert bar.isVisible() and "Text to image" in bar.label.text()
    window.set_input_image(textured(96, 64))
    assert bar.mode == IMG2IMG and bar.clear_button.isVisible() and "96×64" in bar.label.text()
    paint(window)
    assert bar.mode == INPAINT and "Inpaint" in bar.label.text()
    assert window.windowTitle() == "SD Studio — Inpaint"
    window.resize(1200, 800)
    window.grab().save(str(tmp_path / "inpaint_mode.png"))  # looked at by hand: the bar sits above Generate
    qtbot.mouseClick(bar.clear_button, Qt.MouseButton.LeftButton)
    assert window.canvas_panel.input_image is None and bar.mode == TXT2IMG
    assert not bar.clear_button.isVisible() and window.windowTitle() == "SD Studio"


def test_generate_after_clearing_is_text_to_image(qtbot, window, engine):
    window.set_input_image(textured(64, 64))
    paint(window)
    window.mode_bar.clear_button.click()
    window.panel.prompt_edit.setPlainText("a fox")
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    assert engine.generated[-1].mode == TXT2IMG and engine.generated[-1].init_image is None
