import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.errors import RequestError
from sdstudio.history.animation import animation_format, save_animation


def frames(n=4, size=(24, 16)):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


@pytest.mark.parametrize("suffix", [".webp", ".gif", ".GIF"])
def test_animation_holds_every_frame_in_order_and_loops(tmp_path, suffix):
    source = frames()
    path = save_animation(tmp_path / f"walk{suffix}", source, frame_ms=80)
    with Image.open(path) as im:
        assert im.n_frames == 4 and im.size == (24, 16)
        assert im.info.get("loop") == 0
        for k in range(len(source)):
            im.seek(k)
            got = np.asarray(im.convert("RGB"), dtype=np.float32)
            diffs = [np.abs(got - np.asarray(o, dtype=np.float32)).mean() for o in source]
            assert int(np.argmin(diffs)) == k  # frame k is nearest to source frame k (lossy formats)
            assert im.info.get("duration") == 80


def test_bounce_plays_back_without_repeating_the_ends(tmp_path):
    with Image.open(save_animation(tmp_path / "b.gif", frames(4), bounce=True)) as im:
        assert im.n_frames == 6  # 0 1 2 3 2 1


def test_unknown_suffix_empty_and_absurd_timing_are_refused(tmp_path):
    with pytest.raises(RequestError, match=".webp or .gif"):
        animation_format(tmp_path / "walk.mp4")
    with pytest.raises(RequestError, match="at least one frame"):
        save_animation(tmp_path / "a.webp", [])
    with pytest.raises(RequestError, match="out of range"):
        save_animation(tmp_path / "a.webp", frames(2), frame_ms=0)
