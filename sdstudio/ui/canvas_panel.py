"""The canvas with its tool bar and step scrubber: switches between the result and the input image.

Result view: the running job's live preview, then its images; a slider scrubs through that job's previews.
Input view: the init image with the mask overlay and the mask tools.
Control view: a control layer (control_dock.py): its source image with the preprocessed map over it (shown or
hidden, faded), or its scribble painted with the mask's brush, eraser and undo.
A latent walk (show_walk) plays in the result view, its bar (canvas_walk.WalkBar) in the scrubber's place.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QColor, QImage, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.ui.canvas import Canvas, Tool
from sdstudio.ui.canvas_walk import WalkBar
from sdstudio.ui.mask_display import PreviewPlacement
from sdstudio.ui.mask_model import MaskModel
from sdstudio.ui.outpaint_bar import OutpaintBar
from sdstudio.ui.status import ErrorBanner

RESULT, INPUT, CONTROL = "result", "input", "control"
SCRIBBLE_COLOUR = QColor(255, 255, 255)  # a painted control layer is white lines on black, as its map is


def _slider(minimum: int, maximum: int, tip: str, ems: int) -> QSlider:
    """A tool-bar slider `ems` wide: a tool bar lays widgets out at their size hint, so a narrow fixed width is
    what keeps the mask bar out of the "»" overflow at 1200×760."""
    slider = QSlider(Qt.Orientation.Horizontal, minimum=minimum, maximum=maximum, toolTip=tip)
    slider.setFixedWidth(slider.fontMetrics().horizontalAdvance("M") * ems)
    return slider


class CanvasPanel(QWidget):
    openImageRequested = Signal()
    useAsInputRequested = Signal()
    clearInputRequested = Signal()
    viewChanged = Signal(str)

    def __init__(self, mask: MaskModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.mask = mask
        self.canvas = Canvas(mask)
        self.banner = ErrorBanner()
        self.view = RESULT
        self._input: QImage | None = None
        self._results: list[QImage] = []
        self._result_index = 0
        self._previews: list[tuple[int, QImage]] = []
        self._total_steps = 0
        self._job_size = QSize()
        self._placement: PreviewPlacement | None = None  # the running job's
        self._previews_placement: PreviewPlacement | None = None  # the shown job's, for the scrubber
        self._showing_result = False  # the canvas shows _current_result() itself
        # The control view: (base image, scribble being painted or None, map or None, map opacity).
        self._control: tuple[QImage, MaskModel | None, QImage | None, float] | None = None
        self._make_actions()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self._make_toolbar())
        layout.addWidget(self._make_mask_bar())
        self.outpaint_bar = OutpaintBar()  # beside the mask tools: shown in the input view
        self.outpaint_bar.addAction(self.act_frame)
        self.canvas.frameDragged.connect(self.outpaint_bar.request_extension)
        layout.addWidget(self.outpaint_bar)
        layout.addWidget(self.banner)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self._make_scrubber())
        self.walk_bar = WalkBar(self._show_walk_frame)
        layout.addWidget(self.walk_bar)
        self.canvas.zoomChanged.connect(lambda z: self.zoom_label.setText(f"{z * 100:.0f}%"))
        self.canvas.brushChanged.connect(lambda r: self.size_slider.setValue(round(r * 2)))
        mask.changed.connect(lambda _rect: self._update_actions())
        self._show()

    # --- construction ------------------------------------------------------------------------------
    def _action(self, text: str, slot, shortcut: str | QKeySequence | None = None, checkable=False,
                tip: str = "") -> QAction:
        action = QAction(text, self, checkable=checkable)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
            # Bare keys like "[" or "B" must not fire while the user types a prompt.
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.addAction(action)
        action.setToolTip(f"{tip or text} ({action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})"
                          if shortcut else (tip or text))
        action.triggered.connect(slot)
        return action

    def _make_actions(self) -> None:
        self.act_result = self._action("Result", lambda: self.set_view(RESULT), checkable=True,
                                       tip="Show the generated image")
        self.act_input = self._action("Input", lambda: self.set_view(INPUT), checkable=True,
                                      tip="Show the input image and paint the inpainting mask")
        self.act_control = self._action("Control", lambda: self.set_view(CONTROL), checkable=True,
                                        tip="Show the selected control layer: its map, or its scribble")
        views = QActionGroup(self)
        for action in (self.act_result, self.act_input, self.act_control):
            views.addAction(action)
        self.act_pan = self._action("Pan", lambda: self._set_tool(Tool.PAN), "H", True, "Pan the view")
        self.act_brush = self._action("Brush", lambda: self._set_tool(Tool.BRUSH), "B", True, "Paint the mask")
        self.act_eraser = self._action("Eraser", lambda: self._set_tool(Tool.ERASER), "E", True, "Erase the mask")
        self.act_frame = self._action("Drag frame", lambda: self._set_tool(Tool.FRAME), "O", True,
                                      "Drag an edge of the image outward to outpaint that side")
        tools = QActionGroup(self)
        for a in (self.act_pan, self.act_brush, self.act_eraser, self.act_frame):
            tools.addAction(a)
        self.act_brush.setChecked(True)
        self.act_smaller = self._action("Smaller brush", lambda: self._scale_brush(1 / 1.25), "[")
        self.act_bigger = self._action("Bigger brush", lambda: self._scale_brush(1.25), "]")
        # On what the canvas paints: the mask, or in the control view the scribble.
        self.act_clear = self._action("Clear", lambda: self.canvas.mask.clear(), tip="Clear the mask")
        self.act_invert = self._action("Invert", lambda: self.canvas.mask.invert(), "Ctrl+Alt+I",
                                       tip="Invert the mask")
        self.act_fill = self._action("Fill", lambda: self.canvas.mask.fill(), tip="Mask the whole image")
        self.act_fit = self._action("Fit", self.canvas.fit, "Ctrl+0", tip="Fit the image in the window")
        self.act_actual = self._action("100%", self.canvas.zoom_actual, "Ctrl+1", tip="One image pixel per pixel")
        self.act_zoom_in = self._action("Zoom in", lambda: self.canvas.zoom_by(1.25), QKeySequence.StandardKey.ZoomIn)
        self.act_zoom_out = self._action("Zoom out", lambda: self.canvas.zoom_by(0.8),
                                         QKeySequence.StandardKey.ZoomOut)
        self.act_use_as_input = self._action("Use as input", self.useAsInputRequested,
                                             tip="Start img2img / inpainting from the shown image")
        self.act_open = self._action("Open…", self.openImageRequested, tip="Open an image as the input")
        self.act_clear_input = self._action("Remove input", self.clearInputRequested,
                                            tip="Back to text-to-image")

    def _make_toolbar(self) -> QToolBar:
        bar = QToolBar(movable=False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        bar.addActions([self.act_result, self.act_input])  # Control: the View menu and the dock (no room)
        bar.addSeparator()
        bar.addActions([self.act_use_as_input, self.act_open, self.act_clear_input])
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        bar.addWidget(spacer)
        bar.addActions([self.act_fit, self.act_actual])
        self.zoom_label = QLabel("100%")
        self.zoom_label.setMinimumWidth(self.zoom_label.fontMetrics().horizontalAdvance("10000%"))
        self.zoom_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.zoom_label.setContentsMargins(0, 0, self.zoom_label.fontMetrics().horizontalAdvance("  "), 0)
        bar.addWidget(self.zoom_label)
        self.toolbar = bar
        return bar

    def _make_mask_bar(self) -> QToolBar:
        """The mask tools, shown only in the input view. Compact so that it fits beside the history dock at
        1200×760 (no "»" overflow): short labels, narrow sliders, and Undo/Redo only in the Edit menu and
        their shortcuts (Ctrl+Z, Ctrl+Shift+Z / Ctrl+Y), which are the same mask undo stack."""
        bar = QToolBar(movable=False)  # not in a main window's tool bar area: a drag handle only takes room
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        bar.addActions([self.act_brush, self.act_eraser, self.act_pan])
        bar.addSeparator()
        size_tip = "Brush diameter in image pixels ([ and ])"
        hardness_tip = "Brush hardness: 0 = soft edge, 100 = hard edge"
        self.size_slider = _slider(1, 512, size_tip, 5)
        self.size_label = QLabel(toolTip=size_tip)
        self.size_label.setMinimumWidth(self.size_label.fontMetrics().horizontalAdvance("512 "))
        self.size_slider.valueChanged.connect(self._size_slider_moved)
        self.hardness_slider = _slider(0, 100, hardness_tip, 4)
        self.hardness_slider.valueChanged.connect(lambda v: setattr(self.canvas, "hardness", v / 100))
        self.size_slider.setValue(round(self.canvas.brush_radius * 2))
        self._size_slider_moved(self.size_slider.value())
        self.hardness_slider.setValue(round(self.canvas.hardness * 100))
        for widget in (QLabel(" Size ", toolTip=size_tip), self.size_slider, self.size_label,
                       QLabel("Hard ", toolTip=hardness_tip), self.hardness_slider):
            bar.addWidget(widget)
        bar.addSeparator()
        bar.addActions([self.act_clear, self.act_invert, self.act_fill])
        self.mask_bar = bar
        return bar

    def _size_slider_moved(self, value: int) -> None:
        self.size_label.setText(f"{value}")  # image pixels, as the tooltip says
        if round(self.canvas.brush_radius * 2) != value:
            self.canvas.set_brush_radius(value / 2)

    def _make_scrubber(self) -> QWidget:
        row = QWidget()
        row.setObjectName("scrubber")
        layout = QHBoxLayout(row)
        layout.setContentsMargins(8, 4, 8, 4)
        self.prev_button = QToolButton(text="◀", autoRaise=True, toolTip="Previous image of the batch")
        self.next_button = QToolButton(text="▶", autoRaise=True, toolTip="Next image of the batch")
        self.index_label = QLabel()
        self.prev_button.clicked.connect(lambda: self.show_result_index(self._result_index - 1))
        self.next_button.clicked.connect(lambda: self.show_result_index(self._result_index + 1))
        self.step_slider = QSlider(Qt.Orientation.Horizontal, toolTip="Scrub through the job's previews")
        self.step_slider.valueChanged.connect(self._scrub)
        self.step_label = QLabel()
        self.step_label.setMinimumWidth(self.step_label.fontMetrics().horizontalAdvance("Final 000/000"))
        for w in (self.prev_button, self.index_label, self.next_button):
            layout.addWidget(w)
        layout.addWidget(QLabel("Steps"))
        layout.addWidget(self.step_slider, 1)
        layout.addWidget(self.step_label)
        self.scrubber = row
        return row

    # --- public API ----------------------------------------------------------------------------------
    @property
    def input_image(self) -> QImage | None:
        return self._input

    def shown_image(self) -> QImage | None:
        return self.canvas.image

    def result_image(self) -> QImage | None:
        """The job's image the result view shows (or would show), whatever the canvas shows now."""
        return self._current_result()

    def shown_result_index(self) -> int | None:
        """Which of the job's images is shown, or None when the canvas shows something else (the input, a
        scrubbed preview, a running job's preview)."""
        if not self._showing_result or not self._results:
            return None
        return self._result_index

    def set_input_image(self, image: QImage | None) -> None:
        """Set (or remove) the init image; the mask is reset to its size."""
        self._input = image
        width, height = (image.width(), image.height()) if image is not None else (0, 0)
        self.mask.reset(width, height)
        self.set_view(INPUT if image is not None else RESULT)

    def show_control(self, base: QImage, scribble: MaskModel | None = None, layer: QImage | None = None,
                     opacity: float = 1.0, switch: bool = True) -> None:
        """Show a control layer: `base` (its source image, or the black ground of a scribble) with `layer`
        (its map) over it at `opacity`; with `scribble` (at base's size) the brush paints into that instead of
        the mask. Without `switch` the Control view shows it only if it is the current view."""
        self._control = (base, scribble, layer, opacity)
        if scribble is not None and not scribble.property("watched"):  # Clear follows what is painted
            scribble.changed.connect(lambda _rect: self._update_actions())
            scribble.setProperty("watched", True)
        if switch or self.view == CONTROL:
            self.set_view(CONTROL)
        else:
            self._update_actions()

    def set_control_layer(self, layer: QImage | None, opacity: float) -> None:
        """Change the shown control layer's map or its opacity (None: hidden) without leaving the view."""
        if self._control is not None:
            self._control = (*self._control[:2], layer, opacity)
            if self.view == CONTROL:
                self.canvas.set_layer(layer, opacity)

    def clear_control(self) -> None:
        """No control layer to show (the last was removed): leave the control view."""
        self._control = None
        if self.view == CONTROL:
            self.set_view(INPUT if self._input is not None else RESULT)
        self._update_actions()

    def set_view(self, view: str) -> None:
        if view == INPUT and self._input is None or view == CONTROL and self._control is None:
            view = RESULT
        self.view = view
        self._show()
        self.viewChanged.emit(view)

    def show_walk(self, frames, requests, model_name: str = "", frame: int = 0, play: bool = True) -> None:
        """Play a walk's frames (PIL images, the requests that made them) on the canvas from `frame`."""
        self.set_view(RESULT)
        self.scrubber.hide()
        self.walk_bar.set_walk(frames, requests, model_name, frame, play)

    def _show_walk_frame(self, image: QImage) -> None:
        self._showing_result = False  # a frame, not one of the job's images (Save As names those)
        self.canvas.set_image(image)

    def begin_job(self, request) -> None:
        """A job starts: its previews will be shown as its final image will be (mask_display.PreviewPlacement)."""
        self.walk_bar.clear()
        self._placement = PreviewPlacement.for_request(request)
        self._job_size = QSize(*self._placement.size)
        self.set_view(RESULT)
        self.scrubber.hide()

    def show_preview(self, image: QImage) -> None:
        if self.view == RESULT:
            self._showing_result = False
            if self._placement is not None:
                image = self._placement.compose(image)
            self.canvas.set_image(image, size=self._job_size if self._job_size.isValid() else None)

    def finish_job(self, images: list[QImage], previews: list[tuple[int, QImage]], total_steps: int) -> None:
        """Show the job's images; the scrubber runs over its (step index, preview) pairs, then the result."""
        self._results, self._result_index = list(images), 0
        self._previews, self._total_steps = list(previews), total_steps
        self._previews_placement, self._placement = self._placement, None  # the scrubber places them too
        self.set_view(RESULT)

    def abandon_job(self) -> None:
        """A cancelled or failed job: show what was there before it, nothing half-made."""
        self._show()

    def show_result_index(self, index: int) -> None:
        if self._results:
            self._result_index = index % len(self._results)
            self.set_view(RESULT)

    # --- internals -----------------------------------------------------------------------------------
    def _current_result(self) -> QImage | None:
        return self._results[self._result_index] if self._results else None

    def _show(self) -> None:
        editing = self.view == INPUT
        self._showing_result = False
        self.walk_bar.clear()
        self.act_result.setChecked(self.view == RESULT)
        self.act_input.setChecked(editing)
        self.act_control.setChecked(self.view == CONTROL)
        scribble = self._control[1] if self.view == CONTROL and self._control is not None else None
        if scribble is not None:
            self.canvas.set_paint_target(scribble, SCRIBBLE_COLOUR, 1.0)
        else:
            self.canvas.set_paint_target(self.mask)
        self.canvas.set_layer(*(self._control[2:] if self.view == CONTROL and self._control else (None,)))
        if self.view == CONTROL and self._control is not None:
            self.canvas.set_image(self._control[0])
            self.canvas.placeholder = ""
            editing = scribble is not None
        elif editing:
            self.canvas.set_image(self._input)
            self.canvas.placeholder = ""
        else:
            self.canvas.set_image(self._current_result())
            self._showing_result = True
            self.canvas.placeholder = ("Write a prompt and press Generate (Ctrl+Enter).\n"
                                       "Or drop an image here to start from it.")
        self.canvas.set_mask_editable(editing)
        self._update_scrubber()
        self._update_actions()

    def _update_scrubber(self) -> None:
        has_steps = self.view == RESULT and bool(self._previews) and bool(self._results)
        batch = self.view == RESULT and len(self._results) > 1
        self.scrubber.setVisible(has_steps or batch)
        for w in (self.prev_button, self.next_button, self.index_label):
            w.setVisible(batch)
        self.index_label.setText(f"{self._result_index + 1}/{len(self._results)}")
        self.step_slider.blockSignals(True)
        self.step_slider.setRange(0, len(self._previews))
        self.step_slider.setValue(len(self._previews))
        self.step_slider.blockSignals(False)
        self.step_slider.setEnabled(has_steps)
        self._label_step(len(self._previews))

    def _scrub(self, value: int) -> None:
        self._showing_result = value >= len(self._previews)
        if value >= len(self._previews):
            self.canvas.set_image(self._current_result())
        else:
            result, preview = self._current_result(), self._previews[value][1]
            if self._previews_placement is not None:
                preview = self._previews_placement.compose(preview)
            self.canvas.set_image(preview, size=result.size() if result is not None else None)
        self._label_step(value)

    def _label_step(self, value: int) -> None:
        if value >= len(self._previews):
            self.step_label.setText("Final")
        else:
            self.step_label.setText(f"Step {self._previews[value][0] + 1}/{self._total_steps}")

    def _update_actions(self) -> None:
        painting = self.view == CONTROL and self.canvas.mask is not self.mask
        editing = self.view == INPUT or painting
        has_mask = editing and not self.canvas.mask.is_empty()
        self.act_input.setEnabled(self._input is not None)
        self.act_control.setEnabled(self._control is not None)
        for a in (self.act_brush, self.act_eraser, self.act_pan, self.act_frame, self.act_smaller, self.act_bigger,
                  self.act_invert, self.act_fill, self.act_clear):
            a.setEnabled(editing)
        self.act_clear.setEnabled(has_mask)
        self.act_frame.setEnabled(self.view == INPUT)  # outpainting extends the input, not a scribble
        self.mask_bar.setVisible(editing)
        self.outpaint_bar.setVisible(self.view == INPUT)
        self.act_use_as_input.setEnabled(self.view == RESULT and self._current_result() is not None)
        self.act_clear_input.setEnabled(self._input is not None)

    def _set_tool(self, tool: Tool) -> None:
        self.canvas.set_tool(tool)

    def _scale_brush(self, factor: float) -> None:
        self.canvas.set_brush_radius(self.canvas.brush_radius * factor)
