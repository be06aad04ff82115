"""`--screenshot PATH`: generate once and save the window mid-generation and after, for docs and review."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QImage

from sdstudio.ui.main_window import MainWindow

DEMO_PROMPT = "red apple"
TIMEOUT_MS = 300_000
SETTLE_MS = 1500


def generating_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}-generating{path.suffix or '.png'}")


class ScreenshotRun(QObject):
    """Queues one job; grabs the window at the first preview past a third of the steps, and at the end."""

    done = Signal(int)  # exit code: 0 when both pictures were saved after a finished job

    def __init__(self, window: MainWindow, path: Path):
        super().__init__(window)
        self.window, self.path = window, path
        self.job: int | None = None
        self.saved: list[Path] = []
        self._mid_taken = False
        self._total = 0

    def start(self) -> None:
        w = self.window
        em = w.fontMetrics().horizontalAdvance("M")
        w.resize(em * 120, em * 76)  # the same framing every time, whatever size was saved
        if not w.state.prompt.strip():
            w.state.prompt = DEMO_PROMPT
            w.panel.refresh()
        w.worker.previewReady.connect(self._preview)
        w.worker.jobFinished.connect(self._finished)
        w.worker.jobFailed.connect(self._failed)
        w.worker.stepProgress.connect(self._progress)
        self.job = w.generate()[0]
        QTimer.singleShot(TIMEOUT_MS, lambda: self._finish(1))

    def _progress(self, job: int, _done: int, total: int) -> None:
        if job == self.job:
            self._total = total

    def _preview(self, job: int, step: int, _image: QImage) -> None:
        if job == self.job and not self._mid_taken and (step + 1) * 3 >= self._total:
            self._mid_taken = True
            self._save(generating_path(self.path))

    def _finished(self, out) -> None:
        if out.job_id == self.job:
            # Give history a moment to save the image and the gallery to show its thumbnail.
            QTimer.singleShot(SETTLE_MS, lambda: self._finish(0))

    def _failed(self, job: int, _message: str) -> None:
        if job == self.job:
            QTimer.singleShot(50, lambda: self._finish(1))

    def _finish(self, code: int) -> None:
        if self.job is None:
            return
        self.job = None
        if not self._mid_taken:
            code = 1  # the job ended before any preview: say so instead of faking a mid-job picture
        self._save(self.path)
        self.done.emit(code)

    def _save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.window.grab().save(str(path))
        self.saved.append(path)
