"""The control layers panel: one row per ControlNet unit, and the selected layer's settings.

It edits a list of `control_state.ControlLayer` in place and only says what changed or what it needs (an image
file, the canvas image, the layer shown on the canvas); control_dock.py does the rest. Start, end and the
resize mode sit behind "Advanced", as A1111 keeps them out of the way.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.controlnet_folder import ControlNetFile
from sdstudio.engine.request import CONTROL_MODES, CONTROL_RESIZE_MODES
from sdstudio.ui.control_state import (
    PAINT,
    SOURCE_LABELS,
    SOURCES,
    ControlLayer,
    preprocessor_choices,
    preprocessor_settings,
)

TIPS = {
    "model": "The ControlNet or T2I-Adapter file (models/ControlNet). Files made for another model family "
             "are greyed out.",
    "source": "Where the control image comes from: an image file, the canvas's current image, or lines you "
              "paint on the canvas (white on black: the painting is the map itself)",
    "preprocessor": "Turns the image into the map the model expects (chosen from the model's name); "
                    "“none” uses the image as it is",
    "strength": "How strongly the layer steers the image (A1111's Weight)",
    "mode": "Balanced; “My prompt is more important” fades the control towards the deep layers; "
            "“ControlNet is more important” applies it to the prompt half of guidance only",
    "start": "Fraction of the steps after which the layer starts steering",
    "end": "Fraction of the steps after which it stops",
    "resize": "How the control image is fitted to the job's size",
    "map": "Show the layer's map on the canvas (Control view), faded by the slider",
    "trace": "Show the canvas's image (the result, or the input) faded under the painting, to trace over it; "
             "only the lines are the control image",
}
NO_MODEL = "(choose a ControlNet model)"


class ControlPanel(QWidget):
    """Edits `layers`; `refresh()` after changing them from outside."""

    changed = Signal(int)  # a layer's settings changed (its index)
    mapSettingsChanged = Signal(int)  # only how its map is shown changed
    selected = Signal(int)  # the layer to show on the canvas, -1 for none
    addRequested = Signal()
    removeRequested = Signal(int)
    openImageRequested = Signal(int)
    useCanvasRequested = Signal(int)
    clearPaintingRequested = Signal(int)
    openFolderRequested = Signal()

    def __init__(self, layers: list[ControlLayer], parent: QWidget | None = None):
        super().__init__(parent)
        self.layers = layers
        self._files: list[ControlNetFile] = []
        self._family: str | None = None
        self._updating = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        self.layer_list = QListWidget(toolTip="Control layers, applied together; untick one to turn it off")
        self.layer_list.setMaximumHeight(self.layer_list.fontMetrics().lineSpacing() * 4)
        self.layer_list.currentRowChanged.connect(self._row_changed)
        self.layer_list.itemChanged.connect(self._item_changed)
        layout.addWidget(self.layer_list)
        buttons = QHBoxLayout()
        self.add_button = QPushButton("Add layer", toolTip="Add a ControlNet unit")
        self.add_button.clicked.connect(self.addRequested)
        self.remove_button = QPushButton("Remove", toolTip="Remove the selected layer")
        self.remove_button.clicked.connect(lambda: self.removeRequested.emit(self.current()))
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        layout.addLayout(buttons)
        self.editor = QWidget()
        layout.addWidget(self.editor)
        self._build_editor(QGridLayout(self.editor))
        layout.addStretch(1)
        self.refresh()

    # --- construction ------------------------------------------------------------------------------
    def _build_editor(self, grid: QGridLayout) -> None:
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setColumnStretch(1, 1)
        self.model_combo = QComboBox(toolTip=TIPS["model"])
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.source_combo = QComboBox(toolTip=TIPS["source"])
        for source in SOURCES:
            self.source_combo.addItem(SOURCE_LABELS[source], source)
        self.open_button = QToolButton(text="Open…", toolTip="Open an image file as this layer's image")
        self.open_button.clicked.connect(lambda: self.openImageRequested.emit(self.current()))
        self.canvas_button = QToolButton(text="Use canvas", toolTip="Use the image the canvas shows now")
        self.canvas_button.clicked.connect(lambda: self.useCanvasRequested.emit(self.current()))
        self.clear_button = QToolButton(text="Clear", toolTip="Clear the painting (undo: Ctrl+Z)")
        self.clear_button.clicked.connect(lambda: self.clearPaintingRequested.emit(self.current()))
        self.image_label = QLabel()
        self.image_label.setProperty("role", "hint")
        self.image_label.setWordWrap(True)
        self.preprocessor_combo = QComboBox(toolTip=TIPS["preprocessor"])
        self._fill_preprocessors()
        self.settings_box = QWidget()  # the preprocessor's own settings (A1111's sliders), rebuilt per choice
        self.settings_grid = QGridLayout(self.settings_box)
        self.settings_grid.setContentsMargins(0, 0, 0, 0)
        self.setting_spins: dict[str, QDoubleSpinBox] = {}
        self.strength_spin = QDoubleSpinBox(minimum=0.0, maximum=2.0, singleStep=0.05, decimals=2,
                                            toolTip=TIPS["strength"])
        self.mode_combo = QComboBox(toolTip=TIPS["mode"])
        self.mode_combo.addItems(CONTROL_MODES)
        self.advanced = QToolButton(text="Advanced", checkable=True, toolTip="Start, end and resize mode")
        self.start_spin, self.end_spin = (
            QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, decimals=2, toolTip=TIPS[key])
            for key in ("start", "end"))
        self.resize_combo = QComboBox(toolTip=TIPS["resize"])
        self.resize_combo.addItems(CONTROL_RESIZE_MODES)
        self.map_check = QCheckBox("Show map", toolTip=TIPS["map"])
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=100, toolTip=TIPS["map"])
        self.folder_button = QToolButton(text="Folder", toolTip="Open the ControlNet models folder")
        self.folder_button.clicked.connect(self.openFolderRequested)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.folder_button)
        # The source's buttons sit under its combo, and long entries do not widen the combos: the panel's
        # width is taken from beside the canvas (the dock opens next to the prompt panel).
        image_buttons = QHBoxLayout()
        for w in (self.open_button, self.canvas_button, self.clear_button):
            image_buttons.addWidget(w)
        image_buttons.addStretch(1)
        for combo in (self.source_combo, self.preprocessor_combo, self.mode_combo, self.resize_combo):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
        map_row = QHBoxLayout()
        map_row.addWidget(self.map_check)
        map_row.addWidget(self.opacity_slider, 1)
        rows = (("Model", model_row), ("Image", self.source_combo), ("", image_buttons),
                ("", self.image_label),
                ("Preprocessor", self.preprocessor_combo), ("", self.settings_box),
                ("Strength", self.strength_spin),
                ("Mode", self.mode_combo), ("Map", map_row), ("", self.advanced), ("Start", self.start_spin),
                ("End", self.end_spin), ("Resize", self.resize_combo))
        self.advanced_widgets: list[QWidget] = []  # shown only while "Advanced" is on
        for r, (text, item) in enumerate(rows):
            label = QLabel(text)
            grid.addWidget(label, r, 0)
            if isinstance(item, QWidget):
                grid.addWidget(item, r, 1)
                label.setToolTip(item.toolTip())
            else:
                grid.addLayout(item, r, 1)
            if item in (self.start_spin, self.end_spin, self.resize_combo):
                self.advanced_widgets += [label, item]
        self._show_advanced(False)
        self.advanced.toggled.connect(self._show_advanced)
        for combo in (self.model_combo, self.source_combo, self.preprocessor_combo, self.mode_combo,
                      self.resize_combo):
            combo.currentIndexChanged.connect(self._store)
        for spin in (self.strength_spin, self.start_spin, self.end_spin):
            spin.valueChanged.connect(self._store)
        self.map_check.toggled.connect(self._store_map)
        self.opacity_slider.valueChanged.connect(self._store_map)

    def _fill_preprocessors(self) -> None:
        """Every preprocessor; those that cannot run here are greyed, saying why (not hidden)."""
        model = QStandardItemModel(self.preprocessor_combo)
        for name, label, why in preprocessor_choices():
            item = QStandardItem(label)
            item.setData(name, Qt.ItemDataRole.UserRole)
            item.setToolTip(why or label)
            item.setEnabled(not why)
            model.appendRow(item)
        self.preprocessor_combo.setModel(model)

    def _show_settings(self, layer: ControlLayer) -> None:
        """One spin box per setting of the layer's preprocessor, showing the layer's values."""
        while self.settings_grid.count():
            self.settings_grid.takeAt(0).widget().deleteLater()
        self.setting_spins = {}
        values = dict(layer.preprocessor_params)
        params = preprocessor_settings(layer.effective_preprocessor)
        for r, param in enumerate(params):
            spin = QDoubleSpinBox(minimum=param.low, maximum=param.high, decimals=0 if param.whole else 2,
                                  singleStep=1.0 if param.whole else 0.1, toolTip=param.label)
            spin.setValue(values.get(param.name, param.default))
            spin.valueChanged.connect(self._store_settings)
            self.settings_grid.addWidget(QLabel(param.label, toolTip=param.label), r, 0)
            self.settings_grid.addWidget(spin, r, 1)
            self.setting_spins[param.name] = spin
        self.settings_box.setVisible(bool(params))

    def _store_settings(self) -> None:
        layer = self._layer()
        if self._updating or layer is None:
            return
        layer.preprocessor_params = tuple((name, spin.value()) for name, spin in self.setting_spins.items())
        self.changed.emit(self.current())

    def _show_advanced(self, on: bool) -> None:
        for widget in self.advanced_widgets:
            widget.setVisible(on)

    # --- model files -------------------------------------------------------------------------------
    def set_files(self, files: list[ControlNetFile], model_family: str | None) -> None:
        """The ControlNet files to offer; those not for `model_family` are listed greyed, with the reason."""
        self._files, self._family = list(files), model_family
        self._fill_models()
        was, self._updating = self._updating, True
        try:  # an annotator file may have been added meanwhile
            self._fill_preprocessors()
            self._show_layer()
        finally:
            self._updating = was

    def _fill_models(self) -> None:
        was, self._updating = self._updating, True
        try:
            model = QStandardItemModel(self.model_combo)
            model.appendRow(QStandardItem(NO_MODEL))
            for f in self._files:
                item = QStandardItem(f.label)
                item.setData(f.path, Qt.ItemDataRole.UserRole)
                why = f.why_not(self._family)
                item.setToolTip(f"{f.path}\n{why}" if why else f.path)
                item.setEnabled(not why)
                model.appendRow(item)
            self.model_combo.setModel(model)
            self._show_model()
        finally:
            self._updating = was

    def _show_model(self) -> None:
        layer = self._layer()
        path = layer.model if layer is not None else ""
        index = self.model_combo.findData(path) if path else 0
        if index < 0:  # a file not in the folder (a re-run's, or one moved): shown as its path
            self.model_combo.addItem(path.replace("\\", "/").rsplit("/", 1)[-1], path)
            index = self.model_combo.count() - 1
        self.model_combo.setCurrentIndex(index)

    # --- layers ------------------------------------------------------------------------------------
    def current(self) -> int:
        return self.layer_list.currentRow()

    def _layer(self) -> ControlLayer | None:
        row = self.current()
        return self.layers[row] if 0 <= row < len(self.layers) else None

    def refresh(self, select: int | None = None) -> None:
        """Show the layers (and `select` one, default: keep the selection)."""
        row = self.current() if select is None else select
        self._updating = True
        try:
            self.layer_list.clear()
            for i, layer in enumerate(self.layers):
                item = QListWidgetItem(self._title(i, layer))
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if layer.enabled else Qt.CheckState.Unchecked)
                self.layer_list.addItem(item)
            row = min(max(row, 0), len(self.layers) - 1)
            self.layer_list.setCurrentRow(row)
            self._show_layer()
        finally:
            self._updating = False
        self.selected.emit(row)

    def _title(self, index: int, layer: ControlLayer) -> str:
        model = Path(layer.model.replace("\\", "/")).stem if layer.model else "no model"
        return f"{index + 1}. {model} · {SOURCE_LABELS[layer.source]}"

    def _show_layer(self) -> None:
        layer = self._layer()
        self.editor.setEnabled(layer is not None)
        self.remove_button.setEnabled(layer is not None)
        if layer is None:
            return
        self._show_model()
        self.source_combo.setCurrentIndex(self.source_combo.findData(layer.source))
        painting = layer.source == PAINT
        self.open_button.setVisible(not painting)
        self.canvas_button.setVisible(not painting)
        self.clear_button.setVisible(painting)
        self.image_label.setText("paint white lines on the canvas (Control view)" if painting
                                 else layer.image_name or "no image yet")
        index = self.preprocessor_combo.findData(layer.effective_preprocessor)
        if index < 0:  # named by a re-run, unknown here: shown as written (the engine will refuse it by name)
            self.preprocessor_combo.addItem(layer.effective_preprocessor, layer.effective_preprocessor)
            index = self.preprocessor_combo.count() - 1
        self.preprocessor_combo.setCurrentIndex(index)
        self.preprocessor_combo.setEnabled(not painting)
        self._show_settings(layer)
        self.strength_spin.setValue(layer.strength)
        self.mode_combo.setCurrentText(layer.mode)
        self.start_spin.setValue(layer.start)
        self.end_spin.setValue(layer.end)
        self.resize_combo.setCurrentText(layer.resize_mode)
        self.map_check.setText("Trace canvas image" if painting else "Show map")
        self.map_check.setToolTip(TIPS["trace" if painting else "map"])
        self.map_check.setChecked(layer.trace if painting else layer.map_visible)
        self.opacity_slider.setValue(round(layer.map_opacity * 100))

    def _row_changed(self, row: int) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            self._show_layer()
        finally:
            self._updating = False
        self.selected.emit(row)

    def _item_changed(self, item: QListWidgetItem) -> None:
        if self._updating:
            return
        row = self.layer_list.row(item)
        self.layers[row].enabled = item.checkState() == Qt.CheckState.Checked
        self.changed.emit(row)

    def _store(self) -> None:
        layer = self._layer()
        if self._updating or layer is None:
            return
        model = self.model_combo.currentData() or ""
        if model != layer.model:
            layer.choose_model(model)  # the paired preprocessor comes with it
        elif layer.source != PAINT:
            layer.choose_preprocessor(self.preprocessor_combo.currentData())
        layer.source = self.source_combo.currentData()
        layer.strength, layer.mode = self.strength_spin.value(), self.mode_combo.currentText()
        layer.start, layer.end = self.start_spin.value(), self.end_spin.value()
        layer.resize_mode = self.resize_combo.currentText()
        row = self.current()
        self.refresh(row)  # the title, the paired preprocessor, the source's buttons
        self.changed.emit(row)

    def _store_map(self) -> None:
        layer = self._layer()
        if self._updating or layer is None:
            return
        if layer.source == PAINT:
            layer.trace = self.map_check.isChecked()
        else:
            layer.map_visible = self.map_check.isChecked()
        layer.map_opacity = self.opacity_slider.value() / 100
        self.mapSettingsChanged.emit(self.current())
