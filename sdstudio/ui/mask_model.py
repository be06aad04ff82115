"""The inpainting mask: one byte per image pixel (255 = repaint), painted in strokes, undoable.

Strokes are capsules (segments with round ends) combined by maximum (brush) or minimum (eraser), so a
stroke never builds up over itself and the result does not depend on how the mouse events were spaced.
Hardness sets how much of the radius is solid; the rest falls off with a smoothstep. Every stroke and every
whole-mask edit (clear, invert, fill) is one QUndoCommand holding only the rectangle it changed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtCore import QObject, QRect, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack


class _PatchCommand(QUndoCommand):
    """Swap a rectangle of the mask between its before and after pixels."""

    def __init__(self, model: MaskModel, text: str, rect: QRect, before: np.ndarray, after: np.ndarray):
        super().__init__(text)
        self._model, self._rect = model, rect
        self._before, self._after = before, after
        self._applied = True  # the edit was made before the command was pushed

    def redo(self) -> None:
        if self._applied:
            self._applied = False
            return
        self._model._write(self._rect, self._after)

    def undo(self) -> None:
        self._model._write(self._rect, self._before)


class MaskModel(QObject):
    """The mask of the current input image. `changed` carries the image-space rectangle that changed."""

    changed = Signal(QRect)

    def __init__(self, undo_stack: QUndoStack | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.undo_stack = undo_stack if undo_stack is not None else QUndoStack(self)
        self._mask = np.zeros((0, 0), np.uint8)
        self._stroke: tuple[np.ndarray, float, float, bool] | None = None
        self._last_point: tuple[float, float] | None = None
        self._dirty: QRect = QRect()

    # --- state -------------------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self._mask.shape[1]

    @property
    def height(self) -> int:
        return self._mask.shape[0]

    def pixels(self) -> np.ndarray:
        """A read-only view of the mask (height, width), uint8."""
        view = self._mask.view()
        view.flags.writeable = False
        return view

    def is_empty(self) -> bool:
        return not self._mask.any()

    def reset(self, width: int, height: int, keep_undo: bool = False) -> None:
        """A blank mask for a new image; undo history of the old image is dropped (unless the stack is shared
        and this model had none: a control layer's new painting)."""
        if not keep_undo:
            self.undo_stack.clear()
        self._mask = np.zeros((height, width), np.uint8)
        self._stroke = None
        self.changed.emit(self._full_rect())

    def to_pil(self) -> Image.Image | None:
        """The mask as an L image for the engine, or None when nothing is painted."""
        return None if self.is_empty() else Image.fromarray(self._mask.copy())

    def set_pixels(self, pixels: np.ndarray, text: str = "Load mask") -> None:
        """Replace the whole mask (same size), undoably."""
        if pixels.shape != self._mask.shape:
            raise ValueError(f"mask is {pixels.shape[1]}x{pixels.shape[0]}, image is {self.width}x{self.height}")
        self._replace_all(text, pixels.astype(np.uint8))

    def restore(self, pixels: np.ndarray) -> None:
        """A saved mask or painting back, as the start of its history (no undo step takes it away)."""
        self._mask = np.ascontiguousarray(pixels, dtype=np.uint8).copy()
        self._stroke = None
        self.changed.emit(self._full_rect())

    def set_image(self, mask: Image.Image, text: str = "Load mask") -> None:
        """Replace the whole mask with an image of the same size (white = repaint), undoably."""
        self.set_pixels(np.asarray(mask.convert("L")), text)

    # --- whole-mask edits --------------------------------------------------------------------------
    def clear(self) -> None:
        self._replace_all("Clear mask", np.zeros_like(self._mask))

    def fill(self) -> None:
        self._replace_all("Fill mask", np.full_like(self._mask, 255))

    def invert(self) -> None:
        self._replace_all("Invert mask", 255 - self._mask)

    # --- strokes -----------------------------------------------------------------------------------
    def begin_stroke(self, radius: float, hardness: float, erase: bool = False) -> None:
        """Start a stroke; radius in image pixels, hardness in [0, 1]."""
        self._stroke = (self._mask.copy(), max(radius, 0.5), min(max(hardness, 0.0), 1.0), erase)
        self._last_point = None
        self._dirty = QRect()

    def stroke_to(self, x: float, y: float) -> None:
        """Extend the stroke to (x, y) in image coordinates (pixel centres are at +0.5)."""
        if self._stroke is None:
            return
        start = self._last_point or (x, y)
        self._last_point = (x, y)
        rect = self._paint_segment(start, (x, y))
        if not rect.isEmpty():
            self._dirty = self._dirty.united(rect)
            self.changed.emit(rect)

    def end_stroke(self) -> None:
        if self._stroke is None:
            return
        before_all, erase = self._stroke[0], self._stroke[3]
        self._stroke = None
        if self._dirty.isEmpty():
            return
        ys, xs = _slices(self._dirty)
        before, after = before_all[ys, xs].copy(), self._mask[ys, xs].copy()
        if np.array_equal(before, after):
            return
        text = "Erase mask" if erase else "Paint mask"
        self.undo_stack.push(_PatchCommand(self, text, QRect(self._dirty), before, after))

    # --- internals ---------------------------------------------------------------------------------
    def _paint_segment(self, p0: tuple[float, float], p1: tuple[float, float]) -> QRect:
        _, radius, hardness, erase = self._stroke
        x0 = max(int(np.floor(min(p0[0], p1[0]) - radius)), 0)
        y0 = max(int(np.floor(min(p0[1], p1[1]) - radius)), 0)
        x1 = min(int(np.ceil(max(p0[0], p1[0]) + radius)) + 1, self.width)
        y1 = min(int(np.ceil(max(p0[1], p1[1]) + radius)) + 1, self.height)
        if x0 >= x1 or y0 >= y1:
            return QRect()
        px = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
        py = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
        value = _capsule_coverage(px, py, p0, p1, radius, hardness)
        region = self._mask[y0:y1, x0:x1]
        if erase:
            np.minimum(region, np.rint(255 * (1 - value)).astype(np.uint8), out=region)
        else:
            np.maximum(region, np.rint(255 * value).astype(np.uint8), out=region)
        return QRect(x0, y0, x1 - x0, y1 - y0)

    def _replace_all(self, text: str, new: np.ndarray) -> None:
        if np.array_equal(new, self._mask):
            return
        before = self._mask.copy()
        self._mask = np.ascontiguousarray(new)
        self.undo_stack.push(_PatchCommand(self, text, self._full_rect(), before, self._mask.copy()))
        self.changed.emit(self._full_rect())

    def _write(self, rect: QRect, pixels: np.ndarray) -> None:
        ys, xs = _slices(rect)
        self._mask[ys, xs] = pixels
        self.changed.emit(QRect(rect))

    def _full_rect(self) -> QRect:
        return QRect(0, 0, self.width, self.height)


def _slices(rect: QRect) -> tuple[slice, slice]:
    return slice(rect.top(), rect.top() + rect.height()), slice(rect.left(), rect.left() + rect.width())


def _capsule_coverage(px: np.ndarray, py: np.ndarray, p0: tuple[float, float], p1: tuple[float, float],
                      radius: float, hardness: float) -> np.ndarray:
    """Brush coverage in [0, 1] at pixel centres: 1 inside radius*hardness, smoothstep to 0 at the radius."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = dx * dx + dy * dy
    if length2 > 0:
        t = np.clip(((px - p0[0]) * dx + (py - p0[1]) * dy) / length2, 0.0, 1.0)
    else:
        t = np.zeros_like(px + py)
    dist = np.hypot(px - (p0[0] + t * dx), py - (p0[1] + t * dy))
    feather = max(radius * (1.0 - hardness), 1.0)  # at least one pixel of anti-aliasing
    v = np.clip((radius - dist) / feather, 0.0, 1.0)
    return v * v * (3.0 - 2.0 * v)
