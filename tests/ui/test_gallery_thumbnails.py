"""The gallery's thumbnail thread outlives any bad file: each failure leaves that one placeholder, never the rest."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from sdstudio.history.png import MAX_TEXT_BYTES
from sdstudio.history.thumbnails import ThumbnailCache
from sdstudio.ui.gallery_model import ThumbnailLoader


def _with_huge_text(path: Path) -> Path:
    """An 8x8 PNG whose zTXt inflates past Pillow's 1 MiB text limit: Image.open raises ValueError."""
    Image.new("RGB", (8, 8), (5, 5, 5)).save(path)
    data = path.read_bytes()
    body = b"parameters\0\0" + zlib.compress(b"z" * (2 * MAX_TEXT_BYTES))
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", zlib.crc32(b"zTXt" + body))
    at = data.index(b"IDAT") - 4
    path.write_bytes(data[:at] + chunk + data[at:])
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_thumbnail_thread_survives_every_kind_of_bad_file(qtbot, tmp_path: Path, monkeypatch) -> None:
    good = []
    for i in range(3):
        path = tmp_path / f"good{i}.png"
        Image.new("RGB", (16, 8), (40 * i, 200, 90)).save(path)
        good.append((f"good{i}", path))
    bomb = tmp_path / "bomb.png"
    Image.new("L", (400, 400)).save(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # the 400x400 image is a "bomb", 16x8 is not
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    cache = ThumbnailCache(tmp_path / "thumbnails")
    get = ThumbnailCache.get

    def get_or_fail(self, entry_id, source):
        if entry_id == "bug":
            raise KeyError("anything at all")
        return get(self, entry_id, source)

    monkeypatch.setattr(ThumbnailCache, "get", get_or_fail)
    loader = ThumbnailLoader(cache)
    results: dict[str, bool] = {}
    loader.loaded.connect(lambda entry_id, image: results.__setitem__(entry_id, image.isNull()))
    bad = [
        ("text", _with_huge_text(tmp_path / "text.png")),
        ("bomb", bomb),
        ("junk", tmp_path / "junk.png"),
        ("missing", tmp_path / "missing.png"),
        ("bug", good[0][1]),
    ]
    loader.want(bad + good)  # the bad ones first: before, the first ValueError ended the thread
    qtbot.waitUntil(lambda: len(results) == len(bad) + len(good), timeout=20000)
    assert {entry_id: null for entry_id, null in results.items()} == {
        **{entry_id: True for entry_id, _ in bad}, **{entry_id: False for entry_id, _ in good}
    }
    assert loader._thread.is_alive()
    loader.stop()
