""""Interpolate" in the gallery (its actions are ours, added to the context menu as a group): select two
entries (Ctrl/Shift-click) and choose "Interpolate between the two selected…", or mark one entry as the
walk's start ("Set as walk start") and on another choose "Interpolate to here…"; then a frame count and what
moves. The frames (engine/walk.py) are queued as ordinary jobs and saved to the history like any result, each
with the start entry as its parent ("Go to parent" leads back to it) and one walk id, so the gallery shows
them as one tile (gallery_walks.py). When the last frame is done, or when a walk's entry is selected, the walk
plays on the canvas (canvas_walk.WalkBar: frame slider, play/pause, export).
"""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QSpinBox, QWidget

from sdstudio.engine.errors import SDStudioError
from sdstudio.engine.walk import MAX_FRAMES, MIN_FRAMES, WHATS, WalkRequest, frame_requests
from sdstudio.history.record import new_entry_id
from sdstudio.ui.gallery_walks import WalkGroups, selected_entries
from sdstudio.ui.imageconv import load_image

WHAT_LABELS = {"both": "Seed and prompt", "noise": "Seed only (noise)", "prompt": "Prompt only"}


class WalkDialog(QDialog):
    """Frame count and what moves."""

    def __init__(self, parent: QWidget | None = None, frames: int = 8) -> None:
        super().__init__(parent)
        self.setWindowTitle("Interpolate")
        self.frames = QSpinBox(minimum=MIN_FRAMES, maximum=MAX_FRAMES, value=frames)
        self.what = QComboBox()
        for what in WHATS[::-1]:  # "both" first: the default
            self.what.addItem(WHAT_LABELS[what], what)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Frames", self.frames)
        form.addRow("Move", self.what)
        form.addRow(buttons)


class WalkLink(QObject):
    """Connects the gallery's walk actions to the window's queue, and walks to the canvas."""

    def __init__(self, store, window, gallery) -> None:
        super().__init__(window)
        self.store, self.window, self.gallery = store, window, gallery
        self.groups = WalkGroups(gallery)
        self.start_id = ""
        self.jobs: list[int] = []  # the running walk's job ids, in frame order
        self.outputs: dict[int, object] = {}
        self._loaded: tuple[tuple, tuple[list, list]] | None = None  # (frame ids and files, (images, requests))
        self.act_between = QAction("Interpolate between the two selected…", gallery)
        self.act_between.setToolTip("Frames from the older of the two selected images to the newer (select two "
                                    "with Ctrl-click)")
        self.act_start = QAction("Set as walk start", gallery)
        self.act_start.setToolTip("The first image of an interpolation (then: Interpolate to here)")
        self.act_to = QAction("Interpolate to here…", gallery)
        self.act_to.setToolTip("Frames between the walk start and this image, played when done")
        self.act_between.triggered.connect(self.ask_walk_between)
        self.act_start.triggered.connect(lambda: self._on_current(self.set_start))
        self.act_to.triggered.connect(lambda: self._on_current(self.ask_walk_to))
        gallery.extra_groups.append((self.act_between, self.act_start, self.act_to, self.groups.act_open))
        selection = gallery.view.selectionModel()
        selection.currentChanged.connect(self.update_actions)
        selection.selectionChanged.connect(self.update_actions)
        gallery.model.modelReset.connect(self.update_actions)
        gallery.entrySelected.connect(self.show_entry_walk)
        self.update_actions()
        window.worker.jobFinished.connect(self._finished)
        window.worker.jobFailed.connect(self._abandoned)
        window.worker.jobCancelled.connect(self._abandoned)

    def _on_current(self, slot) -> None:
        entry = self.gallery.current_entry()
        if entry is not None:
            slot(entry.id)

    def update_actions(self, *_changed) -> None:
        entry = self.gallery.current_entry()
        self.act_between.setEnabled(len(selected_entries(self.gallery)) == 2)
        self.act_start.setEnabled(entry is not None)
        self.act_to.setEnabled(entry is not None and bool(self.start_id) and entry.id != self.start_id)

    def set_start(self, entry_id: str) -> None:
        self.start_id = entry_id
        self.update_actions()

    def ends_of_selection(self) -> tuple[str, str] | None:
        """(start, end) ids of the two selected entries, the older first; None unless exactly two."""
        chosen = selected_entries(self.gallery)
        if len(chosen) != 2:
            return None
        older, newer = sorted(chosen, key=lambda e: e.created)
        return older.id, newer.id

    def ask_walk_between(self) -> None:
        ends = self.ends_of_selection()
        dialog = WalkDialog(self.window)
        if ends is not None and dialog.exec() == QDialog.DialogCode.Accepted:
            self.walk(*ends, dialog.frames.value(), dialog.what.currentData())

    def ask_walk_to(self, entry_id: str) -> None:
        dialog = WalkDialog(self.window)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.walk_to(entry_id, dialog.frames.value(), dialog.what.currentData())

    def walk_to(self, entry_id: str, frames: int, what: str) -> list[int]:
        """Queue the walk from the start entry to `entry_id` (the two-step menu)."""
        return self.walk(self.start_id, entry_id, frames, what)

    def walk(self, start_id: str, end_id: str, frames: int, what: str) -> list[int]:
        """Queue the walk from `start_id` to `end_id`; its job ids (none after telling the user why)."""
        try:
            if self.jobs:
                raise SDStudioError("a walk is still running: wait for it, or cancel it, first")
            start, end = (self._request(i) for i in (start_id, end_id))
            requests = frame_requests(WalkRequest(start, end, frames, what))
        except SDStudioError as exc:
            self.window.canvas_panel.banner.show_error(f"Cannot interpolate: {exc}")
            return []
        self.outputs = {}
        walk_id = new_entry_id()
        self.jobs = [self.window.submit_request(r.replace(parent_id=start_id, walk_id=walk_id)) for r in requests]
        return list(self.jobs)

    def _request(self, entry_id: str):
        entry = self.store.get(entry_id) if entry_id else None
        if entry is None:
            raise SDStudioError("choose a start first (Set as walk start), then interpolate to another image")
        try:
            found = self.store.read(entry)
        except (OSError, SyntaxError, ValueError) as exc:
            raise SDStudioError(f"{entry.file.name}: {exc}") from None
        request = found.rerun_request()
        if request.init_image is not None:
            raise SDStudioError(f"{entry.file.name} was made by {request.mode}; walks run txt2img")
        return request

    def _finished(self, out) -> None:
        if out.job_id not in self.jobs:
            return
        self.outputs[out.job_id] = out.result
        if len(self.outputs) == len(self.jobs):
            results = [self.outputs[j] for j in self.jobs]
            self.jobs, self.outputs = [], {}
            self.window.canvas_panel.show_walk([r.images[0] for r in results], [r.requests[0] for r in results],
                                               results[0].model_name)

    def _abandoned(self, job_id: int, *_message) -> None:
        if job_id in self.jobs:
            self.jobs, self.outputs = [], {}
            self.window.canvas_panel.banner.show_error(
                "A walk frame failed or was cancelled, so the walk will not play; its finished frames are in "
                "the history")

    # --- a saved walk on the canvas ----------------------------------------------------------------
    def show_entry_walk(self, entry_id: str) -> None:
        """When the selected entry is a walk's frame, play the walk on the canvas: from its start on the walk's
        tile, paused at that frame when the walk's frames are shown one by one."""
        entry = self.store.get(entry_id)
        frames = self.store.walk_frames(entry.walk_id) if entry is not None else []
        if len(frames) < 2:
            return
        loaded = self._load(frames)
        if loaded is None:
            return
        images, requests = loaded
        opened = self.gallery.walk_filter is not None
        at = next(k for k, f in enumerate(frames) if f.id == entry_id) if opened else 0
        self.window.canvas_panel.show_walk(images, requests, entry.model_name, at, play=not opened)

    def _load(self, frames) -> tuple[list, list] | None:
        """The frames' images and requests (the last walk's kept: clicking through its frames reads nothing);
        None after telling the user why not."""
        key = tuple((f.id, f.file) for f in frames)
        if self._loaded is not None and self._loaded[0] == key:
            return self._loaded[1]
        try:
            images = [load_image(str(f.file)) for f in frames]
            requests = [self.store.read(f).request for f in frames]
        except (OSError, SyntaxError, ValueError) as exc:
            self.window.canvas_panel.banner.show_error(f"Cannot play that walk: {exc}")
            return None
        if any(r is None for r in requests):
            self.window.canvas_panel.banner.show_error("Cannot play that walk: a frame lost its parameters")
            return None
        self._loaded = (key, (images, requests))
        return images, requests
