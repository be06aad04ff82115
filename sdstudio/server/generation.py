"""A mapped txt2img/img2img body made ready and run: sizes from the model's header, the job checked as the
CLI checks it (its LoRA tags' files found; a job far beyond the model's native size or this machine is
refused, there is no --yes over HTTP), then each batch generated in the worker and every image added to the
server's history.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from sdstudio.engine.detect import ModelDescription, detect
from sdstudio.engine.errors import Cancelled, ModelNotFound, RequestError
from sdstudio.engine.job_size import default_size, estimate, job_problem, largest_pass, physical_memory
from sdstudio.engine.lora_set import resolve_loras
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.safetensors_file import read_header
from sdstudio.engine.validate import validate
from sdstudio.server.checkpoints import Checkpoint
from sdstudio.server.mapping import NOT_GIVEN, Mapped

_HEADERS: dict[tuple[str, int, int], ModelDescription] = {}
_HEADERS_LOCK = threading.Lock()


def describe(checkpoint: Checkpoint) -> ModelDescription:
    """The checkpoint's description from its header (no weights), cached per path, size and mtime."""
    try:
        st = checkpoint.path.stat()
    except OSError as exc:  # gone since it was listed, or the built-in model missing from this installation
        raise ModelNotFound(f"model {checkpoint.name} cannot be read ({exc.strerror or exc}); choose another "
                            "(GET /sdapi/v1/sd-models)") from None
    key = (str(checkpoint.path), st.st_size, st.st_mtime_ns)
    with _HEADERS_LOCK:
        found = _HEADERS.get(key)
    if found is None:
        found = detect(read_header(checkpoint.path))
        with _HEADERS_LOCK:
            _HEADERS[key] = found
    return found


def ready(mapped: Mapped) -> Mapped:
    """Sizes not given filled in from the model, every request validated, and the job's size checked."""
    desc = describe(mapped.checkpoint)
    requests = []
    for req in mapped.requests:
        if NOT_GIVEN in (req.width, req.height):
            given = (req.width or None, req.height or None)
            req = req.replace(**dict(zip(("width", "height"), default_size(
                *given, desc.default_size, desc.vae_downscale, None), strict=True)))
        req = validate(req, multiple=desc.vae_downscale)
        resolve_loras(req)  # a bad <lora:…> tag or a missing file is refused before the job queues
        width, height = largest_pass(req, desc.vae_downscale)
        problem = job_problem(estimate(width, height, req.steps, req.batch_size, desc.default_size),
                              physical_memory(), req.tiled_vae)
        if problem:
            raise RequestError(f"{problem}: choose a smaller width/height, hires size or batch_size")
        requests.append(req)
    mapped.requests = requests
    if requests:
        mapped.echo.update(width=requests[0].width, height=requests[0].height)
    return mapped


@dataclass
class Made:
    """The images a job made (their history files, PNGs with the infotext), in order, and whether it was
    interrupted before the end."""

    files: list[Path]
    requests: list[GenerationRequest]
    model_name: str
    interrupted: bool = False


def generation_work(mapped: Mapped, store):
    """The worker's job for `mapped`: every batch in turn, each image added to `store` as it is made."""

    def work(engine, report, should_cancel) -> Made:
        made = Made([], [], "")
        count = len(mapped.requests)
        for n, req in enumerate(mapped.requests):
            report(n, count, None)
            try:
                result = engine.generate(req, on_step=lambda info, n=n: report(n, count, info),
                                         should_cancel=should_cancel)
            except Cancelled:
                made.interrupted = True
                break
            made.model_name = result.model_name
            for image, r in zip(result.images, result.requests, strict=True):
                made.files.append(store.add(image, r, result.model_name).file)
                made.requests.append(r)
            if should_cancel():  # interrupted after the last step: the batch is complete, the rest is not run
                made.interrupted = n + 1 < count
                break
        return made

    return work
