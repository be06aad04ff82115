"""Outpainting on the canvas: extend the input image left/right/up/down by an amount.

The bar (shown with the mask tools in the input view) asks; `outpaint_input` does it with the engine's own
helper (engine/outpaint.py, torch-free): the input becomes the extended canvas with the new area filled and
masked, the job's size becomes the canvas's and its strength 1, so Generate inpaints the new area and blends
it in across the seam (the mask overlaps the original as far as the Mask blur set when extending needs)
while the original's other pixels stay as they were. With "Only masked" on, the job's size becomes the size
of the box around the new area and the seam instead (outpaint.only_masked_size): that box is sampled at 1:1
and pasted back, the original kept just the same. The mask can be edited before generating, and Ctrl+Z
takes the new mask back; "Remove input" or opening another image starts over.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QLabel, QSpinBox, QToolBar, QWidget

from sdstudio.engine.errors import RequestError
from sdstudio.engine.outpaint import (
    DEFAULT_FILL,
    FILLS,
    MAX_EXTENSION,
    SIDES,
    Extension,
    extend,
    only_masked_size,
)
from sdstudio.ui.imageconv import pil_to_qimage, qimage_to_pil

MULTIPLE = 8  # every model family's latent factor: the canvas grows to it on an extended side
OUTPAINT_STRENGTH = 1.0  # a 4-channel model must redraw the fill completely
DEFAULT_AMOUNT = 128  # pixels per pressed side, until the user's choice is saved (settings.save_outpaint)
FILL_LABELS = {"edge": "Edge colours", "blur": "Blurred stretch", "noise": "Noise"}
ARROWS = {"left": "← Left", "right": "Right →", "up": "↑ Up", "down": "↓ Down"}


class OutpaintBar(QToolBar):
    """Amount, fill and one button per side (and the panel's Drag frame tool); `extendRequested(Extension,
    fill)` when one is pressed or a frame drag ends."""

    extendRequested = Signal(object, str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent, movable=False)
        tip = "Extend the input image by this many pixels on the side you press (then Generate paints it)"
        self.amount = QSpinBox(minimum=MULTIPLE, maximum=MAX_EXTENSION, singleStep=MULTIPLE, value=DEFAULT_AMOUNT,
                               suffix=" px", toolTip=tip)
        self.fill = QComboBox(toolTip="What the new area starts as (a 9-channel inpainting model ignores it)")
        for name in FILLS:
            self.fill.addItem(FILL_LABELS[name], name)
        self.fill.setCurrentIndex(FILLS.index(DEFAULT_FILL))
        self.addWidget(QLabel(" Outpaint ", toolTip=tip))
        self.addWidget(self.amount)
        self.addWidget(self.fill)
        self.side_actions = {}
        for side in SIDES:
            action = self.addAction(ARROWS[side])
            action.setToolTip(f"Extend the input {side} by the amount and mask the new area")
            action.triggered.connect(lambda _=False, s=side: self.request(s))
            self.side_actions[side] = action

    def values(self) -> tuple[int, str]:
        """(amount, fill): what settings.save_outpaint keeps for the next start."""
        return self.amount.value(), self.fill.currentData()

    def set_values(self, amount: int, fill: str) -> None:
        """Show a saved amount (clamped to the spin box's range) and fill (one of FILLS)."""
        self.amount.setValue(amount)
        self.fill.setCurrentIndex(FILLS.index(fill))

    def request(self, side: str) -> None:
        self.request_extension(Extension(**{side: self.amount.value()}))

    def request_extension(self, ext: Extension) -> None:
        """Ask for `ext` with the chosen fill (the side buttons, and the canvas's Frame tool drag)."""
        self.extendRequested.emit(ext, self.fill.currentData())


def outpaint_input(window, ext: Extension, fill: str) -> None:
    """Put the window's input image on the extended canvas (see the module docstring). The painted mask is
    kept inside the image and repainted with the new area."""
    panel = window.canvas_panel
    if panel.input_image is None:
        return
    image = qimage_to_pil(panel.input_image).convert("RGB")
    ext = ext.rounded(image.size, MULTIPLE)
    state = window.state
    try:
        canvas, mask = extend(image, ext, fill, seed=max(state.seed, 0), mask=window.mask.to_pil(),
                              mask_blur=state.mask_blur)
    except RequestError as exc:
        panel.banner.show_error(str(exc))
        return
    width, height = canvas.size
    window.set_input_image(pil_to_qimage(canvas), getattr(window, "_input_parent", ""))
    window.mask.set_image(mask, "Outpaint")
    state.width, state.height = width, height  # the canvas as it is: scaled, the original would change
    if state.only_masked:  # the box around the new area, at its own size (the canvas comes back whole)
        state.width, state.height = only_masked_size(mask, state.only_masked_padding, MULTIPLE)
    state.strength = OUTPAINT_STRENGTH
    window.panel.refresh()
