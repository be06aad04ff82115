"""An A1111-compatible server behind the engine's Backend protocol (engine/backend.py).

`generate` POSTs the job in a helper thread and meanwhile polls GET /sdapi/v1/progress (A1111's
`progressapi`: progress, eta_relative, state.sampling_step / sampling_steps, current_image) for on_step, so
previews arrive as on the local engine. A cancel POSTs /sdapi/v1/interrupt and waits for the job's answer
(A1111 ends the job early and returns what it has) before raising Cancelled. A poll that fails means the
server is gone: the job fails at once with ServerUnavailable, not after the POST's long timeout.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sdstudio.engine.backend import LoadProgress, OnStep, ShouldCancel
from sdstudio.engine.detect import ModelDescription
from sdstudio.engine.errors import Cancelled, ServerUnavailable
from sdstudio.engine.request import GenerationRequest, GenerationResult, StepInfo
from sdstudio.remote import a1111
from sdstudio.remote.client import ApiClient
from sdstudio.remote.servers import Server

POLL_INTERVAL_S = 0.25
JOB_TIMEOUT_S = 3600.0  # one POST may run long on a busy server; progress polls notice a dead one sooner
CANCEL_WAIT_S = 30.0  # after an interrupt, how long the job's answer may take before we stop waiting


class RemoteModel(ModelDescription):
    """A server's model: we know its title and where it runs, not its family or size (the server's business),
    so the summary says only that instead of a detector's guesses."""

    def summary(self) -> str:
        return f"a model {self.family_label}"


def remote_description(title: str, server: str) -> ModelDescription:
    return RemoteModel(
        name=title or "server's current model", path=title, family="", family_label=f"on {server}",
        inpainting=False, prediction="", prediction_source="server", dtype="", params={},
        default_size=0, scale_factor=0.0, vae_downscale=8, context_dim=0, unet_in_channels=4,
    )


class RemoteBackend:
    def __init__(self, server: Server, poll_interval_s: float = POLL_INTERVAL_S,
                 job_timeout_s: float = JOB_TIMEOUT_S):
        self.server = server
        self.client = ApiClient(server)
        self.poll_interval_s = poll_interval_s
        self.job_timeout_s = job_timeout_s
        self._description: ModelDescription | None = None
        # The worker sets these on every engine; a server uses its own folders.
        self.lora_dirs: list = []
        self.embedding_dirs: list = []

    @property
    def name(self) -> str:
        return self.server.name

    def load_model(self, path: str = "", *, progress: LoadProgress | None = None) -> ModelDescription:
        """Switch the server to `path` (a title from `list_models`, or a file name); "" keeps its own."""
        if progress:
            progress(f"Asking {self.server.name} for the model…", 0.0)
        if path:
            self.client.post("options", {"sd_model_checkpoint": a1111._overrides(
                GenerationRequest(model=path))["sd_model_checkpoint"]}, timeout_s=self.job_timeout_s)
        options = self.client.get("options")
        title = options.get("sd_model_checkpoint", "") if isinstance(options, dict) else ""
        self._description = remote_description(str(title or path), self.server.name)
        return self._description

    def describe(self) -> ModelDescription | None:
        return self._description

    def list_models(self) -> list[str]:
        """The server's checkpoint titles (A1111's `title`: "name.safetensors [shorthash]")."""
        models = self.client.get("sd-models")
        if not isinstance(models, list):
            raise ServerUnavailable(f"server {self.server.name!r} sent no model list")
        return [str(m["title"]) for m in models if isinstance(m, dict) and m.get("title")]

    def generate(self, request: GenerationRequest, on_step: OnStep | None = None,
                 should_cancel: ShouldCancel | None = None) -> GenerationResult:
        body = a1111.payload(request)  # a RequestError before anything is sent
        start = time.monotonic()
        call = _Call(lambda: self.client.post(a1111.endpoint(request), body, timeout_s=self.job_timeout_s))
        last_step, cancelled = -1, False
        while not call.done.wait(self.poll_interval_s):
            if should_cancel is not None and should_cancel() and not cancelled:
                cancelled = True
                self.client.post("interrupt")
                if not call.done.wait(CANCEL_WAIT_S):
                    break
            if cancelled:
                continue
            last_step = self._report(last_step, on_step)
        if cancelled or (should_cancel is not None and should_cancel()):
            if not cancelled:
                self.client.post("interrupt")  # the answer came as the user cancelled: nothing to keep
            raise Cancelled(f"cancelled on {self.server.name}")
        answer = call.result()
        try:
            return a1111.result_from_response(answer, request, self.server.name, time.monotonic() - start)
        except ValueError as exc:
            raise ServerUnavailable(f"server {self.server.name!r} answered the job with what is not an A1111 "
                                    f"result: {exc}") from None

    def _report(self, last_step: int, on_step: OnStep | None) -> int:
        progress = self.client.get("progress?skip_current_image=false")
        state = progress.get("state") if isinstance(progress, dict) else None
        if not isinstance(state, dict):
            raise ServerUnavailable(f"server {self.server.name!r} sent no progress state")
        step, total = state.get("sampling_step"), state.get("sampling_steps")
        if not (isinstance(step, int) and isinstance(total, int) and total > 0) or step == last_step:
            return last_step
        preview = None
        if progress.get("current_image"):
            try:
                preview = a1111.decode_image(progress["current_image"], "the preview")
            except ValueError:
                preview = None  # a preview is decoration: a broken one is skipped, the job goes on
        if on_step is not None:
            # A1111's sampling_step is the 0-based index of the step just done, as StepInfo.step.
            on_step(StepInfo(step=min(max(step, 0), total - 1), total=total, sigma=0.0, preview=preview))
        return step


class _Call:
    """One blocking call in a daemon thread; `result()` returns its value or raises what it raised."""

    def __init__(self, function):
        self.done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._function = function
        threading.Thread(target=self._run, name="remote-job", daemon=True).start()

    def _run(self) -> None:
        try:
            self._value = self._function()
        except BaseException as exc:  # handed to the caller's thread by result()
            self._error = exc
        finally:
            self.done.set()

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value
