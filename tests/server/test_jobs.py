"""The job queue: one job at a time in order, the others counted as queued, an engine failure answered as a
JSON error (a bug of ours as a 500 without its traceback, logged), and the worker carrying on after either."""

from __future__ import annotations

import threading
import time

import requests
from PIL import Image

from sdstudio.engine.errors import GenerationError
from sdstudio.engine.request import GenerationResult
from tests.server.conftest import running

BODY = {"prompt": "x", "steps": 2, "width": 64, "height": 64}


class GatedEngine:
    """Each job waits for the test to open the gate; a prompt of "fail"/"bug" raises."""

    def __init__(self):
        self.gate = threading.Semaphore(0)
        self.order = []
        self.running = 0
        self.most_at_once = 0

    def generate(self, request, on_step=None, should_cancel=None):
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            assert self.gate.acquire(timeout=60)
            self.order.append(request.seed)
            if request.prompt == "fail":
                raise GenerationError("out of memory: lower the width/height")
            if request.prompt == "bug":
                raise ZeroDivisionError("a bug")
            return GenerationResult([Image.new("RGB", (64, 64))], [request], "fake")
        finally:
            self.running -= 1


def test_one_job_at_a_time_in_order_and_failures_answered(served_home):
    from sdstudio import paths
    from sdstudio.history.store import HistoryStore
    from sdstudio.server.app import Server

    engine = GatedEngine()
    store = HistoryStore(paths.outputs_dir(), paths.history_db(), reconcile=False)
    server = Server(engine, store)
    answers = {}
    try:
        with running(server) as port:
            url = f"http://127.0.0.1:{port}/sdapi/v1"

            def post(seed, prompt="x"):
                answers[seed] = requests.post(f"{url}/txt2img", json=BODY | {"seed": seed, "prompt": prompt},
                                              timeout=60)

            jobs = ((1,), (2, "fail"), (3, "bug"), (4,))
            clients = [threading.Thread(target=post, args=args) for args in jobs]
            for client in clients:
                client.start()
                time.sleep(0.3)  # queued in this order
            state = requests.get(f"{url}/progress", timeout=10).json()["state"]
            assert state["job"] == "txt2img" and state["queued"] == 3
            for _ in clients:
                engine.gate.release()
            for client in clients:
                client.join(timeout=60)
            assert engine.order == [1, 2, 3, 4] and engine.most_at_once == 1
            assert answers[1].status_code == 200 and answers[4].status_code == 200
            assert answers[2].status_code == 500 and answers[2].json() == {
                "error": "GenerationError", "detail": "out of memory: lower the width/height"}
            assert answers[3].status_code == 500 and "ZeroDivisionError" in answers[3].json()["detail"]
            assert "Traceback" not in answers[3].text and "a bug" not in answers[3].text
            log = (served_home / "logs").rglob("*.log")
            assert any("ZeroDivisionError: a bug" in path.read_text() for path in log)
            assert requests.get(f"{url}/progress", timeout=10).json()["state"]["job_count"] == 0
    finally:
        server.jobs.close()
        store.close()
