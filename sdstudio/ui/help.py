"""The Help menu: a keyboard-shortcut overview read from the window's own actions, and About.

The overview is generated from the QActions that exist, so it can never list a key that does nothing or miss
one that was added later.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QHeaderView,
    QMainWindow,
    QMenu,
    QMessageBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from sdstudio import __version__


@dataclass(frozen=True)
class Shortcut:
    place: str  # the menu or panel where the action lives
    action: str  # its text, without mnemonics
    keys: tuple[str, ...]  # portable key sequences, e.g. "Ctrl+Shift+Z"


def clean_text(text: str) -> str:
    return text.replace("&&", "\x00").replace("&", "").replace("\x00", "&").rstrip("…").strip()


def window_actions(window: QWidget) -> list[QAction]:
    """Every distinct QAction owned by the window or added to it or any of its descendants."""
    seen: dict[int, QAction] = {}
    for owner in (window, *window.findChildren(QWidget)):
        for action in (*owner.findChildren(QAction), *owner.actions()):
            seen.setdefault(id(action), action)
    return list(seen.values())


def _place(action: QAction) -> str:
    for owner in action.associatedObjects():
        if isinstance(owner, QMenu) and owner.title():
            return clean_text(owner.title())
    widget = action.parent()
    while widget is not None:
        if isinstance(widget, QDockWidget):
            return clean_text(widget.windowTitle())
        widget = widget.parent()
    return "Window"


def collect_shortcuts(window: QWidget) -> list[Shortcut]:
    """The actions of `window` that have a keyboard shortcut, by place, then by text."""
    found = []
    for action in window_actions(window):
        keys = tuple(k.toString(QKeySequence.SequenceFormat.PortableText)
                     for k in action.shortcuts() if not k.isEmpty())
        if keys and action.text():
            found.append(Shortcut(_place(action), clean_text(action.text()), keys))
    return sorted(set(found), key=lambda s: (s.place, s.action))


class ShortcutsDialog(QDialog):
    """A read-only table of every action's shortcut, grouped by menu or panel."""

    def __init__(self, window: QWidget, parent: QWidget | None = None):
        super().__init__(parent or window)
        self.setWindowTitle("Keyboard Shortcuts")
        layout = QVBoxLayout(self)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Action", "Shortcut"])
        self.tree.setRootIsDecorated(False)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.header().setStretchLastSection(True)
        groups: dict[str, QTreeWidgetItem] = {}
        for shortcut in collect_shortcuts(window):
            if shortcut.place not in groups:
                groups[shortcut.place] = QTreeWidgetItem(self.tree, [shortcut.place])
                font = groups[shortcut.place].font(0)
                font.setBold(True)
                groups[shortcut.place].setFont(0, font)
                groups[shortcut.place].setFirstColumnSpanned(True)
            native = ", ".join(QKeySequence(k).toString(QKeySequence.SequenceFormat.NativeText)
                               for k in shortcut.keys)
            QTreeWidgetItem(groups[shortcut.place], [shortcut.action, native])
        self.tree.expandAll()
        layout.addWidget(self.tree)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        em = self.fontMetrics().horizontalAdvance("M")
        self.resize(em * 48, em * 60)


def show_about(parent: QWidget) -> None:
    QMessageBox.about(
        parent, "About SD Studio",
        f"<b>SD Studio {__version__}</b><p>Local Stable Diffusion on your own computer: text to image, image to "
        "image and inpainting, with a history of every image and the exact settings that made it.</p>"
        "<p>The built-in model is a small demo trained on emoji (64×64). Put real checkpoints (.safetensors) in "
        "the models folder: File › Open Models Folder.</p>")


def redo_keys(platform: list[QKeySequence] | None = None) -> list[QKeySequence]:
    """The platform's Redo keys (`platform`, default Qt's for this platform) plus Ctrl+Shift+Z and Ctrl+Y, each
    once: a key bound twice is ambiguous and Qt then fires neither (on X11 Redo is itself Ctrl+Shift+Z)."""
    if platform is None:
        platform = QKeySequence.keyBindings(QKeySequence.StandardKey.Redo)
    keys = [*platform, QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")]
    unique: dict[str, QKeySequence] = {}
    for key in keys:
        unique.setdefault(key.toString(QKeySequence.SequenceFormat.PortableText), key)
    return list(unique.values())


def build_help_menu(window: QMainWindow) -> QMenu:
    """Add Help › Keyboard Shortcuts and Help › About to the window's menu bar."""
    menu = window.menuBar().addMenu("&Help")
    shortcuts = menu.addAction("&Keyboard Shortcuts")
    shortcuts.setShortcut(QKeySequence(QKeySequence.StandardKey.HelpContents))
    shortcuts.triggered.connect(lambda: ShortcutsDialog(window).exec())
    menu.addAction("&About SD Studio").triggered.connect(lambda: show_about(window))
    return menu
