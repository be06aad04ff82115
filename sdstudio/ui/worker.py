"""The background worker: one thread owns the engine (a sdstudio.engine.backend.Backend), runs a FIFO queue
of jobs, and reports by signals.

The GUI thread never waits on the engine. It submits immutable requests and receives progress, coalesced
previews, results and errors as queued signals. The engine module (and with it torch) is imported by the engine
factory inside the worker thread, so the window can appear before torch loads.

Stopping is prompt: a model load is abandoned at its next progress report (the callback raises Cancelled),
a generation at its next step, and `stop()` waits a bounded time. The thread is a daemon, so even an engine
stuck in one long operation never keeps the app from exiting.
"""

from __future__ import annotations

import collections
import gc
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal
from PySide6.QtGui import QImage

from sdstudio.engine.backend import Backend
from sdstudio.engine.errors import Cancelled
from sdstudio.engine.request import GenerationRequest, GenerationResult, StepInfo
from sdstudio.errorlog import user_message
from sdstudio.ui.imageconv import pil_to_qimage

EngineFactory = Callable[[], Backend]
PREVIEW_INTERVAL_MS = 100
GIL_SWITCH_INTERVAL_S = 0.001
WORKER_NICE = 10
STOP_TIMEOUT_S = 2.0  # a load or step notices the stop within a progress report; never block the GUI longer


def default_engine_factory(device: str = "auto", allow_pickle: bool = False) -> Backend:
    """The real engine on `device`; imported here, in the worker thread, so torch never loads on the GUI thread.
    An unavailable device raises the engine's one-line SDStudioError, which the job's failure shows."""
    from sdstudio.engine.api import Engine

    return Engine(device=device, allow_pickle=allow_pickle)


def lower_thread_priority() -> None:
    """Make the calling thread (and the compute threads it spawns) yield the CPU to the GUI thread.

    With every core busy in the engine, the event loop otherwise waits for a time slice; a nice value of 10
    keeps full speed when the GUI is idle and gives the GUI the CPU the moment it needs it. Linux sets nice
    per thread, and threads created later by this one (torch's OpenMP team) inherit it.
    """
    if hasattr(os, "setpriority") and sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
        except OSError:
            pass  # not permitted here: run at normal priority
    else:
        QThread.currentThread().setPriority(QThread.Priority.LowPriority)


# An engine task run on the worker thread: (engine, on_step, should_cancel, note) -> its result; `note(text)`
# says what it is doing (the status bar shows it until the next step).
OnStep = Callable[[StepInfo], None]
EngineCall = Callable[[Backend, OnStep, Callable[[], bool], Callable[[str], None]], object]


@dataclass
class QueuedJob:
    """One queued unit of work: generate `request`, run `call` (an engine task: the gallery's SD upscale), or
    only load `model` when both are None."""

    id: int
    model: str
    request: GenerationRequest | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    call: EngineCall | None = None

    @property
    def is_work(self) -> bool:
        """A job the queue counts and the user can cancel: not a bare model load."""
        return self.request is not None or self.call is not None


@dataclass(frozen=True)
class JobOutput:
    """A finished generation: the engine's result, its images for display, and every preview of the job."""

    job_id: int
    result: GenerationResult
    images: list[QImage]
    previews: list[tuple[int, QImage]]


class PreviewThrottle(QObject):
    """Coalesces previews offered from any thread into at most one `ready` signal per interval.

    Only the newest offer is kept; it is delivered as soon as the interval since the last delivery has passed,
    so the canvas always ends up showing the latest preview without being flooded.
    """

    ready = Signal(int, int, QImage)
    _wake = Signal()

    def __init__(self, interval_ms: int = PREVIEW_INTERVAL_MS, parent: QObject | None = None):
        super().__init__(parent)
        self.interval_ms = interval_ms
        self._lock = threading.Lock()
        self._latest: tuple[int, int, QImage] | None = None
        self._last_delivery = -float("inf")
        self._timer = QTimer(self, singleShot=True)
        self._timer.timeout.connect(self._deliver)
        self._wake.connect(self._schedule, Qt.ConnectionType.QueuedConnection)

    def offer(self, job_id: int, step: int, image: QImage) -> None:
        with self._lock:
            first = self._latest is None
            self._latest = (job_id, step, image)
        if first:
            self._wake.emit()

    def _schedule(self) -> None:
        if not self._timer.isActive():
            since_ms = (time.monotonic() - self._last_delivery) * 1000
            self._timer.start(int(max(0.0, self.interval_ms - since_ms)))

    def _deliver(self) -> None:
        with self._lock:
            item, self._latest = self._latest, None
        if item is not None:
            self._last_delivery = time.monotonic()
            self.ready.emit(*item)


class Worker(QObject):
    """Owns the engine in its own thread. Public methods are called from the GUI thread."""

    modelLoading = Signal(str, float)  # message, fraction done
    modelLoaded = Signal(object)  # the engine's ModelDescription
    jobStarted = Signal(int)
    stepProgress = Signal(int, int, int)  # job id, steps done, total
    jobNote = Signal(int, str)  # job id, what the job does between steps (loading a hires checkpoint)
    callFinished = Signal(int, object)  # job id, the result of a `submit_call` task
    callFailed = Signal(int, str)  # job id, message for the user (a task's owner says it, not the window)
    previewReady = Signal(int, int, QImage)  # job id, step, image (coalesced)
    jobFinished = Signal(object)  # JobOutput
    jobCancelled = Signal(int)
    jobFailed = Signal(int, str)  # job id, message for the user
    queueChanged = Signal(int)  # jobs waiting (not counting the running one); always emitted in the GUI thread
    _queueTouched = Signal()

    def __init__(self, engine_factory: EngineFactory | None = None,
                 preview_interval_ms: int = PREVIEW_INTERVAL_MS, parent: QObject | None = None):
        """`engine_factory` None: the real engine on the device given to `set_device` ("auto" until then)."""
        super().__init__(parent)
        self._factory = engine_factory
        self._device = "auto"
        self._allow_pickle = False
        self._network_dirs: tuple[list[str], list[str]] = ([], [])  # extra LoRA / embedding folders
        self._new_engine = False  # the device or an engine option changed: build it again before the next job
        self._ids = itertools.count(1)
        self._queue: collections.deque[QueuedJob] = collections.deque()
        self._cond = threading.Condition()
        self._current: QueuedJob | None = None
        self._stopping = False
        self._throttle = PreviewThrottle(preview_interval_ms, self)
        self._throttle.ready.connect(self.previewReady)
        self._queueTouched.connect(self._announce_queue, Qt.ConnectionType.QueuedConnection)
        self._thread = threading.Thread(target=self._run_loop, name="engine-worker", daemon=True)

    # --- GUI-thread API -------------------------------------------------------------------------
    def start(self) -> None:
        # The engine thread runs Python between tensor ops; a short switch interval (default 5 ms) lets the
        # GUI thread take the GIL back quickly, which keeps the event loop's latency low during a job.
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
        self._thread.start()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Cancel everything (a running load or generation at its next progress report or step) and wait at
        most `timeout_s` for the thread; returns whether it ended. A thread still busy is left to finish on its
        own: it is a daemon and starts no further job."""
        with self._cond:
            self._stopping = True
            self._queue.clear()
            if self._current is not None:
                self._current.cancel.set()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def set_device(self, device: str) -> None:
        """Run the engine on `device` ("auto", "cpu", "cuda", "mps") from the next job on; queue `load_model`
        to reload the current model there now."""
        with self._cond:
            if device != self._device:
                self._device, self._new_engine = device, True

    def set_allow_pickle(self, allow: bool) -> None:
        """Let the engine load .ckpt/.pt checkpoints (weights-only) from the next job on."""
        with self._cond:
            if allow != self._allow_pickle:
                self._allow_pickle, self._new_engine = allow, True

    def set_network_dirs(self, lora_dirs: list[str], embedding_dirs: list[str]) -> None:
        """The extra LoRA / embedding folders (settings) the engine searches from the next job on."""
        with self._cond:
            self._network_dirs = (list(lora_dirs), list(embedding_dirs))

    @property
    def allow_pickle(self) -> bool:
        return self._allow_pickle

    @property
    def device(self) -> str:
        return self._device

    def submit(self, request: GenerationRequest) -> int:
        """Queue a generation; returns its job id."""
        return self._enqueue(QueuedJob(next(self._ids), request.model, request))

    def submit_call(self, model: str, call: EngineCall) -> int:
        """Queue an engine task after `model` is loaded; its result comes by callFinished, its failure by
        callFailed, its steps by stepProgress and its notes by jobNote."""
        return self._enqueue(QueuedJob(next(self._ids), model, call=call))

    def load_model(self, model: str) -> int:
        """Queue loading a model ahead of the next generation (it is skipped when already loaded)."""
        return self._enqueue(QueuedJob(next(self._ids), model))

    def cancel_current(self) -> None:
        with self._cond:
            if self._current is not None:
                self._current.cancel.set()

    def clear_queue(self) -> int:
        """Drop the waiting jobs (the running one continues); returns how many were dropped."""
        with self._cond:
            dropped = [job.id for job in self._queue if job.is_work]
            self._queue = collections.deque(job for job in self._queue if not job.is_work)
        for job_id in dropped:
            self.jobCancelled.emit(job_id)
        self._announce_queue()
        return len(dropped)

    def pending(self) -> int:
        with self._cond:
            return self._waiting()

    # --- worker thread ----------------------------------------------------------------------------
    def _enqueue(self, job: QueuedJob) -> int:
        with self._cond:
            self._queue.append(job)
            self._cond.notify()
        self._announce_queue()
        return job.id

    def _announce_queue(self) -> None:
        # Counted when delivered, in the GUI thread, so a late signal from the worker never shows a stale count.
        self.queueChanged.emit(self.pending())

    def _waiting(self) -> int:
        return sum(1 for job in self._queue if job.is_work)

    def _next_job(self) -> QueuedJob | None:
        with self._cond:
            self._current = None
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            self._current = self._queue.popleft()
        self._queueTouched.emit()
        return self._current

    def _run_loop(self) -> None:
        lower_thread_priority()
        engine: Backend | None = None
        loaded: str | None = None
        while (job := self._next_job()) is not None:
            if job.is_work:
                self.jobStarted.emit(job.id)
            try:
                with self._cond:
                    device, new_engine, self._new_engine = self._device, self._new_engine, False
                    allow_pickle = self._allow_pickle
                    lora_dirs, embedding_dirs = self._network_dirs
                if engine is None or new_engine:
                    if engine is not None:
                        engine, loaded = None, None
                        gc.collect()  # let the old engine's memory go before the new one loads
                    engine = self._factory() if self._factory is not None else default_engine_factory(device, allow_pickle)
                # Engine.lora_dirs / embedding_dirs: plain lists the engine reads at each job.
                engine.lora_dirs, engine.embedding_dirs = list(lora_dirs), list(embedding_dirs)
                if loaded != job.model:
                    loaded = None
                    self._load(engine, job)
                    loaded = job.model
                if job.request is not None:
                    self._generate(engine, job)
                elif job.call is not None:
                    self._call(engine, job)
            except Cancelled:
                self.jobCancelled.emit(job.id)
            except Exception as exc:  # never let the thread die: the user sees one line, the log the rest
                what = "generating" if job.is_work else "loading"
                message = user_message(exc, f"{what} {job.model or 'the built-in model'}")
                (self.callFailed if job.call is not None else self.jobFailed).emit(job.id, message)

    def _load(self, engine: Backend, job: QueuedJob) -> None:
        label = "the built-in model" if not job.model else job.model.rsplit("/", 1)[-1]
        self.modelLoading.emit(f"Loading {label}…", 0.0)

        def progress(message: str, fraction: float) -> None:
            # The engine reports often (per tensor), so raising here abandons a load promptly.
            if job.cancel.is_set() or self._stopping:
                raise Cancelled("model load cancelled")
            self.modelLoading.emit(message, fraction)

        description = engine.load_model(job.model, progress=progress)
        self.modelLoaded.emit(description)

    def _call(self, engine: Backend, job: QueuedJob) -> None:
        def on_step(info: StepInfo) -> None:
            if info.message:
                self.jobNote.emit(job.id, info.message)
            else:
                self.stepProgress.emit(job.id, info.step + 1, info.total)

        def should_cancel() -> bool:
            return job.cancel.is_set()

        result = job.call(engine, on_step, should_cancel, lambda text: self.jobNote.emit(job.id, text))
        if job.cancel.is_set():
            raise Cancelled("cancelled")
        self.callFinished.emit(job.id, result)

    def _generate(self, engine: Backend, job: QueuedJob) -> None:
        previews: list[tuple[int, QImage]] = []

        def on_step(info: StepInfo) -> None:
            if info.message:  # between steps: the step itself was reported already
                self.jobNote.emit(job.id, info.message)
                return
            self.stepProgress.emit(job.id, info.step + 1, info.total)
            if info.preview is not None:
                image = pil_to_qimage(info.preview)
                previews.append((info.step, image))
                self._throttle.offer(job.id, info.step, image)

        def should_cancel() -> bool:
            return job.cancel.is_set()

        if job.cancel.is_set():
            raise Cancelled("cancelled before it started")
        result = engine.generate(job.request, on_step=on_step, should_cancel=should_cancel)
        if job.cancel.is_set():
            raise Cancelled("cancelled")
        images = [pil_to_qimage(image) for image in result.images]
        self.jobFinished.emit(JobOutput(job.id, result, images, previews))
