"""GUI responsiveness while the worker computes: a timing measurement, so `perf` (python -m pytest -q -m perf -s)."""

import time

import numpy as np
import pytest
from PySide6.QtCore import QTimer

from sdstudio.ui.worker import PREVIEW_INTERVAL_MS

PROBE_MS = 10
P99_LIMIT = 0.150  # generous: the target is 50 ms, and this machine is shared; the printed figures tell


def probe_latencies(qtbot, window, until) -> np.ndarray:
    """How late a 10 ms QTimer fires on the GUI thread while `until()` is false (seconds)."""
    late: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        late.append(max(0.0, now - last[0] - PROBE_MS / 1000))
        last[0] = now

    timer = QTimer(window)
    timer.setTimerType(timer.timerType().PreciseTimer)
    timer.timeout.connect(tick)
    timer.start(PROBE_MS)
    qtbot.waitUntil(until, timeout=60_000)
    timer.stop()
    return np.array(late)


@pytest.mark.perf
def test_event_loop_stays_responsive_while_the_worker_computes(qtbot, make_window, engine):
    # Real CPU work in the worker thread: 128x128 matmul chains, the GIL released inside torch and retaken
    # between ops, previews converted to QImages there too, as the real engine does.
    engine.matmul, engine.step_seconds = 128, 0.08
    window = make_window(preview_ms=PREVIEW_INTERVAL_MS)  # the app's own preview rate
    window.panel.prompt_edit.setPlainText("cat face")
    window.panel.steps_spin.setValue(30)
    window.panel.width_spin.setValue(256)
    window.panel.height_spin.setValue(256)
    results = []
    window.resultReady.connect(results.append)
    window.generate()
    qtbot.waitUntil(lambda: engine.steps_run >= 1, timeout=30_000)
    late = probe_latencies(qtbot, window, lambda: bool(results))
    p99 = float(np.percentile(late, 99))
    print(f"GUI latency while generating: p50 {np.median(late) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
          f"max {late.max() * 1000:.1f} ms over {len(late)} ticks (target p99 50 ms)")
    assert len(late) > 100
    assert p99 < P99_LIMIT
