import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from tests.packaging.util import load

icons = load("icons")
SVG_NS = "{http://www.w3.org/2000/svg}"
# SVG Tiny 1.2 shapes and paint servers: what Qt's renderer draws faithfully (no filters, masks, clip paths).
TINY_ELEMENTS = {"svg", "title", "desc", "defs", "linearGradient", "radialGradient", "stop", "g", "rect",
                 "circle", "ellipse", "line", "polyline", "polygon", "path"}


def test_the_icon_uses_only_svg_tiny_elements():
    tags = {element.tag.removeprefix(SVG_NS) for element in ET.parse(icons.SVG).iter()}
    assert tags <= TINY_ELEMENTS, tags - TINY_ELEMENTS


@pytest.mark.parametrize("size", icons.PNG_SIZES)
def test_committed_png_is_the_current_rendering_of_the_svg(size):
    committed = Image.open(icons.png_path(size))
    assert committed.mode == "RGBA" and committed.size == (size, size)
    fresh = np.asarray(icons.render(size), dtype=np.int16)
    difference = np.abs(np.asarray(committed, dtype=np.int16) - fresh)
    assert difference.mean() < 1.0, "sdstudio/resources/icons is stale: run python packaging/icons.py"


def test_icon_has_transparent_rounded_corners_and_an_opaque_middle():
    alpha = np.asarray(icons.render(64))[..., 3]
    assert alpha[0, 0] == alpha[0, -1] == alpha[-1, 0] == alpha[-1, -1] == 0
    assert alpha[32, 32] == 255


def test_platform_icons_hold_every_size(tmp_path):
    ico, icns = icons.platform_icons(tmp_path)
    with Image.open(ico) as image:
        assert image.format == "ICO"
        assert image.info["sizes"] == {(s, s) for s in icons.ICO_SIZES}
    with Image.open(icns) as image:
        assert image.format == "ICNS"
        assert image.size == (icons.ICNS_SIZE, icons.ICNS_SIZE)
