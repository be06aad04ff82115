"""HistoryStore: add, read back, search, page, favourite, trash, lineage, re-run requests."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.errors import HistoryReadOnly, RequestError
from sdstudio.engine.request import GenerationRequest, GenerationResult
from sdstudio.history import schema
from sdstudio.history.png import read_png_parameters
from sdstudio.history.store import HistoryStore

DAY = 86400.0
T0 = 1_700_000_000.0


def fake_generate(request: GenerationRequest) -> Image.Image:
    """A deterministic stand-in for the engine: pixels depend on every field that matters."""
    key = f"{request.prompt}|{request.negative_prompt}|{request.steps}|{request.cfg_scale}|{request.sampler}"
    rng = np.random.default_rng([request.seed, zlib.crc32(key.encode())])
    pixels = rng.integers(0, 256, (request.height, request.width, 3), dtype=np.uint8)
    if request.init_image is not None:
        init = np.asarray(request.init_image.convert("RGB"), dtype=np.uint16)
        pixels = ((pixels + init) // 2).astype(np.uint8)
    if request.mask is not None:
        keep = np.asarray(request.mask)[..., None] < 128
        pixels = np.where(keep, np.asarray(request.init_image.convert("RGB")), pixels)
    return Image.fromarray(pixels)


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    opened = HistoryStore(tmp_path / "outputs")
    yield opened
    opened.close()


def add(store: HistoryStore, prompt: str, created: float, model: str = "sd15", **fields) -> str:
    request = GenerationRequest(prompt=prompt, width=8, height=8, **fields)
    return store.add(fake_generate(request), request, model, created=created).id


def test_add_writes_png_with_parameters_then_indexes_it(store: HistoryStore) -> None:
    request = GenerationRequest(prompt="a cat", negative_prompt="dog", seed=7, width=16, height=8, model_hash="abc")
    entry = store.add(fake_generate(request), request, "sd15", created=T0)
    assert entry == store.get(entry.id)
    assert (entry.prompt, entry.negative, entry.seed, entry.width, entry.height) == ("a cat", "dog", 7, 16, 8)
    assert (entry.model_name, entry.model_hash, entry.mode, entry.favourite, entry.deleted) == (
        "sd15", "abc", "txt2img", False, False,
    )
    assert entry.file.parent.parent == store.root and entry.file.exists()
    text, record = read_png_parameters(entry.file)
    assert text.startswith("a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a")
    assert "Model: sd15" in text and "Model hash: abc" in text
    assert record["id"] == entry.id and record["request"]["seed"] == 7
    assert store.thumbnails.path(entry.id).exists()


def test_rerun_of_a_stored_entry_gives_identical_pixels(store: HistoryStore) -> None:
    init = Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))
    mask = Image.fromarray(np.tile(np.array([0, 255] * 4, dtype=np.uint8), (8, 1)))
    requests = [
        GenerationRequest(prompt="txt", seed=3, width=8, height=8, sampler="DPM++ 2M", scheduler="karras"),
        GenerationRequest(prompt="img", seed=4, width=8, height=8, init_image=init, strength=0.4),
        GenerationRequest(prompt="inp", seed=5, width=8, height=8, init_image=init, mask=mask, only_masked=True),
    ]
    for request in requests:
        original = fake_generate(request)
        entry = store.add(original, request, "sd15")
        again = store.request_for(entry)
        assert again == request and again.mode == request.mode == entry.mode
        assert np.array_equal(np.asarray(fake_generate(again)), np.asarray(original))
        with Image.open(entry.file) as saved:
            assert np.array_equal(np.asarray(saved), np.asarray(original))


def test_add_result_stores_one_entry_per_image(store: HistoryStore) -> None:
    requests = [GenerationRequest(prompt="batch", seed=s, width=8, height=8) for s in (10, 11)]
    result = GenerationResult([fake_generate(r) for r in requests], requests, model_name="m")
    entries = store.add_result(result)
    assert [e.seed for e in entries] == [10, 11] and {e.model_name for e in entries} == {"m"}


def test_page_is_newest_first_and_pages_do_not_overlap(store: HistoryStore) -> None:
    ids = [add(store, f"prompt {i}", T0 + i) for i in range(7)]
    first, second = store.page(0, 4), store.page(4, 4)
    assert [e.id for e in first + second] == ids[::-1]
    assert store.count() == 7


@pytest.mark.parametrize("fts", [True, False], ids=["fts5", "like-fallback"])
def test_search_matches_words_in_prompt_and_negative(tmp_path: Path, monkeypatch, fts: bool) -> None:
    if not fts:
        monkeypatch.setattr(schema, "fts5_available", lambda db: False)
    store = HistoryStore(tmp_path / "out")
    assert store.has_fts is fts
    add(store, "a red fox in the snow", T0)
    add(store, "a red car, Café racer", T0 + 1, negative_prompt="blurry")
    add(store, "猫の写真", T0 + 2)
    add(store, "snowy_mountain", T0 + 3)
    prompts = lambda **kw: sorted(e.prompt for e in store.page(**kw))  # noqa: E731
    assert prompts(query="red") == ["a red car, Café racer", "a red fox in the snow"]
    assert prompts(query="red snow") == ["a red fox in the snow"]
    assert prompts(query="blurry") == ["a red car, Café racer"]
    assert prompts(query="cafe" if fts else "Café") == ["a red car, Café racer"]
    assert prompts(query="猫の写真") == ["猫の写真"]
    assert prompts(query="snowy_mountain") == ["snowy_mountain"]
    assert prompts(query='"unbalanced ( OR') == []
    assert store.count(query="red") == 2
    store.close()


def test_filters_by_model_date_and_favourite(store: HistoryStore) -> None:
    old = add(store, "old", T0, model="sd15")
    mid = add(store, "mid", T0 + DAY, model="sdxl")
    new = add(store, "new", T0 + 2 * DAY, model="sd15")
    store.set_favourite(mid)
    assert [e.id for e in store.page(model="sd15")] == [new, old]
    assert [e.id for e in store.page(since=T0 + DAY)] == [new, mid]
    assert [e.id for e in store.page(since=T0, until=T0 + DAY)] == [old]
    assert [e.id for e in store.page(favourite=True)] == [mid]
    assert store.get(mid).favourite
    store.set_favourite(mid, False)
    assert store.page(favourite=True) == []
    assert store.models() == ["sd15", "sdxl"]
    assert store.count(model="sdxl", since=T0 + DAY) == 1


def test_delete_moves_to_trash_and_restore_brings_it_back(store: HistoryStore) -> None:
    init = Image.new("RGB", (8, 8), "white")
    request = GenerationRequest(prompt="x", width=8, height=8, init_image=init)
    entry = store.add(fake_generate(request), request)
    live_file = entry.file
    init_file = live_file.with_name(live_file.stem + ".init.png")
    assert init_file.exists()
    store.delete(entry.id)
    trashed = store.get(entry.id)
    assert trashed.deleted and not live_file.exists() and not init_file.exists()
    assert trashed.file.exists() and store.layout.trash in trashed.file.parents
    assert store.page() == [] and [e.id for e in store.page(deleted=True)] == [entry.id]
    assert store.request_for(trashed).init_image is not None
    store.restore(entry.id)
    assert store.get(entry.id).file == live_file and live_file.exists() and init_file.exists()
    assert [e.id for e in store.page()] == [entry.id]


def test_empty_trash_removes_only_trashed_entries(store: HistoryStore) -> None:
    keep, drop = add(store, "keep", T0), add(store, "drop", T0 + 1)
    store.delete(drop)
    dropped_file = store.get(drop).file
    assert store.empty_trash() == 1
    assert store.get(drop) is None and not dropped_file.exists()
    assert [e.id for e in store.page()] == [keep]


def test_purge_deletes_one_entry_and_its_files_for_good(store: HistoryStore) -> None:
    keep, drop, live = add(store, "keep", T0), add(store, "drop", T0 + 1), add(store, "live", T0 + 2)
    store.delete(keep)
    store.delete(drop)
    trashed_file, live_file = store.get(drop).file, store.get(live).file
    store.purge(drop)
    store.purge(live)  # a live entry too: nothing of it is left
    assert store.get(drop) is None and not trashed_file.exists()
    assert store.get(live) is None and not live_file.exists()
    assert store.get(keep).deleted and store.get(keep).file.exists()
    with pytest.raises(KeyError):
        store.purge(drop)


def test_lineage_parent_and_children(store: HistoryStore) -> None:
    root = add(store, "root", T0)
    child_a = add(store, "a", T0 + 1, parent_id=root)
    child_b = add(store, "b", T0 + 2, parent_id=root)
    grandchild = add(store, "g", T0 + 3, parent_id=child_a)
    assert store.parent(grandchild).id == child_a and store.parent(child_a).id == root
    assert store.parent(root) is None
    assert [e.id for e in store.children(root)] == [child_b, child_a]
    assert store.request_for(store.get(grandchild)).parent_id == child_a


def test_request_for_an_image_without_parameters_says_so(store: HistoryStore) -> None:
    entry = store.get(add(store, "x", T0))
    Image.new("RGB", (8, 8)).save(entry.file)  # parameters stripped by some other program
    with pytest.raises(RequestError, match="no generation parameters"):
        store.request_for(entry)


def test_store_reopens_with_the_same_entries(tmp_path: Path) -> None:
    first = HistoryStore(tmp_path / "out", tmp_path / "db.sqlite3")
    ids = [add(first, f"p{i}", T0 + i) for i in range(3)]
    first.set_favourite(ids[0])
    first.close()
    again = HistoryStore(tmp_path / "out", tmp_path / "db.sqlite3")
    assert [e.id for e in again.page()] == ids[::-1] and again.get(ids[0]).favourite
    again.close()


def test_index_made_without_fts5_is_searchable_once_fts5_is_there(tmp_path: Path, monkeypatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(schema, "fts5_available", lambda db: False)
        plain = HistoryStore(tmp_path / "out")
        add(plain, "a lighthouse at dusk", T0)
        plain.close()
    searchable = HistoryStore(tmp_path / "out")
    assert searchable.has_fts
    assert [e.prompt for e in searchable.page(query="lighthouse")] == ["a lighthouse at dusk"]
    searchable.close()


def test_rank_is_the_row_of_an_entry_in_a_filtered_page(store: HistoryStore) -> None:
    ids = [add(store, "cat" if i % 2 else "dog", T0 + i // 2) for i in range(8)]  # equal times in pairs
    for selection in (schema.Filter(), schema.Filter(query="cat")):
        order = [e.id for e in store.page_for(selection, 0, 100)]
        assert [store.rank(i, selection) for i in order] == list(range(len(order)))
    assert store.rank(ids[0], schema.Filter(query="cat")) is None


def test_a_missing_outputs_folder_is_not_recreated_and_loses_nothing(tmp_path: Path) -> None:
    root, db = tmp_path / "drive" / "outputs", tmp_path / "home" / "history.sqlite3"
    store = HistoryStore(root, db)
    kept, trashed = add(store, "a kept favourite", T0), add(store, "a trashed one", T0 + 1)
    store.set_favourite(kept)
    store.delete(trashed)
    store.close()
    (tmp_path / "drive").rename(tmp_path / "unmounted")

    store = HistoryStore(root, db)
    assert not root.exists(), "an empty outputs folder was made in place of the missing one"
    assert store.read_only and "missing (unmounted drive?)" in store.notice
    assert [e.id for e in store.page()] == [kept] and [e.id for e in store.page(deleted=True)] == [trashed]
    with pytest.raises(HistoryReadOnly, match="history is read-only: the outputs folder .* is missing"):
        add(store, "not now", T0 + 2)
    store.close()

    (tmp_path / "unmounted").rename(tmp_path / "drive")
    store = HistoryStore(root, db)
    assert not store.read_only
    assert [(e.id, e.favourite) for e in store.page()] == [(kept, True)]
    assert [e.id for e in store.page(deleted=True)] == [trashed]
    store.close()


def test_rows_stay_while_their_day_folder_is_missing(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "outputs")
    entry_id = add(store, "in a day folder moved away", T0)
    day = store.get(entry_id).file.parent
    day.rename(tmp_path / "elsewhere")
    store.reconcile()
    assert store.get(entry_id) is not None
    (tmp_path / "elsewhere").rename(day)
    day.joinpath(store.get(entry_id).file.name).unlink()
    store.reconcile()
    assert store.get(entry_id) is None  # the folder is there and the file is not: really gone
    store.close()


def test_a_rebuilt_index_has_the_trash_and_the_favourites(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "outputs")
    favourite, plain, trashed = (add(store, p, T0 + i) for i, p in enumerate(["fav", "plain", "trashed"]))
    store.set_favourite(favourite)
    store.set_favourite(trashed)
    store.delete(trashed)
    store.close()
    store.db_path.unlink()

    store = HistoryStore(tmp_path / "outputs")
    assert {(e.id, e.favourite) for e in store.page()} == {(favourite, True), (plain, False)}
    assert [(e.id, e.favourite, e.deleted) for e in store.page(deleted=True)] == [(trashed, True, True)]
    assert store.get(trashed).file.is_file()
    store.restore(trashed)
    assert store.get(trashed).file.is_file()
    store.close()
