"""Connects the window to the history store and its gallery: results are saved off the GUI thread.

Saving a PNG takes tens of milliseconds per megapixel, so it runs on one background thread (the store is
thread-safe); the gallery hears about new entries through a queued signal.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from PIL import Image
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QWidget

from sdstudio.engine.errors import SDStudioError
from sdstudio.engine.geometry import fit
from sdstudio.engine.request import GenerationResult
from sdstudio.ui.gallery import VARY_COUNT
from sdstudio.ui.imageconv import load_image, pil_to_qimage
from sdstudio.ui.main_window import MainWindow
from sdstudio.ui.open_file import offer_nearest
from sdstudio.ui.prompt_state import MAX_SEED
from sdstudio.ui.save_image import ImageSource


class HistoryLink(QObject):
    saved = Signal(list)  # the new history entries, newest last
    stored = Signal(object, list)  # a result and its entries, for the window's lineage and Save As
    failed = Signal(str)

    def __init__(self, store, window: MainWindow, gallery: QWidget | None = None):
        super().__init__(window)
        self.store, self.window, self.gallery = store, window, gallery
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-writer")
        window.resultReady.connect(self.save)
        self.stored.connect(window.note_saved)
        self.failed.connect(lambda msg: window.canvas_panel.banner.show_error(msg))
        if gallery is not None:
            self.saved.connect(self._show_in_gallery)
            gallery.entrySelected.connect(self._show_entry)
            gallery.rerunRequested.connect(self._rerun)
            gallery.varyRequested.connect(self._vary)
            gallery.loadParametersRequested.connect(self._load_parameters)
            gallery.useAsInitRequested.connect(self._use_as_input)
            gallery.useForInpaintRequested.connect(self._use_for_inpaint)

    def save(self, result: GenerationResult) -> None:
        self._pool.submit(self._save, result)

    def flush(self) -> None:
        """Wait for every pending save (at exit: a finished image is never lost)."""
        self._pool.shutdown(wait=True)

    def _save(self, result: GenerationResult) -> None:
        try:
            entries = self.store.add_result(result)
            self.stored.emit(result, entries)
            self.saved.emit(entries)
        except Exception as exc:  # a full disk must not take the app down; the user is told
            self.failed.emit(f"Could not save the image to history: {exc}")

    def _show_in_gallery(self, entries: list) -> None:
        for entry in entries:
            self.gallery.add_entry(entry)

    def _entry(self, entry_id: str):
        entry = self.store.get(entry_id)
        if entry is None:
            self.failed.emit("That history entry no longer exists")
        return entry

    def _read(self, entry_id: str):
        """What the entry's file holds (history.file_parameters), or None after telling the user why not."""
        entry = self._entry(entry_id)
        if entry is None:
            return None
        try:
            return self.store.read(entry)
        except (OSError, SyntaxError, ValueError) as exc:
            self.failed.emit(f"Cannot read the parameters of that entry: {exc}")
            return None

    def _load_parameters(self, entry_id: str) -> None:
        found = self._read(entry_id)
        if found is None:
            return
        if found.request is None:
            self.failed.emit(f"Cannot read the parameters of that entry: {found.problem}")
            return
        self.window.load_parameters(found.request, found.model_problem)
        if found.problem:
            offer_nearest(self.window, found, f"{found.path.name}: {found.problem}")

    def _rerun(self, entry_id: str, new_seed: bool) -> None:
        found = self._read(entry_id)
        if found is None:
            return
        try:
            request = found.rerun_request()
        except SDStudioError as exc:  # a sampler we lack: offer our nearest, with this entry as the parent
            offer_nearest(self.window, found, f"Cannot re-run that entry: {exc}", rerun_parent=entry_id)
            return
        if new_seed:  # a variation of this entry: it is the parent (an exact re-run is the same image again)
            request = request.replace(seed=random.randrange(MAX_SEED + 1), parent_id=entry_id)
        self.window.submit_request(request)

    def _vary(self, entry_id: str, strength: float) -> None:
        """Queue VARY_COUNT variations of the entry (its seed, random variation seeds), each its child."""
        found = self._read(entry_id)
        if found is None:
            return
        try:
            request = found.rerun_request()
        except SDStudioError as exc:
            self.failed.emit(f"Cannot vary that entry: {exc}")
            return
        if request.subseed_strength != 0:
            # A1111's variation seeds do not nest: one seed, one variation seed per image.
            self.failed.emit(f"That image is already a variation (of seed {request.seed}); variation seeds do not "
                             "nest: vary its seed's image, or use this one as the init image")
            return
        for _ in range(VARY_COUNT):
            self.window.submit_request(request.replace(subseed=random.randrange(MAX_SEED + 1),
                                                       subseed_strength=strength, parent_id=entry_id,
                                                       batch_size=1))

    def _image(self, entry_id: str):
        entry = self._entry(entry_id)
        if entry is None:
            return None
        try:
            return pil_to_qimage(load_image(str(entry.file)))
        except OSError as exc:
            self.failed.emit(f"Cannot open {entry.file.name}: {exc}")
            return None

    def _show_entry(self, entry_id: str) -> None:
        image = self._image(entry_id)
        if image is not None:
            entry = self.store.get(entry_id)
            self.window.show_image(image, ImageSource(entry_id, entry.file if entry is not None else None))

    def _use_as_input(self, entry_id: str) -> bool:
        """The entry's image as input; what is made from it records the entry as its parent."""
        image = self._image(entry_id)
        return image is not None and self.window.replace_input(image, entry_id)

    def _use_for_inpaint(self, entry_id: str) -> None:
        """The entry's image as input, with the mask it was made with (if any) ready to refine. The mask was
        painted on the entry's input image; when that had another size than the entry's image, the mask is
        placed the way the engine placed the input (geometry.fit: cover, centre-crop), so it covers the same
        pixels of the result."""
        if not self._use_as_input(entry_id):
            return
        self.window.canvas_panel.act_brush.trigger()
        found = self._read(entry_id)
        mask = found.request.mask if found is not None and found.request is not None else None
        painted = self.window.mask
        if mask is None or painted.width <= 0 or painted.height <= 0:
            return
        if mask.size != (painted.width, painted.height):
            mask = fit(mask.convert("L"), painted.width, painted.height, Image.Resampling.BILINEAR)
            if mask.getbbox() is None:  # it lay in the part of the input the fit cropped away
                self.failed.emit("The mask this image was made with lies outside it (its input was cropped to "
                                 "fit); paint a new one")
                return
        painted.set_image(mask, "Restore mask")
