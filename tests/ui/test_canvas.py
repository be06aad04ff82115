import time

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QColor, QDropEvent, QImage, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from sdstudio.ui.canvas import Canvas, Tool
from sdstudio.ui.mask_model import MaskModel


def make_canvas(qtbot, size=256, widget=(600, 400)):
    mask = MaskModel()
    canvas = Canvas(mask)
    qtbot.addWidget(canvas)
    canvas.resize(*widget)
    canvas.show()
    qtbot.waitExposed(canvas)
    image = QImage(size, size, QImage.Format.Format_RGB32)
    image.fill(QColor(90, 90, 90))
    canvas.set_image(image, keep_view=False)
    mask.reset(size, size)
    return canvas


def wheel(canvas, pos: QPointF, dy: int, modifiers=Qt.KeyboardModifier.ControlModifier):
    event = QWheelEvent(pos, canvas.mapToGlobal(pos), QPoint(0, 0), QPoint(0, dy), Qt.MouseButton.NoButton,
                        modifiers, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(canvas, event)


def test_fit_shows_the_whole_image_centred(qtbot):
    canvas = make_canvas(qtbot)
    rect = canvas.image_rect_on_widget()
    assert rect.height() <= 400 and rect.height() > 350
    assert abs(rect.center().x() - 300) < 1 and abs(rect.center().y() - 200) < 1


def test_ctrl_wheel_zooms_around_the_cursor(qtbot):
    canvas = make_canvas(qtbot)
    anchor = QPointF(200, 150)
    under = canvas.widget_to_image(anchor)
    zoom = canvas.zoom
    wheel(canvas, anchor, 120)
    assert canvas.zoom > zoom * 1.2
    after = canvas.widget_to_image(anchor)
    assert abs(after.x() - under.x()) < 1e-6 and abs(after.y() - under.y()) < 1e-6


def test_plain_wheel_pans_instead_of_zooming(qtbot):
    canvas = make_canvas(qtbot)
    zoom, before = canvas.zoom, canvas.image_to_widget(QPointF(0, 0))
    wheel(canvas, QPointF(100, 100), -120, Qt.KeyboardModifier.NoModifier)
    assert canvas.zoom == zoom and canvas.image_to_widget(QPointF(0, 0)).y() < before.y()


def test_actual_size_maps_one_image_pixel_to_one_device_pixel(qtbot):
    canvas = make_canvas(qtbot)
    canvas.zoom_actual()
    a, b = canvas.image_to_widget(QPointF(0, 0)), canvas.image_to_widget(QPointF(100, 0))
    assert abs((b.x() - a.x()) * canvas.devicePixelRatioF() - 100) < 1e-6


def test_middle_drag_pans_and_does_not_paint(qtbot):
    canvas = make_canvas(qtbot)
    canvas.set_mask_editable(True)
    before = canvas.image_to_widget(QPointF(0, 0))
    QTest.mousePress(canvas, Qt.MouseButton.MiddleButton, pos=QPoint(300, 200))
    QTest.mouseMove(canvas, QPoint(340, 230))
    QTest.mouseRelease(canvas, Qt.MouseButton.MiddleButton, pos=QPoint(340, 230))
    after = canvas.image_to_widget(QPointF(0, 0))
    assert (after.x() - before.x(), after.y() - before.y()) == (40, 30)
    assert canvas.mask.is_empty()


def test_pan_tool_and_read_only_canvas_never_paint(qtbot):
    canvas = make_canvas(qtbot)
    QTest.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=QPoint(300, 200))
    canvas.set_mask_editable(True)
    canvas.set_tool(Tool.PAN)
    QTest.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=QPoint(300, 200))
    assert canvas.mask.is_empty()


def test_overlay_tints_painted_pixels_only(qtbot):
    canvas = make_canvas(qtbot, size=64)
    canvas.set_mask_editable(True)
    canvas.mask.begin_stroke(6, 1.0)
    canvas.mask.stroke_to(32, 32)
    canvas.mask.end_stroke()
    shot = canvas.grab().toImage()
    centre = canvas.image_to_widget(QPointF(32, 32)).toPoint() * canvas.devicePixelRatioF()
    corner = canvas.image_to_widget(QPointF(4, 4)).toPoint() * canvas.devicePixelRatioF()
    tinted, plain = shot.pixelColor(centre), shot.pixelColor(corner)
    assert plain.red() == plain.green() == 90 and tinted.red() > 120 and tinted.green() < 90


def test_dropping_an_image_file_reports_its_path(qtbot, tmp_path):
    canvas = make_canvas(qtbot)
    path = tmp_path / "init.png"
    QImage(4, 4, QImage.Format.Format_RGB32).save(str(path))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(canvas.fileDropped, timeout=1000) as blocker:
        canvas.dropEvent(event)
    assert blocker.args == [str(path)]


def paint_stroke(qtbot, moves: int = 199) -> tuple[Canvas, float]:
    """A brush stroke of `moves` mouse moves on a 1024x1024 image; (canvas, seconds per move incl. repaint)."""
    canvas = make_canvas(qtbot, size=1024, widget=(900, 900))
    canvas.set_mask_editable(True)
    canvas.set_brush_radius(40)
    canvas.hardness = 0.5
    points = [QPoint(100 + 3 * i, 100 + 2 * i) for i in range(moves + 1)]
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, pos=points[0])
    QApplication.processEvents()
    start = time.perf_counter()
    for p in points[1:]:
        QTest.mouseMove(canvas, p)
        QApplication.processEvents()  # includes the repaint of the touched region
    per_move = (time.perf_counter() - start) / moves
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=points[-1])
    return canvas, per_move


def test_a_stroke_on_a_1024_image_paints_and_is_one_undo_step(qtbot):
    canvas, _ = paint_stroke(qtbot)
    assert not canvas.mask.is_empty() and canvas.mask.undo_stack.count() == 1


@pytest.mark.perf
def test_painting_on_a_1024_image_keeps_up_with_the_mouse(qtbot):
    canvas, per_move = paint_stroke(qtbot)
    print(f"1024x1024 mask painting: {per_move * 1000:.2f} ms per mouse move incl. repaint (target 16 ms)")
    assert not canvas.mask.is_empty()
    assert per_move < 0.050  # generous: the target is a 60 Hz mouse (16 ms) on a shared machine


def _edge_image(size: int) -> QImage:
    """Black left half, white right half: one hard vertical edge."""
    image = QImage(size, size, QImage.Format.Format_RGB32)
    image.fill(QColor(0, 0, 0))
    for y in range(size):
        for x in range(size // 2, size):
            image.setPixelColor(x, y, QColor(255, 255, 255))
    return image


def _greys_across_the_edge(canvas: Canvas) -> list[int]:
    shot = canvas.grab().toImage()
    rect = canvas.image_rect_on_widget()
    dpr = canvas.devicePixelRatioF()
    y = int(rect.center().y() * dpr)
    xs = range(int(rect.left() * dpr) + 2, int(rect.right() * dpr) - 2)
    return [shot.pixelColor(x, y).red() for x in xs if 8 < shot.pixelColor(x, y).red() < 247]


def test_a_small_image_magnified_keeps_hard_pixel_edges(qtbot):
    canvas = make_canvas(qtbot, size=64, widget=(600, 600))
    canvas.set_image(_edge_image(64), keep_view=False)
    assert canvas.zoom > 8  # fitted: about 800%
    assert _greys_across_the_edge(canvas) == []


def test_a_low_resolution_preview_stretched_to_the_job_size_stays_smooth(qtbot):
    canvas = make_canvas(qtbot, size=64, widget=(600, 600))
    canvas.set_image(_edge_image(8), keep_view=False, size=QImage(64, 64, QImage.Format.Format_RGB32).size())
    assert len(_greys_across_the_edge(canvas)) > 4


def test_the_brush_fits_the_image_size(qtbot):
    canvas = make_canvas(qtbot, size=64)
    assert canvas.brush_radius * 2 <= 8  # not half of a 64 px image
    canvas.mask.reset(512, 768)
    assert canvas.brush_radius == 16
    canvas.set_brush_radius(40)
    canvas.mask.reset(512, 768)  # another image of the same size keeps the chosen brush
    assert canvas.brush_radius == 40


def test_the_mask_overlay_stays_visible_on_a_red_image(qtbot):
    canvas = make_canvas(qtbot, size=64)
    red = QImage(64, 64, QImage.Format.Format_RGB32)
    red.fill(QColor(230, 40, 60))
    canvas.set_image(red, keep_view=False)
    canvas.set_mask_editable(True)
    canvas.mask.fill()
    shot = canvas.grab().toImage()
    tinted = shot.pixelColor(canvas.image_to_widget(QPointF(32, 32)).toPoint() * canvas.devicePixelRatioF())
    assert abs(tinted.red() - 230) + abs(tinted.green() - 40) + abs(tinted.blue() - 60) > 150


def test_dragging_a_file_over_highlights_the_canvas_until_it_leaves(qtbot, tmp_path):
    from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent

    canvas = make_canvas(qtbot, widget=(300, 200))
    path = tmp_path / "model.safetensors"  # any file is offered to the window, which decides what it is
    path.write_bytes(b"x")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    before = canvas.grab().toImage()
    enter = QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(canvas, enter)
    assert enter.isAccepted()
    hovered = canvas.grab().toImage()
    edge = QPoint(5, 100)
    assert hovered.pixelColor(edge) != before.pixelColor(edge)
    QApplication.sendEvent(canvas, QDragLeaveEvent())
    assert canvas.grab().toImage().pixelColor(edge) == before.pixelColor(edge)
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(canvas.fileDropped, timeout=1000) as blocker:
        canvas.dropEvent(event)
    assert blocker.args == [str(path)]


def _on_screen(canvas, x: float, y: float) -> QColor:
    """The colour the canvas paints at image point (x, y)."""
    shot = canvas.grab().toImage()
    p = canvas.image_to_widget(QPointF(x, y)) * canvas.devicePixelRatioF()
    return shot.pixelColor(int(p.x()), int(p.y()))


def test_a_layer_is_drawn_over_the_image_stretched_and_faded(qtbot):
    canvas = make_canvas(qtbot, size=64)
    layer = QImage(16, 16, QImage.Format.Format_RGB32)  # a quarter of the size: stretched over the image
    layer.fill(QColor(0, 0, 0))
    for x in range(8, 16):
        for y in range(16):
            layer.setPixelColor(x, y, QColor(250, 250, 250))
    canvas.set_layer(layer, 0.5)
    left, right = _on_screen(canvas, 10, 32), _on_screen(canvas, 54, 32)
    assert abs(left.red() - 45) <= 3 and abs(right.red() - 170) <= 3  # 90 faded half-way to 0 and to 250
    canvas.set_layer(layer, 0.0)
    assert abs(_on_screen(canvas, 54, 32).red() - 90) <= 1
    canvas.set_layer(None)
    assert canvas.layer is None and abs(_on_screen(canvas, 54, 32).red() - 90) <= 1


def test_a_paint_target_takes_the_strokes_in_its_colour_and_the_mask_gets_them_back(qtbot):
    canvas = make_canvas(qtbot, size=64)
    canvas.set_mask_editable(True)
    scribble = MaskModel()
    scribble.reset(64, 64)
    canvas.set_paint_target(scribble, QColor(255, 255, 255), 1.0)
    canvas.set_brush_radius(3)
    canvas.hardness = 1.0
    at = canvas.image_to_widget(QPointF(20.5, 20.5)).toPoint()
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at)
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at)
    assert scribble.pixels()[20, 20] == 255 and canvas.mask is scribble
    assert _on_screen(canvas, 20.5, 20.5).getRgb()[:3] == (255, 255, 255)  # solid white, not a tint
    canvas.mask.undo_stack.undo()
    assert scribble.is_empty()
    mask = MaskModel()
    mask.reset(64, 64)
    canvas.set_paint_target(mask)
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at)
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at)
    assert mask.pixels()[20, 20] == 255 and scribble.is_empty()
    scribble.fill()  # the old target's changes no longer reach the canvas's overlay
    assert _on_screen(canvas, 50.5, 50.5).getRgb()[:3] == (90, 90, 90)
