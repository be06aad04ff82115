"""Control layers in the window: painting a scribble on the canvas, maps shown and faded, the model list,
the units every generate sends, and a re-run restoring them."""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage
from PySide6.QtTest import QTest

from sdstudio import paths
from sdstudio.engine.request import ControlUnit, GenerationRequest
from sdstudio.ui.canvas_panel import CONTROL, INPUT, RESULT
from sdstudio.ui.control_state import FILE, FROM_HISTORY, PAINT
from sdstudio.ui.settings import open_settings
from tests.engine.st_files import write_header_only
from tests.engine.test_controlnet_folder import _original
from tests.ui import preprocessor_spy
from tests.ui.test_main_window import set_prompt, stroke


def _models(home) -> dict[str, str]:
    folder = paths.controlnet_dir()
    folder.mkdir(parents=True)
    files = {"canny": folder / "control_v11p_sd15_canny.safetensors",
             "xl": folder / "diffusers_xl_canny.safetensors", "demo": folder / "emoji_scribble.safetensors"}
    write_header_only(files["canny"], _original(768))
    write_header_only(files["xl"], _original(2048, 2816))
    write_header_only(files["demo"], {"x": (1,)}, metadata={"sdstudio.config": '{"family": "demo"}'})
    return {k: str(v) for k, v in files.items()}


def _choose(panel, path: str) -> None:
    panel.model_combo.setCurrentIndex(panel.model_combo.findData(path))


def test_a_new_layer_is_a_painting_at_the_job_size_painted_with_the_brush_and_undone(qtbot, window):
    control = window.control_layers
    window.state.width, window.state.height = 48, 40
    row = control.add_layer()
    cp = window.canvas_panel
    painting = control.paintings[row]
    assert cp.view == CONTROL and (painting.width, painting.height) == (48, 40)
    assert cp.canvas.mask is painting and cp.canvas.mask_editable and cp.mask_bar.isVisible()
    assert not cp.outpaint_bar.isVisible()
    cp.canvas.set_brush_radius(2)
    cp.canvas.hardness = 1.0
    stroke(qtbot, cp.canvas, [(5, 20), (25, 20), (40, 20)])
    px = painting.pixels()
    assert (px[20, 7:39] == 255).all() and px[10, 20] == 0 and window.mask.width == 0
    [undo] = [a for a in window.menuBar().actions() if a.text() == "&Edit"][0].menu().actions()[:1]
    undo.trigger()
    assert painting.is_empty()
    redo = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    QTest.keyClick(window, Qt.Key.Key_Z, redo)
    assert not painting.is_empty()
    cp.act_eraser.trigger()
    stroke(qtbot, cp.canvas, [(20, 10), (20, 30)])
    assert painting.pixels()[20, 20] == 0 and painting.pixels()[20, 10] == 255
    cp.act_clear.trigger()
    assert painting.is_empty()


def test_the_mask_is_painted_again_in_the_input_view(qtbot, window):
    control = window.control_layers
    image = QImage(32, 32, QImage.Format.Format_RGB32)
    image.fill(QColor(128, 128, 128))
    window.set_input_image(image)
    control.add_layer()
    window.canvas_panel.set_view(INPUT)
    assert window.canvas_panel.canvas.mask is window.mask and window.canvas_panel.canvas.layer is None
    window.canvas_panel.canvas.set_brush_radius(3)
    stroke(qtbot, window.canvas_panel.canvas, [(16, 16)])
    assert not window.mask.is_empty() and control.paintings[0].is_empty()
    window.canvas_panel.act_control.trigger()
    assert window.canvas_panel.view == CONTROL and window.canvas_panel.canvas.mask is control.paintings[0]


def test_generate_sends_the_painted_layer_as_a_unit(qtbot, window, engine, home, monkeypatch):
    preprocessor_spy.install(monkeypatch)
    files = _models(home)
    control = window.control_layers
    control.refresh_files("sd1")
    row = control.add_layer()
    _choose(control.panel, files["canny"])
    assert control.layers[row].model == files["canny"] and control.layers[row].preprocessor == "canny"
    assert control.panel.preprocessor_combo.currentData() == "none"  # a painting is the map
    control.panel.strength_spin.setValue(0.7)
    control.panel.mode_combo.setCurrentText("My prompt is more important")
    control.panel.advanced.setChecked(True)
    control.panel.start_spin.setValue(0.2)
    cp = window.canvas_panel
    cp.canvas.set_brush_radius(3)
    stroke(qtbot, cp.canvas, [(10, 10), (50, 50)])
    set_prompt(window)
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    [unit] = engine.generated[0].control_units
    assert (unit.model, unit.preprocessor, unit.strength, unit.start, unit.mode) == (
        files["canny"], "none", 0.7, 0.2, "My prompt is more important")
    pixels = np.asarray(unit.image)
    assert unit.image.size == (64, 64) and pixels[30, 30].tolist() == [255, 255, 255]
    assert pixels[5, 55].tolist() == [0, 0, 0]
    assert cp.view == RESULT


def test_an_unusable_layer_stops_generate_with_the_banner(qtbot, window, engine):
    window.control_layers.add_layer()  # no model chosen
    set_prompt(window)
    assert window.generate() == []
    assert "no ControlNet model" in window.canvas_panel.banner.text.text()
    item = window.control_layers.panel.layer_list.item(0)
    item.setCheckState(Qt.CheckState.Unchecked)  # turned off: generate works, with no unit
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    assert engine.generated[-1].control_units == ()


def test_models_of_another_family_are_listed_greyed_with_the_reason(qtbot, window, home):
    files = _models(home)
    control = window.control_layers
    control.add_layer()
    control.refresh_files("sd1")
    combo = control.panel.model_combo
    model = combo.model()
    enabled = {combo.itemData(i): model.item(i).isEnabled() for i in range(1, combo.count())}
    # The built-in model's own ControlNet (resources/models/ControlNet) is listed too, greyed for SD 1.x.
    builtin = str(paths.builtin_controlnet_dir() / "sdstudio-emoji_canny.safetensors")
    assert enabled == {files["canny"]: True, files["xl"]: False, files["demo"]: False, builtin: False}
    assert "made for SDXL; the model is SD 1.x" in model.item(combo.findData(files["xl"])).toolTip()
    control.refresh_files("demo")
    assert model is not combo.model() and combo.model().item(combo.findData(files["demo"])).isEnabled()


def test_an_image_layer_shows_its_map_over_the_image_toggled_and_faded(qtbot, window, monkeypatch, tmp_path):
    preprocessor_spy.install(monkeypatch)
    source = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), np.uint8))
    source.save(tmp_path / "photo.png")
    control = window.control_layers
    row = control.add_layer()
    control.panel.source_combo.setCurrentIndex(control.panel.source_combo.findData(FILE))
    assert control.layers[row].source == FILE and not control.panel.open_button.isHidden()
    control.panel.preprocessor_combo.setCurrentIndex(control.panel.preprocessor_combo.findData("invert"))
    assert control.layers[row].preprocessor == "invert"
    canvas = window.canvas_panel.canvas
    with qtbot.waitSignal(control.maker.mapReady, timeout=5000):
        control.open_image(row, str(tmp_path / "photo.png"))
    assert control.panel.image_label.text() == "photo.png"
    assert window.canvas_panel.view == CONTROL and canvas.image.size().toTuple() == (32, 24)
    assert canvas.layer is not None and canvas.layer_opacity == 0.6
    shown = canvas.layer.pixelColor(3, 5)
    assert [shown.red(), shown.green(), shown.blue()] == (255 - np.asarray(source)[5, 3]).tolist()
    assert not canvas.mask_editable  # an image layer is not painted on
    control.panel.opacity_slider.setValue(25)
    assert canvas.layer_opacity == 0.25
    control.panel.map_check.setChecked(False)
    assert canvas.layer is None
    control.panel.map_check.setChecked(True)
    assert canvas.layer is not None


def test_use_canvas_takes_the_shown_result(qtbot, window, engine, monkeypatch):
    preprocessor_spy.install(monkeypatch)
    set_prompt(window, seed=3)
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    result = window.canvas_panel.shown_image().copy()
    control = window.control_layers
    row = control.add_layer()
    with qtbot.waitSignal(control.maker.mapReady, timeout=5000):  # choosing the source takes the image
        control.panel.source_combo.setCurrentIndex(control.panel.source_combo.findData("canvas"))
    assert control.layers[row].image_name == "canvas image"
    with qtbot.waitSignal(control.maker.mapReady, timeout=5000):
        control.panel.canvas_button.click()
    assert control.layers[row].image.getpixel((5, 5)) == result.pixelColor(5, 5).getRgb()[:3]


def test_a_failing_preprocessor_is_said_in_the_banner(qtbot, window, monkeypatch, tmp_path):
    preprocessor_spy.install(monkeypatch)
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    control = window.control_layers
    row = control.add_layer()
    control.panel.source_combo.setCurrentIndex(control.panel.source_combo.findData(FILE))
    combo = control.panel.preprocessor_combo
    assert not combo.model().item(combo.findData("depth_midas")).isEnabled()
    combo.setCurrentIndex(combo.findData("depth_midas"))  # a re-run may name one: it says why it cannot run
    with qtbot.waitSignal(control.maker.mapFailed, timeout=5000):
        control.open_image(row, str(tmp_path / "a.png"))
    assert "no annotator file" in window.canvas_panel.banner.text.text()


def test_a_re_run_restores_its_units_and_keeps_the_users_painting_turned_off(qtbot, window, engine,
                                                                            monkeypatch):
    preprocessor_spy.install(monkeypatch)
    control = window.control_layers
    control.add_layer()
    window.canvas_panel.canvas.set_brush_radius(3)
    stroke(qtbot, window.canvas_panel.canvas, [(10, 10)])
    hint = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8))
    unit = ControlUnit(model="/m/control_v11p_sd15_canny.safetensors", image=hint, preprocessor="canny",
                       strength=0.5, end=0.8)
    window.canvas_panel.set_view(RESULT)
    assert window.load_parameters(GenerationRequest(prompt="cat", seed=9, control_units=(unit,)))
    assert window.canvas_panel.view == RESULT  # what was loaded shows, not a control layer
    assert window.canvas_panel.act_control.isEnabled()
    assert [(layer.source, layer.enabled) for layer in control.layers] == [(PAINT, False), (FILE, True)]
    assert not control.paintings[0].is_empty()  # the painting survives
    assert control.layers[1].image_name == FROM_HISTORY and control.panel.current() == 1
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    [sent] = engine.generated[-1].control_units
    assert sent == unit and np.array_equal(np.asarray(sent.image), np.asarray(hint))
    # Loading another image replaces the restored layer; one without units turns everything off.
    assert window.load_parameters(GenerationRequest(prompt="dog", seed=1))
    assert [(layer.source, layer.enabled) for layer in control.layers] == [(PAINT, False)]


def test_removing_the_last_layer_leaves_the_control_view(qtbot, window):
    control = window.control_layers
    control.add_layer()
    control.panel.remove_button.click()
    assert control.layers == [] and window.canvas_panel.view == RESULT
    assert not window.canvas_panel.act_control.isEnabled() and not control.panel.editor.isEnabled()


def test_the_preprocessors_settings_are_edited_in_the_panel_and_remake_the_map(qtbot, window, monkeypatch,
                                                                               tmp_path):
    seen = preprocessor_spy.install(monkeypatch)
    square = np.zeros((32, 32, 3), np.uint8)
    square[8:24, 8:24] = 200
    Image.fromarray(square).save(tmp_path / "square.png")
    control = window.control_layers
    row = control.add_layer()
    control.panel.source_combo.setCurrentIndex(control.panel.source_combo.findData(FILE))
    control.panel.model_combo.addItem("control_v11p_sd15_canny", "/m/control_v11p_sd15_canny.safetensors")
    _choose(control.panel, "/m/control_v11p_sd15_canny.safetensors")
    assert control.layers[row].preprocessor == "canny"
    assert set(control.panel.setting_spins) == {"resolution", "low", "high", "sigma"}
    with qtbot.waitSignal(control.maker.mapReady, timeout=5000):
        control.open_image(row, str(tmp_path / "square.png"))
    with qtbot.waitSignal(control.maker.mapReady, timeout=5000):
        control.panel.setting_spins["low"].setValue(40)
    assert dict(control.layers[row].preprocessor_params)["low"] == 40
    assert dict(seen.calls[-1][2])["low"] == 40
    [unit] = control.units()
    assert unit.preprocessor == "canny" and dict(unit.preprocessor_params)["low"] == 40


def test_history_keeps_the_units_and_loading_the_entry_restores_them(qtbot, window, engine, home, tmp_path):
    from sdstudio.history.store import HistoryStore
    from sdstudio.ui.gallery import GalleryWidget
    from sdstudio.ui.history_link import HistoryLink

    files = _models(home)
    store = HistoryStore(tmp_path / "outputs")
    gallery = GalleryWidget(store, window)
    link = HistoryLink(store, window, gallery)
    control = window.control_layers
    control.refresh_files("demo")
    control.add_layer()
    _choose(control.panel, files["demo"])
    control.panel.strength_spin.setValue(0.65)
    window.canvas_panel.canvas.set_brush_radius(4)
    stroke(qtbot, window.canvas_panel.canvas, [(8, 8), (56, 40)])
    drawn = np.asarray(control.units()[0].image).copy()
    set_prompt(window, seed=12)
    with qtbot.waitSignal(link.saved, timeout=5000) as blocker:
        window.generate()
    entry_id = blocker.args[0][0].id
    control.remove_layer(0)
    gallery.loadParametersRequested.emit(entry_id)
    [layer] = control.layers
    assert (layer.source, layer.model, layer.strength, layer.enabled) == (FILE, files["demo"], 0.65, True)
    assert np.array_equal(np.asarray(layer.image), drawn)
    with qtbot.waitSignal(link.saved, timeout=5000):  # saved before the store closes
        window.generate()
    [unit] = engine.generated[-1].control_units
    assert unit.model == files["demo"] and np.array_equal(np.asarray(unit.image), drawn)
    store.close()


def test_the_mode_line_says_how_many_layers_steer_generate(qtbot, window):
    control = window.control_layers
    label = window.mode_bar.label
    assert "control" not in label.text()
    control.add_layer()
    control.add_layer()
    assert "steered by 2 control layers" in label.text()
    control.panel.layer_list.item(0).setCheckState(Qt.CheckState.Unchecked)
    assert "steered by 1 control layer" in label.text() and "layers" not in label.text()
    image = QImage(32, 32, QImage.Format.Format_RGB32)
    image.fill(QColor(1, 2, 3))
    window.set_input_image(image)
    assert "Image to image" in label.text() and "steered by 1 control layer" in label.text()
    control.remove_layer(1)
    assert "control" not in label.text()


def test_a_painting_can_trace_the_canvas_image_which_stays_out_of_the_unit(qtbot, window, engine):
    set_prompt(window, seed=4)
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    result = window.canvas_panel.shown_image().copy()
    control = window.control_layers
    control.add_layer()
    control.layers[0].model = "/m/scribble.safetensors"
    canvas = window.canvas_panel.canvas
    assert canvas.layer is None and control.panel.map_check.text() == "Trace canvas image"
    control.panel.map_check.setChecked(True)
    assert canvas.layer is not None and canvas.layer.pixelColor(3, 3) == result.pixelColor(3, 3)
    control.panel.opacity_slider.setValue(30)
    assert canvas.layer_opacity == 0.3
    canvas.set_brush_radius(2)
    stroke(qtbot, canvas, [(20, 20), (40, 20)])
    [unit] = control.units()
    pixels = np.asarray(unit.image)
    assert pixels[5, 5].tolist() == [0, 0, 0]  # not the traced picture
    assert pixels[20, 30].tolist() == [255, 255, 255]  # only the strokes, on black
    control.panel.map_check.setChecked(False)
    assert canvas.layer is None


def test_a_restored_layer_switched_to_paint_gets_a_painting_at_the_job_size(qtbot, window):
    control = window.control_layers
    unit = ControlUnit(model="/m/a.safetensors", image=Image.new("RGB", (16, 16), "white"))
    window.load_parameters(GenerationRequest(prompt="x", control_units=(unit,)))
    assert control.paintings[0].width == 0
    window.state.width, window.state.height = 40, 24
    control.panel.source_combo.setCurrentIndex(control.panel.source_combo.findData(PAINT))
    painting = control.paintings[0]
    assert (painting.width, painting.height) == (40, 24)
    assert window.canvas_panel.view == CONTROL and window.canvas_panel.canvas.mask is painting


def test_a_restart_restores_the_layers_painting_and_image(qtbot, make_window, home, tmp_path):
    files = _models(home)
    first = make_window()
    control = first.control_layers
    first.state.width, first.state.height = 48, 40
    control.add_layer()
    _choose(control.panel, files["canny"])
    cp = first.canvas_panel
    cp.canvas.set_brush_radius(2)
    stroke(qtbot, cp.canvas, [(5, 20), (40, 20)])
    painted = control.paintings[0].pixels().copy()
    row = control.add_layer()
    photo = tmp_path / "photo.png"
    Image.new("RGB", (30, 20), (0, 90, 255)).save(photo)
    control.layers[row].source = FILE
    control.open_image(row, str(photo))
    control.layers[row].strength, control.layers[row].enabled = 0.55, False
    first.close()
    photo.unlink()  # the layer keeps its own copy in the data folder

    second = make_window()
    again = second.control_layers
    assert [layer.source for layer in again.layers] == [PAINT, FILE]
    assert again.layers[0].model == files["canny"] and np.array_equal(again.paintings[0].pixels(), painted)
    assert again.layers[1].image_name == "photo.png"
    assert again.layers[1].image.getpixel((3, 3)) == (0, 90, 255)
    assert again.layers[1].strength == 0.55 and not again.layers[1].enabled
    assert again.panel.layer_list.count() == 2 and not second.canvas_panel.banner.isVisible()
    assert second.canvas_panel.view != CONTROL  # the window opens on its usual view
    undo = [a for a in second.menuBar().actions() if a.text() == "&Edit"][0].menu().actions()[0]
    undo.trigger()
    assert np.array_equal(again.paintings[0].pixels(), painted)  # the restored painting is not an undo step


def test_a_restart_without_the_model_says_so_and_a_corrupt_state_is_ignored(qtbot, make_window, home):
    files = _models(home)
    first = make_window()
    first.control_layers.add_layer()
    _choose(first.control_layers.panel, files["canny"])
    first.close()
    paths.controlnet_dir().joinpath("control_v11p_sd15_canny.safetensors").unlink()
    second = make_window()
    banner = second.canvas_panel.banner
    assert len(second.control_layers.layers) == 1 and second.control_layers.layers[0].model == ""
    assert banner.isVisible() and "control_v11p_sd15_canny.safetensors is missing" in banner.text.text()
    second.close()
    settings = open_settings()
    settings.setValue("control/layers", '{"version": 1, "layers": [{"strength": "lots"}]}')
    settings.sync()
    third = make_window()
    assert third.control_layers.layers == [] and "could not be read" in third.canvas_panel.banner.text.text()


def test_the_picker_lists_t2i_adapters_with_their_kind(qtbot, window, home):
    folder = paths.controlnet_dir()
    folder.mkdir(parents=True)
    adapter = folder / "t2iadapter_sketch_sd14v1.safetensors"
    write_header_only(adapter, {"conv_in.weight": (320, 64, 3, 3), "body.0.block1.weight": (320, 320, 3, 3)})
    control = window.control_layers
    control.add_layer()
    control.refresh_files("sd1")
    combo = control.panel.model_combo
    index = combo.findData(str(adapter))
    assert combo.itemText(index) == "t2iadapter_sketch_sd14v1 (T2I-Adapter)"
    assert combo.model().item(index).isEnabled()
    combo.setCurrentIndex(index)
    assert control.layers[0].model == str(adapter)
    control.refresh_files("sdxl")
    assert not combo.model().item(combo.findData(str(adapter))).isEnabled()


def test_layers_that_cannot_be_kept_are_said_in_the_banner(qtbot, window, home, monkeypatch, tmp_path):
    from sdstudio.ui import control_dock

    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(control_dock, "control_layers_dir", lambda: blocker / "control_layers")
    window.control_layers.add_layer()
    window.control_layers.save()
    banner = window.canvas_panel.banner
    assert banner.isVisible() and "Could not keep the control layers" in banner.text.text()
