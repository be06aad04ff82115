"""HTTP + JSON to one A1111-compatible server, standard library only (urllib), a timeout on every call.

Every way a server can go away ends as one ServerUnavailable naming the server and what happened: connection
refused or reset, a timeout, a 5xx, a body that is not JSON. A 4xx is the server refusing this request
(RemoteError with its `detail`, the field FastAPI puts the reason in), which says nothing about the server.
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from sdstudio.engine.errors import RemoteError, ServerUnavailable
from sdstudio.remote.servers import Server

API = "/sdapi/v1"
SHORT_TIMEOUT_S = 10.0  # options, model lists, progress, interrupt
MAX_RESPONSE = 512 * 1024 * 1024  # a batch of large PNGs in base64; beyond this the answer is not A1111's


class ApiClient:
    def __init__(self, server: Server, timeout_s: float = SHORT_TIMEOUT_S):
        self.server = server
        self.timeout_s = timeout_s

    def get(self, path: str, timeout_s: float | None = None) -> Any:
        return self._call("GET", path, None, timeout_s)

    def post(self, path: str, body: dict | None = None, timeout_s: float | None = None) -> Any:
        return self._call("POST", path, body if body is not None else {}, timeout_s)

    def _call(self, method: str, path: str, body: dict | None, timeout_s: float | None) -> Any:
        url = f"{self.server.base}{API}/{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.server.user:
            token = base64.b64encode(f"{self.server.user}:{self.server.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        where = f"server {self.server.name!r} ({self.server.base})"
        try:
            with urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s) as response:
                raw = response.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            detail = _detail(exc)
            if exc.code >= 500:
                raise ServerUnavailable(f"{where} failed: HTTP {exc.code} {detail}".strip()) from None
            if exc.code in (401, 403):
                raise RemoteError(f"{where} refused the credentials (HTTP {exc.code}); check user:password "
                                  "in Settings → Backends") from None
            raise RemoteError(f"{where} refused {path}: HTTP {exc.code} {detail}".strip()) from None
        except TimeoutError:
            waited = timeout_s or self.timeout_s
            raise ServerUnavailable(f"{where} did not answer within {waited:g} s") from None
        except urllib.error.URLError as exc:
            reason = exc.reason if not isinstance(exc.reason, TimeoutError) else "timed out"
            raise ServerUnavailable(f"{where} cannot be reached: {reason}") from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise ServerUnavailable(f"{where} dropped the connection: {exc or type(exc).__name__}") from None
        if len(raw) > MAX_RESPONSE:
            raise ServerUnavailable(f"{where} sent more than {MAX_RESPONSE >> 20} MiB for {path}")
        if not raw.strip():
            return None  # an empty 200 (a setter with nothing to say), as FastAPI's `null`
        try:
            return json.loads(raw)
        except ValueError:
            raise ServerUnavailable(f"{where} answered {path} with something that is not JSON; is it an "
                                    "A1111-compatible server started with --api?") from None


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read(64 * 1024) or b"{}")
    except (ValueError, OSError):
        return exc.reason or ""
    detail = body.get("detail") or body.get("error") or exc.reason if isinstance(body, dict) else exc.reason
    return str(detail)[:300]
