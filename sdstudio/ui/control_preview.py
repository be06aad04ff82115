"""Runs a control layer's preprocessor off the GUI thread, for the map shown on the canvas.

Preprocessors are numpy work (a canny of a 1024 px photo takes a noticeable fraction of a second), so the GUI
thread only asks and shows. One daemon thread works through the requests, one at a time, so dragging a
setting's spin box queues no pile of maps: a new request for a layer replaces the one still waiting for it,
and each result carries its request's ticket, so a late answer for an image or setting the user has since
changed is dropped rather than shown. The thread ends after a few idle seconds and starts again when asked.
The map arrives as a QImage made on the worker thread (imageconv's QImages own their pixels).
"""

from __future__ import annotations

import threading

from PIL import Image
from PySide6.QtCore import QObject, Signal

from sdstudio.errorlog import user_message
from sdstudio.ui.control_state import run_preprocessor
from sdstudio.ui.imageconv import pil_to_qimage

IDLE_SECONDS = 5.0  # the worker thread's wait for more work before it ends

_Job = tuple[int, str, Image.Image, tuple[tuple[str, float], ...]]  # ticket, preprocessor, image, params


class MapMaker(QObject):
    """`request(key, …)` preprocesses in the background; `mapReady(key, QImage)` or `mapFailed(key, message)`
    follows on the GUI thread, only for the latest request of each key."""

    mapReady = Signal(object, object)  # key, QImage
    mapFailed = Signal(object, str)  # key, one-line reason
    _done = Signal(object, int, object, str)  # key, ticket, QImage or None, error

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._tickets: dict[object, int] = {}
        self._pending: dict[object, _Job] = {}  # the latest request of each key not yet started
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._working = False
        self._done.connect(self._deliver)  # queued: emitted from the worker thread

    def request(self, key: object, preprocessor: str, image: Image.Image,
                params: tuple[tuple[str, float], ...] = ()) -> None:
        ticket = self._tickets.get(key, 0) + 1
        self._tickets[key] = ticket
        job = (ticket, preprocessor, image.copy(), tuple(params))  # the caller may change its image meanwhile
        with self._lock:
            self._pending[key] = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="control-map", daemon=True)
                self._thread.start()
            self._lock.notify()

    def forget(self, key: object) -> None:
        """Drop whatever is on its way for `key` (its layer was removed or changed source)."""
        self._tickets[key] = self._tickets.get(key, 0) + 1
        with self._lock:
            self._pending.pop(key, None)

    def busy(self) -> bool:
        with self._lock:
            return bool(self._pending) or self._working

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._lock.wait(IDLE_SECONDS)
                if not self._pending:
                    self._thread = None  # under the lock: a request now starts a new thread
                    return
                key = next(iter(self._pending))
                job = self._pending.pop(key)
                self._working = True
            try:
                self._run(key, *job)
            finally:
                with self._lock:
                    self._working = False

    def _run(self, key: object, ticket: int, preprocessor: str, image: Image.Image,
             params: tuple[tuple[str, float], ...]) -> None:
        try:
            result = (pil_to_qimage(run_preprocessor(preprocessor, image, params)), "")
        except Exception as exc:  # a thread's error must reach the user, not vanish with the thread
            result = (None, f"{preprocessor}: {user_message(exc, 'control map')}")
        try:
            self._done.emit(key, ticket, *result)
        except RuntimeError:
            pass  # the window (and this maker) closed while the map was being made: nobody is left to show it

    def _deliver(self, key: object, ticket: int, image, error: str) -> None:
        if self._tickets.get(key) != ticket:
            return  # superseded
        if image is None:
            self.mapFailed.emit(key, error)
        else:
            self.mapReady.emit(key, image)
