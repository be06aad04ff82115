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
