"""Parameters in image files: our PNG chunks, other tools' chunks, EXIF UserComment, atomic writes."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from sdstudio.engine.errors import ImageFileError, RequestError
from sdstudio.history.atomic import atomic_write, is_temp_name
from sdstudio.history.png import (
    MAX_TEXT_BYTES,
    MAX_TOTAL_TEXT_BYTES,
    open_image,
    png_text_chunks,
    read_image_text,
    read_png_parameters,
    read_text_chunks,
    save_png,
)

LATIN1 = "a café in Paris, (bokeh:1.2)\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 8x8"
NON_LATIN1 = "猫の写真, 🐈\nNegative prompt: ぼやけた\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 8x8"


def chunk_types(path: Path) -> list[tuple[bytes, bytes]]:
    """(chunk type, keyword) of every text chunk, read straight from the bytes."""
    data = path.read_bytes()[8:]
    found = []
    while data:
        length, kind = struct.unpack(">I4s", data[:8])
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            found.append((kind, data[8 : 8 + length].split(b"\0")[0]))
        data = data[12 + length :]
    return found


def picture() -> Image.Image:
    return Image.new("RGB", (8, 8), (200, 30, 40))


@pytest.mark.parametrize(("text", "kind"), [(LATIN1, b"tEXt"), (NON_LATIN1, b"iTXt")])
def test_parameters_chunk_is_text_when_latin1_and_itxt_otherwise(tmp_path: Path, text: str, kind: bytes) -> None:
    path = tmp_path / "a.png"
    record = {"id": "abc", "prompt": text, "seed": 1}
    save_png(path, picture(), text, record)
    assert chunk_types(path) == [(kind, b"parameters"), (b"iTXt", b"sdstudio")]
    assert read_png_parameters(path) == (text, record)
    with Image.open(path) as image:  # how A1111 and most tools read it
        assert image.info["parameters"] == text
        assert image.getpixel((3, 3)) == (200, 30, 40)


@pytest.mark.parametrize(
    "add",
    [
        lambda info, text: info.add_text("parameters", text),
        lambda info, text: info.add_text("parameters", text, zip=True),
        lambda info, text: info.add_itxt("parameters", text),
        lambda info, text: info.add_itxt("parameters", text, zip=True),
        lambda info, text: info.add(b"tEXt", b"parameters\0" + text.encode("latin-1"), after_idat=True),
    ],
    ids=["tEXt", "zTXt", "iTXt", "iTXt-compressed", "tEXt-after-IDAT"],
)
def test_reads_parameters_written_by_other_tools_in_any_text_chunk(tmp_path: Path, add) -> None:
    info = PngImagePlugin.PngInfo()
    add(info, LATIN1)
    path = tmp_path / "a1111.png"
    picture().save(path, pnginfo=info)
    assert read_png_parameters(path) == (LATIN1, None)


def test_png_without_parameters_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    picture().save(path)
    assert read_png_parameters(path) == (None, None)


def test_damaged_chunk_stops_the_walk_without_error(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    save_png(path, picture(), LATIN1, {"id": "x"})
    data = bytearray(path.read_bytes())
    data[data.index(b"Paris")] ^= 0xFF  # breaks the CRC of the parameters chunk
    assert png_text_chunks(io.BytesIO(bytes(data))) == {}


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_reads_a1111_exif_user_comment_from_jpeg_and_webp(tmp_path: Path, fmt: str) -> None:
    # A1111 stores parameters for JPEG/WebP as EXIF UserComment, "UNICODE\0" + UTF-16 big-endian (piexif).
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + NON_LATIN1.encode("utf-16-be")
    path = tmp_path / f"a.{fmt.lower()}"
    picture().save(path, format=fmt, exif=exif)
    assert read_png_parameters(path) == (NON_LATIN1, None)


def test_non_image_file_reads_as_no_parameters(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    assert read_png_parameters(path) == (None, None)


def test_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    save_png(path, picture(), LATIN1)
    before = path.read_bytes()

    def half_then_fail(file) -> None:
        file.write(b"\x89PNG half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.png"]


def test_temp_files_are_recognisable_by_name(tmp_path: Path) -> None:
    seen: list[str] = []
    atomic_write(tmp_path / "x.png", lambda file: seen.extend(os.listdir(tmp_path)))
    assert len(seen) == 1 and is_temp_name(seen[0])
    assert not is_temp_name("x.png")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_chunks(path: Path, *chunks: bytes) -> Path:
    """A real 8x8 PNG with the given raw chunks spliced in before its image data."""
    buffer = io.BytesIO()
    picture().save(buffer, format="PNG")
    data = buffer.getvalue()
    first_idat = data.index(b"IDAT") - 4
    path.write_bytes(data[:first_idat] + b"".join(chunks) + data[first_idat:])
    return path


def test_ztxt_bomb_is_refused_without_inflating_it(tmp_path: Path) -> None:
    bomb = zlib.compress(b"a" * (64 * MAX_TEXT_BYTES), 9)  # 64 MiB of text in about 64 KB
    path = png_with_chunks(tmp_path / "bomb.png", _chunk(b"zTXt", b"parameters\0\0" + bomb))
    tracemalloc.start()
    found = read_image_text(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert found.parameters is None
    assert len(found.problems) == 1 and "parameters" in found.problems[0] and "\n" not in found.problems[0]
    assert peak < 4 * MAX_TEXT_BYTES


@pytest.mark.parametrize("compressed", [True, False])
def test_text_chunk_over_the_limit_is_refused_not_cut(tmp_path: Path, compressed: bool) -> None:
    text = ("x" * (MAX_TEXT_BYTES + 1)).encode()
    body = b"parameters\0" + (b"\1\0\0\0" + zlib.compress(text) if compressed else b"\0\0\0\0" + text)
    ok = _chunk(b"tEXt", b"other\0small")
    path = png_with_chunks(tmp_path / "big.png", _chunk(b"iTXt", body), ok)
    found = read_image_text(path)
    assert found.parameters is None and found.problems
    with open(path, "rb") as file:
        assert read_text_chunks(file).texts == {"other": "small"}


def test_all_text_chunks_together_are_bounded(tmp_path: Path) -> None:
    piece = zlib.compress(b"y" * MAX_TEXT_BYTES)
    chunks = [_chunk(b"zTXt", f"k{i}".encode() + b"\0\0" + piece) for i in range(12)]
    with open(png_with_chunks(tmp_path / "many.png", *chunks), "rb") as file:
        found = read_text_chunks(file)
    assert sum(len(t) for t in found.texts.values()) <= MAX_TOTAL_TEXT_BYTES and found.refused


def test_deep_json_record_is_a_problem_not_a_recursion_error(tmp_path: Path) -> None:
    deep = "[" * 200_000 + "]" * 200_000
    path = png_with_chunks(tmp_path / "deep.png", _chunk(b"iTXt", b"sdstudio\0\1\0\0\0" + zlib.compress(deep.encode())))
    found = read_image_text(path)
    assert found.record is None and "deeply" in found.problems[0]


def test_save_png_refuses_text_a_reader_could_not_take_back(tmp_path: Path) -> None:
    path = tmp_path / "long.png"
    with pytest.raises(RequestError, match="shorten"):
        save_png(path, picture(), "p" * (MAX_TEXT_BYTES + 1))
    assert not path.exists()
    longest = "猫" * (MAX_TEXT_BYTES // 3)  # within the limit in UTF-8: written, and Pillow reads it back
    record = {"prompt": longest[:-10]}
    save_png(path, picture(), longest, record)
    with Image.open(path) as image:
        assert image.info["parameters"] == longest
    assert read_png_parameters(path) == (longest, record)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_over_the_pixel_limit_is_refused_in_one_line(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "wide.png"
    Image.new("L", (300, 200)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 200 // 3)  # beyond twice the limit: Pillow raises
    with pytest.raises(ImageFileError, match="more pixels"), open_image(path):
        pass
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 200 - 1)  # just over: Pillow only warns
    with pytest.raises(ImageFileError, match="300x200"), open_image(path):
        pass
