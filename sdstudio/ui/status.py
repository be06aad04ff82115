"""Progress reporting: step x/y, speed and ETA, queue length, and a non-modal error banner."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QToolButton, QWidget


class StepRate:
    """Speed and remaining time of a job from the times at which its steps completed.

    The speed is a moving average over the recent steps, so a slow first step (model warm-up) does not
    dominate the estimate for long.
    """

    def __init__(self, window: int = 8, clock=time.monotonic):
        self._window, self._clock = window, clock
        self._times: list[tuple[int, float]] = []

    def reset(self) -> None:
        self._times.clear()

    def add(self, step: int) -> None:
        self._times.append((step, self._clock()))
        del self._times[: -self._window - 1]

    def per_second(self) -> float | None:
        if len(self._times) < 2:
            return None
        (s0, t0), (s1, t1) = self._times[0], self._times[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None

    def eta_seconds(self, total: int) -> float | None:
        rate = self.per_second()
        if not rate or not self._times:
            return None
        return max(total - self._times[-1][0], 0) / rate


def format_rate(rate: float | None) -> str:
    if rate is None:
        return ""
    return f"{rate:.2f} it/s" if rate >= 1 else f"{1 / rate:.2f} s/it"


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"ETA {minutes}:{secs:02d}"


class JobStatus(QWidget):
    """Status-bar widget: progress bar with 'Step x/y', speed and ETA, and the queue length."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 4, 0)
        self.message = QLabel()
        self.bar = QProgressBar(textVisible=True)
        self.bar.setMinimumWidth(self.fontMetrics().horizontalAdvance("Step 150/150") * 2)
        self.speed = QLabel()
        self.queue = QLabel()
        for w in (self.message, self.bar, self.speed, self.queue):
            layout.addWidget(w)
        self._rate = StepRate()
        self.idle()

    def idle(self, message: str = "Ready") -> None:
        self.message.setText(message)
        self.bar.hide()
        self.speed.clear()
        self._rate.reset()

    def loading(self, message: str, fraction: float | None) -> None:
        """A model load; `fraction` None while nothing is measurable yet (the engine is still starting)."""
        self.message.setText(message)
        self.bar.show()
        if fraction is None:
            self.bar.setRange(0, 0)
            return
        self.bar.setRange(0, 100)
        self.bar.setValue(int(100 * fraction))
        self.bar.setFormat("%p%")

    def started(self) -> None:
        self._rate.reset()
        self._rate.add(0)
        self.message.setText("Generating")
        self.bar.show()
        self.bar.setRange(0, 0)  # busy until the first step reports its total
        self.speed.clear()

    def note(self, message: str) -> None:
        """What the running job does between steps (loading a hires checkpoint), until its next step."""
        self.message.setText(message)

    def step(self, done: int, total: int) -> None:
        self.message.setText("Generating")  # ends a note
        self._rate.add(done)
        self.bar.setRange(0, total)
        self.bar.setValue(done)
        self.bar.setFormat(f"Step {done}/{total}")
        parts = [format_rate(self._rate.per_second()), format_eta(self._rate.eta_seconds(total))]
        self.speed.setText(" · ".join(p for p in parts if p))

    def set_queue(self, waiting: int) -> None:
        self.queue.setText(f"Queue: {waiting}" if waiting else "")


class BackendBadge(QLabel):
    """Where the running jobs run ("on GPU box, This computer"): one name per backend busy now; hidden when
    idle. Fed by the worker's jobRouted and each job's end."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("backendBadge")
        self._jobs: dict[int, str] = {}
        self.hide()

    def routed(self, job: int, backend: str) -> None:
        self._jobs[job] = backend
        self._show()

    def ended(self, job: int) -> None:
        self._jobs.pop(job, None)
        self._show()

    def _show(self) -> None:
        names = list(dict.fromkeys(self._jobs.values()))
        self.setText(f"on {', '.join(names)}" if names else "")
        self.setToolTip("Where the running jobs run (Generate → Backends…)")
        self.setVisible(bool(names))


class ErrorBanner(QFrame):
    """A dismissible message strip above the canvas; it never blocks the window. A message may offer one
    action (a button) that fixes what it names; clicking it hides the banner and runs the action."""

    dismissed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("errorBanner")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        self.icon = QLabel("⚠")
        self.text = QLabel(wordWrap=True, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action_button = QPushButton()
        self.action_button.clicked.connect(self._act)
        self._action = None
        close = QToolButton(text="✕", autoRaise=True, toolTip="Dismiss")
        close.clicked.connect(self.dismiss)
        layout.addWidget(self.icon, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.action_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_error(self, message: str, action_text: str = "", action=None) -> None:
        """Show `message`; with `action_text` and `action` (a callable), a button that runs it."""
        self.text.setText(message)
        self._action = action if action_text else None
        self.action_button.setText(action_text)
        self.action_button.setVisible(self._action is not None)
        self.show()

    def _act(self) -> None:
        action, self._action = self._action, None
        self.hide()
        if action is not None:
            action()

    def dismiss(self) -> None:
        self.hide()
        self.dismissed.emit()
