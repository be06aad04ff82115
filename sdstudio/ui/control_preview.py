"""Runs a control layer's preprocessor off the GUI thread, for the map shown on the canvas.

Preprocessors are numpy work (a canny of a 1024 px photo takes a noticeable fraction of a second), so the GUI
thread only asks and shows: one daemon thread per request, and each result carries the request's ticket, so a
late answer for an image or setting the user has since changed is dropped rather than shown. The map arrives
as a QImage made on the worker thread (imageconv's QImages own their pixels).
"""

from __future__ import annotations

import threading

from PIL import Image
from PySide6.QtCore import QObject, Signal

from sdstudio.errorlog import user_message
from sdstudio.ui.control_state import run_preprocessor
from sdstudio.ui.imageconv import pil_to_qimage


class MapMaker(QObject):
    """`request(key, …)` preprocesses in the background; `mapReady(key, QImage)` or `mapFailed(key, message)`
    follows on the GUI thread, only for the latest request of each key."""

    mapReady = Signal(object, object)  # key, QImage
    mapFailed = Signal(object, str)  # key, one-line reason
    _done = Signal(object, int, object, str)  # key, ticket, QImage or None, error

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._tickets: dict[object, int] = {}
        self._threads: list[threading.Thread] = []
        self._done.connect(self._deliver)  # queued: emitted from the worker thread

    def request(self, key: object, preprocessor: str, image: Image.Image,
                params: tuple[tuple[str, float], ...] = ()) -> None:
        ticket = self._tickets.get(key, 0) + 1
        self._tickets[key] = ticket
        image = image.copy()  # the caller may change its image while the thread reads this one
        thread = threading.Thread(target=self._run, args=(key, ticket, preprocessor, image, params),
                                  name="control-map", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def forget(self, key: object) -> None:
        """Drop whatever is on its way for `key` (its layer was removed or changed source)."""
        self._tickets[key] = self._tickets.get(key, 0) + 1

    def busy(self) -> bool:
        return any(t.is_alive() for t in self._threads)

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
