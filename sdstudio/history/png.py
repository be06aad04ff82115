"""Images with their parameters: PNG text chunks (PNG 1.2 spec, section 11.3.4) and EXIF UserComment.

We write the A1111 ``parameters`` chunk (tEXt when the text is Latin-1, else UTF-8 iTXt) and our own
compressed iTXt chunk ``sdstudio`` holding JSON (full request, model hash, parent id). We read
``parameters`` from any PNG text chunk (tEXt, zTXt, iTXt) by walking the chunks without decoding
pixels, and from the EXIF UserComment that A1111 writes into JPEG and WebP files.

Text is bounded both ways, at Pillow's own limit (PngImagePlugin.MAX_TEXT_CHUNK, 1 MiB inflated per chunk), so
every file we write is one Pillow and we can read: a chunk over it is refused on reading, never inflated past
the limit nor cut short (a 261 KB zTXt bomb inflated to 256 MB before), and all text chunks together are
limited too. Images with more pixels than Pillow's bomb limit are refused when opened (`open_image`).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, PngImagePlugin

from sdstudio.engine.errors import ImageFileError, RequestError
from sdstudio.history.atomic import atomic_write

PARAMETERS_KEY = "parameters"
SDSTUDIO_KEY = "sdstudio"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
MAX_TEXT_BYTES = PngImagePlugin.MAX_TEXT_CHUNK  # one text chunk, inflated
MAX_TOTAL_TEXT_BYTES = 8 * MAX_TEXT_BYTES  # all text chunks of one file, inflated


class TextTooLarge(ValueError):
    """A text chunk inflates past MAX_TEXT_BYTES (or all of them past MAX_TOTAL_TEXT_BYTES)."""


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
            info.add_text(PARAMETERS_KEY, _writable(PARAMETERS_KEY, parameters, "latin-1"))
        else:
            info.add_itxt(PARAMETERS_KEY, _writable(PARAMETERS_KEY, parameters, "utf-8"))
    if sdstudio_json is not None:
        record = json.dumps(sdstudio_json, ensure_ascii=False)
        info.add_itxt(SDSTUDIO_KEY, _writable(SDSTUDIO_KEY, record, "utf-8"), zip=True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png(path: Path, image: Image.Image, parameters: str, sdstudio_json: dict[str, Any] | None = None) -> None:
    """Write the PNG atomically: a reader or a restart after a crash never sees half a file."""
    data = png_bytes(image, parameters, sdstudio_json)
    atomic_write(Path(path), lambda file: file.write(data))


def _writable(key: str, text: str, encoding: str) -> str:
    """`text` when a reader (Pillow's or ours) will take it back, else RequestError: never a file we cannot read."""
    size = len(text.encode(encoding, errors="surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise RequestError(
            f"the {key} text is {size:,} bytes, over the {MAX_TEXT_BYTES:,} a PNG text chunk may hold; shorten the prompt"
        )
    return text


def _inflate(data: bytes, budget: int) -> bytes:
    """zlib-inflate at most min(MAX_TEXT_BYTES, budget) bytes; TextTooLarge past it, zlib.error when truncated."""
    limit = min(MAX_TEXT_BYTES, budget)
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise TextTooLarge(f"inflates past {limit:,} bytes")
    if not inflater.eof:
        raise zlib.error("truncated compressed text")
    return out


def _decode_text_chunk(kind: bytes, data: bytes, budget: int) -> tuple[str, str]:
    keyword, _, rest = data.partition(b"\0")
    key = keyword.decode("latin-1")
    if kind == b"tEXt":
        raw = rest
    elif kind == b"zTXt":
        return key, _inflate(rest[1:], budget).decode("latin-1")
    else:
        compressed = rest[0] == 1
        _language, _, rest = rest[2:].partition(b"\0")
        _translated, _, raw = rest.partition(b"\0")
        if compressed:
            return key, _inflate(raw, budget).decode("utf-8")
    if len(raw) > min(MAX_TEXT_BYTES, budget):
        raise TextTooLarge(f"holds {len(raw):,} bytes")
    return key, raw.decode("latin-1" if kind == b"tEXt" else "utf-8")


@dataclass
class PngText:
    """The text chunks of one file (first one wins per keyword) and why any were refused."""

    texts: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # keyword -> reason, for chunks over the limits


def read_text_chunks(file: BinaryIO) -> PngText:
    """All text chunks of a PNG stream; skips pixel data unread.

    A text chunk that does not decode is skipped; one over the size limits is refused and named in
    `refused`; a bad CRC (a damaged file) ends the walk; a stream that is not a PNG gives nothing.
    """
    found = PngText()
    if file.read(8) != PNG_SIGNATURE:
        return found
    budget = MAX_TOTAL_TEXT_BYTES
    while True:
        header = file.read(8)
        if len(header) < 8:
            return found
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IEND":
            return found
        if kind not in _TEXT_CHUNKS or length > MAX_TEXT_BYTES + 256:
            if kind in _TEXT_CHUNKS:  # longer than any text we take, even uninflated: not read at all
                keyword = file.read(80).partition(b"\0")[0].decode("latin-1")
                file.seek(length + 4 - 80, io.SEEK_CUR)
                found.refused.setdefault(keyword, f"its {keyword!r} text chunk holds {length:,} bytes")
                continue
            file.seek(length + 4, io.SEEK_CUR)
            continue
        data = file.read(length)
        crc = file.read(4)
        if len(crc) < 4 or struct.unpack(">I", crc)[0] != zlib.crc32(kind + data):
            return found
        try:
            key, text = _decode_text_chunk(kind, data, budget)
        except TextTooLarge as e:
            keyword = data.partition(b"\0")[0].decode("latin-1")
            found.refused.setdefault(keyword, f"its {keyword!r} text chunk {e}, over the limit of {MAX_TEXT_BYTES:,}")
            continue
        except (UnicodeDecodeError, zlib.error, IndexError):
            continue
        budget -= len(text)
        if key not in found.texts and key not in found.refused:
            found.texts[key] = text


def png_text_chunks(file: BinaryIO) -> dict[str, str]:
    """The readable text chunks of a PNG stream (see `read_text_chunks`); {} when it is not a PNG."""
    return read_text_chunks(file).texts


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


def _parse_json(text: str | None) -> tuple[dict[str, Any] | None, str]:
    """(the JSON object, "") or (None, why not): json.loads raises RecursionError on deep nesting and
    ValueError on a number of over 4300 digits, so every failure of a hostile text is caught here."""
    if not text:
        return None, ""
    try:
        value = json.loads(text)
    except RecursionError:
        return None, "its sdstudio record is nested too deeply to read"
    except ValueError as e:
        return None, f"its sdstudio record is not valid JSON ({str(e)[:80]})"
    return (value, "") if isinstance(value, dict) else (None, "its sdstudio record is not a JSON object")


@dataclass(frozen=True)
class ImageText:
    """What a file says about how it was made, before any interpretation, and why parts of it were refused."""

    parameters: str | None = None  # A1111's parameters text
    record: dict[str, Any] | None = None  # our sdstudio JSON
    problems: tuple[str, ...] = ()


def read_image_text(path: Path) -> ImageText:
    """The parameters text and sdstudio JSON of a PNG, JPEG or WebP file, never decoding pixels.

    OSError when the file cannot be read; ImageFileError for a non-PNG over Pillow's pixel limit.
    """
    with open(path, "rb") as file:
        found = read_text_chunks(file)
        if found.texts or found.refused:
            record, problem = _parse_json(found.texts.get(SDSTUDIO_KEY))
            problems = tuple(found.refused.values()) + ((problem,) if problem else ())
            return ImageText(found.texts.get(PARAMETERS_KEY), record, problems)
        file.seek(0)
        if file.read(8) == PNG_SIGNATURE:
            return ImageText()
        file.seek(0)
        try:
            with open_image(file, Path(path).name) as image:
                text = image.info.get(PARAMETERS_KEY) or _exif_parameters(image)
        except (OSError, SyntaxError, ValueError) as e:
            if isinstance(e, ImageFileError):
                raise
            return ImageText()
    return ImageText(text if isinstance(text, str) else None)


def read_png_parameters(path: Path) -> tuple[str | None, dict[str, Any] | None]:
    """(A1111 parameters text or None, our sdstudio JSON or None) of a PNG, JPEG or WebP file."""
    found = read_image_text(path)
    return found.parameters, found.record


@contextmanager
def open_image(source: Path | BinaryIO, name: str = "") -> Iterator[Image.Image]:
    """Image.open that refuses, with ImageFileError, an image over Pillow's decompression-bomb pixel limit.

    Pillow itself only warns between the limit and twice it, and raises DecompressionBombError (no OSError)
    beyond; either way the caller gets one line it can show. Pillow's refusal of an oversized text chunk
    (a ValueError) becomes an ImageFileError too.
    """
    name = name or (Path(source).name if isinstance(source, (str, Path)) else "the image")
    try:
        image = Image.open(source)  # no catch_warnings: it is not thread-safe, and the thumbnail thread opens too
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # the warning when warnings are errors
        raise ImageFileError(f"{name}: has more pixels than the {Image.MAX_IMAGE_PIXELS:,} allowed; refused") from None
    except ValueError as e:
        raise ImageFileError(f"{name}: not a readable image ({str(e)[:100]})") from None
    with image:
        width, height = image.size
        if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
            raise ImageFileError(
                f"{name}: {width}x{height} has more pixels than the {Image.MAX_IMAGE_PIXELS:,} allowed; refused"
            )
        yield image
