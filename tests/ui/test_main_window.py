import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QImage
from PySide6.QtTest import QTest

from sdstudio.history.store import HistoryStore
from sdstudio.ui.canvas_panel import INPUT, RESULT
from sdstudio.ui.history_link import HistoryLink
from sdstudio.ui.model_list import BUILTIN_LABEL
from tests.ui.fake_engine import FakeEngine, failing_once, fake_description, preview_colour, result_colour


def set_prompt(window, text="cat face", seed=42, steps=4):
    window.panel.prompt_edit.setPlainText(text)
    window.panel.seed_spin.setValue(seed)
    window.panel.steps_spin.setValue(steps)


def shown_colour(window) -> QColor:
    image = window.canvas_panel.shown_image()
    return image.pixelColor(image.width() // 2, image.height() // 2)


def test_generate_button_shows_the_result_and_hands_it_to_history(qtbot, window, engine, tmp_path):
    store = HistoryStore(tmp_path / "outputs")
    link = HistoryLink(store, window)
    set_prompt(window, "red apple", seed=7)
    with qtbot.waitSignal(window.resultReady, timeout=5000) as blocker:
        qtbot.mouseClick(window.panel.generate_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0].requests[0].seed == 7 and engine.generated[0].prompt == "red apple"
    assert shown_colour(window) == QColor(*result_colour(7))
    link.flush()
    entries = store.page(0, 10)
    assert len(entries) == 1 and entries[0].prompt == "red apple" and entries[0].seed == 7
    assert entries[0].file.is_file()
    assert window.job_status.message.text().startswith("Done")


def test_previews_are_shown_while_the_job_runs(qtbot, window, engine):
    engine.step_seconds = 0.03
    set_prompt(window, steps=12)
    seen = set()
    window.worker.previewReady.connect(lambda *_: seen.add(shown_colour(window).name()))
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    preview_names = {QColor(*preview_colour(i, 12)).name() for i in range(12)}
    assert len(seen & preview_names) >= 2
    assert window.canvas_panel.scrubber.isVisible()
    slider = window.canvas_panel.step_slider
    slider.setValue(0)
    assert shown_colour(window) == QColor(*preview_colour(0, 12))
    slider.setValue(slider.maximum())
    assert shown_colour(window) == QColor(*result_colour(42))


def test_cancel_mid_job_stops_within_a_step_and_keeps_the_previous_image(qtbot, window, engine):
    set_prompt(window, seed=3)
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    results = []
    window.resultReady.connect(results.append)
    engine.step_seconds = 0.02
    set_prompt(window, seed=4, steps=150)
    window.generate()
    qtbot.waitUntil(lambda: engine.steps_run >= 4 + 5, timeout=5000)
    assert window.panel.cancel_button.isEnabled()
    with qtbot.waitSignal(window.worker.jobCancelled, timeout=5000):
        qtbot.mouseClick(window.panel.cancel_button, Qt.MouseButton.LeftButton)
    steps_after_cancel = engine.steps_run
    qtbot.wait(100)
    assert engine.steps_run == steps_after_cancel < 4 + 150
    assert results == []
    assert shown_colour(window) == QColor(*result_colour(3))
    assert not window.panel.cancel_button.isEnabled()


def test_batch_count_queues_jobs_that_run_in_order(qtbot, window, engine):
    set_prompt(window, seed=100)
    window.panel.batch_count_spin.setValue(3)
    window.panel.batch_size_spin.setValue(2)
    results = []
    window.resultReady.connect(results.append)
    window.generate()
    assert window.job_status.queue.text() in ("Queue: 3", "Queue: 2", "Queue: 1")
    qtbot.waitUntil(lambda: len(results) == 3, timeout=5000)
    assert [r.requests[0].seed for r in results] == [100, 102, 104]
    assert [len(r.images) for r in results] == [2, 2, 2]
    assert window.job_status.queue.text() == ""
    assert window.canvas_panel.index_label.text() == "1/2"


def test_corrupt_model_shows_the_error_banner_and_the_app_stays_usable(qtbot, window, engine, home):
    models = home / "models"
    models.mkdir(parents=True)
    (models / "broken.safetensors").write_bytes(b"\xff" * 100)
    window.refresh_models()
    combo = window.panel.model_combo
    index = combo.findText("broken")
    assert index > 0
    combo.setCurrentIndex(index)
    combo.activated.emit(index)
    qtbot.waitUntil(lambda: window.canvas_panel.banner.isVisible(), timeout=5000)
    assert "broken.safetensors" in window.canvas_panel.banner.text.text()
    builtin = combo.findData("")
    combo.setCurrentIndex(builtin)
    combo.activated.emit(builtin)
    set_prompt(window, seed=9)
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    assert shown_colour(window) == QColor(*result_colour(9))


def stroke(qtbot, canvas, points):
    pos = [canvas.image_to_widget(QPointF(x + 0.5, y + 0.5)).toPoint() for x, y in points]
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos[0])
    for p in pos[1:]:
        QTest.mouseMove(canvas, p)
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos[-1])


def gray_image(size=64) -> QImage:
    image = QImage(size, size, QImage.Format.Format_RGB888)
    image.fill(QColor(128, 128, 128))
    return image


def test_mouse_strokes_paint_the_mask_and_undo_redo_restore_it(qtbot, window):
    window.set_input_image(gray_image())
    cp = window.canvas_panel
    assert cp.view == INPUT and cp.canvas.mask_editable
    cp.canvas.set_brush_radius(4)
    cp.canvas.hardness = 1.0
    stroke(qtbot, cp.canvas, [(10, 20), (30, 20), (50, 20)])
    px = window.mask.pixels()
    assert (px[20, 12:49] == 255).all() and (px[18:23, 30] == 255).all()
    assert px[20, 3] == 0 and px[20, 58] == 0 and px[27, 30] == 0 and px[13, 30] == 0
    painted = px.copy()
    QTest.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.mask.is_empty()
    QTest.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert (window.mask.pixels() == painted).all()
    cp.act_invert.trigger()
    assert (window.mask.pixels() == 255 - painted).all()
    cp.act_clear.trigger()
    assert window.mask.is_empty()


def test_eraser_tool_removes_painted_mask(qtbot, window):
    window.set_input_image(gray_image())
    cp = window.canvas_panel
    cp.act_fill.trigger()
    cp.act_eraser.trigger()
    cp.canvas.set_brush_radius(3)
    cp.canvas.hardness = 1.0
    stroke(qtbot, cp.canvas, [(32, 10), (32, 50)])
    px = window.mask.pixels()
    assert (px[12:49, 32] == 0).all() and (px[:, 5] == 255).all()


def test_inpaint_request_carries_the_init_image_and_mask_at_image_size(qtbot, window, engine):
    window.set_input_image(gray_image(48))
    window.canvas_panel.canvas.set_brush_radius(5)
    stroke(qtbot, window.canvas_panel.canvas, [(24, 24)])
    set_prompt(window)
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    req = engine.generated[0]
    assert req.mode == "inpaint" and req.init_image.size == (48, 48) and req.mask.size == (48, 48)
    assert req.mask.getpixel((24, 24)) == 255 and req.mask.getpixel((2, 2)) == 0
    assert (req.width, req.height) == (64, 64)  # the model's native size, not the input's (issue 13)
    assert window.canvas_panel.view == RESULT


def test_queued_request_is_a_snapshot_not_affected_by_later_edits(qtbot, window, engine):
    engine.gate.clear()
    window.set_input_image(gray_image(16))
    set_prompt(window, "first")
    window.generate()
    window.panel.prompt_edit.setPlainText("second")
    window.mask.fill()
    engine.gate.set()
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        pass
    req = engine.generated[0]
    assert req.prompt == "first" and req.mask is None and req.mode == "img2img"


def test_bracket_keys_type_into_the_prompt_and_resize_the_brush_on_the_canvas(qtbot, window):
    window.set_input_image(gray_image())
    canvas = window.canvas_panel.canvas
    radius = canvas.brush_radius
    window.panel.prompt_edit.setFocus()
    QTest.keyClicks(window.panel.prompt_edit, "[cat]")
    assert window.panel.prompt_edit.toPlainText().endswith("[cat]") and canvas.brush_radius == radius
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_BracketRight)
    assert canvas.brush_radius > radius


def test_ctrl_enter_generates_and_escape_cancels(qtbot, window, engine):
    engine.step_seconds = 0.02
    set_prompt(window, steps=100)
    QTest.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: engine.steps_run >= 2, timeout=5000)
    with qtbot.waitSignal(window.worker.jobCancelled, timeout=5000):
        QTest.keyClick(window, Qt.Key.Key_Escape)


def test_values_persist_between_runs(qtbot, make_window):
    first = make_window()
    set_prompt(first, "flag: Japan", seed=1234, steps=17)
    first.panel.cfg_spin.setValue(6.5)
    first.close()
    second = make_window()
    s = second.state
    assert (s.prompt, s.seed, s.steps, s.cfg_scale) == ("flag: Japan", 1234, 17, 6.5)
    assert second.panel.prompt_edit.toPlainText() == "flag: Japan"


def test_first_start_on_an_empty_home_selects_the_built_in_model(qtbot, window, home):
    assert window.panel.model_combo.currentData() == "" and window.state.model == ""
    assert (window.state.width, window.state.height) == (64, 64)
    assert window.panel.model_combo.currentText() == BUILTIN_LABEL


def test_reuse_last_seed_fills_the_seed_of_the_last_result(qtbot, window):
    set_prompt(window, seed=-1)
    with qtbot.waitSignal(window.resultReady, timeout=5000) as blocker:
        window.generate()
    window.panel.reuse_button.click()
    assert window.state.seed == blocker.args[0].requests[0].seed >= 0
    window.panel.dice_button.click()
    assert window.state.seed == -1


def test_a_failing_engine_reports_once_per_job_and_next_job_works(qtbot, make_window, engine):
    window = make_window(factory=failing_once(engine))
    set_prompt(window)
    with qtbot.waitSignal(window.worker.jobFailed, timeout=5000):
        window.generate()
    assert "driver hiccup" in window.canvas_panel.banner.text.text()
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    assert window.job_status.message.text().startswith("Done")


def test_theme_menu_switches_between_dark_and_light_and_is_remembered(qtbot, window):
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QApplication

    window.set_theme("light")
    assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() > 128
    window.set_theme("dark")
    assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() < 80
    assert window.settings.value("appearance/theme") == "dark"


def test_ctrl_enter_generates_while_typing_in_the_prompt(qtbot, window, engine):
    window.panel.prompt_edit.setFocus()
    QTest.keyClicks(window.panel.prompt_edit, "cat face")
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        QTest.keyClick(window.panel.prompt_edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert engine.generated[0].prompt == "cat face"
    assert window.panel.prompt_edit.toPlainText() == "cat face"


def test_opening_a_png_with_parameters_loads_them_and_a_plain_image_becomes_the_input(qtbot, window, tmp_path):
    from PIL import Image

    from sdstudio.engine.request import GenerationRequest
    from sdstudio.history.parameters import format_parameters
    from sdstudio.history.png import save_png

    made = tmp_path / "made.png"
    req = GenerationRequest(prompt="cat face, smiling", steps=13, seed=99, width=64, height=64, sampler="Heun")
    save_png(made, Image.new("RGB", (64, 64), (250, 0, 0)), format_parameters(req, "m"))
    window.open_image(str(made))
    assert window.panel.prompt_edit.toPlainText() == "cat face, smiling"
    assert window.panel.steps_spin.value() == 13
    assert window.canvas_panel.input_image is None

    plain = tmp_path / "plain.png"
    Image.new("RGB", (80, 48), (0, 0, 250)).save(plain)
    window.open_image(str(plain))
    assert window.canvas_panel.input_image is not None
    assert (window.state.width, window.state.height) == (80, 48)


def test_opening_a_file_that_is_not_an_image_shows_the_banner(qtbot, window, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("no")
    window.open_image(str(bad))
    assert window.canvas_panel.banner.isVisibleTo(window) and "Cannot open bad.png" in window.canvas_panel.banner.text.text()


def _stored_entry(home, mode):
    import numpy as np
    from PIL import Image

    from sdstudio.engine.request import GenerationRequest

    rng = np.random.default_rng(3)
    init = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    mask = Image.fromarray(((np.arange(48)[None, :] * 5 + np.arange(40)[:, None] * 3) % 256).astype(np.uint8))
    request = GenerationRequest(prompt=f"{mode} of a fox", steps=9, seed=77, width=48, height=40, strength=0.45,
                                init_image=init, mask=mask if mode == "inpaint" else None)
    store = HistoryStore(home / "outputs")
    entry = store.add(Image.new("RGB", (48, 40), (0, 200, 0)), request, "sd15")
    store.close()
    return entry, request


def test_opening_our_inpainting_png_restores_input_image_mask_and_parameters(qtbot, window, home):
    import numpy as np

    from sdstudio.ui.imageconv import qimage_to_pil

    entry, request = _stored_entry(home, "inpaint")
    window.open_image(str(entry.file))
    assert window.state.prompt == "inpaint of a fox" and window.state.strength == 0.45
    assert (window.state.width, window.state.height) == (48, 40)
    assert np.array_equal(np.asarray(qimage_to_pil(window.canvas_panel.input_image).convert("RGB")),
                          np.asarray(request.init_image))
    assert np.array_equal(window.mask.pixels(), np.asarray(request.mask))
    assert window.canvas_panel.view == RESULT and shown_colour(window) == QColor(0, 200, 0)
    assert not window.canvas_panel.banner.isVisibleTo(window)


def test_generate_after_opening_our_img2img_png_runs_img2img_again(qtbot, window, engine, home):
    import numpy as np

    entry, request = _stored_entry(home, "img2img")
    window.open_image(str(entry.file))
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    sent = engine.generated[-1]
    assert sent.mode == "img2img" and sent.strength == 0.45 and sent.seed == 77
    assert np.array_equal(np.asarray(sent.init_image.convert("RGB")), np.asarray(request.init_image))


def test_opening_an_a1111_png_whose_model_is_missing_says_so_and_keeps_the_chosen_model(qtbot, window, tmp_path):
    from PIL import Image, PngImagePlugin

    png = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a fox\nSteps: 14, Sampler: Euler a, CFG scale: 6, Seed: 3, Size: 64x64, "
                                "Model hash: 0123456789, Model: anything-v3")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(png, pnginfo=info)
    window.state.model = "/my/chosen.safetensors"
    window.open_image(str(png))
    assert window.state.steps == 14 and window.state.model == "/my/chosen.safetensors"
    banner = window.canvas_panel.banner
    assert banner.isVisibleTo(window) and "anything-v3" in banner.text.text() and "0123456789" in banner.text.text()


def test_opening_our_png_whose_mask_is_gone_says_so(qtbot, window, home):
    entry, _ = _stored_entry(home, "inpaint")
    next(entry.file.parent.glob("*.mask.png")).unlink()
    window.open_image(str(entry.file))
    banner = window.canvas_panel.banner
    assert banner.isVisibleTo(window) and "mask image" in banner.text.text() and "missing" in banner.text.text()


def test_a_failure_shows_one_line_and_where_the_log_is(qtbot, make_window, home):
    def broken():
        raise ZeroDivisionError("division by zero")

    window = make_window(factory=broken)
    set_prompt(window)
    with qtbot.waitSignal(window.worker.jobFailed, timeout=5000):
        window.generate()
    shown = window.canvas_panel.banner.text.text()
    log = home / "logs" / "sdstudio.log"
    assert "ZeroDivisionError" in shown and f"details in {log}" in shown and "Traceback" not in shown
    assert "Traceback (most recent call last)" in log.read_text()


def test_closing_the_window_during_a_long_model_load_abandons_the_load(qtbot, make_window):
    slow = FakeEngine(load_steps=100_000, load_step_seconds=0.002)
    window = make_window(factory=lambda: slow)
    window.worker.load_model("")
    qtbot.waitUntil(lambda: slow.progress_calls >= 5, timeout=5000)
    window.close()
    calls_at_close = slow.progress_calls
    qtbot.wait(50)
    assert slow.progress_calls == calls_at_close < 1000 and slow.loaded == []


def test_model_info_comes_from_the_full_description(qtbot, window):
    with qtbot.waitSignal(window.worker.modelLoaded, timeout=5000):
        window.worker.load_model("")
    assert window.panel.model_info.text().endswith(fake_description("x").summary())
    assert window.model_family == "demo"


def test_device_menu_disables_what_is_missing_and_reloads_on_the_chosen_device(qtbot, window, monkeypatch):
    from sdstudio.ui.settings import device_unavailable, load_device

    actions = window.device_actions
    assert list(actions) == ["auto", "cpu", "cuda", "mps"]
    assert actions["auto"].isChecked() and actions["auto"].isEnabled() and actions["cpu"].isEnabled()
    for name in ("cuda", "mps"):
        assert actions[name].isEnabled() == (device_unavailable(name) == "")
    loads = []
    monkeypatch.setattr(window.worker, "load_model", loads.append)
    window.state.model = ""
    actions["cpu"].trigger()
    assert window.worker.device == "cpu" and load_device(window.settings) == "cpu" and loads == [""]
    assert actions["cpu"].isChecked() and not actions["auto"].isChecked()
    actions["cpu"].trigger()  # choosing the current device again reloads nothing
    assert loads == [""]


def test_the_saved_device_is_given_to_the_worker_at_start(qtbot, home, engine):
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.settings import open_settings, save_device
    from sdstudio.ui.token_counter import LazyTokenCounter
    from sdstudio.ui.worker import Worker

    settings = open_settings()
    save_device(settings, "cpu")
    worker = Worker(lambda: engine)
    window = MainWindow(worker, settings, LazyTokenCounter(loader=lambda: None))
    qtbot.addWidget(window)
    assert worker.device == "cpu" and window.device_actions["cpu"].isChecked()


def test_shutting_down_finishes_history_saves_and_closes_the_store(qtbot, window, tmp_path):
    import sqlite3

    from sdstudio.ui.app import shut_down

    store = HistoryStore(tmp_path / "outputs")
    link = HistoryLink(store, window)
    set_prompt(window, seed=3)
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    shut_down(window, [link, None])
    assert not window.isVisible() and len(list((tmp_path / "outputs").rglob("*.png"))) == 1
    with pytest.raises(sqlite3.ProgrammingError):
        store.get("anything")


def test_allow_pickle_is_off_by_default_warned_about_and_remembered(qtbot, home, engine):
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.settings import load_allow_pickle, open_settings
    from sdstudio.ui.token_counter import LazyTokenCounter
    from sdstudio.ui.worker import Worker

    def make():
        window = MainWindow(Worker(lambda: engine), open_settings(), LazyTokenCounter(loader=lambda: None))
        qtbot.addWidget(window)
        return window

    window = make()
    action = window.act_allow_pickle
    assert action.isCheckable() and not action.isChecked() and not window.worker.allow_pickle
    assert "can run code" in action.toolTip() and "weights-only" in action.toolTip()
    action.trigger()
    assert action.isChecked() and window.worker.allow_pickle and load_allow_pickle(window.settings)
    again = make()
    assert again.act_allow_pickle.isChecked() and again.worker.allow_pickle
    again.act_allow_pickle.trigger()
    assert not again.worker.allow_pickle and not load_allow_pickle(again.settings)


def _painted_input(window, size=64):
    window.set_input_image(gray_image(size))
    window.mask.begin_stroke(4, 1.0)
    window.mask.stroke_to(20, 20)
    window.mask.end_stroke()
    return window.mask.pixels().copy()


def _answer(monkeypatch, button):
    from PySide6.QtWidgets import QMessageBox

    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kw: asked.append(args[2]) or button)
    return asked


def test_loading_parameters_asks_before_a_painted_mask_is_lost_and_cancel_keeps_everything(qtbot, window,
                                                                                           monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from sdstudio.engine.request import GenerationRequest

    painted = _painted_input(window)
    window.panel.prompt_edit.setPlainText("keep me")
    asked = _answer(monkeypatch, QMessageBox.StandardButton.Cancel)
    assert not window.load_parameters(GenerationRequest(prompt="other", seed=3))
    assert len(asked) == 1 and "mask" in asked[0]
    assert window.canvas_panel.input_image is not None and (window.mask.pixels() == painted).all()
    assert window.state.prompt == "keep me" and window.mode_bar.mode == "inpaint"

    _answer(monkeypatch, QMessageBox.StandardButton.Discard)
    assert window.load_parameters(GenerationRequest(prompt="other", seed=3))
    assert window.canvas_panel.input_image is None and window.mode_bar.mode == "txt2img"
    assert window.state.prompt == "other"


def test_opening_a_png_with_parameters_replaces_the_old_input_and_mask(qtbot, window, engine, home, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    entry, _request = _stored_entry(home, "img2img")
    _painted_input(window, 32)
    asked = _answer(monkeypatch, QMessageBox.StandardButton.Discard)
    window.open_image(str(entry.file))
    assert len(asked) == 1
    assert window.canvas_panel.input_image.size().toTuple() == (48, 40) and window.mask.is_empty()
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    req = engine.generated[-1]
    assert req.mode == "img2img" and req.init_image.size == (48, 40)
    assert req.parent_id == ""  # a file is not a history entry of this app: no parent


def test_no_question_without_a_painted_mask(qtbot, window, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from sdstudio.engine.request import GenerationRequest

    asked = _answer(monkeypatch, QMessageBox.StandardButton.Cancel)
    window.set_input_image(gray_image())
    assert window.load_parameters(GenerationRequest(prompt="other"))
    assert asked == [] and window.canvas_panel.input_image is None


def test_an_input_image_keeps_the_models_native_area_at_its_aspect(qtbot, window, engine):
    from PySide6.QtGui import QImage

    image = QImage(296, 200, QImage.Format.Format_RGB32)
    image.fill(QColor(90, 30, 200))
    window.set_input_image(image)
    w, h = window.state.width, window.state.height
    assert w % 8 == 0 and h % 8 == 0
    assert 0.75 <= w * h / (64 * 64) <= 1.25  # about the 64 px demo model's area, not 296×200
    assert abs(w / h - 296 / 200) < 0.15 and (w, h) == (80, 56)
    assert (window.panel.width_spin.value(), window.panel.height_spin.value()) == (80, 56)
    window.panel.prompt_edit.setPlainText("wide")
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    req = engine.generated[-1]
    assert (req.width, req.height) == (80, 56) and req.init_image.size == (296, 200)


def test_a_tall_input_for_a_512_model_fits_its_native_area(qtbot, window):
    from PySide6.QtGui import QImage

    window.native_size = 512
    window.set_input_image(QImage(600, 1800, QImage.Format.Format_RGB32))
    w, h = window.state.width, window.state.height
    assert (w % 8, h % 8) == (0, 0) and h > w and 0.9 <= w * h / 512**2 <= 1.1


def test_a_dropped_checkpoint_is_added_and_loaded_and_a_lora_is_named_not_added(qtbot, window, engine, tiny_path,
                                                                                 tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    with qtbot.waitSignal(window.worker.modelLoaded, timeout=5000):
        window.canvas_panel.canvas.fileDropped.emit(str(tiny_path))
    assert window.state.model == str(tiny_path) and engine.loaded[-1] == str(tiny_path)
    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": np.zeros((4, 8), np.float32)}, lora)
    window.canvas_panel.canvas.fileDropped.emit(str(lora))
    banner = window.canvas_panel.banner
    assert banner.isVisibleTo(window) and "LoRA" in banner.text.text()
    assert window.state.model == str(tiny_path)


def test_generate_stays_in_view_in_a_small_window(qtbot, window):
    window.resize(800, 560)
    window.show()
    qtbot.waitExposed(window)
    assert not window.panel.generate_button.visibleRegion().isEmpty()
    assert not window.panel.cancel_button.visibleRegion().isEmpty()
