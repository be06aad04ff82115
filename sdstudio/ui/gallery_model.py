"""The gallery's lazy list model and its thumbnail loader.

The model holds only the pages of entries the view has scrolled to (Qt's canFetchMore/fetchMore). It
never loads a thumbnail by itself: the view tells the loader which rows are on screen, and the loader
replaces its queue with exactly those, so scrolling never queues more than a screenful. Thumbnails are
made and read on one background thread and arrive as QImages through a queued signal.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPixmap

from sdstudio.history.schema import Filter
from sdstudio.history.store import Entry, HistoryStore
from sdstudio.history.thumbnails import ThumbnailCache

ENTRY_ROLE = Qt.ItemDataRole.UserRole + 1
PAGE_SIZE = 200
PIXMAP_CACHE = 600  # a few screens of 128 px thumbnails: about 40 MB at most

Index = QModelIndex | QPersistentModelIndex


class ThumbnailLoader(QObject):
    """Loads the thumbnails it is asked for, most recent request first, on one daemon thread."""

    loaded = Signal(str, QImage)

    def __init__(self, cache: ThumbnailCache, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cache = cache
        self._wanted: list[tuple[str, Path]] = []
        self._stopping = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="gallery-thumbnails", daemon=True)
        self._thread.start()

    def want(self, items: list[tuple[str, Path]]) -> None:
        """Replace the queue: rows that scrolled away are forgotten, not loaded late."""
        with self._wake:
            self._wanted = list(items)
            self._wake.notify()

    def pending(self) -> int:
        with self._wake:
            return len(self._wanted)

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._wanted and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                entry_id, source = self._wanted.pop(0)
            try:
                image = QImage(str(self.cache.get(entry_id, source)))
            except Exception:  # noqa: BLE001 - any one bad file (bomb, huge text chunk) keeps its placeholder;
                image = QImage()  # the thread must live on for every other thumbnail of the session
            try:
                self.loaded.emit(entry_id, image)
            except RuntimeError:  # the gallery was deleted while this thumbnail loaded
                return


class GalleryModel(QAbstractListModel):
    """Entries matching a Filter, newest first, fetched a page at a time."""

    def __init__(self, store: HistoryStore, parent: QObject | None = None, page_size: int = PAGE_SIZE,
                 icon_size: int = 96) -> None:
        super().__init__(parent)
        self.store = store
        self.page_size = page_size
        self.icon_size = icon_size
        self.selection = Filter(group_walks=True)  # as the gallery's filters are at first: one tile per walk
        self._entries: list[Entry] = []
        self._total = 0
        self._pixmaps: OrderedDict[str, QPixmap] = OrderedDict()
        self._placeholder = QPixmap(icon_size, icon_size)
        self._placeholder.fill(QColor(128, 128, 128, 60))
        self.reload()

    # Contents ------------------------------------------------------------------------------------

    def set_filter(self, selection: Filter) -> None:
        self.selection = selection
        self.reload()

    def reload(self) -> None:
        """Start over with the first page (loaded now, so the view has rows to lay out at once)."""
        self.beginResetModel()
        self._total = self.store.count(self.selection)
        self._entries = self.store.page_for(self.selection, 0, self.page_size)
        self.endResetModel()

    def total(self) -> int:
        return self._total

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self._entries)

    def canFetchMore(self, parent: Index = QModelIndex()) -> bool:  # noqa: B008
        return not parent.isValid() and len(self._entries) < self._total

    def fetchMore(self, parent: Index = QModelIndex()) -> None:  # noqa: B008
        self.load_rows(len(self._entries) + self.page_size)

    def load_rows(self, count: int) -> None:
        """Make at least `count` rows present (fewer if the filter has fewer), in one query."""
        start = len(self._entries)
        if count <= start or start >= self._total:
            return
        page = self.store.page_for(self.selection, start, count - start)
        if not page:
            return
        self.beginInsertRows(QModelIndex(), start, start + len(page) - 1)
        self._entries.extend(page)
        self.endInsertRows()

    def entry(self, row: int) -> Entry | None:
        return self._entries[row] if 0 <= row < len(self._entries) else None

    def row_of(self, entry_id: str) -> int | None:
        for row, entry in enumerate(self._entries):
            if entry.id == entry_id:
                return row
        return None

    def insert_entry(self, entry: Entry) -> bool:
        """Show a new entry at the top if the filter admits it; True when it was added."""
        if self.row_of(entry.id) is not None or self.store.rank(entry.id, self.selection) is None:
            return False
        self.beginInsertRows(QModelIndex(), 0, 0)
        self._entries.insert(0, entry)
        self._total += 1
        self.endInsertRows()
        return True

    def remove_entry(self, entry_id: str) -> None:
        row = self.row_of(entry_id)
        if row is None:
            return
        self.beginRemoveRows(QModelIndex(), row, row)
        del self._entries[row]
        self._total -= 1
        self.endRemoveRows()

    def update_entry(self, entry: Entry) -> None:
        row = self.row_of(entry.id)
        if row is not None:
            self._entries[row] = entry
            self.dataChanged.emit(self.index(row), self.index(row))

    # Thumbnails ----------------------------------------------------------------------------------

    def has_thumbnail(self, entry_id: str) -> bool:
        return entry_id in self._pixmaps

    def set_thumbnail(self, entry_id: str, image: QImage) -> None:
        if image.isNull():
            return
        pixmap = QPixmap.fromImage(image)
        if max(pixmap.width(), pixmap.height()) > self.icon_size:
            pixmap = pixmap.scaled(self.icon_size, self.icon_size, Qt.AspectRatioMode.KeepAspectRatio,
                                   Qt.TransformationMode.SmoothTransformation)
        self._pixmaps[entry_id] = pixmap
        self._pixmaps.move_to_end(entry_id)
        while len(self._pixmaps) > PIXMAP_CACHE:
            self._pixmaps.popitem(last=False)
        row = self.row_of(entry_id)
        if row is not None:
            self.dataChanged.emit(self.index(row), self.index(row), [Qt.ItemDataRole.DecorationRole])

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        entry = self.entry(index.row()) if index.isValid() else None
        if entry is None:
            return None
        if role == Qt.ItemDataRole.DecorationRole:
            return self._pixmaps.get(entry.id, self._placeholder)
        if role == Qt.ItemDataRole.ToolTipRole:
            prompt = entry.prompt if len(entry.prompt) <= 200 else entry.prompt[:200] + "…"
            star = "★ " if entry.favourite else ""
            return f"{star}{prompt}\n{entry.width}×{entry.height}, seed {entry.seed}, {entry.model_name or 'model ?'}"
        if role == Qt.ItemDataRole.AccessibleTextRole:
            return entry.prompt
        if role == ENTRY_ROLE:
            return entry
        return None
