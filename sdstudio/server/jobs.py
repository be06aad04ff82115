"""One job at a time: a worker thread owns the engine and runs queued jobs in order, so /progress and
/interrupt answer while a job runs (the routes only read the state under a lock), as the app's worker does.

A job is a function of the engine, a step callback and a cancel check; its outcome settles an asyncio future
on the server's event loop. The state is what A1111's `shared.state` reports: the batch being sampled
(job_no of job_count), its step of steps, the latest preview, whether the job was interrupted.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from sdstudio.engine.errors import SDStudioError
from sdstudio.engine.request import StepInfo

MAX_QUEUED = 16  # jobs waiting behind the running one; more is a 503, not an ever-growing backlog


class QueueFull(SDStudioError):
    """The queue holds MAX_QUEUED jobs already."""


@dataclass
class Progress:
    """What /progress shows of the running job (all zero / None when idle)."""

    job: str = ""
    job_count: int = 0
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    started: float = 0.0
    interrupted: bool = False
    preview: Image.Image | None = field(default=None, repr=False)
    queued: int = 0

    @property
    def fraction(self) -> float:
        """A1111's progress: whole batches done plus the share of this one's steps."""
        if not self.job_count:
            return 0.0
        within = self.sampling_step / self.sampling_steps if self.sampling_steps else 0.0
        return min(1.0, (self.job_no + within) / self.job_count)


# work(engine, report, should_cancel): report(job_no, job_count, StepInfo | None) moves the progress on.
Report = Callable[[int, int, StepInfo | None], None]
Work = Callable[[Any, Report, Callable[[], bool]], Any]


@dataclass
class _Job:
    name: str
    work: Work
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class JobQueue:
    def __init__(self, engine: Any):
        self.engine = engine
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._progress = Progress()
        self._interrupt = threading.Event()
        self._waiting = 0
        self._thread = threading.Thread(target=self._run, name="sdstudio-server-worker", daemon=True)
        self._thread.start()

    async def run(self, name: str, work: Work) -> Any:
        """Queue `work` and wait for its outcome (its exception re-raised here)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._waiting >= MAX_QUEUED:
                raise QueueFull(f"the queue is full ({MAX_QUEUED} jobs waiting); try again later")
            self._waiting += 1
        job = _Job(name, work, loop, loop.create_future())
        self._jobs.put(job)
        return await job.future

    def interrupt(self) -> None:
        """Stop the running job at its next step (A1111's interrupt: queued jobs still run)."""
        with self._lock:
            if self._progress.job:
                self._interrupt.set()
                self._progress.interrupted = True

    def progress(self) -> Progress:
        with self._lock:
            return Progress(**{**self._progress.__dict__, "queued": self._waiting})

    def close(self) -> None:
        """Stop after the running job, interrupted; the queued ones are not started."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                stopping = SDStudioError("the server is stopping")
                job.loop.call_soon_threadsafe(_settle, job.future, None, stopping)
        self.interrupt()
        self._jobs.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                self._waiting -= 1
                self._interrupt.clear()
                self._progress = Progress(job=job.name, started=time.time(), job_count=1)
            try:
                outcome, error = job.work(self.engine, self._report, self._interrupt.is_set), None
            except BaseException as exc:  # to the waiting request (which logs a bug); the worker carries on
                outcome, error = None, exc
            finally:
                with self._lock:
                    self._progress = Progress()
            job.loop.call_soon_threadsafe(_settle, job.future, outcome, error)

    def _report(self, job_no: int, job_count: int, info: StepInfo | None) -> None:
        with self._lock:
            p = self._progress
            p.job_no, p.job_count = job_no, job_count
            if info is None:  # a new batch starts
                p.sampling_step, p.sampling_steps = 0, 0
                return
            p.sampling_step, p.sampling_steps = info.step + 1, info.total
            if info.preview is not None:
                p.preview = info.preview


def _settle(future: asyncio.Future, outcome: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(outcome)
