"""What Generate will do, shown next to it: text to image, image to image or inpainting.

The mode follows from the input image and the painted mask; without this bar a leftover input silently turned
Generate into img2img. One click on "Clear input" goes back to text to image.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

TXT2IMG, IMG2IMG, INPAINT = "txt2img", "img2img", "inpaint"  # GenerationRequest.mode's names
MODE_LABELS = {TXT2IMG: "Text to image", IMG2IMG: "Image to image", INPAINT: "Inpaint"}
_DETAILS = {
    TXT2IMG: "from the prompt alone",
    IMG2IMG: "from the {size} input image",
    INPAINT: "repaints the masked part of the {size} input",
}


def input_mode(has_input: bool, has_mask: bool) -> str:
    """The mode a Generate with this input makes (the same rule as GenerationRequest.mode)."""
    if not has_input:
        return TXT2IMG
    return INPAINT if has_mask else IMG2IMG


class ModeBar(QWidget):
    """The mode in words and, while there is an input image, a button that removes it."""

    clearInputRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("modeBar")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.clear_button = QPushButton("Clear input")
        self.clear_button.setToolTip("Remove the input image and mask: back to text to image")
        self.clear_button.clicked.connect(self.clearInputRequested)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.clear_button)
        self.mode, self._size, self.control_layers = "", None, 0
        self.set_mode(TXT2IMG)

    def set_mode(self, mode: str, input_size: tuple[int, int] | None = None) -> None:
        self.mode, self._size = mode, input_size
        size = f"{input_size[0]}×{input_size[1]}" if input_size else ""
        steered = self.control_layers
        also = f", steered by {steered} control layer{'s' if steered > 1 else ''}" if steered else ""
        self.label.setText(f"<b>{MODE_LABELS[mode]}</b> — {_DETAILS[mode].format(size=size)}{also}")
        self.clear_button.setVisible(mode != TXT2IMG)

    def set_control_layers(self, count: int) -> None:
        """How many control layers (ControlNet units) are on: a hidden dock must not steer unseen."""
        self.control_layers = count
        self.set_mode(self.mode, self._size)
