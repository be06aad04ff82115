"""The Starlette application: A1111's `/sdapi/v1/...` routes over our engine (see the package docstring).

Every failure is a JSON body {"error": kind, "detail": message} with a 4xx when the request is at fault (a
RequestError and its kin, a body over the limit: 413, bad credentials: 401, a full queue: 503) and a 500
with a one-line message when the engine failed; an unexpected exception is logged with its traceback to
the log file, never sent. The server keeps serving after any of them.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import secrets
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sdstudio.engine import preprocessors
from sdstudio.engine.controlnet_folder import controlnet_files
from sdstudio.engine.errors import (
    ImageFileError,
    ModelNotFound,
    PatchError,
    RequestError,
    SDStudioError,
)
from sdstudio.errorlog import log_exception
from sdstudio.history.parameters import parse_parameters
from sdstudio.history.png import PARAMETERS_KEY, read_text_chunks
from sdstudio.server import mapping, shaping
from sdstudio.server.body import Body, decode_image, shown
from sdstudio.server.checkpoints import Checkpoint, Checkpoints
from sdstudio.server.generation import generation_work, ready
from sdstudio.server.jobs import JobQueue, QueueFull

MAX_BODY = 50 * 1024 * 1024  # bytes of a request body: a few 4K PNGs in base64 fit, a runaway upload does not
API = "/sdapi/v1"
Handler = Callable[[Request], Awaitable[Response]]


class TooLarge(RequestError):
    """The body is over the server's limit."""


class Server:
    """The server's state: the engine's job queue, the history store, the current model and the options."""

    def __init__(self, engine: Any, store: Any, auth: tuple[str, str] | None = None,
                 max_body: int = MAX_BODY):
        self.store, self.auth, self.max_body = store, auth, max_body
        self.checkpoints = Checkpoints()
        self.current: Checkpoint = self.checkpoints.builtin()
        self._lock = threading.Lock()
        self.jobs = JobQueue(engine)

    # -- generation --
    async def txt2img(self, request: Request) -> Response:
        return await self._generate(request, mapping.txt2img, "txt2img")

    async def img2img(self, request: Request) -> Response:
        return await self._generate(request, mapping.img2img, "img2img")

    async def _generate(self, request: Request, mapper, name: str) -> Response:
        data = await self.read_json(request)
        mapped = await run_in_threadpool(lambda: ready(mapper(data, self.current, self.checkpoints)))
        self.checkpoints.mark_used(mapped.checkpoint)
        made = await self.jobs.run(name, generation_work(mapped, self.store))
        body = await run_in_threadpool(shaping.generation_response, mapped, made)
        return JSONResponse(body)

    async def progress(self, request: Request) -> Response:
        skip = request.query_params.get("skip_current_image", "false").lower() == "true"
        return JSONResponse(shaping.progress_response(self.jobs.progress(), skip))

    async def interrupt(self, request: Request) -> Response:
        self.jobs.interrupt()
        return JSONResponse({})

    # -- models and options --
    async def sd_models(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.checkpoints.listing))

    async def get_options(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.options))

    def options(self) -> dict[str, Any]:
        current = self.current
        short = self.checkpoints.short_hash(current)
        return {"sd_model_checkpoint": self.checkpoints.title(current),
                "sd_checkpoint_hash": None if short is None else self.checkpoints.sha256(current),
                "CLIP_stop_at_last_layers": 1, "sd_vae": "Automatic", "samples_format": "png",
                "samples_save": True}

    async def set_options(self, request: Request) -> Response:
        body = Body(await self.read_json(request))
        unknown = sorted(set(body.data) - {"sd_model_checkpoint"})
        if unknown:
            raise RequestError(f"option {shown(unknown[0])} cannot be set on this server; "
                               "sd_model_checkpoint can")
        if "sd_model_checkpoint" in body.data:
            checkpoint = self.checkpoints.find(body.data["sd_model_checkpoint"])
            # Loaded in the worker, in turn with the jobs (one engine, one thread), as A1111 loads it at once.
            await self.jobs.run("load model",
                                lambda engine, report, cancel: engine.load_model(checkpoint.engine_path))
            self.checkpoints.mark_used(checkpoint)
            self.current = checkpoint
        return JSONResponse(None)

    async def png_info(self, request: Request) -> Response:
        body = Body(await self.read_json(request))
        raw = body.data.get("image")
        decode_image(raw, "image")  # refuses what is not an image, as any other
        data = base64.b64decode(raw.partition(";base64,")[2] if raw.startswith("data:") else raw)
        texts = read_text_chunks(io.BytesIO(data)).texts
        text = texts.pop(PARAMETERS_KEY, "")
        parsed = parse_parameters(text) if text else {}
        return JSONResponse({"info": text, "items": texts, "parameters": parsed})

    # -- lists A1111 clients ask for --
    async def samplers(self, request: Request) -> Response:
        return JSONResponse(shaping.samplers())

    async def schedulers(self, request: Request) -> Response:
        return JSONResponse(shaping.schedulers())

    async def upscalers(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(shaping.upscalers))

    async def latent_upscale_modes(self, request: Request) -> Response:
        return JSONResponse(shaping.latent_upscale_modes())

    async def scripts(self, request: Request) -> Response:
        return JSONResponse({"txt2img": [], "img2img": []})

    async def controlnet_models(self, request: Request) -> Response:
        names = await run_in_threadpool(lambda: [f.name for f in controlnet_files()])
        return JSONResponse({"model_list": names})

    async def controlnet_modules(self, request: Request) -> Response:
        return JSONResponse({"module_list": list(preprocessors.names())})

    async def refresh(self, request: Request) -> Response:
        return JSONResponse(None)  # the listings are read from the folder on every request

    # -- the plumbing --
    async def read_json(self, request: Request) -> Any:
        """The body as JSON, at most max_body bytes (read no further: a huge upload is cut off early)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise TooLarge(f"the request body is {int(declared):,} bytes; the limit is {self.max_body:,}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise TooLarge(f"the request body is over the limit of {self.max_body:,} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks) or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(f"the request body is not valid JSON ({str(exc)[:80]})") from None
        except RecursionError:
            raise RequestError("the request body nests too deep") from None

    def authorised(self, request: Request) -> bool:
        if self.auth is None:
            return True
        kind, _, encoded = request.headers.get("authorization", "").partition(" ")
        if kind.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            return False
        # Both compared in full whatever the first gives, so the time does not tell which was wrong.
        ok_user = secrets.compare_digest(user.encode(), self.auth[0].encode())
        ok_password = secrets.compare_digest(password.encode(), self.auth[1].encode())
        return ok_user and ok_password

    def guarded(self, handler: Handler) -> Handler:
        async def route(request: Request) -> Response:
            if not self.authorised(request):
                return JSONResponse({"error": "Unauthorized", "detail": "Incorrect username or password"},
                                    status_code=401, headers={"WWW-Authenticate": "Basic"})
            try:
                return await handler(request)
            except SDStudioError as exc:
                return error_response(exc)
            except Exception as exc:  # a bug of ours: logged in full, one line to the client
                path = log_exception(exc, f"sdstudio serve {request.url.path}")
                detail = f"unexpected error ({type(exc).__name__}); the server's log has it: {path.name}"
                return JSONResponse({"error": "InternalError", "detail": detail}, status_code=500)
        return route


def error_response(exc: SDStudioError) -> JSONResponse:
    if isinstance(exc, TooLarge):
        status = 413
    elif isinstance(exc, QueueFull):
        status = 503
    elif isinstance(exc, (RequestError, PatchError, ModelNotFound, ImageFileError)):
        status = 400
    else:  # the engine failed on a valid request (out of memory, a damaged checkpoint file)
        status = 500
    return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=status)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return JSONResponse({"error": "HTTPException", "detail": exc.detail}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


def create_app(server: Server) -> Starlette:
    s, g = server, server.guarded
    routes = [
        Route(f"{API}/txt2img", g(s.txt2img), methods=["POST"]),
        Route(f"{API}/img2img", g(s.img2img), methods=["POST"]),
        Route(f"{API}/progress", g(s.progress), methods=["GET"]),
        Route(f"{API}/interrupt", g(s.interrupt), methods=["POST"]),
        Route(f"{API}/sd-models", g(s.sd_models), methods=["GET"]),
        Route(f"{API}/refresh-checkpoints", g(s.refresh), methods=["POST"]),
        Route(f"{API}/samplers", g(s.samplers), methods=["GET"]),
        Route(f"{API}/schedulers", g(s.schedulers), methods=["GET"]),
        Route(f"{API}/scripts", g(s.scripts), methods=["GET"]),
        Route(f"{API}/upscalers", g(s.upscalers), methods=["GET"]),
        Route(f"{API}/latent-upscale-modes", g(s.latent_upscale_modes), methods=["GET"]),
        Route(f"{API}/options", g(s.get_options), methods=["GET"]),
        Route(f"{API}/options", g(s.set_options), methods=["POST"]),
        Route(f"{API}/png-info", g(s.png_info), methods=["POST"]),
        Route("/controlnet/model_list", g(s.controlnet_models), methods=["GET"]),
        Route("/controlnet/module_list", g(s.controlnet_modules), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
