"""The prompt panel's "Hires fix" group (A1111's hires fix, engine/hires.py): txt2img, then upscaled and
sampled again at the bigger size.

Collapsed by default: one toggle opens the rows, and closing it turns hires fix off, so what the panel shows
closed is what the request gets. Only for txt2img: the panel disables it while there is an input image.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.hires import MAX_HIRES_SCALE
from sdstudio.engine.names import LATENT_UPSCALERS, PIXEL_UPSCALERS, SAMPLERS, SCHEDULER_LABELS, SCHEDULERS
from sdstudio.engine.validate import MAX_SIDE
from sdstudio.ui.prompt_state import PromptState

TIPS = {
    "toggle": "Hires fix: generate at the set size, upscale, then redraw at the bigger size for detail "
              "(A1111's “Hires. fix”). Closing turns it off.",
    "upscaler": "How the first image is enlarged: Latent* resize the latent (fast, needs strength ≥ 0.5), "
                "Lanczos/Nearest and upscaler models the pixels",
    "scale": "Upscale by this factor (unless a resize size is set)",
    "resize": "Upscale to this width × height instead of by the factor (0: off; one side 0 keeps the aspect; "
              "both set: cover and crop)",
    "steps": "Steps of the second pass (0: the same as Steps)",
    "strength": "Denoising strength of the second pass: how much of the upscaled image is redrawn",
    "cfg": "CFG scale of the second pass (same: the CFG scale's)",
    "sampler": "Sampler and schedule of the second pass",
    "prompt": "Prompt of the second pass (empty: the same prompt)",
    "negative": "Negative prompt of the second pass (empty: the same)",
    "checkpoint": "Checkpoint of the second pass (A1111's “Hires checkpoint”): one of the same family as the "
                  "model, loaded after the first pass",
}
SAME_CHECKPOINT = "Use same checkpoint"  # A1111's label for "" in the request
SAME = "Same"  # the combos' first item: "" in the request, the first pass's choice


def _side_spin() -> QSpinBox:
    spin = QSpinBox(minimum=0, maximum=MAX_SIDE, singleStep=8, toolTip=TIPS["resize"])
    spin.setSpecialValueText("off")
    return spin


class HiresControls(QWidget):
    """Edits the hires fields of a PromptState: `show_values` / `store`, like the panel."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.toggle = QToolButton(text="Hires fix", checkable=True, toolTip=TIPS["toggle"])
        layout.addWidget(self.toggle)
        self.rows = QWidget()
        layout.addWidget(self.rows)
        grid = QGridLayout(self.rows)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        self.upscaler_combo = QComboBox(toolTip=TIPS["upscaler"])
        self.set_upscalers([*LATENT_UPSCALERS, *PIXEL_UPSCALERS])
        self.scale_spin = QDoubleSpinBox(minimum=1.0, maximum=MAX_HIRES_SCALE, singleStep=0.25, decimals=2,
                                         prefix="× ", toolTip=TIPS["scale"])
        self.resize_w_spin, self.resize_h_spin = _side_spin(), _side_spin()
        self.steps_spin = QSpinBox(minimum=0, maximum=500, toolTip=TIPS["steps"])
        self.steps_spin.setSpecialValueText("same")
        self.strength_spin = QDoubleSpinBox(minimum=0.01, maximum=1.0, singleStep=0.05, decimals=2,
                                            toolTip=TIPS["strength"])
        # The panel's CFG range; 0 is the request's "the first pass's".
        self.cfg_spin = QDoubleSpinBox(minimum=0.0, maximum=30.0, singleStep=0.5, decimals=1, toolTip=TIPS["cfg"])
        self.cfg_spin.setSpecialValueText("same")
        self.sampler_combo = QComboBox(toolTip=TIPS["sampler"])
        self.sampler_combo.addItem(SAME, "")
        for name in SAMPLERS:
            self.sampler_combo.addItem(name, name)
        self.scheduler_combo = QComboBox(toolTip=TIPS["sampler"])
        self.scheduler_combo.addItem(SAME, "")
        for name in SCHEDULERS:
            self.scheduler_combo.addItem(SCHEDULER_LABELS[name], name)
        self.checkpoint_combo = QComboBox(toolTip=TIPS["checkpoint"])
        self.checkpoint_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.set_checkpoints([])
        self.prompt_edit = QLineEdit(placeholderText="Hires prompt (empty: same)", toolTip=TIPS["prompt"])
        self.negative_edit = QLineEdit(placeholderText="Hires negative (empty: same)", toolTip=TIPS["negative"])
        rows = [(("Upscaler", self.upscaler_combo), None), (("Scale", self.scale_spin), ("Steps", self.steps_spin)),
                (("Resize W", self.resize_w_spin), ("H", self.resize_h_spin)),
                (("Denoise", self.strength_spin), ("CFG", self.cfg_spin)), (("Sampler", self.sampler_combo), None),
                (("Schedule", self.scheduler_combo), None), (("Checkpoint", self.checkpoint_combo), None)]
        for r, (left, right) in enumerate(rows):
            grid.addWidget(QLabel(left[0], toolTip=left[1].toolTip()), r, 0)
            grid.addWidget(left[1], r, 1, 1, 1 if right else 3)
            if right:
                grid.addWidget(QLabel(right[0], toolTip=right[1].toolTip()), r, 2)
                grid.addWidget(right[1], r, 3)
        grid.addWidget(self.prompt_edit, len(rows), 0, 1, 4)
        grid.addWidget(self.negative_edit, len(rows) + 1, 0, 1, 4)
        for spin in (self.scale_spin, self.resize_w_spin, self.resize_h_spin, self.steps_spin, self.strength_spin,
                     self.cfg_spin):
            spin.valueChanged.connect(self.changed)
        for combo in (self.upscaler_combo, self.sampler_combo, self.scheduler_combo, self.checkpoint_combo):
            combo.currentIndexChanged.connect(self.changed)
        for edit in (self.prompt_edit, self.negative_edit):
            edit.textChanged.connect(self.changed)
        self.toggle.toggled.connect(self._toggled)
        self.rows.setVisible(False)

    def set_upscalers(self, names: list[str]) -> None:
        """The upscaler choices (latent and pixel ones, then the upscaler models found); keeps the choice."""
        current = self.upscaler_combo.currentText()
        self.upscaler_combo.blockSignals(True)
        self.upscaler_combo.clear()
        self.upscaler_combo.addItems(names)
        self.upscaler_combo.blockSignals(False)
        if current:
            self._show_upscaler(current)

    def set_checkpoints(self, choices: list[tuple[str, str]]) -> None:
        """The second-pass checkpoint choices, (label, path) as the model list's, after "Use same checkpoint";
        the built-in model (path "") is not one: its family is ours alone. Keeps the choice."""
        current = self.checkpoint_combo.currentData() or ""
        self.checkpoint_combo.blockSignals(True)
        self.checkpoint_combo.clear()
        self.checkpoint_combo.addItem(SAME_CHECKPOINT, "")
        for label, path in choices:
            if path:
                self.checkpoint_combo.addItem(label, path)
                last = self.checkpoint_combo.count() - 1
                self.checkpoint_combo.setItemData(last, path, Qt.ItemDataRole.ToolTipRole)
        self.checkpoint_combo.blockSignals(False)
        self._show_checkpoint(current)

    def _show_checkpoint(self, path: str) -> None:
        if self.checkpoint_combo.findData(path) < 0:  # named by a loaded image, not listed: shown as written
            self.checkpoint_combo.addItem(path.replace("\\", "/").rsplit("/", 1)[-1], path)
        self.checkpoint_combo.setCurrentIndex(self.checkpoint_combo.findData(path))

    def _show_upscaler(self, name: str) -> None:
        if self.upscaler_combo.findText(name) < 0:
            self.upscaler_combo.addItem(name)  # a model named by a loaded image: shown as written
        self.upscaler_combo.setCurrentIndex(self.upscaler_combo.findText(name))

    def _toggled(self, on: bool) -> None:
        self.rows.setVisible(on)
        self.changed.emit()

    def show_values(self, state: PromptState) -> None:
        self.toggle.setChecked(state.hires)
        self._show_upscaler(state.hires_upscaler)
        self.scale_spin.setValue(state.hires_scale)
        self.resize_w_spin.setValue(state.hires_resize_w)
        self.resize_h_spin.setValue(state.hires_resize_h)
        self.steps_spin.setValue(state.hires_steps)
        self.strength_spin.setValue(state.hires_strength)
        self.cfg_spin.setValue(state.hires_cfg_scale)
        for combo, value in ((self.sampler_combo, state.hires_sampler), (self.scheduler_combo, state.hires_scheduler)):
            combo.setCurrentIndex(max(combo.findData(value), 0))
        self.prompt_edit.setText(state.hires_prompt)
        self.negative_edit.setText(state.hires_negative_prompt)
        self._show_checkpoint(state.hires_checkpoint)

    def store(self, state: PromptState) -> None:
        state.hires = self.toggle.isChecked()
        state.hires_upscaler = self.upscaler_combo.currentText()
        state.hires_scale = self.scale_spin.value()
        state.hires_resize_w, state.hires_resize_h = self.resize_w_spin.value(), self.resize_h_spin.value()
        state.hires_steps, state.hires_strength = self.steps_spin.value(), self.strength_spin.value()
        state.hires_cfg_scale = self.cfg_spin.value()
        state.hires_sampler = self.sampler_combo.currentData()
        state.hires_scheduler = self.scheduler_combo.currentData()
        state.hires_prompt, state.hires_negative_prompt = self.prompt_edit.text(), self.negative_edit.text()
        state.hires_checkpoint = self.checkpoint_combo.currentData() or ""
