"""The seed row's extras: A1111's variation seed (subseed and strength) and "seed resize from".

Compact by default: two small toggles under the seed box, each opening one row. Closing a row turns its
option off (strength 0, resize 0x0), so what the panel shows closed is what the request gets.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.validate import MAX_SIDE
from sdstudio.ui.prompt_state import MAX_SEED, RANDOM_SEED, PromptState

STRENGTH_STEPS = 100  # the slider's resolution: A1111's strength slider moves in 0.01 steps
TIPS = {
    "variation": "Variation seed: blend the seed's noise with another seed's, to get images close to this "
                 "one (A1111's “Variation seed”). Closing turns it off.",
    "subseed": "The second seed; “Random” draws a new one for every generation",
    "strength": "How far toward the variation seed: 0 is the seed's image, 1 the variation seed's",
    "extra": "Seed resize: draw the noise as for another image size, so an image keeps its composition "
             "at the new size (A1111's “Resize seed from”). Closing turns it off.",
    "resize": "The width and height the seed's image was made at (0: off)",
}


def _side_spin(tip: str) -> QSpinBox:
    spin = QSpinBox(minimum=0, maximum=MAX_SIDE, singleStep=8, toolTip=tip)
    spin.setSpecialValueText("off")
    return spin


class SeedExtras(QWidget):
    """Edits the variation and seed-resize fields of a PromptState: `show_values` / `store`, like the panel."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        toggles = QHBoxLayout()
        self.variation_toggle = QToolButton(text="Variation", checkable=True, toolTip=TIPS["variation"])
        self.extra_toggle = QToolButton(text="Extra", checkable=True, toolTip=TIPS["extra"])
        toggles.addWidget(self.variation_toggle)
        toggles.addWidget(self.extra_toggle)
        toggles.addStretch(1)
        layout.addLayout(toggles)
        layout.addWidget(self._build_variation())
        layout.addWidget(self._build_resize())
        self.variation_toggle.toggled.connect(self._variation_toggled)
        self.extra_toggle.toggled.connect(self._extra_toggled)
        self.variation_row.setVisible(False)
        self.resize_row.setVisible(False)

    def _build_variation(self) -> QWidget:
        self.variation_row = QWidget()
        row = QHBoxLayout(self.variation_row)
        row.setContentsMargins(0, 0, 0, 0)
        self.subseed_spin = QDoubleSpinBox(minimum=RANDOM_SEED, maximum=MAX_SEED, decimals=0,
                                           toolTip=TIPS["subseed"])
        self.subseed_spin.setSpecialValueText("Random")
        self.subseed_dice = QToolButton(text="🎲", toolTip="Random variation seed for every generation")
        self.subseed_dice.clicked.connect(lambda: self.subseed_spin.setValue(RANDOM_SEED))
        self.strength = 0.0
        self.strength_slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=STRENGTH_STEPS,
                                       toolTip=TIPS["strength"])
        self.strength_label = QLabel(toolTip=TIPS["strength"])
        self.strength_label.setMinimumWidth(self.strength_label.fontMetrics().horizontalAdvance("0.00 "))
        row.addWidget(self.subseed_spin, 3)
        row.addWidget(self.subseed_dice)
        row.addWidget(self.strength_slider, 2)
        row.addWidget(self.strength_label)
        self.subseed_spin.valueChanged.connect(self.changed)
        self.strength_slider.valueChanged.connect(self._strength_moved)
        self._strength_moved(0, notify=False)
        return self.variation_row

    def _build_resize(self) -> QWidget:
        self.resize_row = QWidget()
        row = QHBoxLayout(self.resize_row)
        row.setContentsMargins(0, 0, 0, 0)
        self.resize_w_spin = _side_spin(TIPS["resize"])
        self.resize_h_spin = _side_spin(TIPS["resize"])
        row.addWidget(QLabel("Resize from", toolTip=TIPS["resize"]))
        row.addWidget(self.resize_w_spin, 1)
        row.addWidget(QLabel("×"))
        row.addWidget(self.resize_h_spin, 1)
        for spin in (self.resize_w_spin, self.resize_h_spin):
            spin.valueChanged.connect(self.changed)
        return self.resize_row

    def _strength_moved(self, value: int, notify: bool = True) -> None:
        # A loaded strength finer than the slider's steps (0.125) is kept exactly until the slider moves.
        if value != round(self.strength * STRENGTH_STEPS):
            self.strength = value / STRENGTH_STEPS
        self.strength_label.setText(f"{self.strength:.3g}")
        if notify:
            self.changed.emit()

    def _variation_toggled(self, on: bool) -> None:
        self.variation_row.setVisible(on)
        if not on:
            self.strength_slider.setValue(0)

    def _extra_toggled(self, on: bool) -> None:
        self.resize_row.setVisible(on)
        if not on:
            self.resize_w_spin.setValue(0)
            self.resize_h_spin.setValue(0)

    def show_values(self, state: PromptState) -> None:
        """Show the state's values; a row with an option on opens (loading a variation's parameters)."""
        self.subseed_spin.setValue(state.subseed)
        self.strength = state.subseed_strength
        self.strength_slider.setValue(round(state.subseed_strength * STRENGTH_STEPS))
        self.strength_label.setText(f"{self.strength:.3g}")
        self.resize_w_spin.setValue(state.seed_resize_from_w)
        self.resize_h_spin.setValue(state.seed_resize_from_h)
        if state.subseed_strength != 0:
            self.variation_toggle.setChecked(True)
        if state.seed_resize_from_w or state.seed_resize_from_h:
            self.extra_toggle.setChecked(True)

    def store(self, state: PromptState) -> None:
        state.subseed = int(self.subseed_spin.value())
        state.subseed_strength = self.strength
        state.seed_resize_from_w = self.resize_w_spin.value()
        state.seed_resize_from_h = self.resize_h_spin.value()
