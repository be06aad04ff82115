"""The LoRA / embedding browser beside the prompt: search, previews, trigger words, families, one-click tags.

Files come from network_catalog (headers only, cached), scanned on a background thread so a first scan of a
big folder never blocks the window. A file made for another model family than the loaded one is greyed out
and cannot be inserted; an unreadable one says why in its tooltip. Clicking a file inserts `<lora:NAME:1>`
(an embedding: its name) into the prompt at the cursor, or finds the tag already there; a weight box on the
chosen row then rewrites that tag's weight in the prompt as it changes. The context menu inserts the trigger
words instead. Extra folders (an A1111 or ComfyUI install's) are added from the Folders menu.
"""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QIcon, QImageReader, QPalette, QPixmap, QTextCursor
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPlainTextEdit,
    QTabBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.families import FAMILIES
from sdstudio.errorlog import log_lines, user_message
from sdstudio.network_catalog import EMBEDDING, LORA, NetworkCatalog, NetworkEntry
from sdstudio.ui.network_tags import find_tag, insert_at, python_index, tag_text, utf16_position

ENTRY_ROLE = Qt.ItemDataRole.UserRole
ICON_SIZE = 48
_ICONS_PER_TICK = 16  # preview thumbnails decoded per event-loop turn, so a big folder never stalls input
_LABELS = {f.name: f.label for f in FAMILIES}
_KINDS = (LORA, EMBEDDING)


def family_label(family: str | None) -> str:
    return "family unknown" if family is None else _LABELS.get(family, family)


class NetworkBrowser(QWidget):
    foldersChanged = Signal(list, list)  # extra LoRA folders, extra embedding folders
    scanned = Signal()  # a scan finished and the list shows its result
    _scanDone = Signal(int, object)  # scan generation, entries or an error message (from the scan thread)

    def __init__(self, prompt_edit: QPlainTextEdit, catalog: NetworkCatalog | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.prompt_edit = prompt_edit
        self.catalog = catalog or NetworkCatalog()
        self.entries: list[NetworkEntry] = []
        self.lora_dirs: list[str] = []
        self.embedding_dirs: list[str] = []
        self.model_family: str | None = None
        self._generation = 0
        self._scanning = False
        self._rescan = False
        self._icon_queue: list[QListWidgetItem] = []
        self._weight_item: QListWidgetItem | None = None
        self.weight_spin: QDoubleSpinBox | None = None
        self._blank: QIcon | None = None
        self._icons: dict[str, QIcon] = {}  # preview path -> thumbnail, so typing in the search decodes nothing
        self._scanDone.connect(self._scan_finished, Qt.ConnectionType.QueuedConnection)
        self._build()

    def _build(self) -> None:
        self.search = QLineEdit(placeholderText="Search by name", clearButtonEnabled=True)
        self.search.textChanged.connect(self._refill)
        self.folders_button = QToolButton(text="Folders", toolTip="Add your A1111 / ComfyUI LoRA or embedding "
                                          "folders, or scan again")
        self.folders_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.folders_button.setMenu(QMenu(self.folders_button))
        self.folders_button.menu().aboutToShow.connect(self._fill_folder_menu)
        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(self.folders_button)
        self.tabs = QTabBar()
        self.tabs.addTab("LoRA")
        self.tabs.addTab("Embeddings")
        self.tabs.currentChanged.connect(self._refill)
        self.list = QListWidget()
        self.list.setIconSize(QSize(ICON_SIZE, ICON_SIZE))
        self.list.setUniformItemSizes(True)
        self.list.setWordWrap(False)
        self.list.itemClicked.connect(self._clicked)
        self.list.itemActivated.connect(self._clicked)  # Enter on the keyboard (a second click finds the tag)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._context_menu)
        self.status = QLabel(wordWrap=True)
        self.status.setProperty("role", "hint")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addWidget(self.tabs)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.status)
        self._icon_timer = QTimer(self, interval=0)
        self._icon_timer.timeout.connect(self._load_icons)

    # --- scanning ----------------------------------------------------------------------------------
    def set_folders(self, lora_dirs: list[str], embedding_dirs: list[str]) -> None:
        self.lora_dirs, self.embedding_dirs = list(lora_dirs), list(embedding_dirs)

    def rescan(self) -> None:
        """Scan the folders again on a background thread (at most one at a time; a request during a scan runs
        one more scan after it)."""
        if self._scanning:
            self._rescan = True
            return
        self._scanning, self._rescan = True, False
        self._generation += 1
        self.status.setText("Scanning…")
        args = (self._generation, list(self.lora_dirs), list(self.embedding_dirs))
        threading.Thread(target=self._scan_thread, args=args, name="network-scan", daemon=True).start()

    def _scan_thread(self, generation: int, lora_dirs: list[str], embedding_dirs: list[str]) -> None:
        try:
            result: object = self.catalog.scan(lora_dirs, embedding_dirs)
        except Exception as exc:  # the list says what went wrong (traceback in the log); the window stays usable
            result = "Could not scan the folders: " + user_message(exc, "scanning the LoRA / embedding folders")
        if self.catalog.cache_problem:  # a damaged or unwritable cache file costs time, not entries: log it
            log_lines([self.catalog.cache_problem], "LoRA / embedding catalog cache")
            self.catalog.cache_problem = ""
        try:
            self._scanDone.emit(generation, result)
        except RuntimeError:
            pass  # the browser was closed during the scan

    def _scan_finished(self, generation: int, result: object) -> None:
        self._scanning = False
        if isinstance(result, str):
            self.status.setText(result)
        elif generation == self._generation:
            self.entries = list(result)
            self._icons.clear()  # a preview may have changed on disk
            self._refill()
        if self._rescan:
            self.rescan()
        else:
            self.scanned.emit()

    # --- the list ----------------------------------------------------------------------------------
    def set_model_family(self, family: str | None) -> None:
        """Grey out what was made for another family than the loaded model's (None: nothing greyed)."""
        if family != self.model_family:
            self.model_family = family
            self._refill()

    @property
    def kind(self) -> str:
        return _KINDS[max(self.tabs.currentIndex(), 0)]

    def _refill(self) -> None:
        self._drop_weight_box()
        self.list.clear()
        self._icon_queue = []
        text = self.search.text()
        shown = [e for e in self.entries if e.kind == self.kind and e.matches(text)]
        for entry in shown:
            self.list.addItem(self._item(entry))
        if self._icon_queue:
            self._icon_timer.start()
        of_kind = [e for e in self.entries if e.kind == self.kind]
        unreadable = sum(bool(e.problem) for e in of_kind)
        other = sum(not e.compatible(self.model_family) for e in of_kind)
        parts = [f"{len(shown)} of {len(of_kind)} shown" if text else f"{len(of_kind)} files"]
        if other:
            parts.append(f"{other} for another model (greyed)")
        if unreadable:
            parts.append(f"{unreadable} unreadable")
        if not of_kind:
            parts = [f"No files. Put them in {self._own_folder()} or add a folder under Folders."]
        self.status.setText(" · ".join(parts))

    def _own_folder(self) -> Path:
        from sdstudio.engine import network_files

        return (network_files.lora_dirs() if self.kind == LORA else network_files.embedding_dirs())[0]

    def _item(self, entry: NetworkEntry) -> QListWidgetItem:
        second = entry.alias or ""
        if entry.triggers:
            second = (second + " · " if second else "") + ", ".join(entry.triggers[:4])
        item = QListWidgetItem(entry.name + (f"\n{second}" if second else ""))
        item.setData(ENTRY_ROLE, entry)
        tip = [entry.path, family_label(entry.family)]
        if entry.vectors:
            tip.append(f"{entry.vectors} token slot{'s' if entry.vectors != 1 else ''}")
        if entry.triggers:
            tip.append("Trigger words: " + ", ".join(entry.triggers))
        usable = not entry.problem and entry.compatible(self.model_family)
        if entry.problem:
            tip.append(f"Unreadable: {entry.problem}")
        elif not usable:
            tip.append(f"Made for {family_label(entry.family)}; the loaded model is "
                       f"{family_label(self.model_family)}.")
        item.setToolTip("\n".join(tip))
        if not usable:
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
            item.setForeground(QBrush(self.palette().color(QPalette.ColorGroup.Disabled,
                                                           QPalette.ColorRole.Text)))
        # Every row as tall as a thumbnail and two text lines, with a blank icon until (or unless) a preview
        # loads, so names line up and the weight box fits.
        item.setIcon(self._icons.get(entry.preview) or self._blank_icon())
        item.setSizeHint(QSize(0, max(ICON_SIZE, 2 * self.list.fontMetrics().lineSpacing()) + 6))
        if entry.preview and entry.preview not in self._icons:
            self._icon_queue.append(item)
        return item

    def _blank_icon(self) -> QIcon:
        if self._blank is None:
            pixmap = QPixmap(ICON_SIZE, ICON_SIZE)
            pixmap.fill(Qt.GlobalColor.transparent)
            self._blank = QIcon(pixmap)
        return self._blank

    def _load_icons(self) -> None:
        for _ in range(min(_ICONS_PER_TICK, len(self._icon_queue))):
            item = self._icon_queue.pop(0)
            reader = QImageReader(item.data(ENTRY_ROLE).preview)
            size = reader.size()
            if size.isValid():
                reader.setScaledSize(size.scaled(ICON_SIZE * 2, ICON_SIZE * 2, Qt.AspectRatioMode.KeepAspectRatio))
            image = reader.read()
            path = item.data(ENTRY_ROLE).preview
            # An unreadable preview keeps the blank icon, once: it is not decoded again at the next refill.
            self._icons[path] = self._blank_icon() if image.isNull() else QIcon(QPixmap.fromImage(image))
            item.setIcon(self._icons[path])
        if not self._icon_queue:
            self._icon_timer.stop()

    def entry_items(self) -> list[QListWidgetItem]:
        return [self.list.item(i) for i in range(self.list.count())]

    # --- the prompt --------------------------------------------------------------------------------
    def _clicked(self, item: QListWidgetItem) -> None:
        if not item.flags() & Qt.ItemFlag.ItemIsEnabled:
            return
        entry: NetworkEntry = item.data(ENTRY_ROLE)
        span = find_tag(self.prompt_edit.toPlainText(), entry)
        if span is None:
            self.insert_text(tag_text(entry))
            weight = 1.0
        else:
            weight = span.weight
        self._show_weight_box(item, weight)

    def insert_text(self, text: str) -> None:
        """Insert at the prompt's cursor (one undo step), spaced from the words around it."""
        edit = self.prompt_edit
        plain = edit.toPlainText()
        cursor = edit.textCursor()
        at = python_index(plain, cursor.position())
        new, end = insert_at(plain, at, text)
        inserted = new[at:at + len(new) - len(plain)]
        cursor.clearSelection()
        cursor.setPosition(utf16_position(plain, at))
        cursor.insertText(inserted)
        cursor.setPosition(utf16_position(new, end))
        edit.setTextCursor(cursor)

    def _show_weight_box(self, item: QListWidgetItem, weight: float) -> None:
        self._drop_weight_box()
        spin = QDoubleSpinBox(minimum=-5.0, maximum=5.0, singleStep=0.05, decimals=2, value=weight)
        spin.setToolTip("Weight of this file's tag in the prompt")
        spin.valueChanged.connect(self._weight_changed)
        holder = QWidget()
        row = QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 4, 0)
        row.addStretch(1)
        row.addWidget(spin)
        self.list.setItemWidget(item, holder)
        self._weight_item, self.weight_spin = item, spin

    def _drop_weight_box(self) -> None:
        if self._weight_item is not None:
            self.list.removeItemWidget(self._weight_item)
        self._weight_item, self.weight_spin = None, None

    def _weight_changed(self, weight: float) -> None:
        """Rewrite the chosen file's tag with the new weight (one undo step); nothing when it left the prompt."""
        entry: NetworkEntry = self._weight_item.data(ENTRY_ROLE)
        plain = self.prompt_edit.toPlainText()
        span = find_tag(plain, entry)
        if span is None:
            return
        cursor = self.prompt_edit.textCursor()
        cursor.setPosition(utf16_position(plain, span.start))
        cursor.setPosition(utf16_position(plain, span.end), QTextCursor.MoveMode.KeepAnchor)
        cursor.insertText(tag_text(entry, weight))

    def _context_menu(self, point) -> None:
        item = self.list.itemAt(point)
        if item is None or not item.flags() & Qt.ItemFlag.ItemIsEnabled:
            return
        entry: NetworkEntry = item.data(ENTRY_ROLE)
        menu = QMenu(self)
        menu.addAction("Insert tag", lambda: self._clicked(item))
        words = menu.addAction("Insert trigger words", lambda: self.insert_text(", ".join(entry.triggers[:8])))
        words.setEnabled(bool(entry.triggers))
        menu.exec(self.list.viewport().mapToGlobal(point))

    # --- folders -----------------------------------------------------------------------------------
    def _fill_folder_menu(self) -> None:
        menu = self.folders_button.menu()
        menu.clear()
        menu.addAction("Add LoRA folder…", lambda: self._add_folder(LORA))
        menu.addAction("Add embeddings folder…", lambda: self._add_folder(EMBEDDING))
        menu.addAction("Scan again", self.rescan)
        extra = [(LORA, f) for f in self.lora_dirs] + [(EMBEDDING, f) for f in self.embedding_dirs]
        if extra:
            menu.addSeparator()
        for kind, folder in extra:
            label = "LoRA" if kind == LORA else "embeddings"
            menu.addAction(f"Remove {label} folder {folder}", lambda k=kind, f=folder: self.remove_folder(k, f))

    def _add_folder(self, kind: str) -> None:
        what = "LoRA" if kind == LORA else "embeddings"
        folder = QFileDialog.getExistingDirectory(self, f"Add a {what} folder", str(Path.home()))
        if folder:
            self.add_folder(kind, folder)

    def add_folder(self, kind: str, folder: str) -> None:
        folders = self.lora_dirs if kind == LORA else self.embedding_dirs
        if folder not in folders:
            folders.append(folder)
            self.foldersChanged.emit(list(self.lora_dirs), list(self.embedding_dirs))
            self.rescan()

    def remove_folder(self, kind: str, folder: str) -> None:
        folders = self.lora_dirs if kind == LORA else self.embedding_dirs
        if folder in folders:
            folders.remove(folder)
            self.foldersChanged.emit(list(self.lora_dirs), list(self.embedding_dirs))
            self.rescan()
