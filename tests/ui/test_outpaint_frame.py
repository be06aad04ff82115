"""The Frame tool: dragging an edge of the input image outward extends that side (snapped to 8 pixels)."""

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest

from sdstudio.engine.outpaint import Extension, blend_band
from sdstudio.ui.canvas import Tool
from sdstudio.ui.outpaint_frame import FrameDrag
from tests.ui.test_outpaint_bar import textured_image


@pytest.mark.parametrize("start, now, expected, frame", [
    ((60, 20), (101, 25), Extension(right=40), (0, 0, 104, 40)),  # 41 px outward snaps down to 40
    ((2, 20), (-30, 0), Extension(left=32), (-32, 0, 96, 40)),
    ((30, 1), (30, -17), Extension(up=16), (0, -16, 64, 56)),
    ((30, 39), (30, 47), Extension(down=8), (0, 0, 64, 48)),
    ((60, 20), (40, 20), Extension(), (0, 0, 64, 40)),  # inward adds nothing
    ((70, 20), (9000, 20), Extension(right=4096), (0, 0, 4160, 40)),
])
def test_the_nearest_edge_moves_outward_by_the_drag(start, now, expected, frame):
    drag = FrameDrag.begin(start, (64, 40))
    drag.now = now
    assert drag.extension() == expected and drag.frame() == frame


def drag(canvas, start, end):
    a, b = (canvas.image_to_widget(QPointF(*p)).toPoint() for p in (start, end))
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
    QTest.mouseMove(canvas, b)
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)


def test_dragging_the_frame_on_the_canvas_outpaints_that_side(qtbot, window):
    window.set_input_image(textured_image(48, 40))
    cp = window.canvas_panel
    cp.canvas.zoom_actual()
    cp.act_frame.trigger()
    assert cp.canvas.tool == Tool.FRAME
    drag(cp.canvas, (46, 20), (46, 35))  # a drag along the edge moves nothing
    assert cp.input_image.width() == 48 and window.mask.is_empty()
    drag(cp.canvas, (47, 20), (67, 20))  # 20 px outward snaps to 16
    assert (cp.input_image.width(), cp.input_image.height()) == (64, 40)
    mask = window.mask.pixels()
    o = blend_band(window.state.mask_blur)
    assert (mask[:, 48 - o :] == 255).all() and mask[:, : 48 - o].max() == 0
    assert (window.state.width, window.state.height) == (64, 40)
    assert np.asarray(mask).shape == (40, 64)
