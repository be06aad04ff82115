"""Control maps are made off the GUI thread; only the latest request of a layer is shown; failures are
said."""

from __future__ import annotations

import threading
import time

import numpy as np
from PIL import Image

from sdstudio.ui.control_preview import MapMaker
from sdstudio.ui.imageconv import qimage_to_pil
from tests.ui import preprocessor_spy


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (12, 20, 3), np.uint8))


def test_the_map_is_made_on_another_thread_while_the_gui_stays_free(qtbot, monkeypatch):
    gate = threading.Event()
    seen = preprocessor_spy.install(monkeypatch, delay=gate)
    maker = MapMaker()
    image = _image(0)
    began = time.perf_counter()
    maker.request("a", "invert", image)
    asked = time.perf_counter() - began
    qtbot.wait(100)  # the GUI thread runs its event loop while the preprocessor is still busy
    assert maker.busy()
    with qtbot.waitSignal(maker.mapReady, timeout=5000) as blocker:
        gate.set()
    print(f"request() returned in {asked * 1000:.1f} ms")
    assert asked < 0.5
    key, made = blocker.args
    assert key == "a" and np.array_equal(np.asarray(qimage_to_pil(made)), 255 - np.asarray(image))
    assert seen.calls[0][3] != threading.main_thread().name


def test_a_superseded_request_is_never_shown(qtbot, monkeypatch):
    gate = threading.Event()
    preprocessor_spy.install(monkeypatch, delay=gate)
    maker = MapMaker()
    shown = []
    maker.mapReady.connect(lambda key, image: shown.append((key, qimage_to_pil(image))))
    maker.request("a", "invert", _image(1))
    maker.request("a", "invert", _image(2))
    maker.request("b", "invert", _image(3))
    gate.set()
    qtbot.waitUntil(lambda: len(shown) == 2 and not maker.busy(), timeout=5000)
    qtbot.wait(50)
    assert sorted(k for k, _ in shown) == ["a", "b"]
    [a] = [img for k, img in shown if k == "a"]
    assert np.array_equal(np.asarray(a), 255 - np.asarray(_image(2)))


def test_forget_drops_what_is_on_its_way(qtbot, monkeypatch):
    gate = threading.Event()
    preprocessor_spy.install(monkeypatch, delay=gate)
    maker = MapMaker()
    shown = []
    maker.mapReady.connect(lambda key, image: shown.append(key))
    maker.request("a", "invert", _image(1))
    maker.forget("a")
    gate.set()
    qtbot.waitUntil(lambda: not maker.busy(), timeout=5000)
    qtbot.wait(50)
    assert shown == []


def test_a_failing_preprocessor_says_so_in_one_line(qtbot, monkeypatch):
    preprocessor_spy.install(monkeypatch)
    maker = MapMaker()
    with qtbot.waitSignal(maker.mapFailed, timeout=5000) as blocker:
        maker.request("a", "depth_midas", _image(1))
    key, message = blocker.args
    assert key == "a" and "depth_midas" in message and "no annotator file" in message


def test_an_unexpected_error_is_logged_and_named(qtbot, monkeypatch, home):
    preprocessor_spy.install(monkeypatch)
    monkeypatch.setattr("sdstudio.ui.control_preview.run_preprocessor",
                        lambda *a: (_ for _ in ()).throw(ZeroDivisionError("boom")))
    maker = MapMaker()
    with qtbot.waitSignal(maker.mapFailed, timeout=5000) as blocker:
        maker.request("a", "canny", _image(1))
    assert "ZeroDivisionError: boom" in blocker.args[1] and "details in" in blocker.args[1]


def test_a_burst_of_requests_runs_one_map_at_a_time_and_skips_the_ones_overtaken(qtbot, monkeypatch):
    """Dragging a setting asks for a map per value: only the running one and the last are made, never side by
    side, and only the last is shown."""
    gate = threading.Event()
    seen = preprocessor_spy.install(monkeypatch, delay=gate)
    maker = MapMaker()
    shown = []
    maker.mapReady.connect(lambda key, image: shown.append(qimage_to_pil(image)))
    maker.request("a", "invert", _image(0))
    qtbot.waitUntil(lambda: len(seen.calls) == 1, timeout=5000)  # the first map is being made (held by the gate)
    for seed in range(1, 10):
        maker.request("a", "invert", _image(seed))
    gate.set()
    qtbot.waitUntil(lambda: len(shown) == 1 and not maker.busy(), timeout=5000)
    qtbot.wait(50)
    assert len(seen.calls) == 2 and len({call[3] for call in seen.calls}) == 1  # one worker thread
    assert len(shown) == 1 and np.array_equal(np.asarray(shown[0]), 255 - np.asarray(_image(9)))


def test_the_worker_thread_ends_when_idle_and_a_new_request_starts_another(qtbot, monkeypatch):
    monkeypatch.setattr("sdstudio.ui.control_preview.IDLE_SECONDS", 0.05)
    maker = MapMaker()
    with qtbot.waitSignal(maker.mapReady, timeout=5000):
        maker.request("a", "invert", _image(1))
    qtbot.waitUntil(lambda: maker._thread is None, timeout=5000)
    with qtbot.waitSignal(maker.mapReady, timeout=5000):
        maker.request("a", "invert", _image(2))
