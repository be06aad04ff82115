"""The prompt panel: prompts with token counters, model, sampler, size, seed, batch and img2img settings.

The panel edits a `PromptState` in place and only emits intent signals (generate, cancel, pick a model); the
main window turns the state into requests.
"""

from __future__ import annotations

import itertools
from html import escape

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QPalette, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio import paths
from sdstudio.engine.names import SAMPLER_NOTES, SAMPLERS, SCHEDULER_LABELS, SCHEDULERS
from sdstudio.ui.fast_preset import FastControls
from sdstudio.ui.hires_controls import HiresControls
from sdstudio.ui.prompt_highlight import PromptHighlighter, first_problem
from sdstudio.ui.prompt_state import MAX_SEED, RANDOM_SEED, PromptState, size_presets
from sdstudio.ui.seed_extras import SeedExtras
from sdstudio.ui.token_counter import CHUNK_TOKENS, LazyTokenCounter, format_count
from sdstudio.untrusted import printable

ADD_MODEL = "\x00add"
# Emoji names the built-in model draws recognisably (docs/images/sdstudio-emoji-contact-sheet.png).
BUILTIN_EXAMPLES = ("red apple", "confused face", "jack-o-lantern", "flag: Japan", "fox")
TIPS = {
    "model": "The checkpoint that draws the image. Put .safetensors files in the models folder "
             "(File › Open Models Folder) or pick one with “Add model…”.",
    "sampler": "The method that removes noise step by step. Euler a and DPM++ 2M are good defaults; "
               "samplers ending in “a” or “SDE” change the picture a little at every step. "
               "DPM adaptive ignores Steps (hover over a sampler in the list for its note).",
    "schedule": "How the noise level falls over the steps. Karras spends more steps on fine detail; "
                "Align Your Steps uses NVIDIA's tuned noise levels for SD 1.5 or SDXL.",
    "steps": "How many denoising steps to run. More steps take longer; 20–30 is usually enough.",
    "cfg": "Classifier-free guidance: how strictly the image follows the prompt. "
           "Around 5–8 is typical; high values look harsh and oversaturated.",
}


class PromptEdit(QPlainTextEdit):
    """A prompt box that tints the text falling into the 2nd, 3rd, ... 75-token chunk."""

    def __init__(self, placeholder: str, counter: LazyTokenCounter, count_label: QLabel, lines: int = 4,
                 tags: bool = False):
        super().__init__()
        self._lines, self._tags = lines, tags  # tags: <lora:…> tags are taken out (the positive prompt)
        self.setPlaceholderText(placeholder)
        self.setTabChangesFocus(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self._counter, self._label = counter, count_label
        self.highlighter = PromptHighlighter(self.document(), tags)
        self.textChanged.connect(self.recount)
        counter.ready.connect(self.recount)

    def sizeHint(self):
        hint = super().sizeHint()
        hint.setHeight(self.fontMetrics().lineSpacing() * self._lines + 2 * self.frameWidth() + 8)
        return hint

    def recount(self) -> None:
        count = self._counter.count(self.toPlainText(), self._tags)
        # prompt editing syntax: problems (the engine refuses) and warnings, underlined in the box too
        found = self.highlighter.current()
        problem = count.problem or first_problem(found)
        self._label.setText("!" if problem else format_count(count))
        why = "estimated until the tokenizer has loaded" if count.estimated else "CLIP tokens"
        if count.unknown_embeddings:
            why = f"estimated: the vector count of {', '.join(count.unknown_embeddings)} is not in its header"
        warning = first_problem(found, "warning")
        self._label.setToolTip(problem or
                               f"{count.tokens} {why}. Prompts are encoded in chunks of {CHUNK_TOKENS} tokens; "
                               "text with a tinted background falls into a later chunk."
                               + (f"\n{warning}" if warning else ""))
        over = count.chunks > 1 or bool(problem)
        self._label.setProperty("warn", over)
        self._label.style().unpolish(self._label)
        self._label.style().polish(self._label)
        self._mark_chunks(count.boundaries)

    def _mark_chunks(self, boundaries: tuple[int, ...]) -> None:
        selections = []
        tint = QColor(self.palette().color(QPalette.ColorRole.Highlight))
        tint.setAlpha(60)
        text = self.toPlainText()
        # The grammar counts Python characters, the document UTF-16 units (an emoji is two).
        positions = [len(text[:offset].encode("utf-16-le")) // 2 for offset in (*boundaries, len(text))]
        for index, (start, end) in enumerate(itertools.pairwise(positions)):
            if index % 2:
                continue
            sel = QTextEdit.ExtraSelection()
            fmt = QTextCharFormat()
            fmt.setBackground(tint)
            sel.format = fmt
            sel.cursor = QTextCursor(self.document())
            sel.cursor.setPosition(start)
            sel.cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
            selections.append(sel)
        self.setExtraSelections(selections)


def _heading(text: str) -> QLabel:
    label = QLabel(text)
    label.setProperty("role", "heading")
    return label


class PromptPanel(QWidget):
    """Edits `state`; call `refresh()` after changing the state from outside.

    The controls scroll; the mode line and the Generate/Cancel row stay pinned below them, so the main action is
    visible at any window height."""

    generateRequested = Signal()
    cancelRequested = Signal()
    modelChosen = Signal(str)
    addModelRequested = Signal()
    removeModelRequested = Signal(str)  # an added model's path
    reuseSeedRequested = Signal()
    networksRequested = Signal()
    controlRequested = Signal()

    def __init__(self, state: PromptState, counter: LazyTokenCounter, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self._family = "demo"
        self._updating = False
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(10, 10, 10, 10)
        layout.setSpacing(6)
        self._build_prompts(layout, counter)
        self._build_model(layout)
        self._build_sampling(layout)
        self._build_image(layout)
        layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(body)
        footer = QVBoxLayout()
        footer.setContentsMargins(10, 0, 10, 10)
        self._build_buttons(footer)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(self.scroll, 1)
        outer.addLayout(footer)
        self.refresh()
        # Never narrower than the controls: a clipped seed box or size field is worse than a wider panel.
        self.setMinimumWidth(body.minimumSizeHint().width() + self.scroll.verticalScrollBar().sizeHint().width())

    # --- construction ------------------------------------------------------------------------------
    def _build_prompts(self, layout: QVBoxLayout, counter: LazyTokenCounter) -> None:
        for attr, title, hint, lines in (("prompt", "Prompt", "What to draw, e.g. “red apple”", 6),
                                         ("negative", "Negative prompt", "What to avoid", 3)):
            row = QHBoxLayout()
            row.addWidget(_heading(title))
            row.addStretch(1)
            if attr == "prompt":  # the LoRA / embedding browser (network_dock.py) opens beside the prompt
                self.networks_button = QToolButton(text="LoRA…", toolTip="Browse LoRA and embedding files")
                self.networks_button.clicked.connect(self.networksRequested)
                row.addWidget(self.networks_button)
                self.control_button = QToolButton(text="Control…", toolTip="ControlNet: steer by a sketch")
                self.control_button.clicked.connect(self.controlRequested)  # control_dock.py opens its dock
                row.addWidget(self.control_button)
            count = QLabel()
            count.setProperty("role", "counter")
            row.addWidget(count)
            layout.addLayout(row)
            edit = PromptEdit(hint, counter, count, lines, tags=attr == "prompt")
            edit.textChanged.connect(self._store)
            setattr(self, f"{attr}_edit", edit)
            layout.addWidget(edit)

    def _build_model(self, layout: QVBoxLayout) -> None:
        layout.addWidget(_heading("Model"))
        row = QHBoxLayout()
        self.model_combo = QComboBox(toolTip=TIPS["model"])
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.activated.connect(self._model_activated)
        row.addWidget(self.model_combo, 1)
        self.remove_button = QToolButton(text="−", toolTip="Remove an added model from this list (the file stays)")
        self.remove_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.remove_button.setMenu(QMenu(self.remove_button))
        row.addWidget(self.remove_button)
        layout.addLayout(row)
        self.model_info = QLabel("Loading the model…")
        self.model_info.setProperty("role", "hint")
        self.model_info.setWordWrap(True)
        self.model_info.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        # Three lines (the real description at the default width) reserved from the start: the description
        # arriving later must not push the panel down.
        self.model_info.setMinimumHeight(3 * self.model_info.fontMetrics().lineSpacing())
        layout.addWidget(self.model_info)
        self.builtin_guide = QLabel(wordWrap=True, textFormat=Qt.TextFormat.RichText)
        self.builtin_guide.setProperty("role", "hint")
        self.builtin_guide.linkActivated.connect(self._example_chosen)
        layout.addWidget(self.builtin_guide)

    def _build_sampling(self, layout: QVBoxLayout) -> None:
        layout.addWidget(_heading("Sampling"))
        grid = QGridLayout()
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        self.sampler_combo = QComboBox()
        self.sampler_combo.addItems(SAMPLERS)
        for i, name in enumerate(SAMPLERS):
            if name in SAMPLER_NOTES:
                self.sampler_combo.setItemData(i, SAMPLER_NOTES[name], Qt.ItemDataRole.ToolTipRole)
        self.scheduler_combo = QComboBox()
        for name in SCHEDULERS:
            self.scheduler_combo.addItem(SCHEDULER_LABELS[name], name)
        self.steps_spin = QSpinBox(minimum=1, maximum=150)
        self.cfg_spin = QDoubleSpinBox(minimum=1.0, maximum=30.0, singleStep=0.5, decimals=1)
        for widget, key in ((self.sampler_combo, "sampler"), (self.scheduler_combo, "schedule"),
                            (self.steps_spin, "steps"), (self.cfg_spin, "cfg")):
            widget.setToolTip(TIPS[key])
        grid.addWidget(QLabel("Sampler", toolTip=TIPS["sampler"]), 0, 0)
        grid.addWidget(self.sampler_combo, 0, 1, 1, 3)
        grid.addWidget(QLabel("Schedule", toolTip=TIPS["schedule"]), 1, 0)
        grid.addWidget(self.scheduler_combo, 1, 1, 1, 3)
        grid.addWidget(QLabel("Steps", toolTip=TIPS["steps"]), 2, 0)
        grid.addWidget(self.steps_spin, 2, 1)
        grid.addWidget(QLabel("CFG", toolTip=TIPS["cfg"]), 2, 2)
        grid.addWidget(self.cfg_spin, 2, 3)
        self.seed_spin = QDoubleSpinBox(minimum=RANDOM_SEED, maximum=MAX_SEED, decimals=0)
        self.seed_spin.setSpecialValueText("Random")
        self.seed_spin.setToolTip("Seed of the first image; “Random” draws a new one for every batch")
        self.dice_button = QToolButton(text="🎲", toolTip="Random seed for every generation")
        self.dice_button.clicked.connect(lambda: self.seed_spin.setValue(RANDOM_SEED))
        self.reuse_button = QToolButton(text="♻", toolTip="Reuse the last seed")
        self.reuse_button.clicked.connect(self.reuseSeedRequested)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed_spin, 1)
        seed_row.addWidget(self.dice_button)
        seed_row.addWidget(self.reuse_button)
        grid.addWidget(QLabel("Seed"), 3, 0)
        grid.addLayout(seed_row, 3, 1, 1, 3)
        self.seed_extras = SeedExtras()
        self.seed_extras.changed.connect(self._store)
        grid.addWidget(self.seed_extras, 4, 1, 1, 3)
        self.fast = FastControls(self.state)
        self.fast.changed.connect(self.refresh)
        self.fast.draftToggled.connect(self._store)
        grid.addWidget(self.fast, 5, 0, 1, 4)
        layout.addLayout(grid)
        for w in (self.sampler_combo, self.scheduler_combo):
            w.currentIndexChanged.connect(self._store)
        for w in (self.steps_spin, self.cfg_spin, self.seed_spin):
            w.valueChanged.connect(self._store)

    def _build_image(self, layout: QVBoxLayout) -> None:
        layout.addWidget(_heading("Image"))
        grid = QGridLayout()
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        self.width_spin = QSpinBox(minimum=8, maximum=4096, singleStep=8, suffix=" px")
        self.height_spin = QSpinBox(minimum=8, maximum=4096, singleStep=8, suffix=" px")
        self.preset_combo = QComboBox(toolTip="Sizes the model was trained for")
        self.preset_combo.activated.connect(self._preset_chosen)
        grid.addWidget(QLabel("Width"), 0, 0)
        grid.addWidget(self.width_spin, 0, 1)
        grid.addWidget(QLabel("Height"), 0, 2)
        grid.addWidget(self.height_spin, 0, 3)
        grid.addWidget(QLabel("Preset"), 1, 0)
        grid.addWidget(self.preset_combo, 1, 1, 1, 3)
        self.batch_size_spin = QSpinBox(minimum=1, maximum=16, toolTip="Images per run (one batch)")
        self.batch_count_spin = QSpinBox(minimum=1, maximum=100, toolTip="Runs queued one after another")
        grid.addWidget(QLabel("Batch size"), 2, 0)
        grid.addWidget(self.batch_size_spin, 2, 1)
        grid.addWidget(QLabel("Count"), 2, 2)
        grid.addWidget(self.batch_count_spin, 2, 3)
        self.strength_spin = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, decimals=2,
                                            toolTip="How much of the input image is redrawn (img2img/inpaint)")
        self.blur_spin = QSpinBox(minimum=0, maximum=64, suffix=" px", toolTip="Feathering of the mask edge")
        self.only_masked_check = QCheckBox("Only masked area",
                                           toolTip="Redraw the painted region at full resolution")
        grid.addWidget(QLabel("Strength"), 3, 0)
        grid.addWidget(self.strength_spin, 3, 1)
        grid.addWidget(QLabel("Mask blur"), 3, 2)
        grid.addWidget(self.blur_spin, 3, 3)
        grid.addWidget(self.only_masked_check, 4, 1, 1, 3)
        self.hires = HiresControls()
        self.hires.changed.connect(self._store)
        grid.addWidget(self.hires, 5, 0, 1, 4)
        layout.addLayout(grid)
        for w in (self.width_spin, self.height_spin, self.batch_size_spin, self.batch_count_spin,
                  self.strength_spin, self.blur_spin):
            w.valueChanged.connect(self._store)
        self.only_masked_check.toggled.connect(self._store)
        self.set_input_state(False, False)

    def _build_buttons(self, layout: QVBoxLayout) -> None:
        row = QHBoxLayout()
        self.generate_button = QPushButton("Generate")
        self.generate_button.setObjectName("generate")
        self.generate_button.setToolTip("Generate (Ctrl+Enter); pressing again queues another job")
        self.generate_button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.generate_button.clicked.connect(self.generateRequested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job (Esc)")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancelRequested)
        row.addWidget(self.generate_button, 3)
        row.addWidget(self.cancel_button, 1)
        layout.addSpacing(6)
        # The window puts what Generate will do (main_window's mode bar) here, just above the button.
        self.mode_slot = QVBoxLayout()
        layout.addLayout(self.mode_slot)
        layout.addLayout(row)

    # --- state <-> widgets -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Show the values of `state`."""
        s, self._updating = self.state, True
        try:
            if self.prompt_edit.toPlainText() != s.prompt:
                self.prompt_edit.setPlainText(s.prompt)
            if self.negative_edit.toPlainText() != s.negative_prompt:
                self.negative_edit.setPlainText(s.negative_prompt)
            _select(self.sampler_combo, s.sampler, self.sampler_combo.findText(s.sampler))
            _select(self.scheduler_combo, s.scheduler, self.scheduler_combo.findData(s.scheduler))
            self.steps_spin.setValue(s.steps)
            self.cfg_spin.setValue(s.cfg_scale)
            self.seed_spin.setValue(s.seed)
            self.seed_extras.show_values(s)
            self.width_spin.setValue(s.width)
            self.height_spin.setValue(s.height)
            self.batch_size_spin.setValue(s.batch_size)
            self.batch_count_spin.setValue(s.batch_count)
            self.strength_spin.setValue(s.strength)
            self.blur_spin.setValue(s.mask_blur)
            self.only_masked_check.setChecked(s.only_masked)
            self.hires.show_values(s)
            self._select_model(s.model)
        finally:
            self._updating = False
        self._sync_preset()
        self.fast.sync()

    def _store(self) -> None:
        if self._updating:
            return
        s = self.state
        s.prompt, s.negative_prompt = self.prompt_edit.toPlainText(), self.negative_edit.toPlainText()
        s.sampler = self.sampler_combo.currentData() or self.sampler_combo.currentText()
        s.scheduler = self.scheduler_combo.currentData()
        s.steps, s.cfg_scale, s.seed = self.steps_spin.value(), self.cfg_spin.value(), int(self.seed_spin.value())
        self.seed_extras.store(s)
        s.width, s.height = self.width_spin.value(), self.height_spin.value()
        s.batch_size, s.batch_count = self.batch_size_spin.value(), self.batch_count_spin.value()
        s.strength, s.mask_blur = self.strength_spin.value(), self.blur_spin.value()
        s.only_masked = self.only_masked_check.isChecked()
        self.hires.store(s)
        s.draft_decode = self.fast.draft_check.isChecked()
        self._sync_preset()
        self.fast.sync()

    # --- models and sizes --------------------------------------------------------------------------
    def set_models(self, models: list[tuple[str, str]], removable: list[str] | tuple[str, ...] = ()) -> None:
        """(label, path) pairs; path "" is the built-in model. "Add model…" is appended. `removable` are the
        added models that "−" offers to take off the list."""
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for label, path in models:
            self.model_combo.addItem(label, path)
            self.model_combo.setItemData(self.model_combo.count() - 1, path or label, Qt.ItemDataRole.ToolTipRole)
        self.model_combo.insertSeparator(self.model_combo.count())
        self.model_combo.addItem("Add model…", ADD_MODEL)
        self.model_combo.blockSignals(False)
        menu = self.remove_button.menu()
        menu.clear()
        for path in removable:
            action = menu.addAction(f"Remove “{path.replace(chr(92), '/').rsplit('/', 1)[-1]}” from list")
            action.setToolTip(path)
            action.triggered.connect(lambda _checked=False, path=path: self.removeModelRequested.emit(path))
        self.remove_button.setEnabled(bool(removable))
        self._select_model(self.state.model)

    def set_model_info(self, text: str, family: str | None = None) -> None:
        self.model_info.setText(text)
        if family:
            self._family = family
            self._fill_presets()

    def set_input_state(self, has_input: bool, has_mask: bool) -> None:
        """Enable the img2img controls only when there is an input image (and a mask for inpainting)."""
        self.strength_spin.setEnabled(has_input)
        self.blur_spin.setEnabled(has_input and has_mask)
        self.only_masked_check.setEnabled(has_input and has_mask)
        self.hires.setEnabled(not has_input)  # a txt2img second pass

    def set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)
        self.generate_button.setText("Queue" if running else "Generate")

    def apply_default_size(self, size: int) -> None:
        self.width_spin.setValue(size)
        self.height_spin.setValue(size)

    def _select_model(self, path: str) -> None:
        index = self.model_combo.findData(path)
        if index < 0 and path:
            self.model_combo.insertItem(0, path.replace("\\", "/").rsplit("/", 1)[-1], path)
            index = 0
        self.model_combo.setCurrentIndex(max(index, 0))
        self._show_guide()

    def _show_guide(self) -> None:
        # Only the built-in model needs it: a photo prompt gives a blob unless you know it draws emoji.
        builtin = self.model_combo.currentData() == ""
        if builtin and not self.builtin_guide.text():
            links = " · ".join(f'<a href="{escape(p)}">{escape(p)}</a>' for p in BUILTIN_EXAMPLES)
            folder = escape(str(paths.models_dir()))
            self.builtin_guide.setText(
                "The built-in model is a small demo: it knows only emoji names and draws 64×64 pictures, so "
                f"“a photo of …” gives a blob. Try: {links}.<br>Real checkpoints: File › Open Models Folder "
                f"({folder}).")
        self.builtin_guide.setVisible(builtin)

    def _example_chosen(self, prompt: str) -> None:
        self.prompt_edit.setPlainText(prompt)

    def _model_activated(self, index: int) -> None:
        path = self.model_combo.itemData(index)
        if path == ADD_MODEL:
            self._select_model(self.state.model)
            self.addModelRequested.emit()
        elif path is not None and path != self.state.model:
            self.state.model = path
            self._show_guide()
            self.modelChosen.emit(path)

    def _fill_presets(self) -> None:
        self.preset_combo.blockSignals(True)
        self.preset_combo.clear()
        for w, h in size_presets(self._family):
            self.preset_combo.addItem(f"{w} × {h}", f"{w}x{h}")
        self.preset_combo.addItem("Custom", None)
        self.preset_combo.blockSignals(False)
        self._sync_preset()

    def _sync_preset(self) -> None:
        if self.preset_combo.count() == 0:
            self._fill_presets()
            return
        index = self.preset_combo.findData(f"{self.state.width}x{self.state.height}")
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentIndex(index if index >= 0 else self.preset_combo.count() - 1)
        self.preset_combo.blockSignals(False)

    def _preset_chosen(self, index: int) -> None:
        size = self.preset_combo.itemData(index)
        if size:
            w, h = (int(v) for v in size.split("x"))
            self.width_spin.setValue(w)
            self.height_spin.setValue(h)


_FOREIGN = Qt.ItemDataRole.UserRole + 1  # marks the combo item of a name SD Studio lacks


def _select(combo: QComboBox, value: str, index: int) -> None:
    """Show `value` (found at `index`, -1 when the combo does not list it). A sampler or schedule SD Studio
    lacks, loaded from an image, is shown as an extra item that says so (its data is the name, kept as
    written): the panel never shows one sampler while another is set, and editing the prompt does not
    quietly swap the sampler for whatever the combo showed. The banner offers our nearest."""
    for i in reversed(range(combo.count())):
        if combo.itemData(i, _FOREIGN):
            combo.removeItem(i)
    if index < 0 and value:
        combo.addItem(f"{printable(value, 60, multiline=False)} (not in SD Studio)", value)
        index = combo.count() - 1
        combo.setItemData(index, True, _FOREIGN)
    combo.setCurrentIndex(max(index, 0))
