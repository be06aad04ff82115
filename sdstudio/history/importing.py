"""Opening or dropping any image: its parameters when it has some (ours, A1111's or compatible).

An image without parameters is simply a picture, for use as an init image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.parameters import parse_parameters, request_from_parameters
from sdstudio.history.png import read_png_parameters
from sdstudio.history.record import record_or_none


@dataclass(frozen=True)
class Imported:
    """What a file holds. `request` is None when there are no parameters or they cannot be re-run
    (then `problem` says why, e.g. a sampler SD Studio does not have)."""

    path: Path
    image: Image.Image = field(repr=False)
    parameters_text: str = ""
    parameters: dict[str, str] = field(default_factory=dict)
    request: GenerationRequest | None = None
    problem: str = ""

    @property
    def has_parameters(self) -> bool:
        return bool(self.parameters_text) or self.request is not None


def import_image(path: Path) -> Imported:
    """Read an image file and its parameters; OSError when the file is not a readable image."""
    path = Path(path)
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    text, data = read_png_parameters(path)
    text = text or ""
    params = parse_parameters(text) if text else {}
    record = record_or_none(data)
    if record is not None:
        return Imported(path, image, text, params, record.request)
    if not text:
        return Imported(path, image)
    try:
        return Imported(path, image, text, params, request_from_parameters(params))
    except RequestError as e:
        return Imported(path, image, text, params, None, str(e))
