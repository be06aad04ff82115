"""Bad input over HTTP, table-driven: each gets a 4xx JSON body {"error", "detail"} whose message names the
problem, no job reaches the engine, and the server keeps answering. Auth: missing or wrong credentials 401."""

from __future__ import annotations

import base64
import io
import json

import pytest
import requests
from PIL import Image

from sdstudio.engine.request import GenerationResult
from tests.server.conftest import running

API = "/sdapi/v1"


class RecordingEngine:
    """Stands in for the engine: remembers what reached it and makes a black image."""

    def __init__(self):
        self.requests = []

    def generate(self, request, on_step=None, should_cancel=None):
        self.requests.append(request)
        return GenerationResult([Image.new("RGB", (request.width, request.height))], [request], "fake")

    def load_model(self, path="", progress=None, **options):
        self.requests.append(("load", path))


def png64(size=(8, 8)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def fake(served_home):
    from sdstudio import paths
    from sdstudio.history.store import HistoryStore
    from sdstudio.server.app import Server

    engine = RecordingEngine()
    store = HistoryStore(paths.outputs_dir(), paths.history_db(), reconcile=False)
    server = Server(engine, store, max_body=64 * 1024)
    with running(server) as port:
        yield engine, f"http://127.0.0.1:{port}"
    server.jobs.close()
    store.close()


GOOD = {"prompt": "x", "steps": 2, "width": 64, "height": 64}
# (what, method, path, body: dict (sent as JSON) or bytes (sent raw), status, words the message must hold)
CASES = [
    ("malformed JSON", "POST", "txt2img", b'{"prompt": "x",', 400, "not valid JSON"),
    ("not UTF-8", "POST", "txt2img", b'{"prompt": "\xff"}', 400, "not valid JSON"),
    ("a JSON list", "POST", "txt2img", [1, 2], 400, "must be a JSON object"),
    ("nested too deep", "POST", "txt2img", b"[" * 30_000 + b"]" * 30_000, 400, "nests too deep"),
    ("huge body", "POST", "txt2img", {"prompt": "x" * 100_000}, 413, "limit"),
    ("steps as text", "POST", "txt2img", GOOD | {"steps": "twenty"}, 400, "steps must be a whole number"),
    ("width as a list", "POST", "txt2img", GOOD | {"width": [64]}, 400, "width must be a whole number"),
    ("prompt as a number", "POST", "txt2img", GOOD | {"prompt": 5}, 400, "prompt must be text"),
    ("cfg NaN-like", "POST", "txt2img", b'{"cfg_scale": NaN}', 400, "cfg_scale must be a number"),
    ("absurd width", "POST", "txt2img", GOOD | {"width": 100_000}, 400, "width 100000 is out of range"),
    ("far beyond the model", "POST", "txt2img", GOOD | {"width": 4096, "height": 4096}, 400, "native"),
    ("negative steps", "POST", "txt2img", GOOD | {"steps": -5}, 400, "steps -5 is out of range"),
    ("batch of 1000", "POST", "txt2img", GOOD | {"batch_size": 1000}, 400, "batch_size 1000"),
    ("n_iter 0", "POST", "txt2img", GOOD | {"n_iter": 0}, 400, "n_iter 0"),
    ("seed too large", "POST", "txt2img", GOOD | {"seed": 2**40}, 400, "seed 1099511627776"),
    ("unknown sampler", "POST", "txt2img", GOOD | {"sampler_name": "Bogus"}, 400, "unknown sampler"),
    ("model up a folder", "POST", "txt2img", GOOD | {"override_settings": {"sd_model_checkpoint": "../x"}},
     400, "is a path"),
    ("absolute model path", "POST", "options", {"sd_model_checkpoint": "/etc/passwd"}, 400, "is a path"),
    ("windows model path", "POST", "options", {"sd_model_checkpoint": "C:\\models\\a.safetensors"}, 400,
     "is a path"),
    ("unknown model", "POST", "options", {"sd_model_checkpoint": "nothing-here"}, 400, "no model named"),
    ("unknown option", "POST", "options", {"sd_vae": "x"}, 400, "cannot be set"),
    ("face restoration", "POST", "txt2img", GOOD | {"restore_faces": True}, 400, "restore_faces"),
    ("a script", "POST", "txt2img", GOOD | {"script_name": "x/y plot"}, 400, "not available"),
    ("another script", "POST", "txt2img", GOOD | {"alwayson_scripts": {"ADetailer": {"args": [True]}}}, 400,
     "not available"),
    ("init image not base64", "POST", "img2img", GOOD | {"init_images": ["%%%"]}, 400, "not valid base64"),
    ("init image not an image", "POST", "img2img", GOOD | {"init_images": [base64.b64encode(b"hi").decode()]},
     400, "not a readable image"),
    ("init image URL", "POST", "img2img", GOOD | {"init_images": ["http://169.254.169.254/x.png"]}, 400,
     "not fetched"),
    ("no init image", "POST", "img2img", GOOD, 400, "init_images must hold one image"),
    ("fill mode we lack", "POST", "img2img",
     GOOD | {"init_images": [png64((64, 64))], "mask": png64((64, 64))}, 400, "inpainting_fill 0"),
    ("mask of another size", "POST", "img2img", GOOD | {"init_images": [png64((64, 64))], "mask": png64(),
                                                         "inpainting_fill": 1}, 400, "must match"),
    ("ControlNet model path", "POST", "txt2img", GOOD | {"alwayson_scripts": {"controlnet": {"args": [
        {"model": "../../x", "image": png64()}]}}}, 400, "is a path"),
    ("LoRA tag out of place", "POST", "txt2img", GOOD | {"enable_hr": True, "hr_prompt": "<lora:x:1>"}, 400,
     "lora"),
    ("png-info of no image", "POST", "png-info", {"image": "abc"}, 400, "image"),
    ("unknown route", "GET", "nothing", None, 404, "Not Found"),
    ("wrong method", "GET", "txt2img", None, 405, "Method Not Allowed"),
]


@pytest.mark.parametrize("what, method, path, body, status, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_4xx_with_a_message(fake, what, method, path, body, status, words):
    engine, base = fake
    before = len(engine.requests)
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    response = requests.request(method, f"{base}{API}/{path}", data=data,
                                headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == status, response.text
    answer = response.json()
    assert set(answer) == {"error", "detail"} and words.lower() in str(answer["detail"]).lower(), answer
    assert "Traceback" not in response.text
    assert len(engine.requests) == before  # refused before any work
    assert requests.get(f"{base}{API}/progress", timeout=10).status_code == 200  # still serving


def test_a_good_request_reaches_the_engine(fake):
    """The table's refusals are the bad fields': the same body without them runs."""
    engine, base = fake
    response = requests.post(f"{base}{API}/txt2img", json=GOOD | {"seed": 4}, timeout=60)
    assert response.status_code == 200, response.text
    assert engine.requests[-1].seed == 4 and engine.requests[-1].steps == 2
    assert engine.requests[-1].sampler == "Euler"  # A1111's default sampler, not ours


def test_auth(served_home):
    from sdstudio import paths
    from sdstudio.history.store import HistoryStore
    from sdstudio.server.app import Server

    store = HistoryStore(paths.outputs_dir(), paths.history_db(), reconcile=False)
    server = Server(RecordingEngine(), store, auth=("ann", "s3cret"))
    try:
        with running(server) as port:
            url = f"http://127.0.0.1:{port}{API}/samplers"
            for auth in (None, ("ann", "wrong"), ("bob", "s3cret"), ("ann", "")):
                response = requests.get(url, auth=auth, timeout=10)
                assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Basic"
                assert response.json()["detail"] == "Incorrect username or password"
            bad_header = requests.get(url, headers={"Authorization": "Basic %%%"}, timeout=10)
            assert bad_header.status_code == 401
            posted = requests.post(f"http://127.0.0.1:{port}{API}/txt2img", json=GOOD, timeout=10)
            assert posted.status_code == 401 and server.jobs.engine.requests == []
            assert requests.get(url, auth=("ann", "s3cret"), timeout=10).status_code == 200
            import webuiapi

            assert webuiapi.WebUIApi(port=port, username="ann", password="s3cret").get_samplers()
    finally:
        server.jobs.close()
        store.close()
