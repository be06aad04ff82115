"""A small A1111-compatible server for tests: stdlib http.server on a free port, in a thread.

It answers as AUTOMATIC1111's API does (modules/api/api.py): /sdapi/v1/txt2img and /img2img run `steps` steps
of `step_seconds`, publishing each on GET /progress (state.sampling_step/sampling_steps, a base64 preview in
current_image) and honouring POST /interrupt; the answer holds base64 PNGs and `info` as a JSON string with
one infotext per image. `kill()` makes it go away mid-job: the listening socket closes and a running job's
connection is dropped without an answer, as when the process dies.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

MODELS = [("alpha.safetensors", "0123456789"), ("beta.safetensors", "abcdef0123")]


def colour(seed: int) -> tuple[int, int, int]:
    return (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)


def png64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class FakeA1111:
    def __init__(self, steps_seconds: float = 0.02, auth: str = "", name: str = "fake"):
        self.step_seconds, self.auth, self.name = steps_seconds, auth, name
        self.model = f"{MODELS[0][0]} [{MODELS[0][1]}]"
        self.bodies: list[tuple[str, dict]] = []  # (endpoint, JSON body) of every POST
        self.job_seconds: list[float] = []  # how long each job ran inside the server (bench/remote_overhead.py)
        self.interrupted = threading.Event()
        self.dead = threading.Event()
        self.started = threading.Event()  # a job's first step was published
        self.state = {"sampling_step": 0, "sampling_steps": 0, "job_count": 0, "interrupted": False,
                      "skipped": False, "job": "", "job_no": 0, "job_timestamp": "0"}
        self.current_image: str | None = None
        self.lock = threading.Lock()  # one job at a time, as A1111's queue_lock
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def kill(self) -> None:
        self.dead.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def infotext(self, body: dict, seed: int) -> str:
        negative = f"\nNegative prompt: {body['negative_prompt']}" if body.get("negative_prompt") else ""
        title = self.model.split(" [")
        line = (f"Steps: {body['steps']}, Sampler: {body['sampler_name']}, "
                f"Schedule type: {body['scheduler']}, "
                f"CFG scale: {body['cfg_scale']}, Seed: {seed}, Size: {body['width']}x{body['height']}, "
                f"Model hash: {title[1].rstrip(']')}, Model: {title[0].removesuffix('.safetensors')}")
        if "init_images" in body:
            line += f", Denoising strength: {body['denoising_strength']}"
        if body.get("mask"):
            line += f", Mask blur: {body['mask_blur']}"
        return f"{body['prompt']}{negative}\n{line}, Version: v1.10.1"

    def run_job(self, kind: str, body: dict) -> dict | None:
        """The job; None when the server died during it (the handler then drops the connection)."""
        with self.lock:
            began = time.perf_counter()
            self.bodies.append((kind, body))
            self.interrupted.clear()
            checkpoint = body.get("override_settings", {}).get("sd_model_checkpoint")
            if checkpoint:
                self.model = next(f"{n} [{h}]" for n, h in MODELS if checkpoint in (n, f"{n} [{h}]"))
            steps, size = body["steps"], (body["width"], body["height"])
            if "init_images" in body:
                steps = max(1, int(steps * body["denoising_strength"]))
            self.state.update(sampling_steps=steps, sampling_step=0, job_count=1)
            for step in range(steps):
                if self.interrupted.is_set():
                    break
                time.sleep(self.step_seconds)
                if self.dead.is_set():
                    return None
                level = int(255 * (step + 1) / steps)
                self.current_image = png64(Image.new("RGB", size, (level, 0, 255 - level)))
                self.state.update(sampling_step=step)
                self.started.set()
            self.state.update(sampling_steps=0, sampling_step=0, job_count=0)
            self.current_image = None
            seeds = [body["seed"] + i for i in range(body["batch_size"])]
            self.job_seconds.append(time.perf_counter() - began)
            return {"images": [png64(Image.new("RGB", size, colour(s))) for s in seeds],
                    "parameters": body,
                    "info": json.dumps({"prompt": body["prompt"], "all_seeds": seeds, "seed": seeds[0],
                                        "sd_model_name": self.model.split(".")[0], "index_of_first_image": 0,
                                        "infotexts": [self.infotext(body, s) for s in seeds]})}


def _handler(server: FakeA1111):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args) -> None:
            pass

        def _send(self, code: int, value: object) -> None:
            data = json.dumps(value).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if not server.auth:
                return True
            expected = "Basic " + base64.b64encode(server.auth.encode()).decode()
            if self.headers.get("Authorization") == expected:
                return True
            self._send(401, {"detail": "Incorrect username or password"})
            return False

        def do_GET(self) -> None:
            if not self._authorised():
                return
            path = self.path.split("?")[0]
            if path == "/sdapi/v1/sd-models":
                self._send(200, [{"title": f"{n} [{h}]", "model_name": n.split(".")[0], "hash": h,
                                  "sha256": h * 6, "filename": f"/models/{n}", "config": None}
                                 for n, h in MODELS])
            elif path == "/sdapi/v1/options":
                self._send(200, {"sd_model_checkpoint": server.model, "CLIP_stop_at_last_layers": 1})
            elif path == "/sdapi/v1/progress":
                state = dict(server.state, interrupted=server.interrupted.is_set())
                done = state["sampling_step"] / state["sampling_steps"] if state["sampling_steps"] else 0.0
                self._send(200, {"progress": done, "eta_relative": 0.0, "state": state,
                                 "current_image": server.current_image, "textinfo": None})
            else:
                self._send(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            if not self._authorised():
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            path = self.path.split("?")[0]
            if path == "/sdapi/v1/interrupt":
                server.interrupted.set()
                self._send(200, {})
            elif path == "/sdapi/v1/options":
                names = {n: f"{n} [{h}]" for n, h in MODELS} | {f"{n} [{h}]": f"{n} [{h}]" for n, h in MODELS}
                if body.get("sd_model_checkpoint") not in names:
                    self._send(400, {"detail": f"model {body.get('sd_model_checkpoint')!r} not found"})
                    return
                server.model = names[body["sd_model_checkpoint"]]
                self._send(200, None)
            elif path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img"):
                answer = server.run_job(path.rsplit("/", 1)[1], body)
                if answer is None:  # died mid-job: the connection goes without an answer
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._send(200, answer)
            else:
                self._send(404, {"detail": "Not Found"})

    return Handler
