"""`--measure-first-image`: queue one job at launch, print the time from process start to its finished image,
then quit. bench/cold_start.py runs it to measure the app's cold start (launch -> first built-in image)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from sdstudio.ui.main_window import MainWindow
from sdstudio.ui.screenshot import DEMO_PROMPT, TIMEOUT_MS

MARK = "first image after"  # bench/cold_start.py reads the line that starts with this


class FirstImageRun(QObject):
    done = Signal(int)  # exit code: 0 when the job finished

    def __init__(self, window: MainWindow, age_seconds: Callable[[], float]):
        super().__init__(window)
        self.window, self.age_seconds = window, age_seconds
        self.job: int | None = None

    def start(self) -> None:
        w = self.window
        if not w.state.prompt.strip():
            w.state.prompt = DEMO_PROMPT
            w.panel.refresh()
        w.worker.jobFinished.connect(self._finished)
        w.worker.jobFailed.connect(self._failed)
        jobs = w.generate()
        if not jobs:
            print("no job was queued (the banner says why)", flush=True)
            QTimer.singleShot(0, lambda: self.done.emit(1))
            return
        self.job = jobs[0]
        QTimer.singleShot(TIMEOUT_MS, lambda: self._end(1, "timed out"))

    def _finished(self, out) -> None:
        if out.job_id == self.job:
            model = self.window.state.model or "built-in"
            self._end(0, f"{MARK} {self.age_seconds() * 1000:.0f} ms (model {model})")

    def _failed(self, job: int, message: str) -> None:
        if job == self.job:
            self._end(1, f"the job failed: {message}")

    def _end(self, code: int, line: str) -> None:
        if self.job is None:
            return
        self.job = None
        print(line, flush=True)
        self.done.emit(code)
