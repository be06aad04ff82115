"""Parameters in image files: our PNG chunks, other tools' chunks, EXIF UserComment, atomic writes."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from sdstudio.history.atomic import atomic_write, is_temp_name
from sdstudio.history.png import png_text_chunks, read_png_parameters, save_png

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
