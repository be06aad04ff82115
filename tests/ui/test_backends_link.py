"""The app with remote backends: a fake A1111 server (tests/remote/fake_a1111.py) as a listed server, the
local fake engine as "This computer", the real history store."""

import pytest
from PIL import Image

from sdstudio.engine.request import GenerationRequest
from sdstudio.history.store import HistoryStore
from sdstudio.remote.servers import LOCAL_NAME, Server
from sdstudio.ui.history_link import HistoryLink
from sdstudio.ui.imageconv import pil_to_qimage
from sdstudio.ui.settings import load_backends
from tests.remote.fake_a1111 import FakeA1111, colour
from tests.ui.fake_engine import result_colour


@pytest.fixture
def fake():
    server = FakeA1111(steps_seconds=0.03)
    yield server
    server.kill()


@pytest.fixture
def history(window):
    store = HistoryStore.default()
    link = HistoryLink(store, window)
    yield link
    link.flush()
    store.close()


def run(qtbot, window, request, timeout=10000):
    """Queue `request`; the job's output after it finished."""
    with qtbot.waitSignal(window.worker.jobFinished, timeout=timeout) as done:
        job = window.submit_request(request)
    assert done.args[0].job_id == job
    return done.args[0]


def test_a_queued_job_runs_on_the_server_with_previews_and_lands_in_history(qtbot, window, history, fake,
                                                                            engine):
    window.backends.apply(False, [Server("box", fake.url)])
    assert load_backends(window.settings) == (False, [Server("box", fake.url)])  # saved
    routed, previews = [], []
    badge = window.backends.badge
    window.worker.jobRouted.connect(lambda job, name: routed.append((job, name, badge.text())))
    window.worker.previewReady.connect(lambda job, step, image: previews.append(image))
    with qtbot.waitSignal(history.saved, timeout=10000) as saved:
        out = run(qtbot, window, GenerationRequest(prompt="a fox", steps=12, seed=7, width=64, height=64))
    assert routed == [(out.job_id, "box", "on box")] and engine.generated == []  # never ran here
    assert fake.bodies[0][0] == "txt2img" and out.images[0].pixelColor(0, 0).getRgb()[:3] == colour(7)
    assert previews and previews[-1].width() == 64  # the server's previews reached the window
    assert window.backends.badge.isHidden()  # nothing runs now
    first = saved.args[0][0]
    text = Image.open(first.file).text["parameters"]
    for written in ("Backend: box", "Seed: 7", "Steps: 12", "Model hash: 0123456789"):
        assert written in text
    # Lineage: img2img on the server from that entry records it as the parent.
    window.set_input_image(pil_to_qimage(Image.new("RGB", (64, 64), "red")), first.id)
    with qtbot.waitSignal(history.saved, timeout=10000) as saved:
        with qtbot.waitSignal(window.worker.jobFinished, timeout=10000):
            window.generate()
    child = saved.args[0][0]
    assert fake.bodies[-1][0] == "img2img" and child.parent_id == first.id and child.mode == "img2img"


def test_killing_the_server_mid_job_fails_that_job_cleanly_and_the_next_runs_here(qtbot, window, fake,
                                                                                  engine):
    window.backends.apply(False, [Server("box", fake.url)])
    with qtbot.waitSignal(window.worker.jobFailed, timeout=15000) as failed:
        job = window.submit_request(GenerationRequest(steps=300, seed=1, width=8, height=8))
        qtbot.waitUntil(fake.started.is_set, timeout=5000)
        window.backends.apply(True, [Server("box", fake.url)])  # this computer joins while box works
        fake.kill()
    assert failed.args[0] == job
    assert failed.args[1].startswith("server 'box' (http://127.0.0.1:")
    assert "Traceback" not in failed.args[1] and "Unexpected" not in failed.args[1]
    routed = []
    window.worker.jobRouted.connect(lambda job, name: routed.append(name))
    outs = [run(qtbot, window, GenerationRequest(steps=3, seed=s, width=8, height=8)) for s in (21, 22)]
    assert routed == [LOCAL_NAME, LOCAL_NAME]  # box rests after going away: the queue goes elsewhere
    assert [o.images[0].pixelColor(0, 0).getRgb()[:3] for o in outs] == [result_colour(21), result_colour(22)]


def test_two_servers_run_two_jobs_at_once(qtbot, window):
    one, two = FakeA1111(steps_seconds=0.05), FakeA1111(steps_seconds=0.05)
    try:
        window.backends.apply(False, [Server("one", one.url), Server("two", two.url)])
        finished = []
        window.worker.jobFinished.connect(finished.append)
        for seed in (1, 2):
            window.submit_request(GenerationRequest(steps=20, seed=seed, width=8, height=8))
        qtbot.waitUntil(lambda: one.started.is_set() and two.started.is_set(), timeout=5000)
        assert window.backends.badge.text() in ("on one, two", "on two, one")
        qtbot.waitUntil(lambda: len(finished) == 2, timeout=10000)
        assert len(one.bodies) == len(two.bodies) == 1
    finally:
        one.kill()
        two.kill()


def test_the_model_picker_lists_the_target_servers_models(qtbot, window, fake):
    window.backends.apply(False, [Server("box", fake.url)])
    combo = window.panel.model_combo
    qtbot.waitUntil(lambda: combo.findData("beta.safetensors [abcdef0123]") >= 0, timeout=5000)
    assert combo.itemText(0) == "box: its current model"
    window.backends.apply(True, [Server("box", fake.url)])  # this computer first again: its models
    assert combo.findData("beta.safetensors [abcdef0123]") < 0 and combo.findData("") == 0
