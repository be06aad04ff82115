""""Upscale…" in the gallery's context menu: the chosen image upscaled by Lanczos, Nearest or a model file
(models/ESRGAN, ...) by a factor, optionally followed by A1111's "SD upscale" (a low-strength img2img in
tiles with the entry's prompt, seed and model, engine/upscale_job.sd_refine), saved as a child entry of it
(so "Go to parent" leads back), with A1111's "Postprocess upscaler" / "Postprocess upscale by" and our
"SD upscale strength" / "SD upscale overlap" / "SD upscale tile" in its text.

The plain upscale runs on one background thread of its own (a model upscale of a large image takes seconds to
minutes); with the SD pass the whole job runs on the engine's worker (ui/worker.py's `submit_call`), queued
after the generations before it, its steps and tiles in the status bar. The result comes back through a queued
signal and is saved by the history store.
"""

from __future__ import annotations

import dataclasses
import threading

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QWidget

from sdstudio.engine.errors import SDStudioError
from sdstudio.engine.upscale_job import MAX_SCALE, UpscaleSettings, sd_refine, upscale
from sdstudio.errorlog import user_message


def upscaler_choices() -> list[str]:
    """Pixel upscalers by name: Lanczos, Nearest, then the model files found now (latent ones are hires-only)."""
    from sdstudio.engine.upscale import is_latent, upscaler_names
    from sdstudio.engine.upscaler_models import register_model_upscalers

    register_model_upscalers()
    return [n for n in upscaler_names() if not is_latent(n)]


class UpscaleDialog(QDialog):
    def __init__(self, choices: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Upscale")
        self.upscaler = QComboBox()
        self.upscaler.addItems(choices)
        self.scale = QDoubleSpinBox(minimum=1.0, maximum=MAX_SCALE, value=2.0, singleStep=0.5, decimals=2)
        self.sd_strength = QDoubleSpinBox(minimum=0.0, maximum=1.0, value=0.0, singleStep=0.05, decimals=2,
                                          toolTip="SD upscale: redraw the upscaled image in tiles with "
                                          "the image's prompt and model at this denoising strength (0: off; "
                                          "A1111 uses 0.2–0.4)")
        self.sd_strength.setSpecialValueText("off")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Upscaler", self.upscaler)
        form.addRow("Scale by", self.scale)
        form.addRow("SD upscale strength", self.sd_strength)
        form.addRow(buttons)

    def settings(self) -> UpscaleSettings:
        return UpscaleSettings(self.upscaler.currentText(), self.scale.value(), self.sd_strength.value())


class UpscaleLink(QObject):
    """The gallery's Upscale action, its background run and the save as a child entry."""

    done = Signal(str, object, object, object)  # parent entry id, PIL image, settings, SD upscale tile / None
    failed = Signal(str)
    saved = Signal(object)  # the new entry

    def __init__(self, store, window, gallery) -> None:
        super().__init__(window)
        self.store, self.window, self.gallery = store, window, gallery
        self.thread: threading.Thread | None = None
        # The SD upscale on the worker: (job id, parent entry id, settings).
        self.job: tuple[int, str, UpscaleSettings] | None = None
        self.action = QAction("Upscale…", gallery)
        self.action.setToolTip("A bigger copy (Lanczos or an ESRGAN model from models/ESRGAN), optionally "
                               "redrawn in tiles by the model (SD upscale), saved under this one")
        self.action.triggered.connect(self.ask)
        gallery.extra_groups.append((self.action,))
        self.done.connect(self._save)
        self.failed.connect(lambda message: window.canvas_panel.banner.show_error(f"Cannot upscale: {message}"))
        worker = window.worker
        worker.jobStarted.connect(lambda job: self._mine(job) and window.job_status.started())
        worker.stepProgress.connect(
            lambda job, done, total: self._mine(job) and window.job_status.step(done, total))
        worker.jobNote.connect(lambda job, text: self._mine(job) and window.job_status.note(text))
        worker.callFinished.connect(self._finished)
        worker.callFailed.connect(self._ended)
        worker.jobCancelled.connect(lambda job: self._ended(job, "cancelled"))

    def _mine(self, job: int) -> bool:
        return self.job is not None and self.job[0] == job

    def ask(self) -> None:
        entry = self.gallery.current_entry()
        if entry is None:
            return
        dialog = UpscaleDialog(upscaler_choices(), self.window)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.upscale(entry.id, dialog.settings())

    def upscale(self, entry_id: str, settings: UpscaleSettings) -> threading.Thread | int | None:
        """Start upscaling the entry's image in the background: a thread, or with the SD upscale pass the
        worker's job id; None (and the banner says why) when busy or it cannot start."""
        if (self.thread is not None and self.thread.is_alive()) or self.job is not None:
            self.failed.emit("an upscale is still running")
            return None
        entry = self.store.get(entry_id)
        if entry is None:
            self.failed.emit("that history entry no longer exists")
            return None
        if settings.sd_strength > 0:
            return self._submit_sd_upscale(entry, settings)
        self.thread = threading.Thread(target=self._run, args=(entry, settings), daemon=True, name="upscale")
        self.thread.start()
        return self.thread

    def _run(self, entry, settings: UpscaleSettings) -> None:
        try:
            from PIL import Image

            with Image.open(entry.file) as im:
                image = im.convert("RGB")
            self.done.emit(entry.id, upscale(image, settings), settings, None)
        except Exception as exc:  # the thread must not die silently: the banner says it, the log keeps the rest
            self.failed.emit(user_message(exc, f"upscaling {entry.file}"))

    def _submit_sd_upscale(self, entry, settings: UpscaleSettings) -> int | None:
        """Queue the upscale and its SD pass on the worker, with the entry's request (its model found
        here)."""
        try:
            request = self.store.request_for(entry).replace(init_image=None, mask=None)
        except Exception as exc:
            self.failed.emit(user_message(exc, f"reading {entry.file}"))
            return None
        file = entry.file

        def call(engine, on_step, should_cancel, note):  # on the worker thread
            from PIL import Image

            with Image.open(file) as im:
                image = im.convert("RGB")
            note(f"Upscaling with {settings.upscaler}…")
            big = upscale(image, settings)
            tile = [0, 1]  # the tile running and the count: steps are counted over all tiles

            def on_tile(index: int, count: int) -> None:
                tile[:] = [index, count]
                note(f"SD upscale: tile {index + 1} of {count}")

            def tile_step(info):
                on_step(info if info.message else dataclasses.replace(
                    info, step=tile[0] * info.total + info.step, total=tile[1] * info.total))

            return sd_refine(big, request, settings, engine, tile_step, on_tile, should_cancel)

        job = self.window.worker.submit_call(request.model, call)
        self.job = (job, entry.id, settings)
        return job

    def _finished(self, job: int, result) -> None:
        if not self._mine(job):
            return
        _, parent_id, settings = self.job
        self.job = None
        self.window.job_status.idle("Upscaled")
        image, tile = result
        self._save(parent_id, image, settings, tile)

    def _ended(self, job: int, message: str) -> None:
        if not self._mine(job):
            return
        self.job = None
        self.window.job_status.idle("Upscale failed" if message != "cancelled" else "Cancelled")
        self.failed.emit(message)

    def _save(self, parent_id: str, image, settings: UpscaleSettings, tile=None) -> None:
        try:
            entry = self.store.get(parent_id)
            found = self.store.read(entry)
            if found.request is None:
                raise SDStudioError(f"{entry.file.name}: its parameters cannot be read ({found.problem})")
            request = found.request.replace(parent_id=parent_id)
            child = self.store.add(image, request, found.model_name, extra=settings.infotext(tile))
        except Exception as exc:
            self.failed.emit(user_message(exc, "saving the upscaled image"))
            return
        self.gallery.add_entry(child)
        self.saved.emit(child)
