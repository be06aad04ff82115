"""Opening files and the one-click offer of SD Studio's nearest sampler (ui/open_file.py).

The samplers here (DEIS, Euler CFG++) and the schedule (linear_quadratic) are ones other tools have and SD
Studio does not plan to add, so these tests keep meaning what they say when names.SAMPLERS grows.
"""

from __future__ import annotations

from PIL import Image, PngImagePlugin
from PySide6.QtCore import Qt

from sdstudio.engine.names import SAMPLERS, SCHEDULERS
from sdstudio.history.store import HistoryStore
from sdstudio.ui.gallery import GalleryWidget
from sdstudio.ui.history_link import HistoryLink


def a1111_png(path, sampler: str, extra: str = "", size=(64, 64)):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"a fox in snow\nNegative prompt: blurry\nSteps: 9, Sampler: {sampler}, "
                                f"CFG scale: 6.5, Seed: 4321, Size: {size[0]}x{size[1]}{extra}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 90, 140)).save(path, pnginfo=info)
    return path


def test_opening_an_image_made_with_a_sampler_we_lack_offers_the_nearest_in_one_click(qtbot, window, engine,
                                                                                       tmp_path):
    window.open_image(str(a1111_png(tmp_path / "deis.png", "DEIS", ", Schedule type: Karras")))
    banner = window.canvas_panel.banner
    assert banner.isVisibleTo(window) and "'DEIS' is not in SD Studio" in banner.text.text()
    assert banner.action_button.isVisibleTo(window) and banner.action_button.text() == "Use DPM++ 2M"
    qtbot.mouseClick(banner.action_button, Qt.MouseButton.LeftButton)
    assert (window.state.sampler, window.state.scheduler) == ("DPM++ 2M", "karras")
    assert (window.state.prompt, window.state.seed, window.state.steps, window.state.cfg_scale) == (
        "a fox in snow", 4321, 9, 6.5)
    assert window.panel.sampler_combo.currentText() == "DPM++ 2M"
    assert banner.isVisibleTo(window) and "sampler 'DEIS' → DPM++ 2M" in banner.text.text()
    assert not banner.action_button.isVisibleTo(window)  # the new message offers nothing more
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    assert (engine.generated[-1].sampler, engine.generated[-1].seed) == ("DPM++ 2M", 4321)


def test_a_schedule_we_lack_is_substituted_and_named_too(qtbot, window, tmp_path):
    window.open_image(str(a1111_png(tmp_path / "x.png", "Euler CFG++", ", Schedule type: linear_quadratic")))
    panel, banner = window.panel, window.canvas_panel.banner
    # Until the user chooses, the panel shows the names as written, and editing keeps them: no quiet swap.
    assert panel.sampler_combo.currentText() == "Euler CFG++ (not in SD Studio)"
    assert panel.scheduler_combo.currentText() == "linear_quadratic (not in SD Studio)"
    panel.prompt_edit.setPlainText("a fox in deep snow")
    assert (window.state.sampler, window.state.scheduler) == ("Euler CFG++", "linear_quadratic")
    assert banner.action_button.text() == "Use Euler"
    banner.action_button.click()
    assert (window.state.sampler, window.state.scheduler) == ("Euler", "normal")
    assert "sampler 'Euler CFG++' → Euler, schedule 'linear_quadratic' → Normal" in banner.text.text()
    assert (panel.sampler_combo.currentText(), panel.scheduler_combo.currentText()) == ("Euler", "Normal")
    assert panel.sampler_combo.count() == len(SAMPLERS) and panel.scheduler_combo.count() == len(SCHEDULERS)


def test_a_sampler_nobody_has_gets_the_message_without_a_button(qtbot, window, tmp_path):
    window.open_image(str(a1111_png(tmp_path / "x.png", "Wibble")))
    banner = window.canvas_panel.banner
    assert banner.isVisibleTo(window) and "unknown sampler 'Wibble'" in banner.text.text()
    assert not banner.action_button.isVisibleTo(window)


def test_rerun_from_the_gallery_with_a_sampler_we_lack_offers_a_rerun_with_the_nearest(qtbot, window, engine,
                                                                                      tmp_path):
    root = tmp_path / "outputs"
    a1111_png(root / "from-a1111" / "00001-4321.png", "DEIS", ", Model: sdstudio-emoji")  # indexed at open
    store = HistoryStore(root)
    gallery = GalleryWidget(store, window)
    link = HistoryLink(store, window, gallery)
    [entry] = store.page()
    gallery.rerunRequested.emit(entry.id, False)
    banner = window.canvas_panel.banner
    assert "Cannot re-run that entry" in banner.text.text() and "'DEIS'" in banner.text.text()
    assert banner.action_button.text() == "Re-run with DPM++ 2M"
    assert engine.generated == []  # nothing runs on another sampler without the click
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        qtbot.mouseClick(banner.action_button, Qt.MouseButton.LeftButton)
    request = engine.generated[-1]
    assert (request.sampler, request.scheduler, request.seed, request.prompt) == ("DPM++ 2M", "normal", 4321,
                                                                                  "a fox in snow")
    assert request.parent_id == entry.id  # a different picture made from that entry
    assert "Re-running with SD Studio's nearest: sampler 'DEIS' → DPM++ 2M" in banner.text.text()
    link.flush()  # the result's save, then its arrival in the gallery, before the store closes
    qtbot.waitUntil(lambda: gallery.model.rowCount() == 2, timeout=10000)
    store.close()


def test_generating_with_a_sampler_we_lack_fails_with_the_offer_of_the_nearest(qtbot, window, engine, tmp_path,
                                                                               monkeypatch):
    """Loaded without choosing and run anyway: the engine refuses the name (as the real one does) and the
    failure's banner offers our nearest, which goes into the panel for the next Generate."""
    from sdstudio.engine.errors import RequestError
    from sdstudio.engine.names import canonical_sampler

    fake_generate = engine.generate

    def checking_generate(request, *args, **kwargs):
        try:
            canonical_sampler(request.sampler)
        except ValueError as e:
            raise RequestError(str(e)) from None
        return fake_generate(request, *args, **kwargs)

    monkeypatch.setattr(engine, "generate", checking_generate)
    window.open_image(str(a1111_png(tmp_path / "deis.png", "DEIS", ", Schedule type: Karras")))
    window.canvas_panel.banner.dismiss()
    with qtbot.waitSignal(window.worker.jobFailed, timeout=5000):
        window.generate()
    banner = window.canvas_panel.banner
    qtbot.waitUntil(lambda: banner.action_button.isVisibleTo(window))
    assert "'DEIS' is not in SD Studio" in banner.text.text() and banner.action_button.text() == "Use DPM++ 2M"
    banner.action_button.click()
    assert (window.state.sampler, window.state.scheduler) == ("DPM++ 2M", "karras")
    assert window.panel.sampler_combo.currentText() == "DPM++ 2M"
    assert "Now using SD Studio's nearest: sampler 'DEIS' → DPM++ 2M" in banner.text.text()
    with qtbot.waitSignal(window.resultReady, timeout=5000):
        window.generate()
    assert engine.generated[-1].sampler == "DPM++ 2M"
