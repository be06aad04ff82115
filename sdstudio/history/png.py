"""Images with their parameters: PNG text chunks (PNG 1.2 spec, section 11.3.4) and EXIF UserComment.

We write the A1111 ``parameters`` chunk (tEXt when the text is Latin-1, else UTF-8 iTXt) and our own
compressed iTXt chunk ``sdstudio`` holding JSON (full request, model hash, parent id). We read
``parameters`` from any PNG text chunk (tEXt, zTXt, iTXt) by walking the chunks without decoding
pixels, and from the EXIF UserComment that A1111 writes into JPEG and WebP files.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, PngImagePlugin

from sdstudio.history.atomic import atomic_write

PARAMETERS_KEY = "parameters"
SDSTUDIO_KEY = "sdstudio"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def png_bytes(image: Image.Image, parameters: str, sdstudio_json: dict[str, Any] | None = None) -> bytes:
    """Encode `image` as PNG with the parameters chunks (see module docstring)."""
    info = PngImagePlugin.PngInfo()
    if parameters:
        if _is_latin1(parameters):
            info.add_text(PARAMETERS_KEY, parameters)
        else:
            info.add_itxt(PARAMETERS_KEY, parameters)
    if sdstudio_json is not None:
        info.add_itxt(SDSTUDIO_KEY, json.dumps(sdstudio_json, ensure_ascii=False), zip=True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png(path: Path, image: Image.Image, parameters: str, sdstudio_json: dict[str, Any] | None = None) -> None:
    """Write the PNG atomically: a reader or a restart after a crash never sees half a file."""
    data = png_bytes(image, parameters, sdstudio_json)
    atomic_write(Path(path), lambda file: file.write(data))


def _decode_text_chunk(kind: bytes, data: bytes) -> tuple[str, str]:
    keyword, _, rest = data.partition(b"\0")
    key = keyword.decode("latin-1")
    if kind == b"tEXt":
        return key, rest.decode("latin-1")
    if kind == b"zTXt":
        return key, zlib.decompress(rest[1:]).decode("latin-1")
    compressed = rest[0] == 1
    _language, _, rest = rest[2:].partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    return key, (zlib.decompress(text) if compressed else text).decode("utf-8")


def png_text_chunks(file: BinaryIO) -> dict[str, str]:
    """All text chunks of a PNG stream (first one wins per keyword); skips pixel data unread.

    A text chunk that does not decode is skipped; a bad CRC (a damaged file) ends the walk; a stream
    that is not a PNG gives {}.
    """
    if file.read(8) != PNG_SIGNATURE:
        return {}
    texts: dict[str, str] = {}
    while True:
        header = file.read(8)
        if len(header) < 8:
            return texts
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IEND":
            return texts
        if kind not in _TEXT_CHUNKS:
            file.seek(length + 4, io.SEEK_CUR)
            continue
        data = file.read(length)
        crc = file.read(4)
        if len(crc) < 4 or struct.unpack(">I", crc)[0] != zlib.crc32(kind + data):
            return texts
        try:
            key, text = _decode_text_chunk(kind, data)
        except (UnicodeDecodeError, zlib.error, IndexError):
            continue
        texts.setdefault(key, text)


def _user_comment(raw: bytes | str) -> str | None:
    """EXIF UserComment: an 8-byte character-code prefix, then the text (EXIF 2.3, 4.6.5)."""
    if isinstance(raw, str):
        return raw or None
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\0":
        # piexif (used by A1111) writes UTF-16 big-endian; honour a byte-order mark if present.
        encoding = "utf-16" if body[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-16-be"
        text = body.decode(encoding, errors="replace")
    elif prefix in (b"ASCII\0\0\0", b"\0" * 8):
        text = body.decode("latin-1")
    else:
        text = raw.decode("utf-8", errors="replace")
    return text.rstrip("\0") or None


def _exif_parameters(image: Image.Image) -> str | None:
    comment = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    return _user_comment(comment) if comment else None


def _parse_json(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def read_png_parameters(path: Path) -> tuple[str | None, dict[str, Any] | None]:
    """(A1111 parameters text or None, our sdstudio JSON or None) of a PNG, JPEG or WebP file."""
    with open(path, "rb") as file:
        texts = png_text_chunks(file)
        if texts:
            return texts.get(PARAMETERS_KEY), _parse_json(texts.get(SDSTUDIO_KEY))
        file.seek(0)
        if file.read(8) == PNG_SIGNATURE:
            return None, None
        file.seek(0)
        try:
            with Image.open(file) as image:
                text = image.info.get(PARAMETERS_KEY) or _exif_parameters(image)
        except (OSError, SyntaxError, ValueError):
            return None, None
    return (text if isinstance(text, str) else None), None
