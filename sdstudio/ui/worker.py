"""The background worker: one thread per backend (a sdstudio.engine.backend.Backend: the local engine, each
listed A1111-compatible server) runs jobs from one FIFO queue (remote/dispatch.py), and reports by signals.

The GUI thread never waits on the engine. It submits immutable requests and receives progress, coalesced
previews, results and errors as queued signals. The engine module (and with it torch) is imported by the engine
factory inside the worker thread, so the window can appear before torch loads.

Stopping is prompt: a model load is abandoned at its next progress report (the callback raises Cancelled),
a generation at its next step, and `stop()` waits a bounded time. The thread is a daemon, so even an engine
stuck in one long operation never keeps the app from exiting.
"""

from __future__ import annotations

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
from sdstudio.engine.errors import Cancelled, ServerUnavailable
from sdstudio.engine.request import GenerationRequest, GenerationResult, StepInfo
from sdstudio.errorlog import user_message
from sdstudio.remote.backend import RemoteBackend
from sdstudio.remote.dispatch import REST_S, Dispatcher
from sdstudio.remote.servers import LOCAL_NAME, Server
from sdstudio.ui.imageconv import pil_to_qimage

EngineFactory = Callable[[], Backend]
RemoteFactory = Callable[[Server], Backend]
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


# An engine task run on a lane's thread: (engine, on_step, should_cancel, note) -> its result; `note(text)`
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
    backend: str = ""  # the lane that must run it ("" = any): a model load belongs to the target
    cancel: threading.Event = field(default_factory=threading.Event)
    call: EngineCall | None = None

    @property
    def is_work(self) -> bool:
        """A job the queue counts and the user can cancel: not a bare model load."""
        return self.request is not None or self.call is not None


def _accepts(lane: str, job: QueuedJob) -> bool:
    return not job.backend or job.backend == lane


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
    """Owns the backends, each in its own thread (a lane of remote.dispatch.Dispatcher): the local engine
    ("This computer", when enabled) and every enabled A1111-compatible server. Each job goes to the next free
    lane; a model load goes to the target lane (the first one), whose models the picker lists. Public methods
    are called from the GUI thread."""

    modelLoading = Signal(str, float)  # message, fraction done
    modelLoaded = Signal(object)  # the engine's ModelDescription
    jobStarted = Signal(int)
    jobRouted = Signal(int, str)  # job id, the backend it runs on (LOCAL_NAME or a server's name)
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
                 preview_interval_ms: int = PREVIEW_INTERVAL_MS, parent: QObject | None = None,
                 remote_factory: RemoteFactory = RemoteBackend, rest_s: float = REST_S):
        """`engine_factory` None: the real engine on the device given to `set_device` ("auto" until then).
        `remote_factory` makes the backend of a listed server; `rest_s`: how long a lane whose server went
        away waits before it takes another job."""
        super().__init__(parent)
        self._factory = engine_factory
        self._remote_factory = remote_factory
        self._device = "auto"
        self._allow_pickle = False
        self._network_dirs: tuple[list[str], list[str]] = ([], [])  # extra LoRA / embedding folders
        self._servers: dict[str, Server] = {}  # enabled servers by name
        self._ids = itertools.count(1)
        self._cond = threading.Condition()  # guards the settings above
        self._dispatch: Dispatcher[QueuedJob] = Dispatcher(_accepts, rest_s)
        self._dispatch.set_lanes([LOCAL_NAME])
        self._threads: dict[str, threading.Thread] = {}
        self._started = False
        self._stopping = False
        self._throttle = PreviewThrottle(preview_interval_ms, self)
        self._throttle.ready.connect(self.previewReady)
        self._queueTouched.connect(self._announce_queue, Qt.ConnectionType.QueuedConnection)

    # --- GUI-thread API -------------------------------------------------------------------------
    def start(self) -> None:
        # The engine thread runs Python between tensor ops; a short switch interval (default 5 ms) lets the
        # GUI thread take the GIL back quickly, which keeps the event loop's latency low during a job.
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
        self._started = True
        self._start_lanes(self._dispatch.lanes())

    def _start_lanes(self, names: list[str]) -> None:
        for name in names:
            ticket = self._dispatch.ticket(name)
            thread = threading.Thread(target=self._lane_loop, args=(name, ticket), daemon=True,
                                      name="engine-worker" if name == LOCAL_NAME else f"remote-{name}")
            self._threads[name] = thread
            thread.start()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Cancel everything (a running load or generation at its next progress report or step) and wait at
        most `timeout_s` for the threads; returns whether they ended. A thread still busy is left to finish on
        its own: it is a daemon and starts no further job."""
        self._stopping = True
        self._dispatch.stop()
        for job in self._dispatch.running().values():
            job.cancel.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads.values():
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads.values())

    def set_backends(self, servers: list[Server], local: bool = True) -> None:
        """Where jobs run from now on: this computer (when `local`) and the enabled `servers`; with none of
        them enabled, this computer. A running job finishes where it is."""
        enabled = [s for s in servers if s.enabled]
        local = local or not enabled
        with self._cond:
            self._servers = {s.name: s for s in enabled}
        names = ([LOCAL_NAME] if local else []) + [s.name for s in enabled]
        added = self._dispatch.set_lanes(names)
        # A model load waiting for a backend that is gone would wait for ever: it is cancelled (the window
        # loads its model on the new target).
        orphans = self._dispatch.clear(keep=lambda job: not job.backend or job.backend in names)
        for job in orphans:
            self.jobCancelled.emit(job.id)
        if self._started and not self._stopping:
            self._start_lanes(added)

    @property
    def target(self) -> str:
        """The backend model loads go to and whose models the picker lists: the first enabled one."""
        return self._dispatch.lanes()[0]

    def target_backend(self) -> Server | None:
        """The target's server, None when the target is this computer."""
        with self._cond:
            return self._servers.get(self.target)

    def set_device(self, device: str) -> None:
        """Run the engine on `device` ("auto", "cpu", "cuda", "mps") from the next job on; queue `load_model`
        to reload the current model there now."""
        with self._cond:
            self._device = device

    def set_allow_pickle(self, allow: bool) -> None:
        """Let the engine load .ckpt/.pt checkpoints (weights-only) from the next job on."""
        with self._cond:
            self._allow_pickle = allow

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
        """Queue loading a model on the target backend ahead of the next generation (skipped when loaded)."""
        return self._enqueue(QueuedJob(next(self._ids), model, backend=self.target))

    def cancel_current(self) -> None:
        """Cancel every running job (with several backends, several run at once)."""
        for job in self._dispatch.running().values():
            job.cancel.set()

    def clear_queue(self) -> int:
        """Drop the waiting jobs (the running ones continue); returns how many were dropped."""
        dropped = [job.id for job in self._dispatch.clear(keep=lambda job: not job.is_work)]
        for job_id in dropped:
            self.jobCancelled.emit(job_id)
        self._announce_queue()
        return len(dropped)

    def pending(self) -> int:
        return self._dispatch.waiting(lambda job: job.is_work)

    # --- lane threads ------------------------------------------------------------------------------
    def _enqueue(self, job: QueuedJob) -> int:
        self._dispatch.put(job)
        self._announce_queue()
        return job.id

    def _announce_queue(self) -> None:
        # Counted when delivered, in the GUI thread, so a late signal from the worker never shows a stale count.
        self.queueChanged.emit(self.pending())

    def _engine_key(self, lane: str) -> object:
        """What the lane's backend is made from; when it changes, the backend is made again."""
        with self._cond:
            return (self._device, self._allow_pickle) if lane == LOCAL_NAME else self._servers.get(lane)

    def _make_engine(self, lane: str, key) -> Backend:
        if lane != LOCAL_NAME:
            if key is None:
                raise ServerUnavailable(f"server {lane!r} is no longer listed in Settings → Backends")
            return self._remote_factory(key)
        return self._factory() if self._factory is not None else default_engine_factory(*key)

    def _lane_loop(self, lane: str, ticket: object) -> None:
        if lane == LOCAL_NAME:
            lower_thread_priority()
        engine: Backend | None = None
        made_from: object = None
        loaded: str | None = None
        while (job := self._dispatch.take(lane, ticket)) is not None:
            self._queueTouched.emit()
            if job.is_work:
                self.jobStarted.emit(job.id)
                self.jobRouted.emit(job.id, lane)
            unavailable = False
            try:
                key = self._engine_key(lane)
                if engine is None or key != made_from:
                    if engine is not None:
                        engine, loaded = None, None
                        gc.collect()  # let the old engine's memory go before the new one loads
                    engine, made_from = self._make_engine(lane, key), key
                with self._cond:
                    # Engine.lora_dirs / embedding_dirs: plain lists the engine reads at each job.
                    engine.lora_dirs, engine.embedding_dirs = (list(d) for d in self._network_dirs)
                # A server switches models by the request's override_settings; only a queued load asks it.
                if loaded != job.model and (lane == LOCAL_NAME or job.request is None):
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
                unavailable = isinstance(exc, ServerUnavailable)
                what = "generating" if job.is_work else "loading"
                message = user_message(exc, f"{what} {job.model or 'the built-in model'}")
                (self.callFailed if job.call is not None else self.jobFailed).emit(job.id, message)
            finally:
                self._dispatch.finish(lane, unavailable, ticket)

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
