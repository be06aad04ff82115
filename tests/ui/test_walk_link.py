"""Interpolate from the gallery: two selected entries (or start + "to here"), frames queued as ordinary jobs
into the history under one walk id, the walk on the canvas at the end, a saved walk played when selected."""

from PIL import Image
from PySide6.QtCore import QItemSelectionModel, Qt

from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.app import start_background
from sdstudio.ui.gallery import GalleryWidget
from sdstudio.ui.gallery_walks import selected_entries
from sdstudio.ui.imageconv import qimage_to_pil
from sdstudio.ui.token_counter import LazyTokenCounter


def open_history(window, monkeypatch):
    monkeypatch.setattr(window.worker, "start", lambda: None)  # the fixture started it already
    return start_background(window, LazyTokenCounter(loader=lambda: None))


def add(store, prompt, seed, walk_id="", created=None):
    request = GenerationRequest(prompt=prompt, seed=seed, steps=2, width=16, height=16, walk_id=walk_id)
    return store.add(Image.new("RGB", (16, 16), (seed, 0, 0)), request, "sdstudio-emoji", created=created)


def menu_texts(gallery):
    return [a.text() for a in gallery.context_menu().actions() if not a.isSeparator()]


def test_interpolate_queues_the_frames_saves_them_as_one_walk_and_plays_it_on_the_canvas(qtbot, window, engine,
                                                                                          monkeypatch):
    link = open_history(window, monkeypatch)
    walk, gallery = window.walk_link, link.gallery
    a, b = add(link.store, "red apple", 5), add(link.store, "blue circle", 9)
    gallery.refresh()
    gallery.select_entry(b.id)
    assert not walk.act_to.isEnabled()  # no start yet
    gallery.select_entry(a.id)
    walk.act_start.trigger()
    assert walk.start_id == a.id and not walk.act_to.isEnabled()  # not to itself
    gallery.select_entry(b.id)
    assert walk.act_to.isEnabled()
    texts = menu_texts(gallery)
    assert texts[texts.index("Use for inpainting") + 1:][:4] == [
        "Interpolate between the two selected…", "Set as walk start", "Interpolate to here…", "Show the walk's frames"]
    engine.generated.clear()
    shown = []
    link.saved.connect(shown.extend)  # after the gallery's slot: when this has them, so has the gallery
    jobs = walk.walk_to(b.id, 4, "both")
    assert len(jobs) == 4
    bar = window.canvas_panel.walk_bar
    qtbot.waitUntil(lambda: bar.active, timeout=5000)
    assert [r.blend_strength for r in engine.generated] == [0.0, 1 / 3, 2 / 3, 0.0]
    assert [r.subseed_strength for r in engine.generated] == [0.0, 1 / 3, 2 / 3, 0.0]
    assert engine.generated[-1].prompt == "blue circle" and engine.generated[-1].seed == 9
    assert all(r.parent_id == a.id for r in engine.generated)
    assert len({r.walk_id for r in engine.generated}) == 1 and engine.generated[0].walk_id
    assert len(bar.frames) == 4 and bar.playing and bar.isVisible()
    assert not window.canvas_panel.scrubber.isVisible()  # the walk bar takes its place
    link.flush()
    qtbot.waitUntil(lambda: len(shown) == 4, timeout=2000)
    assert link.store.count() == 6
    assert len(link.store.children(a.id)) == 4
    walk_id = engine.generated[0].walk_id
    assert len(link.store.walk_frames(walk_id)) == 4
    # The four frames reach the gallery as one tile, and no "new images are hidden" note.
    gallery.refresh()
    assert gallery.model.rowCount() == 3 and not gallery.hidden_bar.isVisible()
    link.store.close()


def test_two_selected_entries_interpolate_older_to_newer_and_single_actions_keep_the_current(qtbot, window, engine,
                                                                                            monkeypatch):
    link = open_history(window, monkeypatch)
    walk, gallery = window.walk_link, link.gallery
    a = add(link.store, "red apple", 5, created=1.7e9)
    b = add(link.store, "blue circle", 9, created=1.7e9 + 1)
    add(link.store, "green leaf", 3, created=1.7e9 + 2)
    gallery.refresh()
    gallery.select_entry(b.id)
    assert not walk.act_between.isEnabled()  # one selected
    # Ctrl-click on a: two selected, the current is a (single-entry actions act on it)
    row_a = gallery.model.row_of(a.id)
    rect = gallery.view.visualRect(gallery.model.index(row_a))
    qtbot.mouseClick(gallery.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ControlModifier,
                     rect.center())
    assert {e.id for e in selected_entries(gallery)} == {a.id, b.id}
    assert walk.act_between.isEnabled()
    assert walk.ends_of_selection() == (a.id, b.id)  # older first, whichever was clicked first
    assert gallery.current_entry().id == a.id
    loaded = []
    gallery.loadParametersRequested.connect(loaded.append)
    gallery.act_load.trigger()
    assert loaded == [a.id]
    engine.generated.clear()
    shown = []
    link.saved.connect(shown.extend)
    jobs = walk.walk(*walk.ends_of_selection(), 3, "noise")
    assert len(jobs) == 3
    qtbot.waitUntil(lambda: window.canvas_panel.walk_bar.active, timeout=5000)
    assert [r.seed for r in engine.generated] == [5, 5, 9] and engine.generated[1].subseed == 9
    # A third selected entry: no longer exactly two
    index = gallery.model.index(0)
    gallery.view.selectionModel().select(index, QItemSelectionModel.SelectionFlag.Select)
    assert not walk.act_between.isEnabled()
    link.flush()
    qtbot.waitUntil(lambda: len(shown) == 3, timeout=2000)
    link.store.close()


def test_a_saved_walk_is_one_tile_that_opens_into_its_frames_and_plays_on_the_canvas(qtbot, window, monkeypatch):
    link = open_history(window, monkeypatch)
    walk, gallery = window.walk_link, link.gallery
    lone = add(link.store, "lone", 1, created=1.7e9)
    frames = [add(link.store, f"frame {k}", 10 + 40 * k, "w1", created=1.7e9 + 1 + k) for k in range(4)]
    assert GalleryWidget(link.store).model.rowCount() == 2  # grouped from the start
    gallery.refresh()
    assert gallery.model.rowCount() == 2
    assert [gallery.model.entry(r).id for r in range(2)] == [frames[0].id, lone.id]
    gallery.view.grab()  # the tile's badge paints
    # Selecting the tile plays the walk on the canvas from its first frame.
    gallery.select_entry(frames[0].id)
    bar = window.canvas_panel.walk_bar
    assert bar.active and bar.playing and len(bar.frames) == 4 and bar.slider.value() == 0
    assert walk.groups.act_open.isEnabled()
    walk.groups.act_open.trigger()
    assert gallery.walk_filter == "w1" and gallery.model.rowCount() == 4
    assert walk.groups.bar.isVisibleTo(gallery) and "4 frames" in walk.groups.label.text()
    assert not walk.groups.act_open.isEnabled()
    gallery.select_entry(frames[2].id)  # a frame: the walk, paused there
    assert bar.active and not bar.playing and bar.slider.value() == 2
    assert qimage_to_pil(window.canvas_panel.canvas.image).getpixel((0, 0))[0] == 90
    walk.groups.close_walk()
    assert gallery.walk_filter is None and gallery.model.rowCount() == 2 and not walk.groups.bar.isVisibleTo(gallery)
    assert gallery.current_entry().id == frames[0].id
    # A plain entry: no walk on the canvas.
    gallery.select_entry(lone.id)
    assert not bar.active and not bar.isVisible()
    walk.groups.open_walk("w1")
    gallery.show_all()
    assert gallery.walk_filter is None and not walk.groups.bar.isVisibleTo(gallery)
    link.flush()
    link.store.close()


def test_interpolate_without_a_start_or_to_the_same_prompt_is_said_in_the_banner(window, monkeypatch):
    link = open_history(window, monkeypatch)
    walk = window.walk_link
    a, b = add(link.store, "red apple", 5), add(link.store, "red apple", 9)
    assert walk.walk_to(b.id, 4, "both") == []
    assert "choose a start first" in window.canvas_panel.banner.text.text()
    walk.set_start(a.id)
    assert walk.walk_to(b.id, 4, "prompt") == []
    assert "same prompt" in window.canvas_panel.banner.text.text()
    link.flush()
    link.store.close()


def test_clicking_through_a_walk_reads_its_frames_once_and_a_lost_frame_file_is_said(qtbot, window, monkeypatch):
    link = open_history(window, monkeypatch)
    walk, gallery = window.walk_link, link.gallery
    frames = [add(link.store, f"frame {k}", 10 + 40 * k, "w1", created=1.7e9 + k) for k in range(3)]
    gallery.refresh()
    walk.groups.open_walk("w1")
    reads = []
    read = link.store.read
    monkeypatch.setattr(link.store, "read", lambda entry: reads.append(entry.id) or read(entry))
    gallery.select_entry(frames[0].id)
    gallery.select_entry(frames[1].id)
    assert sorted(reads) == sorted(f.id for f in frames)  # once each, for both clicks
    assert window.canvas_panel.walk_bar.slider.value() == 1
    frames[2].file.unlink()
    gallery.select_entry(frames[1].id)  # the cache is keyed by ids and files: the same walk, still shown
    walk._loaded = None
    gallery.select_entry(frames[0].id)
    assert "Cannot play that walk" in window.canvas_panel.banner.text.text()
    assert not window.canvas_panel.walk_bar.active
    link.flush()
    link.store.close()
