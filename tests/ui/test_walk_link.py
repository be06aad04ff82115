"""Interpolate from the gallery: start, frames queued as ordinary jobs into the history, the player at the end."""

from PIL import Image

from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.app import start_background
from sdstudio.ui.token_counter import LazyTokenCounter


def open_history(window, monkeypatch):
    monkeypatch.setattr(window.worker, "start", lambda: None)  # the fixture started it already
    return start_background(window, LazyTokenCounter(loader=lambda: None))


def add(store, prompt, seed):
    request = GenerationRequest(prompt=prompt, seed=seed, steps=2, width=16, height=16)
    return store.add(Image.new("RGB", (16, 16), (seed, 0, 0)), request, "sdstudio-emoji")


def test_interpolate_queues_the_frames_saves_them_and_opens_the_player(qtbot, window, engine, monkeypatch):
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
    texts = [a.text() for a in gallery.context_menu().actions() if not a.isSeparator()]
    assert texts[texts.index("Use for inpainting") + 1:][:2] == ["Set as walk start", "Interpolate to here…"]
    engine.generated.clear()
    jobs = walk.walk_to(b.id, 4, "both")
    assert len(jobs) == 4
    qtbot.waitUntil(lambda: walk.player is not None, timeout=5000)
    assert [r.blend_strength for r in engine.generated] == [0.0, 1 / 3, 2 / 3, 0.0]
    assert [r.subseed_strength for r in engine.generated] == [0.0, 1 / 3, 2 / 3, 0.0]
    assert engine.generated[-1].prompt == "blue circle" and engine.generated[-1].seed == 9
    assert all(r.parent_id == a.id for r in engine.generated)
    assert len(walk.player.frames) == 4 and walk.player.playing
    link.flush()
    assert link.store.count() == 6
    assert len(link.store.children(a.id)) == 4
    qtbot.waitUntil(lambda: gallery.model.rowCount() == 6, timeout=2000)  # the frames reach the gallery too
    walk.player.close()
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
