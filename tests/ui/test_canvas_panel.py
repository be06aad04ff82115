"""The canvas panel's tool bars fit the window (no "»" overflow) at the sizes users have."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QColor, QImage, QKeySequence
from PySide6.QtWidgets import QApplication, QToolButton

from sdstudio.history.store import HistoryStore
from sdstudio.ui.gallery import GalleryWidget


def _overflowing(bar) -> bool:
    """True when QToolBar hides some of its items behind its extension ("»") button."""
    extension = bar.findChild(QToolButton, "qt_toolbar_ext_button")
    return extension is not None and extension.isVisible()


@pytest.mark.parametrize("size", [(1200, 760), (1600, 1000)])
def test_the_mask_and_view_tool_bars_fit_beside_the_history_dock(qtbot, window, tmp_path, size):
    store = HistoryStore(tmp_path / "outputs")
    window.dock_gallery(GalleryWidget(store, window))
    image = QImage(64, 64, QImage.Format.Format_RGB32)
    image.fill(QColor(200, 30, 30))
    window.set_input_image(image)  # the mask bar shows in the input view
    window.resize(*size)
    qtbot.waitUntil(lambda: window.size().toTuple() == size)
    QApplication.processEvents()
    panel = window.canvas_panel
    assert panel.mask_bar.isVisible()
    assert not _overflowing(panel.mask_bar), f"mask bar {panel.mask_bar.sizeHint().width()} px in {panel.width()}"
    assert not _overflowing(panel.toolbar)
    visible = {a.text() for a in panel.mask_bar.actions() if a.isVisible() and a.text()}
    assert {"Brush", "Eraser", "Pan", "Clear", "Invert", "Fill"} <= visible
    store.close()


def test_undo_and_redo_stay_in_the_edit_menu_with_their_shortcuts(qtbot, window):
    [edit] = [a.menu() for a in window.menuBar().actions() if a.text() == "&Edit"]
    actions = {a.text(): a for a in edit.actions()}
    assert actions["&Undo"].shortcut() == QKeySequence(QKeySequence.StandardKey.Undo)
    assert actions["&Redo"].shortcuts()
    image = QImage(32, 32, QImage.Format.Format_RGB32)
    image.fill(QColor(0, 0, 0))
    window.set_input_image(image)
    window.mask.fill()
    assert not window.mask.is_empty()
    actions["&Undo"].trigger()
    assert window.mask.is_empty()
    actions["&Redo"].trigger()
    assert not window.mask.is_empty()


def test_only_masked_live_preview_keeps_the_input_outside_the_repainted_box(qtbot, window, engine):
    """Mid-run, an "Only masked" job's preview (the box, at the request's size) is shown pasted into the whole
    input, as the final image will be: every pixel outside the box is the input's."""
    import numpy as np
    from PIL import Image

    from sdstudio.engine.geometry import crop_region
    from sdstudio.ui.imageconv import pil_to_qimage, qimage_to_pil

    init = Image.fromarray(np.random.default_rng(7).integers(0, 256, (96, 160, 3), dtype=np.uint8))
    window.set_input_image(pil_to_qimage(init))
    window.mask.begin_stroke(14, 1.0)
    window.mask.stroke_to(120, 20)  # off-centre, top right
    window.mask.end_stroke()
    window.panel.only_masked_check.setChecked(True)
    window.panel.steps_spin.setValue(6)
    # Previews must come mid-run, not only coalesced past the end: steps long enough for the window to show
    # some even on a loaded machine (0.03 s steps left none shown in one CI run).
    engine.step_seconds = 0.25
    # A preview whose red channel is its x: where each column lands shows where the preview was placed.
    engine.preview_maker = lambda _step, r: Image.fromarray(np.broadcast_to(
        np.stack([np.linspace(0, 255, r.width), np.zeros(r.width), np.zeros(r.width)], -1).astype(np.uint8),
        (r.height, r.width, 3)).copy())
    shown = []

    def grab(job: int, _step: int, _image) -> None:  # after the window showed it (connected first)
        if job == window._running:  # a preview coalesced past the job's end is not shown
            shown.append(qimage_to_pil(window.canvas_panel.canvas.image))

    window.worker.previewReady.connect(grab)
    with qtbot.waitSignal(window.resultReady, timeout=30000):
        window.generate()
    request = engine.generated[-1]
    assert request.only_masked and shown
    box = crop_region(request.mask, request.only_masked_padding, request.width, request.height)
    outside = np.ones((96, 160), bool)
    outside[max(box[1], 0):box[3], max(box[0], 0):box[2]] = False
    assert outside.sum() > 96 * 160 // 2
    for image in shown:
        pixels = np.asarray(image)
        assert pixels.shape == (96, 160, 3)
        assert np.array_equal(pixels[outside], np.asarray(init)[outside])
        # The mask's core (around 120, 20) shows the preview stretched over the box, not over the whole input.
        for x in (117, 120, 123):
            expected = (x + 0.5 - box[0]) / (box[2] - box[0]) * 255
            assert abs(int(pixels[20, x, 0]) - expected) <= 10 and pixels[20, x, 1:].max() <= 10
