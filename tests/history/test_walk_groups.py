"""A walk's frames in the history: walk_id in the record and the index, one row per walk for the gallery,
all frames of one walk on request, a version-1 index migrated, a re-run outside the walk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.request import GenerationRequest
from sdstudio.history import schema
from sdstudio.history.store import HistoryStore

T0 = 1_700_000_000.0


def add(store: HistoryStore, prompt: str, created: float, walk_id: str = "", seed: int = 1) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    request = GenerationRequest(prompt=prompt, seed=seed, steps=2, width=8, height=8, walk_id=walk_id)
    return store.add(Image.fromarray(pixels), request, "m", created=created).id


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    opened = HistoryStore(tmp_path / "outputs")
    yield opened
    opened.close()


def walk_history(store: HistoryStore) -> dict[str, list[str]]:
    """Two walks interleaved with single images (the newest single last)."""
    ids = {"single": [add(store, "lone cat", T0)]}
    ids["w1"] = [add(store, f"red apple {k}", T0 + 1 + k, "w1", seed=k) for k in range(4)]
    ids["w2"] = [add(store, f"blue circle {k}", T0 + 10 + k, "w2", seed=k) for k in range(3)]
    ids["single"].append(add(store, "lone dog", T0 + 20))
    return ids


def test_grouped_pages_show_one_row_per_walk_and_a_walk_filter_shows_its_frames(store: HistoryStore) -> None:
    ids = walk_history(store)
    grouped = schema.Filter(group_walks=True)
    page = store.page_for(grouped)
    assert [e.id for e in page] == [ids["single"][1], ids["w2"][0], ids["w1"][0], ids["single"][0]]
    assert [e.walk_id for e in page] == ["", "w2", "w1", ""]
    assert store.count(grouped) == 4 and store.count() == 9  # plain counts still count every image
    for row, entry in enumerate(page):
        assert store.rank(entry.id, grouped) == row
    assert store.rank(ids["w1"][2], grouped) is None  # a frame behind its tile
    assert [e.id for e in store.page_for(schema.Filter(walk="w1"))] == ids["w1"][::-1]
    assert [e.id for e in store.walk_frames("w1")] == ids["w1"]
    assert store.walk_frames("") == [] and store.walk_frames("nope") == []


def test_grouping_keeps_the_other_filters(store: HistoryStore) -> None:
    ids = walk_history(store)
    # Only frames 2 and 3 of w1 match: the first matching frame stands for the walk.
    page = store.page_for(schema.Filter(query="apple", group_walks=True, since=T0 + 3))
    assert [e.id for e in page] == [ids["w1"][2]]
    store.delete(ids["w2"][0])  # the trashed first frame: the next one stands for the walk
    assert ids["w2"][1] in [e.id for e in store.page_for(schema.Filter(group_walks=True))]
    assert [e.id for e in store.page_for(schema.Filter(group_walks=True, deleted=True))] == [ids["w2"][0]]
    assert [e.id for e in store.walk_frames("w2")] == ids["w2"][1:]


def test_walk_id_is_in_the_record_and_survives_a_rebuilt_index(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "outputs")
    ids = walk_history(store)
    found = store.read(store.get(ids["w1"][1]))
    assert found.request.walk_id == "w1"
    assert found.rerun_request().walk_id == ""  # a re-run of a frame is not a frame of that walk
    store.close()
    store.db_path.unlink()
    store = HistoryStore(tmp_path / "outputs")
    assert [e.id for e in store.walk_frames("w1")] == ids["w1"]
    store.close()


def test_a_version_1_index_gets_the_walk_column_and_keeps_its_rows(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "outputs")
    kept = add(store, "old image", T0)
    store.set_favourite(kept)
    store.close()
    db = sqlite3.connect(store.db_path)  # back to version 1: the table without walk_id
    db.executescript("DROP INDEX entries_by_walk; ALTER TABLE entries DROP COLUMN walk_id; PRAGMA user_version = 1;")
    db.close()
    store = HistoryStore(tmp_path / "outputs", reconcile=False)
    assert [(e.id, e.favourite, e.walk_id) for e in store.page()] == [(kept, True, "")]
    added = add(store, "new frame", T0 + 1, "w9")
    assert [e.id for e in store.walk_frames("w9")] == [added]
    store.close()
    version = sqlite3.connect(store.db_path).execute("PRAGMA user_version").fetchone()[0]
    assert version == schema.SCHEMA_VERSION == 2
