"""The canvas's outpaint bar: the input grows on the pressed side, the new area is masked, Generate inpaints
the extended canvas at its own size."""

import numpy as np
import pytest
from PySide6.QtGui import QColor, QImage

from sdstudio.engine.outpaint import DEFAULT_FILL, MAX_EXTENSION, Extension, blend_band
from sdstudio.ui.canvas_panel import INPUT, RESULT
from sdstudio.ui.imageconv import qimage_to_pil
from sdstudio.ui.outpaint_bar import DEFAULT_AMOUNT, OUTPAINT_STRENGTH, outpaint_input
from sdstudio.ui.settings import load_outpaint, open_settings, save_outpaint


def textured_image(width=48, height=40) -> QImage:
    rng = np.random.default_rng(3)
    image = QImage(width, height, QImage.Format.Format_RGB888)
    for y in range(height):
        for x in range(width):
            image.setPixelColor(x, y, QColor(*(int(v) for v in rng.integers(0, 256, 3))))
    return image


def test_the_bar_shows_with_the_mask_tools_and_each_side_extends(qtbot, window):
    cp = window.canvas_panel
    assert not cp.outpaint_bar.isVisibleTo(cp)  # nothing to extend in the result view
    source = textured_image()
    window.set_input_image(source)
    assert cp.view == INPUT and cp.outpaint_bar.isVisibleTo(cp)
    cp.outpaint_bar.amount.setValue(16)
    cp.outpaint_bar.fill.setCurrentIndex(cp.outpaint_bar.fill.findData("blur"))
    cp.outpaint_bar.side_actions["left"].trigger()
    image = cp.input_image
    assert (image.width(), image.height()) == (64, 40)  # 48 + 16, already a multiple of 8
    kept = np.asarray(qimage_to_pil(image).convert("RGB"))[:, 16:]
    assert np.array_equal(kept, np.asarray(qimage_to_pil(source).convert("RGB")))
    mask = window.mask.pixels()
    o = blend_band(window.state.mask_blur)  # the mask overlaps the original so the blur covers the new area
    assert o > 0 and (mask[:, : 16 + o] == 255).all() and mask[:, 16 + o :].max() == 0
    assert (window.state.width, window.state.height) == (64, 40) and window.state.strength == OUTPAINT_STRENGTH
    assert window.panel.width_spin.value() == 64 and window.panel.strength_spin.value() == OUTPAINT_STRENGTH
    cp.outpaint_bar.amount.setValue(10)
    cp.outpaint_bar.side_actions["down"].trigger()  # 40 + 10 grows to 56 on the extended side
    assert (cp.input_image.width(), cp.input_image.height()) == (64, 56)
    mask = window.mask.pixels()
    assert (mask[:, :16] == 255).all() and (mask[40 - o :] == 255).all() and mask[: 40 - o, 16 + o :].max() == 0


def test_a_painted_mask_is_kept_and_generate_inpaints_the_canvas(qtbot, window, engine):
    window.set_input_image(textured_image(32, 32))
    window.mask.set_pixels(np.pad(np.full((8, 8), 255, np.uint8), ((4, 20), (4, 20))), "paint")
    outpaint_input(window, Extension(right=32), "noise")
    mask = window.mask.pixels()
    assert mask.shape == (32, 64) and (mask[4:12, 4:12] == 255).all() and (mask[:, 32:] == 255).all()
    assert mask[20:, : 32 - blend_band(window.state.mask_blur)].max() == 0
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    req = engine.generated[-1]
    assert req.mode == "inpaint" and (req.width, req.height) == req.init_image.size == (64, 32)
    assert req.strength == OUTPAINT_STRENGTH and not req.only_masked
    assert window.canvas_panel.view == RESULT


def test_with_only_masked_on_generate_samples_the_box_around_the_new_area(qtbot, window, engine):
    window.set_input_image(textured_image(96, 40))
    window.state.only_masked, window.state.only_masked_padding = True, 8
    window.panel.refresh()
    outpaint_input(window, Extension(right=16), "edge")
    o = blend_band(window.state.mask_blur)
    expected = -(-(16 + o + 8) // 8) * 8  # the new area, the band into the original and the padding
    assert (window.state.width, window.state.height) == (expected, 40) and window.state.only_masked
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    req = engine.generated[-1]
    assert req.only_masked and req.init_image.size == (112, 40) and (req.width, req.height) == (expected, 40)


def test_an_extension_past_the_size_limit_is_refused_in_the_banner(qtbot, window):
    window.set_input_image(textured_image(16, 16))
    outpaint_input(window, Extension(right=4096), "edge")
    assert window.canvas_panel.input_image.width() == 16
    assert "limit" in window.canvas_panel.banner.text.text()


def test_the_amount_and_fill_are_kept_for_the_next_start(qtbot, make_window):
    first = make_window()
    bar = first.canvas_panel.outpaint_bar
    assert bar.values() == (DEFAULT_AMOUNT, DEFAULT_FILL)
    bar.amount.setValue(40)
    bar.fill.setCurrentIndex(bar.fill.findData("noise"))
    first.close()  # closing saves, as every Generate does
    again = make_window().canvas_panel.outpaint_bar
    assert again.values() == (40, "noise") and again.fill.currentText() == "Noise"
    assert load_outpaint(open_settings()) == (40, "noise")


@pytest.mark.parametrize("amount, fill, expected", [
    ("lots", "lava", (DEFAULT_AMOUNT, DEFAULT_FILL)),  # unreadable: the defaults
    ("0", "blur", (DEFAULT_AMOUNT, "blur")),
    (str(MAX_EXTENSION + 1), "edge", (DEFAULT_AMOUNT, "edge")),
    (str(MAX_EXTENSION), "Noise", (MAX_EXTENSION, DEFAULT_FILL)),  # fills are names, not labels
    ("24", "noise", (24, "noise")),
])
def test_saved_outpaint_values_are_checked_when_read(home, amount, fill, expected):
    settings = open_settings()
    settings.setValue("outpaint/amount", amount)
    settings.setValue("outpaint/fill", fill)
    settings.sync()
    assert load_outpaint(open_settings()) == expected


def test_saving_an_unknown_fill_is_refused(home):
    with pytest.raises(ValueError, match="outpaint fill"):
        save_outpaint(open_settings(), 64, "lava")
