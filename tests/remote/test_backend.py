import threading
import time

import pytest

from sdstudio.engine.backend import Backend
from sdstudio.engine.errors import Cancelled, RemoteError, ServerUnavailable
from sdstudio.engine.request import GenerationRequest
from sdstudio.remote.backend import RemoteBackend
from sdstudio.remote.servers import Server
from tests.remote.fake_a1111 import FakeA1111, colour


@pytest.fixture
def fake():
    server = FakeA1111(steps_seconds=0.03)
    yield server
    server.kill()


def backend_for(fake) -> RemoteBackend:
    return RemoteBackend(Server("box", fake.url), poll_interval_s=0.01)


def test_it_is_a_backend_listing_and_switching_the_servers_models(fake):
    backend = backend_for(fake)
    assert isinstance(backend, Backend)
    assert backend.list_models() == ["alpha.safetensors [0123456789]", "beta.safetensors [abcdef0123]"]
    assert backend.load_model("").name == "alpha.safetensors [0123456789]"
    assert backend.load_model("beta.safetensors [abcdef0123]").path == "beta.safetensors [abcdef0123]"
    assert fake.model == "beta.safetensors [abcdef0123]" and backend.describe().summary() == "a model on box"
    with pytest.raises(RemoteError, match="HTTP 400 model 'nope.safetensors' not found"):
        backend.load_model("/here/nope.safetensors")


def test_a_job_runs_on_the_server_with_previews_of_its_steps(fake):
    steps = []
    request = GenerationRequest(prompt="a fox", steps=10, seed=9, width=64, height=48, batch_size=2,
                                model="beta.safetensors [abcdef0123]")
    result = backend_for(fake).generate(request, on_step=steps.append)
    assert fake.bodies[0][0] == "txt2img" and fake.bodies[0][1]["seed"] == 9
    assert [im.getpixel((0, 0)) for im in result.images] == [colour(9), colour(10)]
    assert [r.seed for r in result.requests] == [9, 10] and result.requests[0].model_hash == "abcdef0123"
    assert result.model_name == "beta" and result.info["backend"] == "box"
    assert len(steps) >= 3 and all(s.total == 10 for s in steps)
    assert [s.step for s in steps] == sorted({s.step for s in steps})  # each step once, in order
    with_preview = [s for s in steps if s.preview is not None]
    assert with_preview and with_preview[-1].preview.size == (64, 48)
    # The preview is the server's image of that step (red rises with the step in the fake).
    last = with_preview[-1]
    assert last.preview.getpixel((0, 0))[0] == int(255 * (last.step + 1) / 10)


def test_cancel_interrupts_the_server_and_raises_cancelled(fake):
    cancel = threading.Event()
    request = GenerationRequest(steps=1000, width=8, height=8)
    threading.Timer(0.3, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(Cancelled, match="cancelled on box"):
        backend_for(fake).generate(request, should_cancel=cancel.is_set)
    assert fake.interrupted.is_set() and time.monotonic() - start < 15.0  # not the 30 s the job would take


def test_a_server_killed_mid_job_fails_it_at_once_with_server_unavailable(fake):
    request = GenerationRequest(steps=1000, width=8, height=8)
    threading.Thread(target=lambda: (fake.started.wait(5), fake.kill()), daemon=True).start()
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match=r"server 'box' \(http://127\.0\.0\.1:\d+\)"):
        backend_for(fake).generate(request)
    assert time.monotonic() - start < 15.0  # the job would run 30 s: the dead server is noticed, not waited on
