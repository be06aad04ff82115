"""`python -m sdstudio serve` as a user runs it: a real process that answers an A1111 client, then stops on
Ctrl-C (SIGINT) with exit status 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

webuiapi = pytest.importorskip("webuiapi")

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_serve_answers_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    env = dict(os.environ, SDSTUDIO_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "sdstudio", "serve", "--port", str(port), "--device", "cpu"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        api = None
        deadline = time.monotonic() + 240
        while api is None:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the server did not answer"
            try:
                candidate = webuiapi.WebUIApi(port=port)
                candidate.get_progress()
                api = candidate
            except Exception:  # not listening yet
                time.sleep(0.5)
        assert api.util_get_model_names()[0].startswith("sdstudio-emoji.safetensors")
        assert api.get_progress()["state"]["job_count"] == 0
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0, out
        assert f"http://127.0.0.1:{port}/sdapi/v1" in out
        assert (tmp_path / "home" / "outputs").is_dir()  # the history it writes to was opened
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
