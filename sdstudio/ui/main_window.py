"""The main window: prompt panel, canvas, status bar and menus, wired to the worker.

It owns no engine state: it snapshots the panel's `PromptState` (plus input image and mask) into requests,
queues them on the worker and shows what comes back. `resultReady` is the one hook for history.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QUrl, Signal
from PySide6.QtGui import QCloseEvent, QDesktopServices, QImage
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QWidget,
)

from sdstudio import paths
from sdstudio.engine.detect import ModelDescription
from sdstudio.engine.families import FAMILIES
from sdstudio.engine.job_size import default_size
from sdstudio.engine.model_files import upscaler_model_names
from sdstudio.engine.names import LATENT_UPSCALERS, PIXEL_UPSCALERS
from sdstudio.engine.request import GenerationRequest, GenerationResult
from sdstudio.ui.backends_link import BackendsLink
from sdstudio.ui.canvas_panel import INPUT, CanvasPanel
from sdstudio.ui.control_dock import dock_control_layers
from sdstudio.ui.imageconv import pil_to_qimage, qimage_to_pil
from sdstudio.ui.mask_model import MaskModel
from sdstudio.ui.menus import build_menus
from sdstudio.ui.mode_bar import MODE_LABELS, TXT2IMG, ModeBar, input_mode
from sdstudio.ui.model_list import (
    BUILTIN_LABEL,
    add_extra_model,
    checkpoint_problem,
    extra_models,
    loaded_model_path,
    model_choices,
    model_label,
    remove_extra_model,
    same_model,
)
from sdstudio.ui.open_file import open_image, show_job_error
from sdstudio.ui.outpaint_bar import outpaint_input
from sdstudio.ui.prompt_panel import PromptPanel
from sdstudio.ui.prompt_state import apply_request, build_requests
from sdstudio.ui.save_image import ImageSource, save_pixels, save_with_parameters
from sdstudio.ui.settings import (
    load_allow_pickle,
    load_device,
    load_outpaint,
    load_prompt_state,
    load_tiled_vae,
    restore_window_layout,
    save_allow_pickle,
    save_device,
    save_outpaint,
    save_prompt_state,
    save_window_layout,
)
from sdstudio.ui.status import JobStatus
from sdstudio.ui.theme import apply_theme
from sdstudio.ui.token_counter import LazyTokenCounter
from sdstudio.ui.worker import JobOutput, Worker

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"


class MainWindow(QMainWindow):
    resultReady = Signal(object)  # GenerationResult of every finished job

    def __init__(self, worker: Worker, settings: QSettings, counter: LazyTokenCounter | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("SD Studio")
        self.worker, self.settings = worker, settings
        self.state = load_prompt_state(settings)
        # The last model that loaded: the only one saved, and where a failed load falls back to.
        self.good_model = self.state.model
        self._loads: dict[int, str] = {}  # queued model loads: job id -> path
        self._load_in_progress = False
        self.counter = counter or LazyTokenCounter()
        self.mask = MaskModel(parent=self)
        self.panel = PromptPanel(self.state, self.counter)
        self.canvas_panel = CanvasPanel(self.mask)
        self.canvas_panel.outpaint_bar.set_values(*load_outpaint(settings))
        self.job_status = JobStatus()
        self.statusBar().addPermanentWidget(self.job_status, 1)
        self.last_seed: int | None = None
        self.model_family = str(settings.value("model/family", ""))
        # The model's native side, for fitting an input image; until a model reports it, its family's.
        self.native_size = {f.name: f.default_size for f in FAMILIES}.get(self.model_family, 0)
        self.mode_bar = ModeBar()
        self.panel.mode_slot.addWidget(self.mode_bar)
        self._input_parent = ""  # history entry id the input image is, if it is one: the next job's parent
        self._shown_sources: list[ImageSource] = []  # what made each image the canvas shows as results
        worker.set_device(load_device(settings))
        worker.set_allow_pickle(load_allow_pickle(settings))
        self._jobs: dict[int, GenerationRequest] = {}  # queued generation jobs
        self._running: int | None = None
        self._running_total = 0
        self._build_layout()
        self.backends = BackendsLink(self)  # where jobs run: its badge, the worker's backends
        build_menus(self)
        self.control_layers = dock_control_layers(self)  # ControlNet units: a dock, the canvas's Control view
        self._connect()
        self.refresh_models()
        self._restore_window()

    # --- construction ------------------------------------------------------------------------------
    def _build_layout(self) -> None:
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.panel)
        self.splitter.addWidget(self.canvas_panel)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setCollapsible(1, False)
        em = self.fontMetrics().horizontalAdvance("M")
        self.splitter.setSizes([max(self.panel.minimumWidth(), em * 30), em * 80])
        self.setCentralWidget(self.splitter)
        # The history gallery (another module) docks on the right; see `dock_gallery`.
        self.gallery_dock = None

    def set_theme(self, theme: str) -> None:
        self.settings.setValue("appearance/theme", theme)
        app = QApplication.instance()
        if app is not None:
            apply_theme(app, theme)

    def set_device(self, device: str) -> None:
        """Remember the engine device and reload the current model on it (queued after the running job)."""
        if device == load_device(self.settings) and device == self.worker.device:
            return
        save_device(self.settings, device)
        self.worker.set_device(device)
        self.load_model(self.state.model)

    def set_allow_pickle(self, allow: bool) -> None:
        """Remember whether .ckpt/.pt checkpoints may load; the engine is rebuilt with it before the next job."""
        save_allow_pickle(self.settings, allow)
        self.worker.set_allow_pickle(allow)

    def _connect(self) -> None:
        w, p, cp = self.worker, self.panel, self.canvas_panel
        p.generateRequested.connect(self.generate)
        p.cancelRequested.connect(self.cancel)
        p.reuseSeedRequested.connect(self.reuse_last_seed)
        p.modelChosen.connect(self.choose_model)
        p.addModelRequested.connect(self.add_model_dialog)
        p.removeModelRequested.connect(self.remove_model)
        cp.openImageRequested.connect(self.open_image_dialog)
        cp.useAsInputRequested.connect(self.use_shown_image_as_input)
        cp.clearInputRequested.connect(lambda: self.set_input_image(None))
        cp.outpaint_bar.extendRequested.connect(lambda ext, fill: outpaint_input(self, ext, fill))
        self.mode_bar.clearInputRequested.connect(lambda: self.set_input_image(None))
        cp.canvas.fileDropped.connect(self.open_image)
        cp.viewChanged.connect(lambda _v: self._update_input_state())
        self.mask.changed.connect(lambda _r: self._update_input_state())
        w.jobStarted.connect(self._job_started)
        w.stepProgress.connect(self._step)
        w.jobNote.connect(lambda job, message: job == self._running and self.job_status.note(message))
        w.previewReady.connect(self._preview)
        w.jobFinished.connect(self._job_finished)
        w.jobCancelled.connect(self._job_cancelled)
        w.jobFailed.connect(self._job_failed)
        w.modelLoading.connect(self._model_loading)
        w.modelLoaded.connect(self._model_loaded)
        w.queueChanged.connect(self.job_status.set_queue)

    def dock_gallery(self, gallery: QWidget) -> QDockWidget:
        """Dock the history gallery on the right, with a View menu toggle; its layout is remembered."""
        dock = QDockWidget("History", self)
        dock.setObjectName("historyDock")
        dock.setWidget(gallery)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.view_menu.addSeparator()
        self.view_menu.addAction(dock.toggleViewAction())
        restore_window_layout(self.settings, self)
        self.gallery_dock = dock
        return dock

    def submit_request(self, request) -> int:
        """Queue one ready-made request (re-run from history)."""
        job = self.worker.submit(request)
        self._jobs[job] = request
        self._update_running()
        return job

    def show_image(self, image: QImage, source: ImageSource | None = None) -> None:
        """Show an image as the current result (e.g. a history entry, named by `source`)."""
        self._shown_sources = [source or ImageSource()]
        self.canvas_panel.finish_job([image], [], 0)

    def note_saved(self, result: GenerationResult, entries: list) -> None:
        """History saved `result` as `entries` (one per image): if it is still shown, its images are now those
        entries (for lineage and Save As)."""
        if len(entries) == len(self._shown_sources) and all(
                s.request is r for s, r in zip(self._shown_sources, result.requests, strict=True)):
            self._shown_sources = [ImageSource(e.id, e.file, s.request, s.model_name)
                                   for e, s in zip(entries, self._shown_sources, strict=True)]

    def shown_source(self) -> ImageSource | None:
        """What made the image the canvas shows, or None for the input image or a preview."""
        index = self.canvas_panel.shown_result_index()
        return self._shown_sources[index] if index is not None and index < len(self._shown_sources) else None

    # --- generation --------------------------------------------------------------------------------
    def generate(self) -> list[int]:
        """Queue the panel's settings (batch count jobs); returns the job ids."""
        if (units := self.control_layers.request_units()) is None:
            return []  # the banner says why
        init = qimage_to_pil(self.canvas_panel.input_image) if self.canvas_panel.input_image is not None else None
        mask = self.mask.to_pil() if init is not None else None
        requests = build_requests(self.state, init, mask, units=units)
        tiled_vae = load_tiled_vae(self.settings)  # an app setting, not a panel value: the pixels do not change
        requests = [r.replace(tiled_vae=tiled_vae) for r in requests]
        if init is not None and self._input_parent:
            requests = [r.replace(parent_id=self._input_parent) for r in requests]
        ids = [self.worker.submit(r) for r in requests]
        self._jobs.update(zip(ids, requests, strict=True))
        self._update_running()
        self.save_settings()
        return ids

    def cancel(self) -> None:
        self.worker.cancel_current()

    def reuse_last_seed(self) -> None:
        if self.last_seed is not None:
            self.state.seed = self.last_seed
            self.panel.refresh()

    def _job_started(self, job: int) -> None:
        if job in self._jobs:
            self._running = job
            request = self._jobs[job]
            self.canvas_panel.begin_job(request)
            self.job_status.started()

    def _step(self, job: int, done: int, total: int) -> None:
        if job == self._running:
            self._running_total = total
            self.job_status.step(done, total)

    def _preview(self, job: int, _step: int, image: QImage) -> None:
        if job == self._running:
            self.canvas_panel.show_preview(image)

    def _job_finished(self, out: JobOutput) -> None:
        self._jobs.pop(out.job_id, None)
        self._running = None
        result: GenerationResult = out.result
        # The engine's own step count (img2img runs only part of the schedule).
        self._shown_sources = [ImageSource(request=r, model_name=result.model_name) for r in result.requests]
        self.canvas_panel.finish_job(out.images, out.previews, self._running_total)
        if result.requests:
            self.last_seed = result.requests[0].seed
        seconds = f" in {result.seconds:.1f} s" if result.seconds else ""
        self._update_running(f"Done{seconds} · seed {self.last_seed}")
        self.resultReady.emit(result)

    def _job_cancelled(self, job: int) -> None:
        self._jobs.pop(job, None)
        self._loads.pop(job, None)
        self._load_in_progress = False
        if job == self._running:
            self._running = None
            self.canvas_panel.abandon_job()
        self._update_running("Cancelled")

    def _job_failed(self, job: int, message: str) -> None:
        request, load = self._jobs.get(job), self._loads.pop(job, None)
        failed_model = load if load is not None else request.model if request is not None else self.state.model
        if self._jobs.pop(job, None) is not None and job == self._running:
            self._running = None
            self.canvas_panel.abandon_job()
        if self._load_in_progress:
            self._load_in_progress = False
            message += self._fall_back_from(failed_model)
        show_job_error(self, message, request)
        self._update_running("Failed")

    def _update_running(self, idle_message: str = "Ready") -> None:
        busy = bool(self._jobs)
        self.panel.set_running(busy)
        self.act_cancel.setEnabled(busy)
        if not busy:
            self.job_status.idle(idle_message)

    # --- models --------------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        if self.backends.refresh_models():
            return  # a server's models, listed when they arrive
        choices = model_choices(paths.models_dir(), self.settings)
        added = set(extra_models(self.settings))
        self.panel.set_models(choices, [path for _label, path in choices if path in added])
        self.panel.hires.set_upscalers([*LATENT_UPSCALERS, *PIXEL_UPSCALERS, *upscaler_model_names(paths.models_dir())])
        self.panel.hires.set_checkpoints(choices)

    def load_model(self, path: str) -> int:
        """Queue loading `path` ("" = built-in); the status bar says so until it has loaded or failed."""
        self.job_status.loading(f"Loading {model_label(path)}…", None)
        job = self.worker.load_model(path)
        self._loads[job] = path
        return job

    def choose_model(self, path: str) -> None:
        self.state.model = path
        self.canvas_panel.banner.hide()
        self.load_model(path)
        self.save_settings()

    def remove_model(self, path: str) -> None:
        """Take an added model off the list (the file stays); when it is the current one, back to built-in."""
        remove_extra_model(self.settings, path)
        if same_model(self.good_model, path):
            self.good_model = ""
        if same_model(self.state.model, path):
            self.state.model = ""
            self.choose_model("")
        self.refresh_models()
        self.save_settings()

    def _fall_back_from(self, failed: str) -> str:
        """After `failed` could not load: never keep it, go back to the last model that loaded. Returns what
        to add to the error message."""
        if same_model(failed, self.good_model):
            if not failed:
                return ""
            self.good_model = ""
        if not same_model(self.state.model, failed):
            return ""
        self.state.model = self.good_model
        self.panel.refresh()
        self.load_model(self.good_model)
        self.save_settings()
        return f" Back to {model_label(self.good_model)}."

    def _model_loading(self, message: str, fraction: float) -> None:
        self._load_in_progress = True
        self.job_status.loading(message, fraction)

    def add_model_dialog(self) -> None:
        kinds = "*.safetensors *.ckpt *.pt" if load_allow_pickle(self.settings) else "*.safetensors"
        path, _ = QFileDialog.getOpenFileName(self, "Add Model", str(paths.models_dir()), f"Checkpoints ({kinds})")
        if path:
            self.add_model(path)

    def add_model(self, path: str) -> None:
        """Add a checkpoint to the model list and load it; anything else is named in one line, not added."""
        if problem := checkpoint_problem(path):
            self.canvas_panel.banner.show_error(problem)
            return
        add_extra_model(self.settings, path)
        self.state.model = path
        self.refresh_models()
        self.choose_model(path)

    def _model_loaded(self, description: ModelDescription) -> None:
        self._load_in_progress = False
        loaded = loaded_model_path(description)
        if same_model(loaded, self.state.model) and loaded != self.good_model:
            self.good_model = self.state.model
            self.save_settings()
        family = description.family
        label = BUILTIN_LABEL if not loaded else description.name
        self.panel.set_model_info(f"{label}: {description.summary()}", family)
        if family and self.model_family and family != self.model_family:
            self.panel.apply_default_size(description.default_size)
        if description.default_size:
            self.native_size = description.default_size
        if family:
            self.model_family = family
            self.settings.setValue("model/family", family)
        if not self._jobs:
            self.job_status.idle("Model ready")

    # --- input image -------------------------------------------------------------------------------
    def open_image_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open Image", str(Path.home()), IMAGE_FILTER)
        if path:
            self.open_image(path)

    def open_image(self, path: str) -> None:
        """Open an image file: its parameters loaded, or as the input image (ui/open_file.py)."""
        open_image(self, path)

    def use_shown_image_as_input(self) -> None:
        image = self.canvas_panel.shown_image()
        source = self.shown_source()
        if image is not None:
            self.replace_input(image.copy(), source.entry_id if source is not None else "")

    def replace_input(self, image: QImage, parent_id: str = "") -> bool:
        """`set_input_image` for a user's request, after asking when that would throw away a painted mask."""
        if not self._may_drop_mask():
            return False
        self.set_input_image(image, parent_id)
        return True

    def set_input_image(self, image: QImage | None, parent_id: str = "") -> None:
        """img2img/inpainting from `image` (None: back to text-to-image); `parent_id` is the history entry the
        image is, recorded as the parent of what is made from it. The size keeps the model's native area at the
        image's aspect ratio: the image's own size (say 296×200 for a 64 px model) would give garbage."""
        self.canvas_panel.set_input_image(image)
        self._input_parent = parent_id if image is not None else ""
        if image is not None:
            native = self.native_size or round((self.state.width * self.state.height) ** 0.5)
            self.state.width, self.state.height = default_size(None, None, native, 8,
                                                               (image.width(), image.height()))
            self.panel.refresh()
        self._update_input_state()

    def _may_drop_mask(self) -> bool:
        """True when there is no painted mask to lose, or the user agrees to lose it."""
        if self.canvas_panel.input_image is None or self.mask.is_empty():
            return True
        answer = QMessageBox.question(
            self, "Discard the painted mask?",
            "This replaces the input image, and the mask painted on it will be lost.",
            QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Discard

    def load_parameters(self, request, model_problem: str = "") -> bool:
        """Make `request` the next job (from history or a file): its values in the panel, its init image and mask
        (or none, for text-to-image) as the input, its parent_id as the next job's parent. With a `model_problem`
        (the model it names is not here) the chosen model stays and the banner says why. False when the user
        keeps a painted mask instead."""
        if not self._may_drop_mask():
            return False
        if model_problem:
            request = request.replace(model=self.state.model)
            self.canvas_panel.banner.show_error(model_problem)
        init = request.init_image
        self.set_input_image(pil_to_qimage(init) if init is not None else None, request.parent_id)
        if request.mask is not None and request.mask.size == (self.mask.width, self.mask.height):
            self.mask.set_image(request.mask, "Restore mask")
        apply_request(self.state, request)
        self.control_layers.apply_units(request.control_units)
        self.panel.refresh()
        self._update_input_state()
        return True

    def _update_input_state(self) -> None:
        image = self.canvas_panel.input_image
        has_input, has_mask = image is not None, image is not None and not self.mask.is_empty()
        self.panel.set_input_state(has_input, has_mask)
        mode = input_mode(has_input, has_mask)
        self.mode_bar.set_mode(mode, (image.width(), image.height()) if image is not None else None)
        self.setWindowTitle(f"SD Studio — {MODE_LABELS[mode]}" if mode != TXT2IMG else "SD Studio")
        if self.canvas_panel.view == INPUT:
            self.canvas_panel.canvas.setFocus()

    # --- files, settings, shutdown --------------------------------------------------------------------
    def save_image_dialog(self, with_parameters: bool = True) -> None:
        """Save the shown image with its parameters (a history entry's PNG as it is), or its pixels only."""
        image = self.canvas_panel.shown_image()
        if image is None:
            return
        title = "Save Image" if with_parameters else "Save Image Without Metadata"
        chosen = QFileDialog.getSaveFileName(self, title, str(paths.outputs_dir() / "image.png"), "PNG (*.png)")[0]
        if not chosen:
            return
        try:
            if with_parameters:
                save_with_parameters(image, self.shown_source(), Path(chosen))
            else:
                save_pixels(image, Path(chosen))
        except OSError as exc:
            self.canvas_panel.banner.show_error(f"Could not save {chosen}: {exc}")

    def open_folder(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def save_settings(self) -> None:
        """The panel values and the outpaint bar's (saved at every generate, so a crash keeps them)."""
        save_prompt_state(self.settings, dataclasses.replace(self.state, model=self.good_model))
        save_outpaint(self.settings, *self.canvas_panel.outpaint_bar.values())
        self.control_layers.save()
        self.settings.sync()

    def _restore_window(self) -> None:
        if not restore_window_layout(self.settings, self, self.splitter):
            em = self.fontMetrics().horizontalAdvance("M")
            self.resize(em * 120, em * 76)

    def closeEvent(self, event: QCloseEvent) -> None:
        # Only at close: mid-session the layout can be transient (a dock being added is not yet shown).
        save_window_layout(self.settings, self, self.splitter)
        self.save_settings()
        self.worker.stop()
        super().closeEvent(event)

