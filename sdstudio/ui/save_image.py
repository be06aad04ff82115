"""Where a shown image came from, and saving it with or without its parameters.

"Save Image As…" keeps the parameters chunks (A1111's ``parameters`` text and our ``sdstudio`` record, see
history.png) so the file re-runs like the original; "without metadata" writes the pixels only.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtGui import QImage

from sdstudio.engine.request import GenerationRequest
from sdstudio.history.atomic import atomic_write
from sdstudio.history.parameters import format_parameters
from sdstudio.history.png import png_bytes
from sdstudio.ui.imageconv import qimage_to_pil


@dataclass(frozen=True)
class ImageSource:
    """What made a shown image: a history entry (its id and PNG) and/or the request of a finished job."""

    entry_id: str = ""
    file: Path | None = None
    request: GenerationRequest | None = None
    model_name: str = ""


def save_with_parameters(image: QImage, source: ImageSource | None, path: Path) -> None:
    """Our PNG as it is (every chunk) when there is one, else the job's parameters text with the pixels;
    an image with neither (an input view, a plain file) has nothing more than its pixels to keep."""
    if source is not None and source.file is not None:
        if Path(source.file).resolve() != Path(path).resolve():
            shutil.copyfile(source.file, path)
        return
    parameters = format_parameters(source.request, source.model_name) if source and source.request else ""
    data = png_bytes(qimage_to_pil(image), parameters)
    atomic_write(Path(path), lambda file: file.write(data))


def save_pixels(image: QImage, path: Path) -> None:
    """The pixels only: no parameters, no record, nothing about this machine."""
    data = png_bytes(qimage_to_pil(image), "")
    atomic_write(Path(path), lambda file: file.write(data))
