"""The background worker: one QThread owns the engine, runs a FIFO queue of jobs, and reports by signals.

The GUI thread never waits on the engine. It submits immutable requests and receives progress, coalesced
previews, results and errors as queued signals. The engine module (and with it torch) is imported by the engine
factory inside the worker thread, so the window can appear before torch loads.
"""

from __future__ import annotations

import collections
import itertools
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal
from PySide6.QtGui import QImage

from sdstudio.engine.errors import Cancelled, SDStudioError
from sdstudio.engine.request import GenerationRequest, GenerationResult, StepInfo
from sdstudio.ui.imageconv import pil_to_qimage

EngineFactory = Callable[[], Any]
PREVIEW_INTERVAL_MS = 100
GIL_SWITCH_INTERVAL_S = 0.001
WORKER_NICE = 10


def default_engine_factory() -> Any:
    """The real engine; imported here, in the worker thread, so torch never loads on the GUI thread."""
    from sdstudio.engine.api import Engine

    return Engine()


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


@dataclass
class Job:
    """One queued unit of work: generate `request`, or only load `model` when request is None."""

    id: int
    model: str
    request: GenerationRequest | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


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


class _EngineThread(QThread):
    def __init__(self, worker: Worker):
        super().__init__()
        self.setObjectName("engine-worker")
        self._worker = worker

    def run(self) -> None:
        self._worker._run_loop()


class Worker(QObject):
    """Owns the engine in its own thread. Public methods are called from the GUI thread."""

    modelLoading = Signal(str, float)  # message, fraction done
    modelLoaded = Signal(object)  # the engine's ModelDescription
    jobStarted = Signal(int)
    stepProgress = Signal(int, int, int)  # job id, steps done, total
    previewReady = Signal(int, int, QImage)  # job id, step, image (coalesced)
    jobFinished = Signal(object)  # JobOutput
    jobCancelled = Signal(int)
    jobFailed = Signal(int, str)  # job id, message for the user
    queueChanged = Signal(int)  # jobs waiting (not counting the running one); always emitted in the GUI thread
    _queueTouched = Signal()

    def __init__(self, engine_factory: EngineFactory = default_engine_factory,
                 preview_interval_ms: int = PREVIEW_INTERVAL_MS, parent: QObject | None = None):
        super().__init__(parent)
        self._factory = engine_factory
        self._ids = itertools.count(1)
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._current: Job | None = None
        self._stopping = False
        self._throttle = PreviewThrottle(preview_interval_ms, self)
        self._throttle.ready.connect(self.previewReady)
        self._queueTouched.connect(self._announce_queue, Qt.ConnectionType.QueuedConnection)
        self._thread = _EngineThread(self)

    # --- GUI-thread API -------------------------------------------------------------------------
    def start(self) -> None:
        # The engine thread runs Python between tensor ops; a short switch interval (default 5 ms) lets the
        # GUI thread take the GIL back quickly, which keeps the event loop's latency low during a job.
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
        self._thread.start()

    def stop(self) -> None:
        """Cancel everything and join the thread: within one step (or once a model load ends)."""
        with self._cond:
            self._stopping = True
            self._queue.clear()
            if self._current is not None:
                self._current.cancel.set()
            self._cond.notify_all()
        if self._thread.isRunning():
            self._thread.wait()

    def submit(self, request: GenerationRequest) -> int:
        """Queue a generation; returns its job id."""
        return self._enqueue(Job(next(self._ids), request.model, request))

    def load_model(self, model: str) -> int:
        """Queue loading a model ahead of the next generation (it is skipped when already loaded)."""
        return self._enqueue(Job(next(self._ids), model))

    def cancel_current(self) -> None:
        with self._cond:
            if self._current is not None:
                self._current.cancel.set()

    def clear_queue(self) -> int:
        """Drop the waiting jobs (the running one continues); returns how many were dropped."""
        with self._cond:
            dropped = [job.id for job in self._queue if job.request is not None]
            self._queue = collections.deque(job for job in self._queue if job.request is None)
        for job_id in dropped:
            self.jobCancelled.emit(job_id)
        self._announce_queue()
        return len(dropped)

    def pending(self) -> int:
        with self._cond:
            return self._waiting()

    # --- worker thread ----------------------------------------------------------------------------
    def _enqueue(self, job: Job) -> int:
        with self._cond:
            self._queue.append(job)
            self._cond.notify()
        self._announce_queue()
        return job.id

    def _announce_queue(self) -> None:
        # Counted when delivered, in the GUI thread, so a late signal from the worker never shows a stale count.
        self.queueChanged.emit(self.pending())

    def _waiting(self) -> int:
        return sum(1 for job in self._queue if job.request is not None)

    def _next_job(self) -> Job | None:
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
        engine, loaded = None, None
        while (job := self._next_job()) is not None:
            if job.request is not None:
                self.jobStarted.emit(job.id)
            try:
                if engine is None:
                    engine = self._factory()
                if loaded != job.model:
                    loaded = None
                    self._load(engine, job.model)
                    loaded = job.model
                if job.request is not None:
                    self._generate(engine, job)
            except Cancelled:
                self.jobCancelled.emit(job.id)
            except SDStudioError as exc:
                self.jobFailed.emit(job.id, str(exc))
            except Exception as exc:  # never let the thread die: the user sees the error, the queue goes on
                traceback.print_exc(file=sys.stderr)
                self.jobFailed.emit(job.id, f"Unexpected error ({type(exc).__name__}): {exc}")

    def _load(self, engine: Any, model: str) -> None:
        label = "the built-in model" if not model else model.rsplit("/", 1)[-1]
        self.modelLoading.emit(f"Loading {label}…", 0.0)
        description = engine.load_model(model, progress=lambda msg, frac: self.modelLoading.emit(msg, frac))
        self.modelLoaded.emit(description)

    def _generate(self, engine: Any, job: Job) -> None:
        previews: list[tuple[int, QImage]] = []

        def on_step(info: StepInfo) -> None:
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
