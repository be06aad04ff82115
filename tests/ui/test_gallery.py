"""The gallery widget over a real (small) history store: filters, details, actions, lineage, thumbnails."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QMessageBox

from sdstudio.engine.request import GenerationRequest
from sdstudio.history.store import Entry, HistoryStore
from sdstudio.ui.gallery import GalleryWidget, period_start
from tests.history.synthetic import bulk_entries
from tests.ui.conftest import show_active
from tests.ui.thumbnail_spy import ThumbnailSpy

NOW = time.time()


def add(store: HistoryStore, prompt: str, age_hours: float, model: str = "sd15", **fields) -> Entry:
    request = GenerationRequest(prompt=prompt, width=16, height=16, **fields)
    colour = (len(prompt) * 37 % 256, 90, 160)
    return store.add(Image.new("RGB", (16, 16), colour), request, model, created=NOW - age_hours * 3600)


@pytest.fixture
def store(tmp_path: Path):
    opened = HistoryStore(tmp_path / "outputs")
    yield opened
    opened.close()


@pytest.fixture
def entries(store: HistoryStore) -> list[Entry]:
    """Six entries, oldest first: cats on sd15, dogs on sdxl, one a week old."""
    made = [add(store, "a cat on a roof", 24 * 8)]
    made += [add(store, f"a dog {i}", 5 - i, model="sdxl") for i in range(3)]
    made += [add(store, f"a cat {i}", 1 - i / 2) for i in range(2)]
    return made


def make_gallery(qtbot, store: HistoryStore) -> GalleryWidget:
    gallery = GalleryWidget(store)
    qtbot.addWidget(gallery)
    gallery.resize(420, 640)
    show_active(qtbot, gallery)
    return gallery


@pytest.fixture
def gallery(qtbot, store, entries) -> GalleryWidget:
    return make_gallery(qtbot, store)


def shown_ids(gallery: GalleryWidget) -> list[str]:
    return [gallery.model.entry(row).id for row in range(gallery.model.rowCount())]


def test_shows_newest_first_and_selecting_shows_details(qtbot, gallery, entries) -> None:
    assert shown_ids(gallery) == [e.id for e in reversed(entries)]
    assert gallery.count_label.text() == "6 images"
    with qtbot.waitSignal(gallery.entrySelected) as selected:
        gallery.view.setCurrentIndex(gallery.model.index(0))
    assert selected.args == [entries[-1].id]
    text = gallery.details.toPlainText()
    assert "a cat 1" in text and "Steps: 20, Sampler: Euler a" in text and "sd15" in text


def test_search_box_filters_after_typing_pauses(qtbot, gallery) -> None:
    qtbot.keyClicks(gallery.search, "cat")
    qtbot.waitUntil(lambda: gallery.model.total() == 3)
    assert {gallery.model.entry(r).prompt for r in range(3)} == {"a cat on a roof", "a cat 0", "a cat 1"}
    gallery.search.clear()
    qtbot.waitUntil(lambda: gallery.model.total() == 6)


def test_model_period_favourite_and_trash_filters(qtbot, gallery, store, entries) -> None:
    gallery.model_filter.setCurrentIndex(gallery.model_filter.findData("sdxl"))
    assert gallery.model.total() == 3 and gallery.count_label.text() == "3 images"
    gallery.model_filter.setCurrentIndex(0)
    gallery.period.setCurrentIndex(gallery.period.findData(7))
    assert entries[0].id not in shown_ids(gallery) and gallery.model.total() == 5
    gallery.period.setCurrentIndex(0)
    store.set_favourite(entries[2].id)
    gallery.favourites.setChecked(True)
    assert shown_ids(gallery) == [entries[2].id]
    gallery.favourites.setChecked(False)
    store.delete(entries[1].id)
    gallery.trash.setChecked(True)
    assert shown_ids(gallery) == [entries[1].id] and gallery.empty_trash_button.isVisibleTo(gallery)


@pytest.mark.parametrize(
    ("action", "signal", "args"),
    [
        ("act_rerun", "rerunRequested", [False]),
        ("act_rerun_new_seed", "rerunRequested", [True]),
        ("act_load", "loadParametersRequested", []),
        ("act_init", "useAsInitRequested", []),
        ("act_inpaint", "useForInpaintRequested", []),
    ],
)
def test_actions_emit_the_current_entry_id(qtbot, gallery, entries, action, signal, args) -> None:
    gallery.view.setCurrentIndex(gallery.model.index(2))
    with qtbot.waitSignal(getattr(gallery, signal)) as emitted:
        getattr(gallery, action).trigger()
    assert emitted.args == [entries[-3].id, *args]


def test_actions_are_disabled_without_a_current_entry(gallery) -> None:
    assert not gallery.act_rerun.isEnabled() and not gallery.act_delete.isEnabled()
    assert not gallery.vary_menu.isEnabled()


def test_context_menu_offers_every_action(gallery) -> None:
    gallery.view.setCurrentIndex(gallery.model.index(0))
    texts = [a.text() for a in gallery.context_menu().actions() if not a.isSeparator()]
    assert texts == [
        "Re-run", "Re-run with new seed", "Vary", "Load parameters", "Use as init image", "Use for inpainting",
        "Copy parameters", "Favourite", "Open containing folder", "Go to parent", "Go to newest child",
        "Move to trash",
    ]
    gallery.store.delete(gallery.current_entry().id)
    gallery.trash.setChecked(True)
    gallery.view.setCurrentIndex(gallery.model.index(0))
    texts = [a.text() for a in gallery.context_menu().actions() if not a.isSeparator()]
    assert texts[-2:] == ["Restore", "Delete for good…"]


def test_copy_parameters_puts_the_png_text_on_the_clipboard(gallery, store) -> None:
    gallery.view.setCurrentIndex(gallery.model.index(0))
    gallery.act_copy.trigger()
    entry = gallery.current_entry()
    assert QGuiApplication.clipboard().text() == store.parameters_text(entry)
    assert QGuiApplication.clipboard().text().startswith(entry.prompt + "\nSteps: 20")


def test_open_containing_folder_opens_the_entry_folder(gallery, monkeypatch) -> None:
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()))
    gallery.view.setCurrentIndex(gallery.model.index(0))
    gallery.act_folder.trigger()
    assert opened == [str(gallery.current_entry().file.parent)]


def test_favourite_action_updates_store_cell_and_details(gallery, store) -> None:
    gallery.view.setCurrentIndex(gallery.model.index(1))
    entry_id = gallery.current_entry().id
    gallery.act_favourite.trigger()
    assert store.get(entry_id).favourite and gallery.model.entry(1).favourite
    assert gallery.details.toPlainText().startswith("★")
    gallery.act_favourite.trigger()
    assert not store.get(entry_id).favourite


def test_delete_key_moves_to_trash_and_restore_brings_it_back(qtbot, gallery, store, entries) -> None:
    gallery.view.setCurrentIndex(gallery.model.index(0))
    gallery.view.setFocus()
    qtbot.keyClick(gallery.view, Qt.Key.Key_Delete)
    assert store.get(entries[-1].id).deleted and entries[-1].id not in shown_ids(gallery)
    assert gallery.current_entry().id == entries[-2].id  # the next one is selected
    gallery.trash.setChecked(True)
    gallery.view.setCurrentIndex(gallery.model.index(0))
    assert gallery.act_restore.isVisible() and gallery.restore_button.isVisibleTo(gallery)
    gallery.act_restore.trigger()
    assert not store.get(entries[-1].id).deleted and gallery.model.total() == 0
    gallery.trash.setChecked(False)
    assert not gallery.restore_button.isVisibleTo(gallery) and not gallery.act_restore.isVisible()


def test_delete_key_in_the_trash_deletes_for_good_after_asking(qtbot, gallery, store, entries,
                                                                monkeypatch) -> None:
    store.delete(entries[0].id)
    store.delete(entries[1].id)
    gallery.trash.setChecked(True)
    gallery.view.setCurrentIndex(gallery.model.index(0))
    assert gallery.act_delete.text() == "Delete for good…"
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: answers.pop(0))
    gallery.view.setFocus()
    qtbot.keyClick(gallery.view, Qt.Key.Key_Delete)
    assert store.get(entries[1].id).deleted and gallery.model.total() == 2  # "No" keeps it in the trash
    file = store.get(entries[1].id).file
    qtbot.keyClick(gallery.view, Qt.Key.Key_Delete)
    assert store.get(entries[1].id) is None and not file.exists()
    assert store.get(entries[0].id).deleted and shown_ids(gallery) == [entries[0].id]
    assert not answers


def test_trash_and_favourite_toggles_look_pressed_when_checked(qtbot, gallery) -> None:
    from sdstudio.ui.theme import apply_theme

    app = QGuiApplication.instance()
    for theme in ("dark", "light"):
        apply_theme(app, theme)
        gallery.trash.setChecked(False)
        off = gallery.trash.grab().toImage()
        gallery.trash.setChecked(True)
        on = gallery.trash.grab().toImage()
        corner = (3, off.height() // 2)
        before, after = off.pixelColor(*corner), on.pixelColor(*corner)
        change = sum(abs(a - b) for a, b in zip(before.getRgb()[:3], after.getRgb()[:3], strict=True))
        assert change > 120, (theme, before.name(), after.name())  # plainly different, not a faint bevel
    apply_theme(app, "dark")


def test_empty_trash_asks_before_deleting(gallery, store, entries, monkeypatch) -> None:
    store.delete(entries[0].id)
    gallery.trash.setChecked(True)
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: answers.pop(0))
    gallery.empty_trash()
    assert store.get(entries[0].id) is not None
    gallery.empty_trash()
    assert store.get(entries[0].id) is None and gallery.model.total() == 0


def test_lineage_walks_up_and_down_the_chain(qtbot, store) -> None:
    root = add(store, "root", 3)
    child = add(store, "child", 2, parent_id=root.id)
    grandchild = add(store, "grandchild", 1, parent_id=child.id)
    bulk_entries(store, 250, newest=NOW, step=1)  # pushes the root beyond the first page
    gallery = make_gallery(qtbot, store)
    assert gallery.model.rowCount() < gallery.model.total()
    gallery.select_entry(grandchild.id)
    assert "Made from: child" in gallery.details.toPlainText()
    gallery.act_parent.trigger()
    assert gallery.current_entry().id == child.id
    gallery.act_parent.trigger()
    assert gallery.current_entry().id == root.id and gallery.view.currentIndex().row() == 252
    assert not gallery.act_parent.isEnabled()
    gallery.act_child.trigger()
    assert gallery.current_entry().id == child.id
    gallery.details.entryLinkActivated.emit(grandchild.id)  # a click on the "Used for" link
    assert gallery.current_entry().id == grandchild.id


def test_parent_outside_the_filter_is_shown_without_selection(gallery, store, entries) -> None:
    child = add(store, "a dog painted over", 0, parent_id=entries[0].id)
    gallery.model_filter.setCurrentIndex(gallery.model_filter.findData("sd15"))
    gallery.search.setText("dog")
    gallery.apply_filters()
    gallery.select_entry(child.id)
    gallery.act_parent.trigger()
    assert gallery.current_entry().id == entries[0].id and not gallery.view.currentIndex().isValid()


def test_add_entry_shows_a_new_result_at_the_top_when_the_filter_admits_it(gallery, store) -> None:
    new = add(store, "a fresh cat", 0, model="brand-new")
    gallery.add_entry(new)
    assert shown_ids(gallery)[0] == new.id and gallery.count_label.text() == "7 images"
    assert gallery.model_filter.findData("brand-new") >= 0
    gallery.search.setText("dog")
    gallery.apply_filters()
    gallery.add_entry(add(store, "another cat", 0))
    assert gallery.model.total() == 3


def test_new_results_hidden_by_the_filters_are_announced_and_shown_on_request(qtbot, gallery, store) -> None:
    gallery.search.setText("dog")
    gallery.apply_filters()
    assert not gallery.hidden_bar.isVisibleTo(gallery)
    gallery.add_entry(add(store, "a dog 9", 0))  # admitted: nothing to say
    assert not gallery.hidden_bar.isVisibleTo(gallery)
    first, second = add(store, "a new cat", 0), add(store, "a newer cat", 0)
    gallery.add_entry(first)
    assert gallery.hidden_bar.isVisibleTo(gallery) and gallery.hidden_label.text().startswith("1 new image is")
    gallery.add_entry(second)
    assert gallery.hidden_label.text().startswith("2 new images are")
    gallery.show_all_button.click()
    assert gallery.search.text() == "" and shown_ids(gallery)[:2] == [second.id, first.id]
    assert gallery.model.total() == 9 and not gallery.hidden_bar.isVisibleTo(gallery)


def test_thumbnails_load_for_visible_rows_only(qtbot, store, monkeypatch) -> None:
    bulk_entries(store, 80, newest=NOW)
    spy = ThumbnailSpy(monkeypatch)
    gallery = make_gallery(qtbot, store)
    visible = gallery.visible_rows()
    assert 0 < len(visible) < 80
    qtbot.waitUntil(lambda: all(gallery.model.has_thumbnail(gallery.model.entry(r).id) for r in visible))
    assert spy.loads == len(visible)
    assert not gallery.model.has_thumbnail(gallery.model.entry(visible.stop).id)


def test_period_start_is_local_midnight_days_ago() -> None:
    now = time.mktime((2025, 3, 10, 15, 30, 0, 0, 0, -1))
    assert period_start(None, now) is None
    assert time.localtime(period_start(0, now))[:6] == (2025, 3, 10, 0, 0, 0)
    assert time.localtime(period_start(7, now))[:3] == (2025, 3, 3)


def test_a_read_only_history_is_browsed_but_never_changed(qtbot, store, entries, monkeypatch) -> None:
    monkeypatch.setattr(store, "read_only_reason", "the outputs folder /mnt/art is missing (unmounted drive?)")
    gallery = make_gallery(qtbot, store)
    gallery.view.setCurrentIndex(gallery.model.index(0))
    assert gallery.act_rerun.isEnabled() and gallery.act_copy.isEnabled()
    assert not gallery.act_favourite.isEnabled() and not gallery.act_delete.isEnabled()
    assert not gallery.empty_trash_button.isEnabled()
    assert "unmounted drive" in gallery.act_delete.toolTip()
