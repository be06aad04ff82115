"""Reading one A1111 JSON body: typed fields with A1111's defaults, and base64 images.

Pydantic would validate A1111's models; we check each field where it is read instead and raise RequestError
with the field's name, so a wrong type is a 4xx with a message like any other bad value.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Mapping
from typing import Any

from PIL import Image, UnidentifiedImageError

from sdstudio.engine.errors import ImageFileError, RequestError
from sdstudio.history.png import open_image

MAX_NAME = 200  # characters of a name (sampler, model, ...) quoted back in a message


def shown(value: Any) -> str:
    """A client's value as a message quotes it: repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Body:
    """A JSON object's fields; each getter returns the field or its default and refuses the wrong type."""

    def __init__(self, data: Any, what: str = "the request body"):
        if not isinstance(data, Mapping):
            raise RequestError(f"{what} must be a JSON object, not {type(data).__name__}")
        self.data = data

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def integer(self, key: str, default: int) -> int:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JavaScript clients send 512.0
        if isinstance(value, bool) or not isinstance(value, int):
            raise RequestError(f"{key} must be a whole number, got {shown(value)}")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RequestError(f"{key} must be a number, got {shown(value)}")
        return float(value)

    def text(self, key: str, default: str = "") -> str:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise RequestError(f"{key} must be text, got {shown(value)}")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)  # A1111's int-valued switches (inpainting_mask_invert) arrive as 0/1
        if not isinstance(value, bool):
            raise RequestError(f"{key} must be true or false, got {shown(value)}")
        return value

    def items(self, key: str) -> list:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise RequestError(f"{key} must be a list, got {shown(value)}")
        return value

    def mapping(self, key: str) -> dict:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise RequestError(f"{key} must be a JSON object, got {shown(value)}")
        return dict(value)


def decode_image(value: Any, what: str) -> Image.Image:
    """An image sent as base64 (with or without a `data:image/...;base64,` prefix, as A1111's
    decode_base64_to_image takes it), loaded and refused past Pillow's decompression-bomb limit. A1111 also
    fetches http(s) URLs here; a server that fetches URLs for its clients is a request forger, so we
    refuse."""
    if not isinstance(value, str) or not value:
        raise RequestError(f"{what} must be a base64-encoded image, got {shown(value)}")
    if value.startswith(("http://", "https://")):
        raise RequestError(f"{what}: image URLs are not fetched; send the image itself as base64")
    if value.startswith("data:image/"):
        value = value.partition(";base64,")[2]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{what} is not valid base64") from None
    try:
        with open_image(io.BytesIO(data), what) as image:
            image.load()
            return image.copy()
    except ImageFileError as exc:
        raise RequestError(str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RequestError(f"{what} is not a readable image ({str(exc)[:100]})") from None


def encode_png(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def image_png(image: Image.Image) -> str:
    """A plain PNG of `image` as base64 (previews: no parameters to carry)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return encode_png(buffer.getvalue())
