"""The canvas: shows one image with zoom and pan, and paints the inpainting mask on it.

Zoom is stored as device pixels per image pixel, so "100%" means one image pixel per screen pixel on any
display scale. The mask is drawn as a translucent overlay that is re-coloured only where it changed, which
keeps painting on a 1024×1024 image as cheap as the brush is large.
"""

from __future__ import annotations

import enum
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPointF, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPalette,
    QPen,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

from sdstudio.ui.mask_display import default_brush_radius, overlay_colour
from sdstudio.ui.mask_model import MaskModel
from sdstudio.ui.outpaint_frame import FrameDrag

MIN_ZOOM, MAX_ZOOM = 1 / 32, 64.0
MASK_OPACITY = 0.5
CRISP_ZOOM = 2.0  # from this many device pixels per image pixel on, pixels are shown as hard squares
_FAST_FORMATS = (QImage.Format.Format_RGB32, QImage.Format.Format_ARGB32_Premultiplied)


class Tool(enum.Enum):
    PAN = "pan"
    BRUSH = "brush"
    ERASER = "eraser"
    FRAME = "frame"  # drag an edge of the image outward to outpaint (outpaint_frame.py)


class Canvas(QWidget):
    """Shows `image`; when `mask_editable`, left-drag paints `mask` (image resolution) with the current tool."""

    zoomChanged = Signal(float)  # zoom in device pixels per image pixel
    fileDropped = Signal(str)
    brushChanged = Signal(float)  # brush radius in image pixels
    frameDragged = Signal(object)  # an engine.outpaint.Extension: the Frame tool's drag ended

    def __init__(self, mask: MaskModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAutoFillBackground(False)
        self.mask = mask
        self.image: QImage | None = None
        self._size = QSize()  # the image's size in canvas coordinates (a preview may have fewer pixels)
        self.placeholder = ""
        self.tool = Tool.BRUSH
        self.brush_radius = 16.0
        self.hardness = 0.8
        self._mask_editable = False
        self._overlay = QImage()
        self.mask_colour = overlay_colour(None)
        self._overlay_opacity = MASK_OPACITY
        self._fixed_colour = False  # a paint target with its own colour (control_canvas.py's scribble layer)
        self.layer: QImage | None = None  # drawn over the image, stretched to it (a control layer's map)
        self.layer_opacity = 1.0
        self._mask_size = (0, 0)
        self._drop_hover = False
        self._zoom = 1.0
        self._offset = QPointF(0, 0)  # widget position of the image's top-left corner
        self._fit_mode = True
        self._pan_anchor: QPointF | None = None
        self._painting = False
        self._frame: FrameDrag | None = None
        self._cursor_pos: QPointF | None = None
        self._space_held = False
        mask.changed.connect(self._mask_changed)

    # --- what is shown ---------------------------------------------------------------------------
    def set_image(self, image: QImage | None, keep_view: bool = True, size: QSize | None = None) -> None:
        """Show `image` stretched to `size` (default: its own), so a low-resolution preview covers the same
        area as the final image. The view is kept when the size is unchanged, else refitted."""
        new_size = QSize() if image is None else (size if size is not None else image.size())
        same_size = self.image is not None and image is not None and new_size == self._size
        if image is not None and image.format() not in _FAST_FORMATS:
            image = image.convertToFormat(QImage.Format.Format_RGB32)
        self.image, self._size = image, new_size
        if not (keep_view and same_size):
            self._fit_mode = True
            self._apply_fit()
        self.update()

    @property
    def mask_editable(self) -> bool:
        return self._mask_editable

    def set_mask_editable(self, editable: bool) -> None:
        """Show the mask overlay and allow painting (only sensible when the image is the input image)."""
        self._mask_editable = editable
        if editable:
            if not self._fixed_colour:
                self.mask_colour = overlay_colour(self.image)
            self._rebuild_overlay()
        self._update_cursor()
        self.update()

    def set_paint_target(self, target: MaskModel, colour: QColor | None = None,
                         opacity: float = MASK_OPACITY) -> None:
        """Paint into `target` (the inpainting mask, or a control layer's scribble), shown in `colour` (None:
        one that contrasts with the image) at `opacity`."""
        if target is self.mask and (colour is not None) == self._fixed_colour and opacity == self._overlay_opacity:
            return  # as it is (every view change asks): no recolouring of a large mask
        if target is not self.mask:
            self.mask.changed.disconnect(self._mask_changed)
            self.mask = target
            target.changed.connect(self._mask_changed)
        self._fixed_colour, self._overlay_opacity = colour is not None, opacity
        self.mask_colour = QColor(colour) if colour is not None else overlay_colour(self.image)
        if (target.width, target.height) != self._mask_size:
            self._mask_size = (target.width, target.height)
            if min(self._mask_size) > 0:
                self.set_brush_radius(default_brush_radius(*self._mask_size))
        self._rebuild_overlay()
        self.update()

    def set_layer(self, image: QImage | None, opacity: float = 1.0) -> None:
        """Draw `image` over the shown image, stretched to it, at `opacity` (None: no layer)."""
        self.layer, self.layer_opacity = image, min(max(opacity, 0.0), 1.0)
        self.update()

    def set_tool(self, tool: Tool) -> None:
        self.tool = tool
        self._update_cursor()
        self.update()

    def set_brush_radius(self, radius: float) -> None:
        self.brush_radius = float(min(max(radius, 0.5), 2048))
        self.brushChanged.emit(self.brush_radius)
        self.update()

    # --- view ------------------------------------------------------------------------------------
    @property
    def zoom(self) -> float:
        return self._zoom

    def fit(self) -> None:
        self._fit_mode = True
        self._apply_fit()
        self.update()

    def zoom_actual(self) -> None:
        """100%: one image pixel per device pixel, centred."""
        self._fit_mode = False
        self._set_zoom(1.0, QPointF(self.width() / 2, self.height() / 2))

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom keeping the image point under `anchor` (default: the centre) fixed on screen."""
        self._fit_mode = False
        anchor = anchor if anchor is not None else QPointF(self.width() / 2, self.height() / 2)
        self._set_zoom(self._zoom * factor, anchor)

    def widget_to_image(self, pos: QPointF) -> QPointF:
        scale = self._scale()
        return QPointF((pos.x() - self._offset.x()) / scale, (pos.y() - self._offset.y()) / scale)

    def image_to_widget(self, pos: QPointF) -> QPointF:
        scale = self._scale()
        return QPointF(self._offset.x() + pos.x() * scale, self._offset.y() + pos.y() * scale)

    def image_rect_on_widget(self) -> QRectF:
        if self.image is None:
            return QRectF()
        scale = self._scale()
        return QRectF(self._offset, self._size.toSizeF() * scale)

    def _scale(self) -> float:
        # widget (logical) pixels per image pixel
        return self._zoom / self.devicePixelRatioF()

    def _set_zoom(self, zoom: float, anchor: QPointF) -> None:
        before = self.widget_to_image(anchor)
        self._zoom = min(max(zoom, MIN_ZOOM), MAX_ZOOM)
        scale = self._scale()
        self._offset = QPointF(anchor.x() - before.x() * scale, anchor.y() - before.y() * scale)
        self.zoomChanged.emit(self._zoom)
        self.update()

    def _apply_fit(self) -> None:
        if self.image is None or self.image.isNull() or self.width() < 2 or self.height() < 2:
            return
        margin = 12
        avail_w, avail_h = max(self.width() - 2 * margin, 1), max(self.height() - 2 * margin, 1)
        scale = min(avail_w / self._size.width(), avail_h / self._size.height())
        self._zoom = min(max(scale * self.devicePixelRatioF(), MIN_ZOOM), MAX_ZOOM)
        scale = self._scale()
        self._offset = QPointF((self.width() - self._size.width() * scale) / 2,
                               (self.height() - self._size.height() * scale) / 2)
        self.zoomChanged.emit(self._zoom)

    # --- painting on screen ------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        self._paint_view(painter, event)
        if self._drop_hover:
            self._paint_drop_hover(painter)

    def _paint_view(self, painter: QPainter, event: QPaintEvent) -> None:
        pal = self.palette()
        painter.fillRect(event.rect(), pal.color(QPalette.ColorRole.Base).darker(115))
        if self.image is None or self.image.isNull():
            self._paint_placeholder(painter)
            return
        target = self.image_rect_on_widget()
        painter.setPen(QPen(pal.color(QPalette.ColorRole.Shadow), 1))
        painter.drawRect(target.adjusted(-1, -1, 0, 0))
        # Magnified images show crisp pixels (a 64 px image at 800% is not a blur); shrunk images and stretched
        # low-resolution previews are smoothed.
        preview = self.image.size() != self._size
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, preview or self._zoom < CRISP_ZOOM)
        painter.setTransform(QTransform().translate(self._offset.x(), self._offset.y()).scale(
            self._scale(), self._scale()))
        painter.drawImage(QRectF(0, 0, self._size.width(), self._size.height()), self.image)
        if self.layer is not None and self.layer_opacity > 0:
            painter.setOpacity(self.layer_opacity)
            painter.drawImage(QRectF(0, 0, self._size.width(), self._size.height()), self.layer)
            painter.setOpacity(1.0)
        if self._mask_editable and not self._overlay.isNull() and self._overlay.size() == self._size:
            painter.drawImage(0, 0, self._overlay)
        if self._frame is not None:
            painter.setPen(QPen(self.palette().color(QPalette.ColorRole.Highlight), 2 / self._scale(),
                                Qt.PenStyle.DashLine))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(QRectF(*self._frame.frame()))
        painter.resetTransform()
        self._paint_brush_outline(painter)

    def _paint_drop_hover(self, painter: QPainter) -> None:
        highlight = self.palette().color(QPalette.ColorRole.Highlight)
        fill = QColor(highlight)
        fill.setAlpha(40)
        painter.resetTransform()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(highlight, 3))
        painter.setBrush(fill)
        painter.drawRoundedRect(QRectF(self.rect()).adjusted(4, 4, -4, -4), 10, 10)

    def _paint_placeholder(self, painter: QPainter) -> None:
        if not self.placeholder:
            return
        colour = self.palette().color(QPalette.ColorRole.PlaceholderText)
        box = QRectF(self.rect()).adjusted(24, 24, -24, -24)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(colour, 1.5, Qt.PenStyle.DashLine))
        painter.drawRoundedRect(box, 12, 12)
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.placeholder)

    def _paint_brush_outline(self, painter: QPainter) -> None:
        if not (self._mask_editable and self.tool not in (Tool.PAN, Tool.FRAME) and self._cursor_pos is not None
                and not self._space_held):
            return
        radius = self.brush_radius * self._scale()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        for colour, r in ((QColor(0, 0, 0, 160), radius + 1), (QColor(255, 255, 255, 220), radius)):
            painter.setPen(QPen(colour, 1))
            painter.drawEllipse(self._cursor_pos, r, r)

    def _mask_changed(self, rect: QRect) -> None:
        size = (self.mask.width, self.mask.height)
        if size != self._mask_size:  # a new input image: a brush that suits its size
            self._mask_size = size
            if min(size) > 0:
                self.set_brush_radius(default_brush_radius(*size))
        if not self._mask_editable:
            return
        if self._overlay.size() != QSize(self.mask.width, self.mask.height):
            self._rebuild_overlay()
        else:
            self._recolour(rect)
        self.update(self._widget_rect(rect))

    def _rebuild_overlay(self) -> None:
        self._overlay = QImage(max(self.mask.width, 1), max(self.mask.height, 1),
                               QImage.Format.Format_ARGB32_Premultiplied)
        self._overlay.fill(0)
        self._recolour(QRect(0, 0, self.mask.width, self.mask.height))

    def _recolour(self, rect: QRect) -> None:
        rect = rect.intersected(QRect(0, 0, self.mask.width, self.mask.height))
        if rect.isEmpty():
            return
        ys = slice(rect.top(), rect.top() + rect.height())
        xs = slice(rect.left(), rect.left() + rect.width())
        alpha = self.mask.pixels()[ys, xs].astype(np.uint16) * int(255 * self._overlay_opacity) // 255
        bgra = np.frombuffer(self._overlay.bits(), np.uint8).reshape(
            self._overlay.height(), self._overlay.bytesPerLine() // 4, 4)[ys, xs]
        colour = self.mask_colour
        for channel, value in enumerate((colour.blue(), colour.green(), colour.red())):
            bgra[..., channel] = alpha * value // 255
        bgra[..., 3] = alpha

    def _widget_rect(self, rect: QRect) -> QRect:
        top_left = self.image_to_widget(QPointF(rect.topLeft()))
        bottom_right = self.image_to_widget(QPointF(rect.left() + rect.width(), rect.top() + rect.height()))
        return QRectF(top_left, bottom_right).toAlignedRect().adjusted(-2, -2, 2, 2)

    # --- input -------------------------------------------------------------------------------------
    def resizeEvent(self, event) -> None:
        if self._fit_mode:
            self._apply_fit()
        super().resizeEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            steps = event.angleDelta().y() / 120
            self.zoom_by(1.25 ** steps, event.position())
        else:
            delta = event.pixelDelta() if not event.pixelDelta().isNull() else event.angleDelta() / 2
            if event.modifiers() & Qt.KeyboardModifier.ShiftModifier and delta.x() == 0:
                delta = delta.transposed()
            self._offset += QPointF(delta)
            self._fit_mode = False
            self.update()
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        if self._pans(event):
            self._pan_anchor = pos
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif event.button() == Qt.MouseButton.LeftButton and self._can_frame():
            point = self.widget_to_image(pos)
            self._frame = FrameDrag.begin((point.x(), point.y()), (self._size.width(), self._size.height()))
        elif event.button() == Qt.MouseButton.LeftButton and self._can_paint():
            self._painting = True
            self.mask.begin_stroke(self.brush_radius, self.hardness, erase=self.tool == Tool.ERASER)
            point = self.widget_to_image(pos)
            self.mask.stroke_to(point.x(), point.y())
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        old_cursor, self._cursor_pos = self._cursor_pos, pos
        if self._pan_anchor is not None:
            self._offset += pos - self._pan_anchor
            self._pan_anchor = pos
            self._fit_mode = False
            self.update()
            return
        if self._painting:
            point = self.widget_to_image(pos)
            self.mask.stroke_to(point.x(), point.y())
        if self._frame is not None:
            point = self.widget_to_image(pos)
            self._frame.now = (point.x(), point.y())
            self.update()
        if self._mask_editable:
            self._update_outline(old_cursor, pos)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._pan_anchor is not None:
            self._pan_anchor = None
            self._update_cursor()
        if self._painting:
            self._painting = False
            self.mask.end_stroke()
        if self._frame is not None:
            drag, self._frame = self._frame, None
            self.update()
            if drag.extension():
                self.frameDragged.emit(drag.extension())
        event.accept()

    def leaveEvent(self, event) -> None:
        old, self._cursor_pos = self._cursor_pos, None
        self._update_outline(old, None)
        super().leaveEvent(event)

    def keyPressEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_held = True
            self._update_cursor()
            self.update()
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_held = False
            self._update_cursor()
            self.update()
        super().keyReleaseEvent(event)

    def dragEnterEvent(self, event) -> None:
        if _dropped_file(event.mimeData()):
            event.acceptProposedAction()
            self._set_drop_hover(True)

    def dragLeaveEvent(self, event) -> None:
        self._set_drop_hover(False)
        super().dragLeaveEvent(event)

    def _set_drop_hover(self, hover: bool) -> None:
        if hover != self._drop_hover:
            self._drop_hover = hover
            self.update()

    def dropEvent(self, event) -> None:
        self._set_drop_hover(False)
        path = _dropped_file(event.mimeData())
        if path:
            event.acceptProposedAction()
            self.fileDropped.emit(path)

    def _pans(self, event: QMouseEvent) -> bool:
        if event.button() == Qt.MouseButton.MiddleButton:
            return True
        return event.button() == Qt.MouseButton.LeftButton and (
            self._space_held or not (self._can_paint() or self._can_frame()))

    def _can_paint(self) -> bool:
        return (self._mask_editable and self.tool not in (Tool.PAN, Tool.FRAME) and self.image is not None
                and self.mask.width > 0)

    def _can_frame(self) -> bool:
        return self._mask_editable and self.tool == Tool.FRAME and self.image is not None

    def _update_cursor(self) -> None:
        if self._can_frame() and not self._space_held:
            self.setCursor(Qt.CursorShape.SizeAllCursor)
        elif self._can_paint() and not self._space_held:
            self.setCursor(Qt.CursorShape.CrossCursor)
        else:
            self.setCursor(Qt.CursorShape.OpenHandCursor if self.image is not None else Qt.CursorShape.ArrowCursor)

    def _update_outline(self, old: QPointF | None, new: QPointF | None) -> None:
        r = int(self.brush_radius * self._scale()) + 3
        for p in (old, new):
            if p is not None:
                self.update(QRect(int(p.x()) - r, int(p.y()) - r, 2 * r + 1, 2 * r + 1))


def _dropped_file(mime) -> str:
    """The first local file dropped, whatever its kind: the window decides (image, model) and says when it
    cannot use it, rather than the drop being silently refused."""
    for url in mime.urls() if mime.hasUrls() else []:
        if url.isLocalFile() and Path(url.toLocalFile()).is_file():
            return url.toLocalFile()
    return ""
