"""The queue across backends: one FIFO of jobs, several lanes (the local engine, each listed server) that each
run one job at a time. A free lane takes the oldest job it may run, so with two servers both work.

A lane whose server went away (the job failed with ServerUnavailable) rests for `rest_s` before it takes
another job, so the rest of the queue goes to the other lanes instead of failing one by one on a dead server;
after the rest it tries again (the server may be back). Plain threading, no Qt: the app's worker is a thin
Qt shell over it, and tests drive it directly.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Job = TypeVar("Job")
REST_S = 30.0


@dataclass
class _Lane(Generic[Job]):
    running: Job | None = None
    resting_until: float = 0.0


class Dispatcher(Generic[Job]):
    """`accepts(lane, job)` says whether a lane may run a job (a model load belongs to one lane)."""

    def __init__(self, accepts: Callable[[str, Job], bool] = lambda _lane, _job: True, rest_s: float = REST_S,
                 clock: Callable[[], float] = time.monotonic):
        self.accepts, self.rest_s, self.clock = accepts, rest_s, clock
        self._cond = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._lanes: dict[str, _Lane[Job]] = {}
        self._stopping = False

    # --- configuration -----------------------------------------------------------------------------
    def set_lanes(self, names: list[str]) -> list[str]:
        """The lanes from now on; a removed lane finishes its running job and takes no other. Returns the
        names that are new (their runners need starting)."""
        with self._cond:
            added = [name for name in names if name not in self._lanes]
            # In the order given (the first is the app's target); a kept lane keeps its state.
            self._lanes = {name: self._lanes.get(name) or _Lane() for name in names}
            self._cond.notify_all()
            return added

    def lanes(self) -> list[str]:
        with self._cond:
            return list(self._lanes)

    # --- the queue ---------------------------------------------------------------------------------
    def put(self, job: Job) -> None:
        with self._cond:
            self._queue.append(job)
            self._cond.notify_all()

    def ticket(self, lane: str) -> object:
        """The lane as it is now, for its runner: a lane removed and added again is a new lane, and the old
        runner (maybe still finishing a job) gets None from `take` instead of serving it twice."""
        with self._cond:
            return self._lanes[lane]

    def take(self, lane: str, ticket: object = None) -> Job | None:
        """Block until `lane` is free of rest and a job it accepts waits; that job, now running on it. None
        when the dispatcher stops or the lane was removed (or is not `ticket`'s any more): its runner ends."""
        with self._cond:
            while True:
                state = self._lanes.get(lane)
                if self._stopping or state is None or (ticket is not None and state is not ticket):
                    return None
                state.running = None
                wait = state.resting_until - self.clock()
                if wait <= 0:
                    for job in self._queue:
                        if self.accepts(lane, job):
                            self._queue.remove(job)
                            state.running = job
                            return job
                self._cond.wait(wait if wait > 0 else None)

    def finish(self, lane: str, unavailable: bool = False, ticket: object = None) -> None:
        """The lane's job ended; `unavailable`: its server went away, so the lane rests."""
        with self._cond:
            state = self._lanes.get(lane)
            if state is not None and (ticket is None or state is ticket):
                state.running = None
                if unavailable:
                    state.resting_until = self.clock() + self.rest_s
            self._cond.notify_all()

    def resting(self, lane: str) -> bool:
        with self._cond:
            state = self._lanes.get(lane)
            return state is not None and state.resting_until > self.clock()

    def clear(self, keep: Callable[[Job], bool] = lambda _job: False) -> list[Job]:
        """Drop the waiting jobs except those `keep` says; returns the dropped ones."""
        with self._cond:
            dropped = [job for job in self._queue if not keep(job)]
            self._queue = collections.deque(job for job in self._queue if keep(job))
            return dropped

    def waiting(self, counts: Callable[[Job], bool] = lambda _job: True) -> int:
        with self._cond:
            return sum(1 for job in self._queue if counts(job))

    def running(self) -> dict[str, Job]:
        """Lane name -> the job it runs now."""
        with self._cond:
            return {name: s.running for name, s in self._lanes.items() if s.running is not None}

    def stop(self) -> list[Job]:
        """Every runner's next `take` returns None; the waiting jobs are dropped and returned."""
        with self._cond:
            self._stopping = True
            dropped = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
            return dropped
