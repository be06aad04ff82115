from PySide6.QtGui import QColor

from sdstudio.history.store import HistoryStore
from sdstudio.ui.canvas_panel import INPUT
from sdstudio.ui.gallery import GalleryWidget
from sdstudio.ui.history_link import HistoryLink
from tests.ui.fake_engine import result_colour


def generate_one(qtbot, window, seed):
    window.panel.prompt_edit.setPlainText("red apple")
    window.panel.seed_spin.setValue(seed)
    window.panel.steps_spin.setValue(3)
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()


def test_results_appear_in_the_docked_gallery(qtbot, window, tmp_path):
    store = HistoryStore(tmp_path / "outputs")
    gallery = GalleryWidget(store, window)
    window.dock_gallery(gallery)
    link = HistoryLink(store, window, gallery)
    with qtbot.waitSignal(link.saved, timeout=5000) as blocker:
        generate_one(qtbot, window, 21)
    entries = blocker.args[0]
    assert [e.seed for e in entries] == [21]
    assert gallery.model.total() == 1
    assert window.gallery_dock is not None and window.gallery_dock.widget() is gallery


def test_gallery_requests_drive_the_window(qtbot, window, engine, tmp_path):
    store = HistoryStore(tmp_path / "outputs")
    gallery = GalleryWidget(store, window)
    link = HistoryLink(store, window, gallery)
    with qtbot.waitSignal(link.saved, timeout=5000) as blocker:
        generate_one(qtbot, window, 5)
    entry_id = blocker.args[0][0].id
    window.panel.prompt_edit.setPlainText("something else")
    gallery.loadParametersRequested.emit(entry_id)
    assert window.state.prompt == "red apple" and window.state.seed == 5
    gallery.useAsInitRequested.emit(entry_id)
    assert window.canvas_panel.view == INPUT
    assert window.canvas_panel.input_image.pixelColor(1, 1) == QColor(*result_colour(5))
    with qtbot.waitSignal(window.resultReady, timeout=5000) as rerun:
        gallery.rerunRequested.emit(entry_id, False)
    assert rerun.args[0].requests[0].seed == 5 and engine.generated[-1].prompt == "red apple"


def test_use_for_inpainting_restores_the_mask_the_entry_was_made_with(qtbot, window, tmp_path):
    from PySide6.QtGui import QImage

    store = HistoryStore(tmp_path / "outputs")
    gallery = GalleryWidget(store, window)
    link = HistoryLink(store, window, gallery)
    image = QImage(64, 64, QImage.Format.Format_RGB32)  # the model's native size: the result is as big
    image.fill(QColor(10, 20, 30))
    window.set_input_image(image)
    window.mask.begin_stroke(4, 1.0)
    window.mask.stroke_to(16, 16)
    window.mask.end_stroke()
    painted = window.mask.pixels().copy()
    with qtbot.waitSignal(link.saved, timeout=5000) as blocker:
        generate_one(qtbot, window, 8)
    window.set_input_image(None)
    gallery.useForInpaintRequested.emit(blocker.args[0][0].id)
    assert window.canvas_panel.view == INPUT and window.canvas_panel.canvas.tool.value == "brush"
    assert (window.mask.pixels() == painted).all()


def test_an_a1111_entry_whose_model_is_missing_loads_its_values_but_is_not_rerun(qtbot, window, engine, tmp_path):
    from PIL import Image, PngImagePlugin

    root = tmp_path / "outputs"
    root.mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a fox\nSteps: 14, Sampler: Euler a, CFG scale: 6, Seed: 3, Size: 64x64, "
                                "Model hash: 0123456789, Model: anything-v3")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(root / "a1111.png", pnginfo=info)
    store = HistoryStore(root)
    gallery = GalleryWidget(store, window)
    HistoryLink(store, window, gallery)
    [entry] = store.page()
    window.state.model = "/my/chosen.safetensors"
    gallery.loadParametersRequested.emit(entry.id)
    banner = window.canvas_panel.banner
    assert window.state.steps == 14 and window.state.model == "/my/chosen.safetensors"
    assert banner.isVisibleTo(window) and "anything-v3" in banner.text.text()
    banner.hide()
    gallery.rerunRequested.emit(entry.id, False)
    qtbot.waitUntil(lambda: banner.isVisibleTo(window))
    assert "Cannot re-run" in banner.text.text() and "0123456789" in banner.text.text()
    assert engine.generated == [] and not window._jobs


def _linked(window, tmp_path):
    store = HistoryStore(tmp_path / "outputs")
    gallery = GalleryWidget(store, window)
    return store, gallery, HistoryLink(store, window, gallery)


def _made(qtbot, window, link, seed):
    with qtbot.waitSignal(link.saved, timeout=5000) as blocker:
        generate_one(qtbot, window, seed)
    return blocker.args[0][0]


def test_an_image_made_from_a_gallery_entry_records_it_as_parent_and_the_chain_can_be_walked(qtbot, window,
                                                                                             tmp_path):
    store, gallery, link = _linked(window, tmp_path)
    source = _made(qtbot, window, link, 1)
    assert source.parent_id == ""
    gallery.useAsInitRequested.emit(source.id)
    child = _made(qtbot, window, link, 2)
    assert child.parent_id == source.id and store.get(child.id).mode == "img2img"
    gallery.select_entry(child.id)
    assert gallery.act_parent.isEnabled()
    assert "Made from" in gallery.details.toHtml() and f"entry:{source.id}" in gallery.details.toHtml()
    gallery.go_to_parent()
    assert gallery.current_entry().id == source.id and gallery.act_child.isEnabled()
    gallery.go_to_child()
    assert gallery.current_entry().id == child.id


def test_inpainting_from_an_entry_and_a_new_seed_rerun_record_the_parent(qtbot, window, engine, tmp_path):
    store, gallery, link = _linked(window, tmp_path)
    source = _made(qtbot, window, link, 1)
    gallery.useForInpaintRequested.emit(source.id)
    window.mask.fill()
    assert _made(qtbot, window, link, 2).parent_id == source.id
    with qtbot.waitSignal(link.saved, timeout=5000) as blocker:
        gallery.rerunRequested.emit(source.id, True)
    assert blocker.args[0][0].parent_id == source.id and engine.generated[-1].seed != 1
    with qtbot.waitSignal(link.saved, timeout=5000) as blocker:
        gallery.rerunRequested.emit(source.id, False)  # the same image again, not one made from it
    assert blocker.args[0][0].parent_id == ""


def test_use_as_input_on_a_saved_result_names_its_entry_but_an_opened_file_names_none(qtbot, window, tmp_path):
    from PIL import Image

    store, gallery, link = _linked(window, tmp_path)
    source = _made(qtbot, window, link, 1)  # shown as the result; saved as `source`
    window.use_shown_image_as_input()
    assert _made(qtbot, window, link, 2).parent_id == source.id
    plain = tmp_path / "plain.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(plain)
    window.open_image(str(plain))
    assert _made(qtbot, window, link, 3).parent_id == ""


def _save_to(monkeypatch, path):
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), "PNG (*.png)"))


def _chunks(path):
    from sdstudio.history.png import png_text_chunks

    with open(path, "rb") as file:
        return png_text_chunks(file)


def test_save_as_keeps_the_parameters_and_without_metadata_keeps_only_pixels(qtbot, window, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    store, gallery, link = _linked(window, tmp_path)
    entry = _made(qtbot, window, link, 7)
    gallery.select_entry(entry.id)  # the entry is shown
    kept = tmp_path / "kept.png"
    _save_to(monkeypatch, kept)
    window.act_save.trigger()
    chunks = _chunks(kept)
    assert "red apple" in chunks["parameters"] and "Seed: 7" in chunks["parameters"]
    assert entry.id in chunks["sdstudio"] and kept.read_bytes() == entry.file.read_bytes()
    bare = tmp_path / "bare.png"
    _save_to(monkeypatch, bare)
    window.act_save_plain.trigger()
    assert _chunks(bare) == {}
    assert str(tmp_path) not in bare.read_bytes().decode("latin-1")
    with Image.open(bare) as saved, Image.open(entry.file) as original:
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(original.convert("RGB")))


def test_save_as_of_a_result_without_history_still_writes_its_parameters(qtbot, window, tmp_path, monkeypatch):
    generate_one(qtbot, window, 11)
    path = tmp_path / "result.png"
    _save_to(monkeypatch, path)
    window.save_image_dialog()
    assert "red apple" in _chunks(path)["parameters"] and "Seed: 11" in _chunks(path)["parameters"]


def _inpainted_entry(store, input_size, box):
    """An entry made by inpainting a textured `input_size` input (mask `box`) at the model's 64×64."""
    import numpy as np
    from PIL import Image, ImageDraw

    from sdstudio.engine.request import GenerationRequest

    rng = np.random.default_rng(3)
    init = Image.fromarray(rng.integers(0, 256, (input_size[1], input_size[0], 3), dtype=np.uint8))
    mask = Image.new("L", input_size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    request = GenerationRequest(prompt="p", width=64, height=64, init_image=init, mask=mask, seed=1)
    output = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return store.add(output, request), mask


def test_use_for_inpainting_places_a_mask_made_on_another_size_as_the_input_was_fitted(qtbot, window, tmp_path):
    """A 96×64 input made a 64×64 image (scaled to cover, centre-cropped): the mask is placed the same way, so
    it covers the same pixels of the result instead of being skipped."""
    import numpy as np

    store = HistoryStore(tmp_path / "outputs")
    gallery = GalleryWidget(store, window)
    HistoryLink(store, window, gallery)
    entry, mask = _inpainted_entry(store, (96, 64), (40, 8, 55, 23))  # off-centre: right of the middle
    gallery.useForInpaintRequested.emit(entry.id)
    painted = window.mask
    assert (painted.width, painted.height) == (64, 64) and not painted.is_empty()
    shown = np.asarray(painted.pixels())
    ys, xs = np.nonzero(shown > 127)
    # 96 wide -> 64 wide crops 16 px off each side: x 40..55 lands on 24..39, y unchanged.
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (24, 39, 8, 23)
    expected = np.asarray(mask.crop((16, 0, 80, 64)))
    assert np.array_equal(shown > 127, expected > 127)
    assert not window.canvas_panel.banner.isVisibleTo(window)
    store.close()


def test_use_for_inpainting_says_so_when_the_mask_was_cropped_away(qtbot, window, tmp_path):
    store = HistoryStore(tmp_path / "outputs")
    gallery = GalleryWidget(store, window)
    HistoryLink(store, window, gallery)
    entry, _ = _inpainted_entry(store, (128, 64), (0, 0, 10, 63))  # in the 32 px cropped off the left
    gallery.useForInpaintRequested.emit(entry.id)
    assert window.mask.is_empty() and window.canvas_panel.input_image is not None
    banner = window.canvas_panel.banner
    assert banner.isVisibleTo(window) and "lies outside it" in banner.text.text()
    store.close()


def test_vary_queues_variations_of_the_entry_as_its_children(qtbot, window, engine, tmp_path):
    from sdstudio.ui.gallery import VARY_COUNT, VARY_STRENGTHS

    store, gallery, link = _linked(window, tmp_path)
    source = _made(qtbot, window, link, 9)
    before = len(engine.generated)
    saved = []
    link.saved.connect(saved.extend)
    gallery.select_entry(source.id)
    label, strength = VARY_STRENGTHS[1]
    [action] = [a for a in gallery.vary_actions if a.text().startswith(label)]
    action.trigger()
    qtbot.waitUntil(lambda: len(saved) == VARY_COUNT, timeout=10000)
    made = engine.generated[before:]
    assert len(made) == VARY_COUNT
    assert {(r.seed, r.subseed_strength, r.prompt, r.batch_size) for r in made} == {(9, strength, "red apple", 1)}
    assert len({r.subseed for r in made}) == VARY_COUNT  # each a random variation seed
    assert {e.parent_id for e in saved} == {source.id}
    # A variation cannot be varied again (A1111's variation seeds do not nest): said, nothing queued.
    errors = []
    link.failed.connect(errors.append)
    gallery.varyRequested.emit(saved[0].id, 0.25)
    assert errors and "already a variation" in errors[0]
    assert len(engine.generated) == before + VARY_COUNT


def test_the_context_menu_offers_vary_with_its_strengths(qtbot, window, tmp_path):
    store, gallery, link = _linked(window, tmp_path)
    source = _made(qtbot, window, link, 3)
    gallery.select_entry(source.id)
    menu = gallery.context_menu()
    [vary] = [a for a in menu.actions() if a.text() == "Vary"]
    assert vary.isEnabled() and [a.text() for a in vary.menu().actions()] == [
        "Subtle (0.1)", "Medium (0.25)", "Strong (0.5)"]
