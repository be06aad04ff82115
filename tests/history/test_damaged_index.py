"""A damaged index is set aside and rebuilt from the PNGs; a data folder the user cannot write opens read-only."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from sdstudio.engine.errors import HistoryReadOnly
from sdstudio.engine.request import GenerationRequest
from sdstudio.history import store as store_module
from sdstudio.history.store import HistoryStore

T0 = 1_700_000_000.0


def filled(root: Path, count: int = 30) -> tuple[Path, dict[str, str]]:
    """A store with `count` entries (one favourite), closed; its index path and {id: prompt}."""
    store = HistoryStore(root)
    ids = {}
    for i in range(count):
        # Long prompts spread the rows and the FTS index over many pages.
        request = GenerationRequest(prompt=f"entry {i} " + "many words here " * 40, seed=i, width=8, height=8)
        ids[store.add(Image.new("RGB", (8, 8), (i, 2 * i, 3 * i)), request, created=T0 + i).id] = request.prompt
    store.set_favourite(next(iter(ids)))
    db = store.db_path
    store.close()
    return db, ids


def zero_page(db: Path, page: int) -> None:
    size = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    with open(db, "r+b") as file:
        file.seek((page - 1) * size)
        file.write(bytes(size))


def damage_zeroed(db: Path) -> None:
    zero_page(db, 3)


def damage_garbage(db: Path) -> None:
    db.write_bytes(b"not a database at all " * 500)


def damage_truncated(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("damage", [damage_zeroed, damage_garbage, damage_truncated])
def test_a_damaged_index_is_kept_aside_and_rebuilt_from_the_pngs(tmp_path: Path, damage) -> None:
    root = tmp_path / "outputs"
    db, ids = filled(root)
    damage(db)
    damaged_bytes = db.read_bytes()

    store = HistoryStore(root)
    assert "damaged" in store.notice and f"{len(ids)} images were indexed again" in store.notice
    copies = list(root.glob("history.sqlite3.damaged-*"))
    assert [c.read_bytes() for c in copies if not c.name.endswith(("-wal", "-shm"))] == [damaged_bytes]
    entries = store.page(limit=100)
    assert {e.id: e.prompt for e in entries} == ids
    assert [e.id for e in entries if e.favourite] == [next(iter(ids))]  # from the favourites file
    added = store.add(Image.new("RGB", (8, 8)), GenerationRequest(prompt="after the rebuild", width=8, height=8))
    assert store.get(added.id) is not None
    store.close()
    assert HistoryStore(root).notice == ""  # a sound index is opened as it is


def test_a_read_only_data_folder_can_be_browsed(tmp_path: Path, monkeypatch) -> None:
    # Tests run as root, where chmod does not stop writes: the store's writability check is told "no".
    root = tmp_path / "outputs"
    db, ids = filled(root, 3)
    real_access = os.access
    monkeypatch.setattr(store_module.os, "access", lambda p, mode: False if mode == os.W_OK else real_access(p, mode))
    before = db.read_bytes()

    store = HistoryStore(root)
    assert store.read_only and store.index.read_only
    assert {e.id for e in store.page()} == set(ids)
    assert store.count(query="entry") == 3
    with pytest.raises(HistoryReadOnly, match=r"^history is read-only: the data folder .* is not writable; make it writable and restart"):
        store.add(Image.new("RGB", (8, 8)), GenerationRequest(prompt="x", width=8, height=8))
    with pytest.raises(HistoryReadOnly):
        store.set_favourite(next(iter(ids)), False)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # the connection itself is read-only
        store.index.set_deleted(next(iter(ids)), True)
    store.close()
    assert db.read_bytes() == before
