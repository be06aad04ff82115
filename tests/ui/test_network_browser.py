"""The LoRA / embedding browser: listing, search, previews, family greying, tags and weights in the prompt,
extra folders saved in the settings and handed to the engine."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QPlainTextEdit

from sdstudio import paths
from sdstudio.network_catalog import EMBEDDING, LORA, NetworkCatalog, NetworkEntry
from sdstudio.ui.network_browser import ENTRY_ROLE, NetworkBrowser
from sdstudio.ui.network_tags import find_tag, insert_at, python_index, tag_text, utf16_position
from sdstudio.ui.settings import load_network_dirs, open_settings
from tests.engine.st_files import write_header_only
from tests.test_network_catalog import kohya_sd1_shapes, tag_frequency


def _files(home, tmp_path):
    lora = paths.lora_dir()
    lora.mkdir(parents=True)
    write_header_only(lora / "inkpunk.safetensors", kohya_sd1_shapes(text_encoder=False),
                      metadata={"ss_output_name": "Inkpunk_v2", "ss_tag_frequency": tag_frequency({"nvinkpunk": 9,
                                                                                                   "neon": 2})})
    image = QImage(64, 96, QImage.Format.Format_RGB32)
    image.fill(Qt.GlobalColor.magenta)
    image.save(str(lora / "inkpunk.preview.png"))
    write_header_only(lora / "xl_detail.safetensors", {"lora_te1_x.lora_down.weight": (4, 768)})
    (lora / "broken.safetensors").write_bytes(b"\x05\x00")
    emb = paths.embeddings_dir()
    emb.mkdir(parents=True)
    write_header_only(emb / "bad-hands.safetensors", {"emb_params": (6, 768)})
    extra = tmp_path / "comfy" / "loras"
    extra.mkdir(parents=True)
    write_header_only(extra / "comfy_style.safetensors", kohya_sd1_shapes(text_encoder=False))
    return extra


@pytest.fixture
def browser(qtbot, home, tmp_path):
    extra = _files(home, tmp_path)
    prompt = QPlainTextEdit()
    qtbot.addWidget(prompt)
    browser = NetworkBrowser(prompt, NetworkCatalog())
    qtbot.addWidget(browser)
    browser.extra_folder = str(extra)
    browser.set_model_family("sd1")
    browser.show()
    with qtbot.waitSignal(browser.scanned, timeout=10_000):
        browser.rescan()
    return browser


def names(browser) -> list[str]:
    return [item.data(ENTRY_ROLE).name for item in browser.entry_items()]


def item_named(browser, name):
    return next(item for item in browser.entry_items() if item.data(ENTRY_ROLE).name == name)


def test_lists_files_with_previews_triggers_and_greys_other_families(qtbot, browser):
    assert names(browser) == ["broken", "inkpunk", "xl_detail"]
    ink = item_named(browser, "inkpunk")
    assert "Inkpunk_v2 · nvinkpunk, neon" in ink.text()
    def icon_centre():
        image = ink.icon().pixmap(48, 48).toImage()
        return image.pixelColor(image.width() // 2, image.height() // 2)

    qtbot.waitUntil(lambda: icon_centre() == QColor(Qt.GlobalColor.magenta), timeout=5000)
    assert item_named(browser, "xl_detail").icon().pixmap(48, 48).toImage().pixelColor(24, 24).alpha() == 0
    assert ink.flags() & Qt.ItemFlag.ItemIsEnabled
    xl = item_named(browser, "xl_detail")
    assert not xl.flags() & Qt.ItemFlag.ItemIsEnabled and "Made for SDXL; the loaded model is SD 1.x" in xl.toolTip()
    broken = item_named(browser, "broken")
    assert not broken.flags() & Qt.ItemFlag.ItemIsEnabled and "Unreadable:" in broken.toolTip()
    assert "3 files · 1 for another model (greyed) · 1 unreadable" == browser.status.text()
    browser.set_model_family("sdxl")
    assert item_named(browser, "xl_detail").flags() & Qt.ItemFlag.ItemIsEnabled
    assert not item_named(browser, "inkpunk").flags() & Qt.ItemFlag.ItemIsEnabled


def test_search_by_name_and_the_embeddings_tab(browser):
    browser.search.setText("INK")
    assert names(browser) == ["inkpunk"] and browser.status.text().startswith("1 of 3 shown")
    browser.search.setText("v2")  # the alias
    assert names(browser) == ["inkpunk"]
    browser.search.clear()
    browser.tabs.setCurrentIndex(1)
    assert names(browser) == ["bad-hands"]
    assert "6 token slots" in item_named(browser, "bad-hands").toolTip()


def test_a_click_inserts_the_tag_at_the_cursor_and_the_weight_box_rewrites_it(qtbot, browser):
    prompt = browser.prompt_edit
    prompt.setPlainText("a 🦊 fox, night")
    cursor = prompt.textCursor()
    cursor.setPosition(utf16_position(prompt.toPlainText(), len("a 🦊 fox,")))
    prompt.setTextCursor(cursor)
    browser.list.itemClicked.emit(item_named(browser, "inkpunk"))
    assert prompt.toPlainText() == "a 🦊 fox, <lora:inkpunk:1> night"
    assert browser.weight_spin is not None and browser.weight_spin.value() == 1.0
    browser.weight_spin.setValue(0.65)
    assert prompt.toPlainText() == "a 🦊 fox, <lora:inkpunk:0.65> night"
    prompt.undo()
    assert prompt.toPlainText() == "a 🦊 fox, <lora:inkpunk:1> night"  # one undo step per change
    # Clicking again finds the tag instead of adding a second one, and shows its weight.
    prompt.setPlainText("x <lora:inkpunk:0.4:0.2> y")
    browser.list.itemClicked.emit(item_named(browser, "inkpunk"))
    assert prompt.toPlainText() == "x <lora:inkpunk:0.4:0.2> y" and browser.weight_spin.value() == 0.4
    browser.weight_spin.setValue(1.25)
    assert prompt.toPlainText() == "x <lora:inkpunk:1.25> y"


def test_greyed_files_are_not_inserted_and_embeddings_insert_their_name(browser):
    prompt = browser.prompt_edit
    prompt.setPlainText("portrait")
    prompt.moveCursor(prompt.textCursor().MoveOperation.End)
    browser.list.itemClicked.emit(item_named(browser, "xl_detail"))
    assert prompt.toPlainText() == "portrait" and browser.weight_spin is None
    browser.tabs.setCurrentIndex(1)
    browser.list.itemClicked.emit(item_named(browser, "bad-hands"))
    assert prompt.toPlainText() == "portrait bad-hands"
    browser.weight_spin.setValue(0.8)
    assert prompt.toPlainText() == "portrait (bad-hands:0.8)"
    browser.weight_spin.setValue(1.0)
    assert prompt.toPlainText() == "portrait bad-hands"


def test_trigger_words_insert_from_the_context_menu(browser):
    browser.prompt_edit.setPlainText("")
    browser.insert_text(", ".join(item_named(browser, "inkpunk").data(ENTRY_ROLE).triggers))
    assert browser.prompt_edit.toPlainText() == "nvinkpunk, neon"


def test_extra_folders_are_scanned_saved_and_handed_to_the_worker(qtbot, home, tmp_path, make_window):
    from sdstudio.ui.network_dock import dock_network_browser

    extra = _files(home, tmp_path)
    window = make_window()
    browser = dock_network_browser(window)
    qtbot.waitUntil(lambda: "inkpunk" in names(browser), timeout=10_000)
    assert "comfy_style" not in names(browser)
    assert window.network_dock.toggleViewAction() in window.view_menu.actions()
    assert not window.network_dock.isVisible()  # closed until asked for: a small window keeps its canvas
    window.panel.networks_button.click()
    assert window.network_dock.isVisible() and browser.search.hasFocus()
    with qtbot.waitSignal(browser.scanned, timeout=10_000):
        browser.add_folder(LORA, str(extra))
    assert "comfy_style" in names(browser)
    assert load_network_dirs(open_settings()) == ([str(extra)], [])
    assert window.worker._network_dirs == ([str(extra)], [])
    emb_extra = tmp_path / "a1111" / "embeddings"
    emb_extra.mkdir(parents=True)
    write_header_only(emb_extra / "easynegative.safetensors", {"emb_params": (8, 768)})
    with qtbot.waitSignal(browser.scanned, timeout=10_000):
        browser.add_folder(EMBEDDING, str(emb_extra))
    assert window.counter.embeddings.extra == (str(emb_extra),)  # the token counter looks there too
    assert window.counter.count("easynegative").tokens == 8
    with qtbot.waitSignal(browser.scanned, timeout=10_000):
        browser.remove_folder(EMBEDDING, str(emb_extra))
    with qtbot.waitSignal(browser.scanned, timeout=10_000):
        browser.remove_folder(LORA, str(extra))
    assert "comfy_style" not in names(browser) and load_network_dirs(open_settings()) == ([], [])


def test_the_worker_hands_the_folders_to_the_engine_before_each_job(qtbot, make_window, engine):
    window = make_window()
    window.worker.set_network_dirs(["/a1111/models/Lora"], ["/a1111/embeddings"])
    with qtbot.waitSignal(window.worker.jobFinished, timeout=10_000):
        window.generate()
    assert (engine.lora_dirs, engine.embedding_dirs) == (["/a1111/models/Lora"], ["/a1111/embeddings"])


def test_settings_ignore_damaged_folder_lists(home, qapp):
    settings = open_settings()
    settings.setValue("networks/lora_dirs", "{not json")
    settings.setValue("networks/embedding_dirs", json.dumps(["/ok", 5, ""]))
    assert load_network_dirs(settings) == ([], ["/ok"])


@pytest.mark.parametrize(("text", "kind", "name", "expected"), [
    ("a <lora:x:0.5> b", LORA, "x", (2, 14, 0.5)),
    ("<lora:x.v2> <lora:x:2>", LORA, "x", (12, 22, 2.0)),
    ("(emb:1.3), emb", EMBEDDING, "emb", (0, 9, 1.3)),
    ("my-emb, emb", EMBEDDING, "emb", (8, 11, 1.0)),
    ("nothing here", EMBEDDING, "emb", None),
])
def test_find_tag(text, kind, name, expected):
    span = find_tag(text, NetworkEntry(kind=kind, path="", name=name))
    assert (None if span is None else (span.start, span.end, span.weight)) == expected


def test_tag_text_and_insertion_spacing():
    lora = NetworkEntry(kind=LORA, path="", name="a b")
    assert tag_text(lora, 0.8) == "<lora:a b:0.8>" and tag_text(lora) == "<lora:a b:1>"
    assert insert_at("cat,dog", 4, "T") == ("cat, T dog", 6)
    assert insert_at("", 0, "T") == ("T", 1)
    assert insert_at("cat ", 4, "T") == ("cat T", 5)
    text = "🦊x🦊"
    for i in range(len(text) + 1):
        assert python_index(text, utf16_position(text, i)) == i


def test_enter_on_an_item_inserts_it_once(qtbot, browser):
    browser.prompt_edit.setPlainText("")
    browser.list.setFocus()
    browser.list.setCurrentItem(item_named(browser, "inkpunk"))
    qtbot.keyClick(browser.list, Qt.Key.Key_Return)
    qtbot.keyClick(browser.list, Qt.Key.Key_Return)
    assert browser.prompt_edit.toPlainText() == "<lora:inkpunk:1>"


def test_thumbnails_are_decoded_once_and_a_broken_preview_is_harmless(qtbot, browser):
    (paths.lora_dir() / "broken.png").write_bytes(b"not a png")
    with qtbot.waitSignal(browser.scanned, timeout=10_000):
        browser.rescan()
    qtbot.waitUntil(lambda: not browser._icon_queue, timeout=5000)
    browser.search.setText("inkpunk")  # a refill: the thumbnail is there at once, from the cache
    image = item_named(browser, "inkpunk").icon().pixmap(48, 48).toImage()
    assert image.pixelColor(image.width() // 2, image.height() // 2) == QColor(Qt.GlobalColor.magenta)
    assert not browser._icon_queue
    browser.search.clear()
    assert item_named(browser, "broken").icon().pixmap(48, 48).toImage().pixelColor(24, 24).alpha() == 0


def test_a_failing_scan_says_why_and_a_damaged_cache_is_logged(qtbot, browser, monkeypatch):
    from sdstudio.errorlog import log_path

    browser.catalog.cache_path.write_text("{damaged", encoding="utf-8")
    browser.catalog = NetworkCatalog()
    with qtbot.waitSignal(browser.scanned, timeout=10_000):
        browser.rescan()
    assert "network_catalog.json unreadable, rescanning" in log_path().read_text(encoding="utf-8")
    assert names(browser) == ["broken", "inkpunk", "xl_detail"]

    def boom(*_args):
        raise OSError("disk on fire")

    monkeypatch.setattr(browser.catalog, "scan", boom)
    with qtbot.waitSignal(browser.scanned, timeout=10_000):
        browser.rescan()
    assert browser.status.text().startswith("Could not scan the folders: Unexpected error (OSError: disk on fire)")
    assert names(browser) == ["broken", "inkpunk", "xl_detail"]  # the last good list stays
