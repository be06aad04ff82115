import threading
import time

import pytest
from PySide6.QtGui import QColor

from sdstudio.engine.errors import GenerationError, SDStudioError
from sdstudio.engine.request import GenerationRequest
from sdstudio.ui import worker as worker_module
from sdstudio.ui.worker import PreviewThrottle, Worker
from tests.ui.fake_engine import FakeEngine, preview_colour, result_colour


@pytest.fixture
def engine():
    return FakeEngine(step_seconds=0.005)


@pytest.fixture
def worker(qtbot, engine, home):
    w = Worker(lambda: engine, preview_interval_ms=30)
    w.start()
    yield w
    w.stop()


def request(**kw) -> GenerationRequest:
    return GenerationRequest(**({"prompt": "cat face", "steps": 4, "width": 8, "height": 8} | kw))


def record(worker, *names):
    events = []
    for name in names:
        getattr(worker, name).connect(lambda *args, name=name: events.append((name, *args)))
    return events


def test_queued_jobs_run_in_submission_order(qtbot, worker, engine):
    events = record(worker, "jobStarted", "jobFinished")
    with qtbot.waitSignals([worker.jobFinished] * 3, timeout=5000):
        ids = [worker.submit(request(seed=s)) for s in (11, 22, 33)]
    started = [e[1] for e in events if e[0] == "jobStarted"]
    finished = [e[1].job_id for e in events if e[0] == "jobFinished"]
    assert started == ids and finished == ids
    assert [r.seed for r in engine.generated] == [11, 22, 33]


def test_result_images_arrive_with_every_preview_of_the_job(qtbot, worker):
    with qtbot.waitSignal(worker.jobFinished, timeout=5000) as blocker:
        worker.submit(request(seed=5, steps=6))
    out = blocker.args[0]
    assert [step for step, _ in out.previews] == list(range(6))
    assert out.previews[-1][1].pixelColor(0, 0) == QColor(*preview_colour(5, 6))
    assert out.images[0].pixelColor(3, 3) == QColor(*result_colour(5))
    assert out.result.requests[0].seed == 5


def test_engine_is_created_and_used_in_the_worker_thread(qtbot, worker, engine):
    with qtbot.waitSignal(worker.jobFinished, timeout=5000):
        worker.submit(request())
    assert engine.thread is not None and engine.thread is not threading.main_thread()


def test_previews_are_coalesced_and_the_newest_is_delivered(qtbot, engine):
    engine.step_seconds = 0.004
    w = Worker(lambda: engine, preview_interval_ms=60)
    previews = []
    w.previewReady.connect(lambda job, step, img: previews.append((time.monotonic(), step)))
    w.start()
    try:
        with qtbot.waitSignal(w.jobFinished, timeout=5000):
            w.submit(request(steps=40))
        qtbot.wait(150)
    finally:
        w.stop()
    assert 2 <= len(previews) < 40
    # how far apart they arrive is timing: tests/ui/test_worker_timing.py (perf)
    assert previews[-1][1] == 39


def test_throttle_delivers_a_lone_offer_without_waiting_for_another(qtbot):
    throttle = PreviewThrottle(interval_ms=10_000)
    from PySide6.QtGui import QImage

    with qtbot.waitSignal(throttle.ready, timeout=1000) as blocker:
        throttle.offer(1, 0, QImage(2, 2, QImage.Format.Format_RGB888))
    assert blocker.args[:2] == [1, 0]


def test_cancel_stops_within_one_step_and_leaves_no_result(qtbot, worker, engine):
    engine.step_seconds = 0.02
    finished, cancelled = [], []
    worker.jobFinished.connect(finished.append)
    worker.jobCancelled.connect(cancelled.append)
    job = worker.submit(request(steps=200))
    qtbot.waitUntil(lambda: engine.steps_run >= 3, timeout=5000)
    engine.gate.clear()  # freeze the engine between steps so "within one step" is exact
    steps_at_cancel = engine.steps_run
    worker.cancel_current()
    engine.gate.set()
    qtbot.waitUntil(lambda: cancelled == [job], timeout=5000)
    assert engine.steps_run <= steps_at_cancel + 1
    assert finished == []


def test_clear_queue_drops_waiting_jobs_and_keeps_the_running_one(qtbot, worker, engine):
    engine.step_seconds = 0.02
    finished, cancelled, counts = [], [], []
    worker.jobFinished.connect(lambda out: finished.append(out.job_id))
    worker.jobCancelled.connect(cancelled.append)
    worker.queueChanged.connect(counts.append)
    first = worker.submit(request(steps=10))
    qtbot.waitUntil(lambda: engine.steps_run >= 1, timeout=5000)
    later = [worker.submit(request()) for _ in range(3)]
    assert worker.pending() == 3
    assert worker.clear_queue() == 3
    qtbot.waitUntil(lambda: finished == [first], timeout=5000)
    assert cancelled == later and counts[-1] == 0 and len(engine.generated) == 1


def test_a_corrupt_model_fails_its_job_and_the_next_job_runs(qtbot, worker, engine, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\xff" * 64)
    failed, finished = [], []
    worker.jobFailed.connect(lambda job, msg: failed.append((job, msg)))
    worker.jobFinished.connect(lambda out: finished.append(out.job_id))
    bad_job = worker.submit(request(model=str(bad)))
    good_job = worker.submit(request())
    qtbot.waitUntil(lambda: finished == [good_job], timeout=5000)
    assert failed and failed[0][0] == bad_job and "broken.safetensors" in failed[0][1]
    assert engine.loaded == [""]


def test_unexpected_exceptions_become_error_signals(qtbot, home):
    calls = []

    def factory():
        calls.append(1)
        raise RuntimeError("no engine here")

    w = Worker(factory)
    w.start()
    try:
        with qtbot.waitSignal(w.jobFailed, timeout=5000) as blocker:
            w.submit(request())
        assert "RuntimeError" in blocker.args[1] and "no engine here" in blocker.args[1]
        assert "Traceback" not in blocker.args[1] and str(home / "logs" / "sdstudio.log") in blocker.args[1]
        with qtbot.waitSignal(w.jobFailed, timeout=5000):
            w.submit(request())
        assert len(calls) == 2
    finally:
        w.stop()


def test_model_is_loaded_once_for_consecutive_jobs(qtbot, worker, engine):
    loaded = []
    worker.modelLoaded.connect(loaded.append)
    with qtbot.waitSignals([worker.jobFinished] * 2, timeout=5000):
        worker.load_model("")
        worker.submit(request())
        worker.submit(request())
    assert engine.loaded == [""] and len(loaded) == 1 and loaded[0].family == "demo"


def slow_loading_engine() -> FakeEngine:
    return FakeEngine(load_steps=100_000, load_step_seconds=0.002)


def test_stop_during_a_long_load_abandons_it_at_the_next_progress_report(qtbot, home):
    engine = slow_loading_engine()
    w = Worker(lambda: engine)
    w.start()
    w.load_model("")
    qtbot.waitUntil(lambda: engine.progress_calls >= 5, timeout=5000)
    assert w.stop() is True
    calls_at_return = engine.progress_calls
    qtbot.wait(50)
    assert engine.progress_calls == calls_at_return < 1000  # abandoned, with most of the load left
    assert engine.loaded == []


def test_cancel_during_a_load_cancels_its_job_and_the_next_job_loads_again(qtbot, home):
    engine = slow_loading_engine()
    w = Worker(lambda: engine)
    cancelled = []
    w.jobCancelled.connect(cancelled.append)
    w.start()
    try:
        job = w.submit(request())
        qtbot.waitUntil(lambda: engine.progress_calls >= 3, timeout=5000)
        w.cancel_current()
        qtbot.waitUntil(lambda: cancelled == [job], timeout=5000)
        assert engine.loaded == [] and engine.generated == []
        engine.load_steps = 2
        with qtbot.waitSignal(w.jobFinished, timeout=5000):
            w.submit(request())
        assert engine.loaded == [""]
    finally:
        w.stop()


def test_a_chained_engine_error_shows_its_message_and_logs_its_cause(qtbot, worker, engine, home):
    def broken(request, on_step=None, should_cancel=None):
        try:
            raise KeyError("a tensor went missing")
        except KeyError as exc:
            raise GenerationError("generation failed: 'a tensor went missing'") from exc

    engine.generate = broken
    with qtbot.waitSignal(worker.jobFailed, timeout=5000) as blocker:
        worker.submit(request())
    message = blocker.args[1]
    assert message.startswith("generation failed: 'a tensor went missing'") and "Traceback" not in message
    log = home / "logs" / "sdstudio.log"
    assert f"details in {log}" in message and "KeyError" in log.read_text()


def test_the_default_engine_is_built_on_the_chosen_device_and_rebuilt_when_it_changes(qtbot, home, monkeypatch):
    engines, devices = [], []

    def factory(device="auto", allow_pickle=False):
        devices.append(device)
        engines.append(FakeEngine())
        return engines[-1]

    monkeypatch.setattr(worker_module, "default_engine_factory", factory)
    w = Worker()
    w.set_device("cpu")
    w.start()
    try:
        with qtbot.waitSignal(w.modelLoaded, timeout=30000):
            w.load_model("")
        with qtbot.waitSignal(w.jobFinished, timeout=30000):
            w.submit(request())
        assert devices == ["cpu"] and engines[0].loaded == [""]
        w.set_device("cuda")
        with qtbot.waitSignal(w.modelLoaded, timeout=30000):
            w.load_model("")
        assert devices == ["cpu", "cuda"] and engines[1].loaded == [""] and w.device == "cuda"
    finally:
        w.stop()


def test_an_unavailable_device_fails_the_job_with_the_engine_message(qtbot, home):
    def factory():
        raise SDStudioError("device 'cuda' was asked for, but this torch build sees no CUDA GPU")

    w = Worker(factory)
    w.start()
    try:
        with qtbot.waitSignal(w.jobFailed, timeout=5000) as blocker:
            w.load_model("")
        assert blocker.args[1] == "device 'cuda' was asked for, but this torch build sees no CUDA GPU"
        assert not (home / "logs").exists()
    finally:
        w.stop()


def test_allowing_pickles_rebuilds_the_default_engine_with_it(qtbot, home, monkeypatch):
    built = []

    def factory(device="auto", allow_pickle=False):
        built.append(allow_pickle)
        return FakeEngine()

    monkeypatch.setattr(worker_module, "default_engine_factory", factory)
    w = Worker()
    w.start()
    try:
        with qtbot.waitSignal(w.modelLoaded, timeout=5000):
            w.load_model("")
        w.set_allow_pickle(True)
        with qtbot.waitSignal(w.modelLoaded, timeout=5000):
            w.load_model("")
        assert built == [False, True]
    finally:
        w.stop()


# --- backends: lanes over remote.dispatch (a fake A1111 server, tests/remote/fake_a1111.py) -------------
@pytest.fixture
def fake_server():
    from tests.remote.fake_a1111 import FakeA1111

    server = FakeA1111(steps_seconds=0.03)
    yield server
    server.kill()


def test_a_model_load_goes_to_the_target_server_never_here(qtbot, worker, engine, fake_server):
    from sdstudio.remote.servers import Server

    worker.set_backends([Server("box", fake_server.url)], local=False)
    assert worker.target == "box" and worker.target_backend().url == fake_server.url
    with qtbot.waitSignal(worker.modelLoaded, timeout=5000) as loaded:
        worker.load_model("beta.safetensors [abcdef0123]")
    assert loaded.args[0].path == "beta.safetensors [abcdef0123]" and loaded.args[0].family_label == "on box"
    assert fake_server.model == "beta.safetensors [abcdef0123]" and engine.loaded == []


def test_cancel_interrupts_a_job_running_on_a_server(qtbot, worker, fake_server):
    from sdstudio.remote.servers import Server

    worker.set_backends([Server("box", fake_server.url)], local=False)
    with qtbot.waitSignal(worker.jobCancelled, timeout=5000) as cancelled:
        job = worker.submit(request(steps=300))
        qtbot.waitUntil(fake_server.started.is_set, timeout=5000)
        worker.cancel_current()
    assert cancelled.args == [job] and fake_server.interrupted.is_set()


def test_with_no_server_enabled_and_this_computer_off_jobs_still_run_here(qtbot, worker, engine):
    from sdstudio.remote.servers import LOCAL_NAME, Server

    worker.set_backends([Server("box", "http://127.0.0.1:9", enabled=False)], local=False)
    assert worker.target == LOCAL_NAME and worker.target_backend() is None
    with qtbot.waitSignal(worker.jobRouted, timeout=5000) as routed:
        worker.submit(request(seed=3))
    assert routed.args[1] == LOCAL_NAME
    qtbot.waitUntil(lambda: len(engine.generated) == 1, timeout=5000)


def test_a_load_waiting_for_a_backend_that_is_taken_off_is_cancelled(qtbot, worker, engine):
    from sdstudio.remote.servers import LOCAL_NAME, Server

    engine.gate.clear()  # this computer is busy with a job
    worker.submit(request(steps=2))
    qtbot.waitUntil(lambda: len(engine.generated) == 1, timeout=5000)
    load = worker.load_model("")  # waits for this computer, the target
    with qtbot.waitSignal(worker.jobCancelled, timeout=5000) as cancelled:
        worker.set_backends([Server("box", "http://127.0.0.1:9")], local=False)
    assert cancelled.args == [load] and worker.target == "box" and LOCAL_NAME not in worker._dispatch.lanes()
    engine.gate.set()


def test_an_engine_call_runs_in_the_queue_on_the_worker_thread_and_reports_to_its_owner(qtbot, worker,
                                                                                       engine):
    from sdstudio.engine.request import StepInfo

    events = record(worker, "jobStarted", "stepProgress", "jobNote", "callFinished", "callFailed",
                    "jobFailed", "jobFinished")
    seen = []

    def call(eng, on_step, should_cancel, note):
        seen.append((eng is engine, threading.current_thread().name, should_cancel()))
        note("half-way")
        on_step(StepInfo(step=0, total=2, sigma=1.0))
        on_step(StepInfo(step=0, total=2, sigma=0.0, message="loading"))  # a note, not a step
        return "result"

    with qtbot.waitSignal(worker.callFinished, timeout=5000):
        first = worker.submit(request(seed=1))
        job = worker.submit_call("", call)
    assert seen == [(True, "engine-worker", False)]
    mine = [e for e in events if e[1] == job]
    assert mine == [("jobStarted", job), ("jobNote", job, "half-way"), ("stepProgress", job, 1, 2),
                    ("jobNote", job, "loading"), ("callFinished", job, "result")]
    done = [i for i, e in enumerate(events) if e[0] == "jobFinished" and e[1].job_id == first]
    assert done and done[0] < events.index(("jobStarted", job))  # queued after the generation, run after it

    def broken(*_):
        raise SDStudioError("no tiles today")

    with qtbot.waitSignal(worker.callFailed, timeout=5000) as failed:
        worker.submit_call("", broken)
    assert "no tiles today" in failed.args[1] and not [e for e in events if e[0] == "jobFailed"]
