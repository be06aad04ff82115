"""Control layers (ControlNet units) in the window: the panel's dock, each layer's painting and map, and the
units that go into every request.

The selected layer is shown in the canvas's Control view: its source image with the preprocessed map over
it (made off the GUI thread by control_preview.MapMaker; toggled and faded in the panel), or, for a painted
layer, its scribble, painted with the mask's brush and eraser into a MaskModel on the mask's undo stack, so
Edit › Undo takes back strokes of either (a new input image clears that shared history, as it does the
mask's). A painting is made at the job's size when the layer is added or switched to painting; the engine
fits every control image to the job (the layer's resize mode) anyway.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QDockWidget, QFileDialog

from sdstudio import paths
from sdstudio.engine.controlnet_folder import controlnet_files
from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import ControlUnit
from sdstudio.ui.canvas_panel import CONTROL
from sdstudio.ui.control_panel import ControlPanel
from sdstudio.ui.control_preview import MapMaker
from sdstudio.ui.control_state import (
    CANVAS,
    FROM_HISTORY,
    PAINT,
    ControlLayer,
    build_units,
    layers_from_units,
)
from sdstudio.ui.control_store import load_layers, save_layers
from sdstudio.ui.imageconv import load_image, pil_to_qimage, qimage_to_pil
from sdstudio.ui.mask_model import MaskModel
from sdstudio.ui.settings import (
    control_layers_dir,
    load_control_layers_text,
    restore_window_layout,
    save_control_layers_text,
)

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"


class ControlLayers(QObject):
    """The window's control layers: state, paintings, maps and the canvas view of the selected one."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.layers: list[ControlLayer] = []
        self.paintings: list[MaskModel] = []  # one per layer (empty for image layers)
        self.maps: dict[int, QImage] = {}  # id(layer) -> its preprocessed map
        self._switch = True  # show the selected layer by switching the canvas to the Control view
        self.panel = ControlPanel(self.layers)
        self.maker = MapMaker(self)
        p = self.panel
        p.addRequested.connect(self.add_layer)
        p.removeRequested.connect(self.remove_layer)
        p.changed.connect(self._layer_changed)
        p.selected.connect(lambda _row: self._count())  # after every add, removal and refresh
        p.mapSettingsChanged.connect(lambda _row: self._show_map())
        p.selected.connect(lambda _row: self.show_selected())
        p.openImageRequested.connect(self._open_image_dialog)
        p.useCanvasRequested.connect(self.use_canvas_image)
        p.clearPaintingRequested.connect(lambda row: self.paintings[row].clear())
        p.openFolderRequested.connect(lambda: window.open_folder(paths.controlnet_dir()))
        self.maker.mapReady.connect(self._map_ready)
        self.maker.mapFailed.connect(lambda _key, message: window.canvas_panel.banner.show_error(message))

    # --- what generate uses ---------------------------------------------------------------------------
    def units(self) -> tuple[ControlUnit, ...]:
        """The request's units; RequestError naming the problem when an enabled layer cannot be used."""
        return build_units(self.layers, [m.pixels() if m.width else None for m in self.paintings])

    def request_units(self) -> tuple[ControlUnit, ...] | None:
        """`units()` for Generate, or None when an enabled layer cannot be used, after the banner has said why."""
        try:
            return self.units()
        except RequestError as exc:
            self.window.canvas_panel.banner.show_error(str(exc))
            return None

    def apply_units(self, units: tuple[ControlUnit, ...]) -> None:
        """Set up the layers a request was made with (a re-run from history): the user's own layers stay but
        are turned off (a painting is work, not to be thrown away by loading an image), layers an earlier
        re-run restored go, and the request's units come in as image layers, on."""
        keep = [i for i, layer in enumerate(self.layers) if layer.image_name != FROM_HISTORY]
        for i, layer in enumerate(self.layers):
            layer.enabled = False
            if i not in keep:
                self.maker.forget(id(layer))
                self.maps.pop(id(layer), None)
        restored = layers_from_units(units)
        self.layers[:] = [self.layers[i] for i in keep] + restored
        self.paintings[:] = [self.paintings[i] for i in keep] + [self._new_painting(None) for _ in restored]
        first = len(keep)
        self._switch = False  # the window shows what it loaded (the input image), not a control layer
        try:
            self.panel.refresh(first if restored else self.panel.current())
            for row in range(first, len(self.layers)):
                self._make_map(row)
        finally:
            self._switch = True

    def refresh_files(self, model_family: str | None = None) -> None:
        """List models/ControlNet again, for the loaded model's family."""
        self.panel.set_files(controlnet_files(), model_family or self.window.model_family or None)

    # --- between sessions -----------------------------------------------------------------------------
    def save(self) -> None:
        """Keep the layers for the next session (settings file + images in the data folder)."""
        paintings = [m.pixels() if m.width else None for m in self.paintings]
        try:
            text = save_layers(self.layers, paintings, control_layers_dir()) if self.layers else ""
        except OSError as exc:  # a full or read-only disk must not stop Generate; the user is told
            self.window.canvas_panel.banner.show_error(f"Could not keep the control layers for the next "
                                                       f"session: {exc}")
            return
        save_control_layers_text(self.window.settings, text)

    def restore(self) -> None:
        """The layers of the last session; what could not come back is said in the banner, in one line."""
        restored = load_layers(load_control_layers_text(self.window.settings), control_layers_dir())
        for layer, pixels in zip(restored.layers, restored.paintings, strict=True):
            self.layers.append(layer)
            painting = self._new_painting(layer if pixels is None else None)
            if pixels is not None:
                painting.reset(pixels.shape[1], pixels.shape[0], keep_undo=True)
                painting.restore(pixels)
            self.paintings.append(painting)
        if restored.notices:
            self.window.canvas_panel.banner.show_error(" · ".join(restored.notices))
        if self.layers:
            self._switch = False  # the window opens on its usual view, not a control layer
            try:
                self.panel.refresh(0)
                for row in range(len(self.layers)):
                    self._make_map(row)
            finally:
                self._switch = True

    # --- layers --------------------------------------------------------------------------------------
    def add_layer(self) -> int:
        """A new painted layer at the job's size, selected (a sketch is the quickest start)."""
        layer = ControlLayer(source=PAINT)
        self.layers.append(layer)
        self.paintings.append(self._new_painting(layer))
        self.panel.refresh(len(self.layers) - 1)
        return len(self.layers) - 1

    def remove_layer(self, row: int) -> None:
        if not 0 <= row < len(self.layers):
            return
        layer = self.layers.pop(row)
        self.paintings.pop(row)
        self.maker.forget(id(layer))
        self.maps.pop(id(layer), None)
        if not self.layers:
            self.window.canvas_panel.clear_control()
        self.panel.refresh(min(row, len(self.layers) - 1))

    def _new_painting(self, layer: ControlLayer | None) -> MaskModel:
        painting = MaskModel(self.window.mask.undo_stack, parent=self)
        if layer is not None and layer.source == PAINT:
            painting.reset(self.window.state.width, self.window.state.height, keep_undo=True)
        return painting

    def set_image(self, row: int, image, name: str) -> None:
        """Give an image layer its image (a PIL image) and make its map."""
        layer = self.layers[row]
        layer.image, layer.image_name = image.convert("RGB"), name
        self.panel.refresh(row)
        self._make_map(row)

    def _canvas_picture(self) -> QImage | None:
        """The canvas's image: the one shown, or in the Control view (not its own picture) the result or the
        input image."""
        cp = self.window.canvas_panel
        shown = cp.shown_image() if cp.view != CONTROL else None
        for fallback in (cp.result_image(), cp.input_image):
            shown = fallback if shown is None else shown
        return shown

    def use_canvas_image(self, row: int) -> None:
        cp = self.window.canvas_panel
        shown = self._canvas_picture()
        if shown is None:
            cp.banner.show_error("The canvas has no image to use: generate or open one first")
            return
        self.set_image(row, qimage_to_pil(shown), "canvas image")

    def _open_image_dialog(self, row: int) -> None:
        home = str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self.window, "Open Control Image", home, IMAGE_FILTER)
        if path:
            self.open_image(row, path)

    def open_image(self, row: int, path: str) -> None:
        try:
            image = load_image(path)
        except OSError as exc:
            self.window.canvas_panel.banner.show_error(f"Could not open {Path(path).name}: {exc}")
            return
        self.set_image(row, image, Path(path).name)

    def _layer_changed(self, row: int) -> None:
        self._count()
        layer, painting = self.layers[row], self.paintings[row]
        if layer.source == PAINT and painting.width == 0:
            self.paintings[row] = self._new_painting(layer)
        if layer.source == CANVAS and layer.image is None and self._canvas_picture() is not None:
            self.use_canvas_image(row)  # switching to "Canvas image" takes it (Use canvas takes it again)
            return
        self._make_map(row)

    def _count(self) -> None:
        self.window.mode_bar.set_control_layers(sum(layer.enabled for layer in self.layers))

    # --- maps and the canvas ------------------------------------------------------------------------
    def _make_map(self, row: int) -> None:
        layer = self.layers[row]
        self.maps.pop(id(layer), None)
        if layer.source != PAINT and layer.image is not None:
            self.maker.request(id(layer), layer.effective_preprocessor, layer.image,
                               layer.preprocessor_params)
        else:
            self.maker.forget(id(layer))
        self.show_selected()

    def _map_ready(self, key: int, image: QImage) -> None:
        self.maps[key] = image
        self._show_map()

    def _selected(self) -> int:
        row = self.panel.current()
        return row if 0 <= row < len(self.layers) else -1

    def show_selected(self) -> None:
        """Show the selected layer in the canvas's Control view."""
        row = self._selected()
        if row < 0:
            return
        layer, painting, cp = self.layers[row], self.paintings[row], self.window.canvas_panel
        if layer.source == PAINT:
            base = QImage(painting.width, painting.height, QImage.Format.Format_RGB32)
            base.fill(Qt.GlobalColor.black)
            cp.show_control(base, painting, *self._map_args(layer), switch=self._switch)
        elif layer.image is not None:
            cp.show_control(pil_to_qimage(layer.image), None, *self._map_args(layer), switch=self._switch)

    def _map_args(self, layer: ControlLayer) -> tuple[QImage | None, float]:
        """What the Control view draws over the layer's image: its map, or under a painting the picture
        traced."""
        if layer.source == PAINT:
            return (self._canvas_picture() if layer.trace else None), layer.map_opacity
        return (self.maps.get(id(layer)) if layer.map_visible else None), layer.map_opacity

    def _show_map(self) -> None:
        row = self._selected()
        if row >= 0:
            self.window.canvas_panel.set_control_layer(*self._map_args(self.layers[row]))


def dock_control_layers(window) -> ControlLayers:
    """Add the control layers panel as a dock beside the prompt panel (View menu toggle, layout remembered),
    closed until asked for; `window` is a MainWindow."""
    control = ControlLayers(window)
    dock = QDockWidget("Control layers", window)
    dock.setObjectName("controlDock")
    dock.setWidget(control.panel)
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
    dock.hide()
    window.view_menu.addAction(dock.toggleViewAction())
    restore_window_layout(window.settings, window)
    window.worker.modelLoaded.connect(lambda description: control.refresh_files(description.family or None))
    control.refresh_files()
    control.restore()
    dock.visibilityChanged.connect(lambda shown: shown and control.refresh_files())  # files added meanwhile

    def open_dock() -> None:
        dock.show()
        dock.raise_()
        if not control.layers:
            control.add_layer()

    window.panel.controlRequested.connect(open_dock)
    control.dock = dock
    return control
