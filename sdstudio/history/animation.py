"""Frames (a latent walk's) as one animated file: WebP or GIF through Pillow, chosen by the file's suffix.

WebP keeps full colour (quality 90); GIF is limited to 256 colours per frame (Pillow quantises each frame
with its own palette). Both loop forever. `save_frame` writes one exact frame as a PNG with its parameters
(A1111 text and our record) into a folder, numbered after what is there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from sdstudio.engine.errors import RequestError, SDStudioError
from sdstudio.engine.request import GenerationRequest

FORMATS = {".webp": "WEBP", ".gif": "GIF"}
DEFAULT_FRAME_MS = 125  # 8 frames a second: a 16-frame walk plays in 2 seconds


def animation_format(path: Path) -> str:
    """Pillow's format name for `path`; RequestError for a suffix we do not write."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise RequestError(f"{Path(path).name}: an animation is saved as .webp or .gif")
    return fmt


def save_animation(path: Path, frames: Sequence[Image.Image], frame_ms: int = DEFAULT_FRAME_MS,
                   bounce: bool = False) -> Path:
    """Write `frames` as an animation looping forever; `bounce` plays them forwards then back (a walk that
    returns to its start without a jump). OSError when it cannot be written."""
    fmt = animation_format(path)
    if not frames:
        raise RequestError("an animation needs at least one frame")
    if not 10 <= frame_ms <= 10_000:
        raise RequestError(f"frame time {frame_ms} ms is out of range: use 10..10000")
    sequence = [im.convert("RGB") for im in frames]
    if bounce and len(sequence) > 2:
        sequence += sequence[-2:0:-1]
    options = {"quality": 90, "method": 4} if fmt == "WEBP" else {"optimize": False, "disposal": 1}
    sequence[0].save(path, format=fmt, save_all=True, append_images=sequence[1:], duration=frame_ms, loop=0,
                     **options)
    return Path(path)


def next_free(folder: Path, seed: int) -> Path:
    """`folder`/NNNNN-SEED.png, numbered one past the highest number there (generate's --out naming)."""
    existing = [int(p.name.split("-")[0]) for p in folder.glob("[0-9]*-*.png") if p.name.split("-")[0].isdigit()]
    return folder / f"{max(existing, default=-1) + 1:05d}-{seed}.png"


def save_frame(folder: Path, image: Image.Image, request: GenerationRequest, model_name: str) -> Path:
    """One image with its parameters as the next PNG in `folder`; SDStudioError when it cannot be saved."""
    from sdstudio.history.parameters import format_parameters
    from sdstudio.history.png import save_png
    from sdstudio.history.record import Record

    path = next_free(Path(folder), request.seed)
    record = Record(id=path.stem, created=time.time(), request=request, model_name=model_name)
    try:
        save_png(path, image, format_parameters(request, model_name), record.to_json())
    except OSError as exc:
        raise SDStudioError(f"{path}: cannot be saved ({exc.strerror or exc}); free some space or choose "
                            "another folder") from None
    return path
