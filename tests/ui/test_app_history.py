"""What the window says when the history store opens in a degraded way (app.start_background)."""

import os

from sdstudio import paths
from sdstudio.history import store as store_module
from sdstudio.ui.app import start_background
from sdstudio.ui.token_counter import LazyTokenCounter


def open_history(window, monkeypatch):
    monkeypatch.setattr(window.worker, "start", lambda: None)  # the fixture started it already
    link = start_background(window, LazyTokenCounter(loader=lambda: None))
    assert link is not None, window.canvas_panel.banner.text.text()
    return link


def close(link) -> None:
    link.flush()
    link.store.close()


def test_a_damaged_index_is_rebuilt_and_the_user_told_once(window, home, monkeypatch):
    paths.history_db().parent.mkdir(parents=True, exist_ok=True)
    paths.history_db().write_bytes(b"garbage, not SQLite " * 100)
    link = open_history(window, monkeypatch)
    shown = window.canvas_panel.banner.text.text()
    assert "history index was damaged" in shown and ".damaged-" in shown and "indexed again" in shown
    assert link.store.count() == 0 and not link.store.read_only
    close(link)


def test_a_read_only_data_folder_is_named_in_the_banner(window, home, monkeypatch):
    open_history(window, monkeypatch).store.close()  # an index to open read-only
    monkeypatch.setattr(store_module.os, "access", lambda path, mode: mode != os.W_OK)
    link = open_history(window, monkeypatch)
    assert window.canvas_panel.banner.text.text().startswith("History is read-only: the data folder")
    close(link)
