""""Upscale…" in the gallery's context menu: the chosen image upscaled by Lanczos, Nearest or a model file
(models/ESRGAN, ...) by a factor, saved as a child entry of it (so "Go to parent" leads back), with A1111's
"Postprocess upscaler" / "Postprocess upscale by" in its text. The SD upscale pass is the command line's
(`python -m sdstudio upscale --sd-strength`).

The upscale runs on one background thread of its own (a model upscale of a large image takes seconds to
minutes); the result comes back through a queued signal and is saved by the history store.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QWidget

from sdstudio.engine.errors import SDStudioError
from sdstudio.engine.upscale_job import MAX_SCALE, UpscaleSettings, upscale
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
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Upscaler", self.upscaler)
        form.addRow("Scale by", self.scale)
        form.addRow(buttons)

    def settings(self) -> UpscaleSettings:
        return UpscaleSettings(self.upscaler.currentText(), self.scale.value())


class UpscaleLink(QObject):
    """The gallery's Upscale action, its background run and the save as a child entry."""

    done = Signal(str, object, object)  # parent entry id, PIL image, settings
    failed = Signal(str)
    saved = Signal(object)  # the new entry

    def __init__(self, store, window, gallery) -> None:
        super().__init__(window)
        self.store, self.window, self.gallery = store, window, gallery
        self.thread: threading.Thread | None = None
        self.action = QAction("Upscale…", gallery)
        self.action.setToolTip("A bigger copy (Lanczos or an ESRGAN model from models/ESRGAN), saved under this one")
        self.action.triggered.connect(self.ask)
        gallery.extra_groups.append((self.action,))
        self.done.connect(self._save)
        self.failed.connect(lambda message: window.canvas_panel.banner.show_error(f"Cannot upscale: {message}"))

    def ask(self) -> None:
        entry = self.gallery.current_entry()
        if entry is None:
            return
        dialog = UpscaleDialog(upscaler_choices(), self.window)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.upscale(entry.id, dialog.settings())

    def upscale(self, entry_id: str, settings: UpscaleSettings) -> threading.Thread | None:
        """Start upscaling the entry's image in the background; None (and the banner says why) when busy."""
        if self.thread is not None and self.thread.is_alive():
            self.failed.emit("an upscale is still running")
            return None
        entry = self.store.get(entry_id)
        if entry is None:
            self.failed.emit("that history entry no longer exists")
            return None
        self.thread = threading.Thread(target=self._run, args=(entry, settings), daemon=True, name="upscale")
        self.thread.start()
        return self.thread

    def _run(self, entry, settings: UpscaleSettings) -> None:
        try:
            from PIL import Image

            with Image.open(entry.file) as im:
                image = im.convert("RGB")
            self.done.emit(entry.id, upscale(image, settings), settings)
        except Exception as exc:  # the thread must not die silently: the banner says it, the log keeps the rest
            self.failed.emit(user_message(exc, f"upscaling {entry.file}"))

    def _save(self, parent_id: str, image, settings: UpscaleSettings) -> None:
        try:
            entry = self.store.get(parent_id)
            found = self.store.read(entry)
            if found.request is None:
                raise SDStudioError(f"{entry.file.name}: its parameters cannot be read ({found.problem})")
            request = found.request.replace(parent_id=parent_id)
            child = self.store.add(image, request, found.model_name, extra=settings.infotext())
        except Exception as exc:
            self.failed.emit(user_message(exc, "saving the upscaled image"))
            return
        self.gallery.add_entry(child)
        self.saved.emit(child)
