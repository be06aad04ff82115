"""A latent walk in the gallery: its frames share a walk id (GenerationRequest.walk_id), and the grid shows one
tile per walk (its first frame, with a "walk" strip: gallery_delegate) until the user opens the walk to see its
frames one by one ("Show the walk's frames"; a bar above the grid leads back).

It works through the gallery's own filter (`walk_filter`, schema.Filter.walk / group_walks), so paging,
search and selection stay the gallery's.
"""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QWidget

from sdstudio.history.store import Entry


def selected_entries(gallery) -> list[Entry]:
    """The gallery's selected entries (Ctrl/Shift-click), in grid order."""
    rows = sorted(index.row() for index in gallery.view.selectionModel().selectedIndexes())
    return [entry for entry in map(gallery.model.entry, rows) if entry is not None]


class WalkGroups(QObject):
    """The open-a-walk action and the bar that says a walk is open."""

    def __init__(self, gallery) -> None:
        super().__init__(gallery)
        self.gallery = gallery
        self.act_open = QAction("Show the walk's frames", gallery)
        self.act_open.setToolTip("This tile stands for a walk: show each of its frames")
        self.act_open.triggered.connect(self.open_current)
        self.bar = QWidget(objectName="walkGroupBar")
        self.label = QLabel()
        self.label.setProperty("role", "hint")
        back = QToolButton(text="All images", toolTip="Back to the whole history (one tile per walk)")
        back.clicked.connect(self.close_walk)
        row = QHBoxLayout(self.bar)
        row.setContentsMargins(4, 0, 4, 0)
        row.addWidget(self.label, 1)
        row.addWidget(back)
        self.bar.hide()
        gallery.layout().insertWidget(2, self.bar)  # under the filter bar and the "hidden" bar
        gallery.view.selectionModel().currentChanged.connect(self.update_actions)
        gallery.model.modelReset.connect(self._sync_bar)  # "Show all" clears the walk filter too
        self.update_actions()

    def _sync_bar(self) -> None:
        self.bar.setVisible(self.gallery.walk_filter is not None)

    def update_actions(self, *_changed) -> None:
        entry = self.gallery.current_entry()
        self.act_open.setEnabled(entry is not None and bool(entry.walk_id) and self.gallery.walk_filter is None)

    def open_current(self) -> None:
        entry = self.gallery.current_entry()
        if entry is not None and entry.walk_id:
            self.open_walk(entry.walk_id, entry.id)

    def open_walk(self, walk_id: str, select: str = "") -> None:
        """Show the walk's frames (newest first, as the grid orders), selecting `select`."""
        self.gallery.walk_filter = walk_id
        self.gallery.apply_filters()
        count = len(self.gallery.store.walk_frames(walk_id))
        self.label.setText(f"The {count} frames of one walk")
        self._sync_bar()
        if select:
            self.gallery.select_entry(select)
        self.update_actions()

    def close_walk(self) -> None:
        current = self.gallery.current_entry()
        self.gallery.walk_filter = None
        self.gallery.apply_filters()
        if current is not None:
            frames = self.gallery.store.walk_frames(current.walk_id)
            if frames:  # back on the walk's tile
                self.gallery.select_entry(self._tile(frames).id)
        self.update_actions()

    def _tile(self, frames: list[Entry]) -> Entry:
        """The frame that stands for the walk under the present filters (the first admitted, else the first)."""
        selection = self.gallery.model.selection
        admitted = [f for f in frames if self.gallery.store.rank(f.id, selection) is not None]
        return (admitted or frames)[0]
