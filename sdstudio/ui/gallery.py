"""The history gallery: a lazy thumbnail grid with search and filters, details, actions and lineage.

The widget only shows the store and asks for things through signals carrying entry ids (plain str);
the main window decides what a re-run or "use as init" means. Thumbnails are requested for the rows on
screen only (see gallery_model).
"""

from __future__ import annotations

import time

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QPoint, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QMessageBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.history.schema import Filter
from sdstudio.history.store import Entry, HistoryStore
from sdstudio.ui.gallery_delegate import ThumbnailDelegate
from sdstudio.ui.gallery_details import EntryDetails
from sdstudio.ui.gallery_model import GalleryModel, ThumbnailLoader

ICON = 96
SEARCH_DELAY_MS = 250
DAY = 86400.0
# "Vary": how many variations one click queues, and the strengths offered (A1111's variation strength).
VARY_COUNT = 4
VARY_STRENGTHS = (("Subtle", 0.1), ("Medium", 0.25), ("Strong", 0.5))
PERIODS = (("Any time", None), ("Today", 0), ("Last 7 days", 7), ("Last 30 days", 30))


def period_start(days: int | None, now: float | None = None) -> float | None:
    """Unix time where a period starts: local midnight `days` days ago (0 = today), or None for any time."""
    if days is None:
        return None
    local = time.localtime(now if now is not None else time.time())
    midnight = time.mktime((local.tm_year, local.tm_mon, local.tm_mday, 0, 0, 0, 0, 0, -1))
    return midnight - days * DAY


class GalleryWidget(QWidget):
    entrySelected = Signal(str)
    rerunRequested = Signal(str, bool)  # entry id, new seed
    varyRequested = Signal(str, float)  # entry id, variation strength
    loadParametersRequested = Signal(str)
    useAsInitRequested = Signal(str)
    useForInpaintRequested = Signal(str)

    def __init__(self, store: HistoryStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.model = GalleryModel(store, self, icon_size=ICON)
        self.loader = ThumbnailLoader(store.thumbnails)
        self.loader.loaded.connect(self.model.set_thumbnail)
        self.destroyed.connect(lambda *_a, loader=self.loader: loader.stop())
        self._current: Entry | None = None
        self._hidden_new = 0  # results saved since the filters were set that the filters hide
        self.walk_filter: str | None = None  # a walk shown frame by frame (gallery_walks.py); else one tile
        self._search_timer = self._single_shot(SEARCH_DELAY_MS, self.apply_filters)
        self._visible_timer = self._single_shot(30, self.request_visible_thumbnails)

        self.view = self._make_view()
        self.details = EntryDetails()
        self.details.entryLinkActivated.connect(self.select_entry)
        self._make_actions()
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.view)
        splitter.addWidget(self.details)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(self._make_filter_bar())
        layout.addWidget(self._make_hidden_bar())
        layout.addWidget(splitter, 1)
        self._fill_models()
        self._update_count()
        self._update_actions()

    # Construction --------------------------------------------------------------------------------

    def _single_shot(self, ms: int, slot) -> QTimer:
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(ms)
        timer.timeout.connect(slot)
        return timer

    def _make_view(self) -> QListView:
        view = QListView()
        view.setViewMode(QListView.ViewMode.IconMode)
        view.setIconSize(QSize(ICON, ICON))
        view.setGridSize(QSize(ICON + 8, ICON + 8))
        view.setItemDelegate(ThumbnailDelegate(ICON + 8, view))
        view.setMouseTracking(True)  # hover highlight
        view.setUniformItemSizes(True)
        view.setResizeMode(QListView.ResizeMode.Adjust)
        view.setMovement(QListView.Movement.Static)
        view.setSelectionMode(QListView.SelectionMode.ExtendedSelection)  # Ctrl/Shift: two ends of a walk
        view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        view.setModel(self.model)
        view.selectionModel().currentChanged.connect(self._current_changed)
        view.customContextMenuRequested.connect(self._context_menu)
        view.verticalScrollBar().valueChanged.connect(self._visible_timer.start)
        for signal in (self.model.rowsInserted, self.model.rowsRemoved, self.model.modelReset):
            signal.connect(self._visible_timer.start)
        return view

    def _make_filter_bar(self) -> QVBoxLayout:
        self.search = QLineEdit(placeholderText="Search prompts")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._search_timer.start)
        self.search.returnPressed.connect(self.apply_filters)
        self.model_filter = QComboBox(toolTip="Show images of one model")
        self.period = QComboBox(toolTip="Show images from a period")
        for label, days in PERIODS:
            self.period.addItem(label, days)
        self.favourites = QToolButton(text="★", checkable=True, toolTip="Favourites only")
        self.trash = QToolButton(text="Trash", checkable=True, toolTip="Show deleted images (to restore them)")
        self.restore_button = QToolButton()
        self.restore_button.setDefaultAction(self.act_restore)
        self.empty_trash_button = QToolButton(text="Empty trash", toolTip="Delete the trashed images for good")
        self.empty_trash_button.clicked.connect(self.empty_trash)
        self.count_label = QLabel()
        self.count_label.setProperty("role", "hint")
        for combo in (self.model_filter, self.period):
            combo.currentIndexChanged.connect(self.apply_filters)
            # A long model name must not widen the dock: the width is the window's, not the contents'.
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(3)
        for button in (self.favourites, self.trash):
            button.toggled.connect(self.apply_filters)
        first = QHBoxLayout()
        first.addWidget(self.search, 1)
        first.addWidget(self.favourites)
        first.addWidget(self.trash)
        second = QHBoxLayout()
        second.addWidget(self.model_filter, 2)
        second.addWidget(self.period, 1)
        second.addWidget(self.count_label, 0, Qt.AlignmentFlag.AlignRight)
        self.trash_row = QWidget()
        third = QHBoxLayout(self.trash_row)
        third.setContentsMargins(0, 0, 0, 0)
        third.addWidget(self.restore_button)
        third.addWidget(self.empty_trash_button)
        third.addStretch(1)
        bar = QVBoxLayout()
        bar.addLayout(first)
        bar.addLayout(second)
        bar.addWidget(self.trash_row)
        return bar

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt override)
        """Three thumbnail columns, whatever the entries say (a dock must not change width by itself)."""
        return QSize(3 * (ICON + 8) + 2 * self.style().pixelMetric(self.style().PixelMetric.PM_ScrollBarExtent), 600)

    def _make_hidden_bar(self) -> QWidget:
        """Says when new results are hidden by the filters, so a saved image never seems lost."""
        bar = QWidget(objectName="hiddenBar")
        self.hidden_label = QLabel()
        self.hidden_label.setProperty("role", "hint")
        self.show_all_button = QToolButton(text="Show all", toolTip="Clear the search and filters")
        self.show_all_button.clicked.connect(self.show_all)
        row = QHBoxLayout(bar)
        row.setContentsMargins(4, 0, 4, 0)
        row.addWidget(self.hidden_label, 1)
        row.addWidget(self.show_all_button)
        bar.hide()
        self.hidden_bar = bar
        return bar

    def _action(self, text: str, slot, shortcut: QKeySequence | str | None = None, tip: str = "",
                checkable: bool = False) -> QAction:
        action = QAction(text, self, checkable=checkable)
        action.setToolTip(tip or text)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
            # Only while the grid has focus: bare keys must not fire while typing in the search box.
            action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
            self.view.addAction(action)
        (action.toggled if checkable else action.triggered).connect(slot)
        return action

    def _make_actions(self) -> None:
        def ask(signal, *extra):
            def emit(*_args) -> None:
                if self._current is not None:
                    signal.emit(self._current.id, *extra)

            return emit

        self.act_rerun = self._action("Re-run", ask(self.rerunRequested, False), "Ctrl+R",
                                      "Generate this image again: same parameters, same pixels")
        self.act_rerun_new_seed = self._action("Re-run with new seed", ask(self.rerunRequested, True),
                                               "Ctrl+Shift+R", "Same parameters, a new random seed")
        self.vary_menu = QMenu("Vary", self)
        self.vary_menu.setToolTip(f"Queue {VARY_COUNT} variations of this image: same seed, random variation "
                                  "seeds at the chosen strength")
        self.vary_actions = []
        for label, strength in VARY_STRENGTHS:
            action = self._action(f"{label} ({strength:g})", ask(self.varyRequested, strength))
            self.vary_menu.addAction(action)
            self.vary_actions.append(action)
        self.act_load = self._action("Load parameters", ask(self.loadParametersRequested), "Ctrl+L",
                                     "Put this image's parameters into the prompt panel")
        self.act_init = self._action("Use as init image", ask(self.useAsInitRequested), "Ctrl+I",
                                     "Start image-to-image from this picture")
        self.act_inpaint = self._action("Use for inpainting", ask(self.useForInpaintRequested), "Ctrl+Shift+I",
                                        "Paint a mask over this picture and repaint it")
        self.act_copy = self._action("Copy parameters", self.copy_parameters, QKeySequence.StandardKey.Copy,
                                     "Copy the parameters text (A1111 format)")
        self.act_favourite = self._action("Favourite", self._set_favourite, "F", checkable=True)
        self.act_folder = self._action("Open containing folder", self.open_folder)
        self.act_delete = self._action("Move to trash", self.delete_current, QKeySequence.StandardKey.Delete)
        self.act_restore = self._action("Restore", self.restore_current, tip="Bring this image back out of the trash")
        self.extra_groups: list[tuple[QAction, ...]] = []  # context menu groups others add (walk_link.py)
        self.act_parent = self._action("Go to parent", self.go_to_parent, "Alt+Up",
                                       "Select the image this one was made from")
        self.act_child = self._action("Go to newest child", self.go_to_child, "Alt+Down",
                                      "Select the newest image made from this one")

    # Filters -------------------------------------------------------------------------------------

    def _fill_models(self) -> None:
        chosen = self.model_filter.currentData()
        self.model_filter.blockSignals(True)
        self.model_filter.clear()
        self.model_filter.addItem("All models", None)
        for name in self.store.models():
            self.model_filter.addItem(name or "(unknown model)", name)
        index = self.model_filter.findData(chosen)
        self.model_filter.setCurrentIndex(max(index, 0))
        self.model_filter.blockSignals(False)

    def current_filter(self) -> Filter:
        return Filter(
            query=self.search.text(),
            model=self.model_filter.currentData(),
            since=period_start(self.period.currentData()),
            favourite=True if self.favourites.isChecked() else None,
            deleted=self.trash.isChecked(), walk=self.walk_filter, group_walks=True)

    def apply_filters(self) -> None:
        self._search_timer.stop()
        self._set_hidden_new(0)
        self.model.set_filter(self.current_filter())
        self._show(None)
        self._update_count()
        self._update_actions()

    def refresh(self) -> None:
        """Re-read the store (after changes made elsewhere)."""
        self._fill_models()
        self.apply_filters()

    def add_entry(self, entry: Entry) -> None:
        """Show a new result at the top (if the filters admit it)."""
        if self.model_filter.findData(entry.model_name) < 0:
            self._fill_models()
        at_top = self.view.verticalScrollBar().value() == 0
        if self.model.insert_entry(entry):
            if at_top:
                self.view.scrollToTop()
        elif self.model.row_of(entry.id) is None and not entry.walk_id:  # a walk's frame is in its tile
            self._set_hidden_new(self._hidden_new + 1)
        self._update_count()

    def _set_hidden_new(self, count: int) -> None:
        self._hidden_new = count
        many = count != 1
        self.hidden_label.setText(f"{count} new image{'s are' if many else ' is'} hidden by the filters")
        self.hidden_bar.setVisible(count > 0)

    def show_all(self) -> None:
        """Clear the search and every filter (one reload), so new results show."""
        widgets = (self.search, self.model_filter, self.period, self.favourites, self.trash)
        for widget in widgets:
            widget.blockSignals(True)
        self.search.clear()
        self.model_filter.setCurrentIndex(0)
        self.period.setCurrentIndex(0)
        self.favourites.setChecked(False)
        self.trash.setChecked(False)
        for widget in widgets:
            widget.blockSignals(False)
        self.walk_filter = None
        self.apply_filters()

    def _update_count(self) -> None:
        total = self.model.total()
        self.count_label.setText(f"{total:,} image{'s' if total != 1 else ''}")

    # Thumbnails ----------------------------------------------------------------------------------

    def visible_rows(self) -> range:
        """Rows whose cell intersects the viewport (rows are laid out in order, top to bottom)."""
        rows, height = self.model.rowCount(), self.view.viewport().height()

        def cell(row: int):
            return self.view.visualRect(self.model.index(row))

        first = _first_true(rows, lambda row: cell(row).bottom() >= 0)
        last = _first_true(rows, lambda row: cell(row).top() > height)
        return range(first, last)

    def request_visible_thumbnails(self) -> None:
        wanted = []
        for row in self.visible_rows():
            entry = self.model.entry(row)
            if entry is not None and not self.model.has_thumbnail(entry.id):
                wanted.append((entry.id, entry.file))
        self.loader.want(wanted)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        super().resizeEvent(event)
        self._visible_timer.start()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt override)
        super().showEvent(event)
        self._visible_timer.start()

    # Selection and lineage -----------------------------------------------------------------------

    def current_entry(self) -> Entry | None:  # what the single-entry actions act on
        return self._current

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        entry = self.model.entry(current.row()) if current.isValid() else None
        self._show(entry)
        if entry is not None:
            self.entrySelected.emit(entry.id)

    def _show(self, entry: Entry | None) -> None:
        self._current = entry
        if entry is None:
            self.details.show_entry(None)
        else:
            parent = self.store.get(entry.parent_id) if entry.parent_id else None
            self.details.show_entry(entry, self.store.parameters_text(entry), parent, self.store.children(entry.id))
        self._update_actions()

    def select_entry(self, entry_id: str) -> None:
        """Select an entry in the grid (loading rows down to it), or just show it when filtered out."""
        rank = self.store.rank(entry_id, self.model.selection)
        if rank is not None:
            self.model.load_rows(rank + 1)
            row = self.model.row_of(entry_id)
            if row is not None:
                index = self.model.index(row)
                self.view.setCurrentIndex(index)
                self.view.scrollTo(index)
                return
        entry = self.store.get(entry_id)
        if entry is not None:
            self.view.selectionModel().clearCurrentIndex()
            self.view.clearSelection()
            self._show(entry)
            self.entrySelected.emit(entry.id)

    def go_to_parent(self) -> None:
        if self._current is not None and self._current.parent_id:
            self.select_entry(self._current.parent_id)

    def go_to_child(self) -> None:
        children = self.store.children(self._current.id) if self._current is not None else []
        if children:
            self.select_entry(children[0].id)

    # Actions ---------------------------------------------------------------------------------------

    def context_menu(self) -> QMenu:
        menu = QMenu(self)
        groups = (
            (self.act_rerun, self.act_rerun_new_seed, self.vary_menu.menuAction()),
            (self.act_load, self.act_init, self.act_inpaint),
            *self.extra_groups,
            (self.act_copy, self.act_favourite, self.act_folder),
            (self.act_parent, self.act_child),
            (self.act_restore, self.act_delete) if self.trash.isChecked() else (self.act_delete,),
        )
        for group in groups:
            menu.addActions(list(group))
            menu.addSeparator()
        return menu

    def _context_menu(self, pos: QPoint) -> None:
        index, selection = self.view.indexAt(pos), self.view.selectionModel()
        if index.isValid():  # a click on a selected entry keeps the selection (two entries: Interpolate)
            if selection.isSelected(index):
                selection.setCurrentIndex(index, QItemSelectionModel.SelectionFlag.NoUpdate)
            else:
                self.view.setCurrentIndex(index)
            self.context_menu().exec(self.view.viewport().mapToGlobal(pos))

    def _update_actions(self) -> None:
        entry = self._current
        has = entry is not None
        self.vary_menu.setEnabled(has)
        for action in (self.act_rerun, self.act_rerun_new_seed, self.act_load, self.act_init, self.act_inpaint,
                       self.act_copy, self.act_favourite, self.act_folder, self.act_delete):
            action.setEnabled(has)
        # A read-only history (unmounted outputs drive, unwritable data folder) is browsed, never changed.
        reason = self.store.read_only_reason
        in_trash = self.trash.isChecked()
        self.act_delete.setText("Delete for good…" if in_trash else "Move to trash")
        for action in (self.act_favourite, self.act_delete, self.act_restore):
            action.setEnabled(has and not reason)
            action.setToolTip(f"History is read-only: {reason}" if reason else action.text())
        self.act_restore.setVisible(in_trash)
        self.restore_button.setVisible(in_trash)
        self.empty_trash_button.setEnabled(not reason)
        self.act_favourite.blockSignals(True)
        self.act_favourite.setChecked(has and entry.favourite)
        self.act_favourite.blockSignals(False)
        self.act_parent.setEnabled(has and bool(entry.parent_id))
        self.act_child.setEnabled(has and bool(self.store.children(entry.id)))
        self.empty_trash_button.setVisible(self.trash.isChecked())
        self.trash_row.setVisible(self.trash.isChecked())

    def copy_parameters(self) -> None:
        if self._current is not None:
            QGuiApplication.clipboard().setText(self.store.parameters_text(self._current))

    def open_folder(self) -> None:
        if self._current is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._current.file.parent)))

    def _set_favourite(self, favourite: bool) -> None:
        if self._current is None:
            return
        self.store.set_favourite(self._current.id, favourite)
        entry = self.store.get(self._current.id)
        if entry is not None:
            self.model.update_entry(entry)
            self._show(entry)

    def delete_current(self) -> None:
        """Move the current entry to the trash; in the trash, delete it for good after asking (as file
        managers do)."""
        entry = self._current
        if entry is None:
            return
        if not entry.deleted:
            self._take_out(entry, self.store.delete)
            return
        answer = QMessageBox.question(self, "Delete for good",
                                      "Delete this image for good? This cannot be undone.")
        if answer == QMessageBox.StandardButton.Yes:
            self._take_out(entry, self.store.purge)

    def restore_current(self) -> None:
        """Bring the current trashed entry back."""
        if self._current is not None and self._current.deleted:
            self._take_out(self._current, self.store.restore)

    def _take_out(self, entry: Entry, change) -> None:
        """Apply `change(entry id)` and drop the entry from the grid, selecting the one that took its place."""
        row = self.view.currentIndex().row()
        change(entry.id)
        self.model.remove_entry(entry.id)
        self._update_count()
        following = self.model.index(min(row, self.model.rowCount() - 1)) if row >= 0 else QModelIndex()
        self.view.setCurrentIndex(following)
        if not following.isValid():
            self._show(None)

    def empty_trash(self) -> None:
        count = self.store.count(deleted=True)
        if count == 0:
            return
        answer = QMessageBox.question(
            self, "Empty trash", f"Delete {count:,} image{'s' if count != 1 else ''} for good? This cannot be undone."
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.store.empty_trash()
            self.apply_filters()


def _first_true(count: int, predicate) -> int:
    """Smallest i in [0, count) with predicate(i) (predicate monotone False..True), else count."""
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi) // 2
        if predicate(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo
