import numpy as np
import pytest

from sdstudio.ui.mask_model import MaskModel


@pytest.fixture
def mask(qapp):
    m = MaskModel()
    m.reset(40, 30)
    return m


def stroke(mask, points, radius=3.0, hardness=1.0, erase=False):
    mask.begin_stroke(radius, hardness, erase)
    for x, y in points:
        mask.stroke_to(x, y)
    mask.end_stroke()


def test_hard_stroke_covers_the_capsule_and_nothing_else(mask):
    stroke(mask, [(10.5, 15.5), (30.5, 15.5)], radius=3)
    px = mask.pixels()
    assert (px[15, 10:31] == 255).all()  # along the segment
    assert (px[13:18, 20] == 255).all()  # 2 px either side of it
    assert px[15, 5] == 0 and px[15, 36] == 0  # beyond the round ends
    assert px[10, 20] == 0 and px[20, 20] == 0  # beyond the radius
    ys, xs = np.nonzero(px)
    assert xs.min() >= 7 and xs.max() <= 33 and ys.min() >= 12 and ys.max() <= 18


def test_soft_brush_falls_off_towards_the_edge(mask):
    stroke(mask, [(20.5, 15.5)], radius=8, hardness=0.0)
    row = mask.pixels()[15, 20:29].astype(int)
    assert row[0] == 255
    assert all(a >= b for a, b in zip(row, row[1:], strict=False)) and row[-1] == 0
    assert 0 < row[4] < 255


def test_a_stroke_does_not_build_up_over_itself(mask):
    stroke(mask, [(20.5, 15.5)] * 10 + [(21.5, 15.5), (20.5, 15.5)] * 5, radius=6, hardness=0.0)
    once = MaskModel()
    once.reset(40, 30)
    stroke(once, [(20.5, 15.5), (21.5, 15.5)], radius=6, hardness=0.0)
    assert np.array_equal(mask.pixels(), once.pixels())


def test_eraser_removes_paint(mask):
    mask.fill()
    stroke(mask, [(5.5, 5.5), (5.5, 25.5)], radius=2, erase=True)
    px = mask.pixels()
    assert (px[5:26, 5] == 0).all() and (px[:, 10] == 255).all()


def test_undo_and_redo_restore_each_stroke(mask):
    stroke(mask, [(5.5, 5.5), (15.5, 5.5)])
    first = mask.pixels().copy()
    stroke(mask, [(5.5, 20.5), (15.5, 20.5)])
    second = mask.pixels().copy()
    assert mask.undo_stack.count() == 2
    mask.undo_stack.undo()
    assert np.array_equal(mask.pixels(), first)
    mask.undo_stack.undo()
    assert not mask.pixels().any()
    mask.undo_stack.redo()
    mask.undo_stack.redo()
    assert np.array_equal(mask.pixels(), second)


def test_invert_clear_and_fill_are_undoable(mask):
    stroke(mask, [(10.5, 10.5)], radius=4)
    painted = mask.pixels().copy()
    mask.invert()
    assert np.array_equal(mask.pixels(), 255 - painted)
    mask.clear()
    assert mask.is_empty() and mask.to_pil() is None
    mask.fill()
    assert (mask.pixels() == 255).all()
    mask.undo_stack.undo()
    mask.undo_stack.undo()
    assert np.array_equal(mask.pixels(), 255 - painted)
    mask.undo_stack.undo()
    assert np.array_equal(mask.pixels(), painted)


def test_changed_reports_only_the_painted_rectangle(mask, qtbot):
    rects = []
    mask.changed.connect(rects.append)
    stroke(mask, [(10.5, 10.5)], radius=2)
    assert rects and all(r.width() <= 6 and r.height() <= 6 for r in rects)
    assert rects[0].contains(10, 10)


def test_undo_command_stores_only_the_stroke_rectangle(mask):
    big = MaskModel()
    big.reset(1024, 1024)
    stroke(big, [(100.5, 100.5), (110.5, 100.5)], radius=5)
    command = big.undo_stack.command(0)
    assert command._before.size < 30 * 30


def test_mask_is_handed_over_as_an_l_image_at_image_size(mask):
    stroke(mask, [(3.5, 3.5)], radius=2)
    image = mask.to_pil()
    assert image.mode == "L" and image.size == (40, 30) and image.getpixel((3, 3)) == 255


def test_reset_starts_blank_and_forgets_undo_history(mask):
    stroke(mask, [(3.5, 3.5)])
    mask.reset(8, 8)
    assert mask.undo_stack.count() == 0 and mask.is_empty() and (mask.width, mask.height) == (8, 8)
