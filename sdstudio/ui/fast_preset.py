"""The prompt panel's fast-path row: a "Fast" preset button (LCM, 4 steps, CFG 1, sgm_uniform, draft decode;
prompt_state.FAST_PRESET) and the "Draft decode" check box.

The button is checked exactly when the panel's values are the preset's. Once the preset is in play (applied
here, or the LCM sampler chosen) any value that differs makes it read "Fast (changed)" with the differences in
its tooltip, so a user never believes a 12-step CFG 3 run is the fast path. Clicking it while exact puts back
the values it replaced.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QPushButton, QWidget

from sdstudio.ui.prompt_state import FAST_PRESET, PromptState, apply_fast_preset, fast_differences

FAST_TIP = ("Fast path for LCM / LCM-LoRA / turbo models: LCM sampler, 4 steps, CFG 1 (no negative-prompt pass), "
            "SGM Uniform schedule, draft decode. Add an LCM-LoRA (e.g. <lora:lcm-lora-sdv1-5:1>) to a normal "
            "checkpoint; without one, 4 steps give a blur.")
DRAFT_TIP = ("Decode the final image with the tiny preview decoder (TAESD) instead of the full VAE: much faster "
             "at few steps, slightly softer. Needs a model loaded with a preview decoder.")


class FastControls(QWidget):
    """Edits the preset values of `state` in place; emits `changed` after it did (the panel then refreshes)."""

    changed = Signal()
    draftToggled = Signal(bool)

    def __init__(self, state: PromptState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self._replaced: dict[str, object] | None = None  # the values the preset replaced, to undo it
        self.fast_button = QPushButton("⚡ Fast", checkable=True, toolTip=FAST_TIP)
        self.fast_button.clicked.connect(self._clicked)
        self.draft_check = QCheckBox("Draft decode", toolTip=DRAFT_TIP)
        self.draft_check.toggled.connect(self.draftToggled)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.fast_button)
        row.addWidget(self.draft_check, 1)

    def _clicked(self) -> None:
        if fast_differences(self.state):
            self._replaced = apply_fast_preset(self.state)
        else:
            undo = self._replaced or {}
            for name in FAST_PRESET:
                if name in undo:
                    setattr(self.state, name, undo[name])
            self._replaced = None
        self.changed.emit()

    def sync(self) -> None:
        """Show whether the state is the preset (call after any change of the state)."""
        differences = fast_differences(self.state)
        self.draft_check.blockSignals(True)
        self.draft_check.setChecked(self.state.draft_decode)
        self.draft_check.blockSignals(False)
        self.fast_button.setChecked(not differences)
        in_play = self._replaced is not None or self.state.sampler == FAST_PRESET["sampler"]
        if differences and in_play:
            self.fast_button.setText("⚡ Fast (changed)")
            self.fast_button.setToolTip("Differs from the Fast preset: " + ", ".join(differences)
                                        + ". Click to apply the preset again.")
        else:
            self.fast_button.setText("⚡ Fast")
            self.fast_button.setToolTip(FAST_TIP + (" Click again to put back the previous values."
                                                    if not differences and self._replaced else ""))

    @property
    def changed_from_preset(self) -> bool:
        return self.fast_button.text().endswith("(changed)")
