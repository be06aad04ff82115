"""A 20,000-entry history: opening it (index reconcile included) shows the first page in under a second,
and scrolling only ever queues and loads the thumbnails of the rows on screen."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sdstudio.history.store import HistoryStore
from sdstudio.ui.gallery import GalleryWidget
from tests.history.synthetic import bulk_entries

ENTRIES = 20_000


@pytest.fixture(scope="module")
def big_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("big") / "outputs"
    store = HistoryStore(root)
    started = time.perf_counter()
    bulk_entries(store, ENTRIES, newest=time.time())
    print(f"\n{ENTRIES} synthetic entries made in {time.perf_counter() - started:.2f} s")
    store.close()
    return root


def wait_for_visible_thumbnails(qtbot, gallery: GalleryWidget) -> None:
    def loaded() -> bool:
        rows = gallery.visible_rows()
        return all(gallery.model.has_thumbnail(gallery.model.entry(r).id) for r in rows)

    qtbot.waitUntil(loaded, timeout=10_000)


def test_first_page_of_20000_entries_opens_in_under_a_second(qtbot, big_root: Path) -> None:
    started = time.perf_counter()
    store = HistoryStore(big_root)
    opened = time.perf_counter()
    first_page = store.page(0, 200)
    paged = time.perf_counter()
    gallery = GalleryWidget(store)
    qtbot.addWidget(gallery)
    gallery.resize(420, 700)
    gallery.show()
    qtbot.waitExposed(gallery)
    shown = time.perf_counter()
    wait_for_visible_thumbnails(qtbot, gallery)
    thumbnails = time.perf_counter()
    search_started = time.perf_counter()
    found = store.page(query="dragon castle", limit=200)
    searched = time.perf_counter()
    print(
        f"\nopen+reconcile {opened - started:.3f} s, first page query {paged - opened:.3f} s, "
        f"gallery shown {shown - started:.3f} s, visible thumbnails {thumbnails - started:.3f} s "
        f"({gallery.loader.loads} loaded), search {searched - search_started:.3f} s"
    )
    assert len(first_page) == 200 and gallery.model.total() == ENTRIES and len(found) == 200
    assert shown - started < 1.0
    assert gallery.loader.loads == len(gallery.visible_rows())
    store.close()


def test_scrolling_20000_entries_loads_only_a_screenful_at_a_time(qtbot, big_root: Path) -> None:
    store = HistoryStore(big_root, reconcile=False)
    gallery = GalleryWidget(store)
    qtbot.addWidget(gallery)
    gallery.resize(420, 700)
    gallery.show()
    qtbot.waitExposed(gallery)
    wait_for_visible_thumbnails(qtbot, gallery)
    screenful = len(gallery.visible_rows())
    assert screenful > 0 and gallery.loader.loads == screenful

    bar = gallery.view.verticalScrollBar()
    for value in range(0, bar.maximum() + 1, max(1, bar.maximum() // 40)):  # a fast flick through the page
        bar.setValue(value)
        qtbot.wait(2)
    bar.setValue(bar.maximum() // 2)
    before = gallery.loader.loads
    qtbot.wait(100)
    wait_for_visible_thumbnails(qtbot, gallery)
    assert gallery.loader.most_queued <= screenful + 3  # one cell row more when the view sits between rows
    assert gallery.loader.loads - before <= screenful + 3

    rows = gallery.model.rowCount()
    bar.setValue(bar.maximum())  # reaching the end fetches the next page
    qtbot.waitUntil(lambda: gallery.model.rowCount() > rows)
    assert gallery.model.rowCount() < ENTRIES
    store.close()
