"""Every shortcut of the full window (menus, canvas, docked gallery) is bound once, and redo answers its keys."""

import collections

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage, QKeySequence
from PySide6.QtTest import QTest

from sdstudio.history.store import HistoryStore
from sdstudio.ui.gallery import GalleryWidget
from sdstudio.ui.help import ShortcutsDialog, collect_shortcuts, redo_keys, window_actions


@pytest.fixture
def full_window(qtbot, window, tmp_path):
    window.dock_gallery(GalleryWidget(HistoryStore(tmp_path / "outputs"), window))
    return window


def test_no_key_sequence_is_bound_twice(full_window):
    counts = collections.Counter()
    for action in window_actions(full_window):
        counts.update(k.toString(QKeySequence.SequenceFormat.PortableText) for k in action.shortcuts())
    assert len(counts) > 20  # the menus, the canvas tools and the gallery were all found
    assert [key for key, n in counts.items() if n > 1] == []


def test_the_overview_lists_every_action_with_a_shortcut(qtbot, full_window):
    shortcuts = collect_shortcuts(full_window)
    places = {s.place for s in shortcuts}
    assert {"Edit", "View", "Generate", "History", "Help"} <= places
    redo = next(s for s in shortcuts if s.action == "Redo")
    assert {"Ctrl+Shift+Z", "Ctrl+Y"} <= set(redo.keys)
    dialog = ShortcutsDialog(full_window)
    qtbot.addWidget(dialog)
    rows = [dialog.tree.topLevelItem(i).child(j)
            for i in range(dialog.tree.topLevelItemCount()) for j in range(dialog.tree.topLevelItem(i).childCount())]
    assert len(rows) == len(shortcuts)
    assert any(r.text(0) == "Use as init image" and r.text(1) for r in rows)


def test_help_menu_has_shortcuts_and_about(full_window):
    help_menu = next(a.menu() for a in full_window.menuBar().actions() if a.text() == "&Help")
    assert [a.text() for a in help_menu.actions()] == ["&Keyboard Shortcuts", "&About SD Studio"]


@pytest.mark.parametrize("key", ["Ctrl+Y", "Ctrl+Shift+Z"])
def test_redo_keys_restore_an_undone_stroke(qtbot, full_window, key):
    image = QImage(64, 64, QImage.Format.Format_RGB888)
    image.fill(QColor(128, 128, 128))
    full_window.set_input_image(image)
    full_window.mask.fill()
    painted = full_window.mask.pixels().copy()
    full_window.activateWindow()  # shortcuts go to the active window (on a real display too)
    qtbot.waitActive(full_window)
    QTest.keyClick(full_window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert full_window.mask.is_empty()
    sequence = QKeySequence(key)[0]
    QTest.keyClick(full_window, sequence.key(), sequence.keyboardModifiers())
    assert (full_window.mask.pixels() == painted).all()


@pytest.mark.parametrize("platform", [["Ctrl+Shift+Z"], ["Ctrl+Y", "Alt+Shift+Backspace", "Ctrl+Shift+Z"], []])
def test_redo_has_both_keys_once_whatever_the_platform_binds(qapp, platform):
    # X11 binds Redo to Ctrl+Shift+Z alone: adding it again made the key ambiguous there, and Ctrl+Y missing.
    keys = [k.toString() for k in redo_keys([QKeySequence(k) for k in platform])]
    assert len(keys) == len(set(keys))
    assert {"Ctrl+Shift+Z", "Ctrl+Y", *platform} == set(keys)
