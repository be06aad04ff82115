"""The worker's preview throttle, timed: `perf` (python -m pytest -q -m perf -s), since a loaded machine can
bunch deliveries; tests/ui/test_worker.py checks the same throttle by counts."""

import time

import pytest

from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.worker import Worker

pytestmark = pytest.mark.perf


def test_coalesced_previews_arrive_a_preview_interval_apart(qtbot, engine):
    engine.step_seconds = 0.004
    w = Worker(lambda: engine, preview_interval_ms=60)
    arrivals = []
    w.previewReady.connect(lambda job, step, img: arrivals.append(time.monotonic()))
    w.start()
    try:
        with qtbot.waitSignal(w.jobFinished, timeout=5000):
            w.submit(GenerationRequest(prompt="cat face", steps=40, width=8, height=8))
        qtbot.wait(150)
    finally:
        w.stop()
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    print(f"\npreview gaps at a 60 ms interval: {', '.join(f'{g * 1000:.0f}' for g in gaps)} ms")
    assert len(gaps) >= 1
    assert min(gaps) >= 0.055
