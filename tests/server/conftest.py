"""A real server for the tests: uvicorn in a thread on a free loopback port, the built-in model's engine."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest


@contextlib.contextmanager
def running(server):
    """Serve `server` (sdstudio.server.app.Server) until the block ends; yields the port."""
    import uvicorn

    from sdstudio.server.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(server), log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def served_home(tmp_path_factory):
    """A data folder of the module's own, so its history holds only what the server made."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SDSTUDIO_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def server(builtin_engine, served_home):
    from sdstudio import paths
    from sdstudio.history.store import HistoryStore
    from sdstudio.server.app import Server

    store = HistoryStore(paths.outputs_dir(), paths.history_db(), reconcile=False)
    server = Server(builtin_engine, store, max_body=2 * 1024 * 1024)
    yield server
    server.jobs.close()
    store.close()


@pytest.fixture(scope="module")
def port(server):
    with running(server) as port:
        yield port
