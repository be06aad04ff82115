""""Interpolate" in the gallery's context menu (its actions are ours, added as a group): mark one entry as the walk's start ("Set as walk start"), then on another
choose "Interpolate to here…", a frame count and what moves; the frames (engine/walk.py) are queued as
ordinary jobs, saved to the history like any result (each with the start entry as its parent, so "Go to
parent" leads back to it), and when the last one is done a WalkPlayer opens with them.
"""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QSpinBox, QWidget

from sdstudio.engine.errors import SDStudioError
from sdstudio.engine.walk import MAX_FRAMES, MIN_FRAMES, WHATS, WalkRequest, frame_requests
from sdstudio.ui.walk_player import WalkPlayer

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
    """Connects the gallery's walk actions to the window's queue and opens the player when a walk is done."""

    def __init__(self, store, window, gallery) -> None:
        super().__init__(window)
        self.store, self.window, self.gallery = store, window, gallery
        self.start_id = ""
        self.jobs: list[int] = []  # the running walk's job ids, in frame order
        self.outputs: dict[int, object] = {}
        self.player: WalkPlayer | None = None
        self.act_start = QAction("Set as walk start", gallery)
        self.act_start.setToolTip("The first image of an interpolation (then: Interpolate to here)")
        self.act_to = QAction("Interpolate to here…", gallery)
        self.act_to.setToolTip("Frames between the walk start and this image, played when done")
        self.act_start.triggered.connect(lambda: self._on_current(self.set_start))
        self.act_to.triggered.connect(lambda: self._on_current(self.ask_walk_to))
        gallery.extra_groups.append((self.act_start, self.act_to))
        gallery.view.selectionModel().currentChanged.connect(self.update_actions)
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
        self.act_start.setEnabled(entry is not None)
        self.act_to.setEnabled(entry is not None and bool(self.start_id) and entry.id != self.start_id)

    def set_start(self, entry_id: str) -> None:
        self.start_id = entry_id
        self.update_actions()

    def ask_walk_to(self, entry_id: str) -> None:
        dialog = WalkDialog(self.window)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.walk_to(entry_id, dialog.frames.value(), dialog.what.currentData())

    def walk_to(self, entry_id: str, frames: int, what: str) -> list[int]:
        """Queue the walk from the start entry to `entry_id`; its job ids (none after telling the user why)."""
        try:
            if self.jobs:
                raise SDStudioError("a walk is still running: wait for it, or cancel it, first")
            start, end = (self._request(i) for i in (self.start_id, entry_id))
            requests = frame_requests(WalkRequest(start, end, frames, what))
        except SDStudioError as exc:
            self.window.canvas_panel.banner.show_error(f"Cannot interpolate: {exc}")
            return []
        self.outputs = {}
        self.jobs = [self.window.submit_request(r.replace(parent_id=self.start_id)) for r in requests]
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
            self.player = WalkPlayer([r.images[0] for r in results], [r.requests[0] for r in results],
                                     results[0].model_name, self.window)
            self.player.show()

    def _abandoned(self, job_id: int, *_message) -> None:
        if job_id in self.jobs:
            self.jobs, self.outputs = [], {}
            self.window.canvas_panel.banner.show_error(
                "A walk frame failed or was cancelled, so the walk will not play; its finished frames are in "
                "the history")
