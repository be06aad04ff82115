"""SD upscale's grid and blend (torch-free): tiles cover the image, identity tiles give the image back, and
the blend across an overlap is a ramp, not a cut."""

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.errors import RequestError
from sdstudio.engine.sd_upscale import positions, refine_in_tiles, tile_size


def _picture(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize("side, tile, overlap", [(1024, 512, 64), (1000, 512, 64), (520, 512, 64), (512, 512, 64),
                                                 (300, 512, 64), (2048, 768, 0), (1537, 512, 200)])
def test_positions_cover_the_side_evenly(side, tile, overlap):
    starts = positions(side, tile, overlap)
    assert starts[0] == 0 and starts == sorted(starts)
    if tile < side:
        assert starts[-1] + tile == side
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        assert max(gaps) <= tile - overlap or len(starts) == 2 and gaps[0] <= tile  # overlap at least as asked
        assert max(gaps) - min(gaps) <= 1
    assert positions(1024, 512, 64) == [0, 256, 512]  # A1111: ceil((1024 - 64) / 448) = 3 tiles


def test_identity_tiles_give_the_image_back():
    image = _picture(200, 136)
    seen = []
    out = refine_in_tiles(image, 64, 64, lambda t, i, n: seen.append((i, n)) or t, overlap=16)
    assert np.array_equal(np.asarray(out), np.asarray(image))
    assert [i for i, _ in seen] == list(range(len(seen))) and seen[0][1] == len(seen) == 4 * 3


def test_blend_ramps_across_the_overlap():
    image = Image.new("RGB", (96, 64))
    # Tile 0 comes back black, tile 1 white: across the shared columns the result rises steadily.
    out = refine_in_tiles(image, 64, 64, lambda t, i, n: Image.new("RGB", t.size, (255 * i,) * 3), overlap=32)
    row = np.asarray(out)[10, :, 0].astype(int)
    assert row[:32].max() == 0 and row[64:].min() == 255
    middle = row[32:64]
    assert np.all(np.diff(middle) >= 0) and middle[0] < 20 and middle[-1] > 235


def test_tile_shrinks_to_small_images_and_refuses_nothing_to_do():
    assert tile_size(300, 200, 512, 512) == (296, 200)
    with pytest.raises(RequestError):
        tile_size(5, 200, 512, 512)
    with pytest.raises(RequestError, match="came back"):
        refine_in_tiles(_picture(64, 64), 32, 32, lambda t, i, n: t.resize((8, 8)))
