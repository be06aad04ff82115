import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sdstudio.engine.errors import RemoteError, ServerUnavailable
from sdstudio.remote.client import ApiClient
from sdstudio.remote.servers import Server
from tests.remote.fake_a1111 import FakeA1111


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(status: int, body: bytes, delay_s: float = 0.0):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args):
            pass

        def do_GET(self):
            if delay_s:
                threading.Event().wait(delay_s)
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client timed out and left

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def test_connection_refused_is_server_unavailable_naming_the_server():
    client = ApiClient(Server("box", f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(ServerUnavailable, match=r"'box' \(http://127\.0\.0\.1:\d+\) cannot be reached"):
        client.get("sd-models")


@pytest.mark.parametrize(("status", "body", "says"), [
    (200, b"<html>gradio</html>", "not JSON"),
    (500, b'{"detail": "CUDA out of memory"}', "HTTP 500 CUDA out of memory"),
    (502, b"bad gateway", "HTTP 502"),
])
def test_a_broken_answer_is_server_unavailable(status, body, says):
    httpd, url = serve(status, body)
    try:
        with pytest.raises(ServerUnavailable, match=says):
            ApiClient(Server("box", url)).get("options")
    finally:
        httpd.shutdown()


def test_a_4xx_is_the_server_refusing_the_request_not_the_server_gone():
    httpd, url = serve(422, b'{"detail": "Sampler not found"}')
    try:
        with pytest.raises(RemoteError, match="HTTP 422 Sampler not found") as caught:
            ApiClient(Server("box", url)).get("options")
        assert not isinstance(caught.value, ServerUnavailable)
    finally:
        httpd.shutdown()


def test_a_server_that_does_not_answer_times_out():
    httpd, url = serve(200, b"{}", delay_s=2.0)
    try:
        with pytest.raises(ServerUnavailable, match="did not answer within 0.3 s"):
            ApiClient(Server("box", url), timeout_s=0.3).get("options")
    finally:
        httpd.shutdown()


def test_basic_auth_is_sent_and_a_wrong_password_says_so():
    fake = FakeA1111(auth="ann:secret")
    try:
        assert ApiClient(Server("box", fake.url, "ann", "secret")).get("options")["sd_model_checkpoint"]
        with pytest.raises(RemoteError, match="refused the credentials"):
            ApiClient(Server("box", fake.url, "ann", "wrong")).get("options")
        with pytest.raises(RemoteError, match="HTTP 401"):
            ApiClient(Server("box", fake.url)).get("options")
    finally:
        fake.kill()


def test_an_empty_answer_is_none_like_fastapis_null():
    httpd, url = serve(200, b"")
    try:
        assert ApiClient(Server("box", url)).get("options") is None
    finally:
        httpd.shutdown()
