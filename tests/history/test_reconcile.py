"""Reconcile at open: files and index back in step after kills, hand edits and dropped-in images."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from sdstudio.engine.request import GenerationRequest
from sdstudio.history.layout import sidecar_name
from sdstudio.history.png import save_png
from sdstudio.history.reconcile import Report
from sdstudio.history.store import HistoryStore

A1111_TEXT = (
    "a watercolor fox\nNegative prompt: text\n"
    "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6, Seed: 99, Size: 8x8, Model: anything-v3"
)


def tiny() -> Image.Image:
    return Image.new("RGB", (8, 8), (10, 120, 200))


def a1111_png(path: Path, text: str = A1111_TEXT) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    path.parent.mkdir(parents=True, exist_ok=True)
    tiny().save(path, pnginfo=info)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


def reopen(root: Path) -> HistoryStore:
    return HistoryStore(root)


def test_row_whose_file_is_gone_is_dropped(root: Path) -> None:
    store = reopen(root)
    request = GenerationRequest(prompt="gone", width=8, height=8)
    entry = store.add(tiny(), request)
    entry.file.unlink()
    assert store.reconcile() == Report(rows_dropped=1)
    assert store.get(entry.id) is None and not store.thumbnails.path(entry.id).exists()
    store.close()


def test_png_without_row_is_indexed_again_with_its_own_id(root: Path) -> None:
    store = reopen(root)
    request = GenerationRequest(prompt="kept", seed=5, width=8, height=8, init_image=tiny(), parent_id="p1")
    entry = store.add(tiny(), request, "sd15")
    # As if killed between writing the PNG and committing the row:
    store.drop_files([entry.file.relative_to(root).as_posix()])
    store.close()
    store = reopen(root)
    again = store.get(entry.id)
    assert again is not None
    assert (again.prompt, again.seed, again.model_name, again.parent_id, again.mode, again.created) == (
        "kept", 5, "sd15", "p1", "img2img", entry.created,
    )
    assert store.request_for(again) == request
    store.close()


def test_a1111_png_dropped_into_outputs_is_indexed_and_plain_png_is_not(root: Path, tmp_path: Path) -> None:
    a1111_png(root / "from-a1111" / "00001-99.png")
    tiny().save(root / "photo.png")
    store = reopen(root)
    [entry] = store.page()
    assert (entry.prompt, entry.negative, entry.sampler, entry.scheduler, entry.seed, entry.model_name) == (
        "a watercolor fox", "text", "DPM++ 2M", "karras", 99, "anything-v3",
    )
    models = tmp_path / "models"
    models.mkdir()
    (models / "anything-v3.safetensors").write_bytes(b"weights")
    again = store.request_for(entry, models)
    assert again.steps == 28 and again.model == str(models / "anything-v3.safetensors")
    store.close()


def test_a1111_png_with_a_sampler_we_lack_is_still_indexed_for_browsing(root: Path) -> None:
    a1111_png(root / "x.png", "a fox\nSteps: 20, Sampler: DPM++ 2M SDE Heun, CFG scale: 7, Seed: 3, Size: 8x8")
    store = reopen(root)
    [entry] = store.page()
    assert (entry.prompt, entry.sampler, entry.steps, entry.seed, entry.width) == ("a fox", "DPM++ 2M SDE Heun", 20, 3, 8)
    store.close()


def test_temp_files_and_orphan_sidecars_are_removed(root: Path) -> None:
    store = reopen(root)
    entry = store.add(tiny(), GenerationRequest(prompt="x", width=8, height=8))
    store.close()
    day = entry.file.parent
    temp = day / ".00001.png.1a2b3c4d.sdstudio-tmp"
    temp.write_bytes(b"half a png")
    thumbnail_temp = store.layout.thumbnails / ".x.jpg.1a2b3c4d.sdstudio-tmp"
    thumbnail_temp.write_bytes(b"half a jpeg")
    orphan = root / sidecar_name(day.name + "/never-written.png", "init")
    save_png(orphan, tiny(), "")
    store = reopen(root)
    assert not temp.exists() and not thumbnail_temp.exists() and not orphan.exists() and entry.file.exists()
    assert [e.id for e in store.page()] == [entry.id]
    store.close()


@pytest.mark.parametrize("to_trash", [True, False])
def test_interrupted_delete_or_restore_is_finished(root: Path, to_trash: bool) -> None:
    store = reopen(root)
    entry = store.add(tiny(), GenerationRequest(prompt="x", width=8, height=8))
    if not to_trash:
        store.delete(entry.id)
    # The row changed, then the process died before the files moved.
    with store._transaction() as db:
        db.execute("UPDATE entries SET deleted = ? WHERE id = ?", (int(to_trash), entry.id))
    report = store.reconcile()
    assert report.moves_finished == 1
    moved = store.get(entry.id)
    assert moved.deleted is to_trash and moved.file.exists()
    store.close()


@pytest.mark.parametrize("to_trash", [True, False])
def test_sidecar_left_behind_by_an_interrupted_move_follows_its_png(root: Path, to_trash: bool) -> None:
    from PIL import Image

    store = reopen(root)
    init = Image.new("RGB", (8, 8), (1, 2, 3))
    entry = store.add(tiny(), GenerationRequest(prompt="x", width=8, height=8, init_image=init, strength=0.5))
    sidecars = [p for p in entry.file.parent.iterdir() if p != entry.file and p.suffix == ".png"]
    assert sidecars, "an img2img entry keeps its init image beside it"
    if not to_trash:
        store.delete(entry.id)
        entry = store.get(entry.id)
    relative = entry.file.relative_to(store.layout.location("", not to_trash)).as_posix()
    # The PNG moved first, then the process died: its sidecars are still in the old place.
    target = store.layout.location(relative, to_trash)
    target.parent.mkdir(parents=True, exist_ok=True)
    entry.file.rename(target)
    with store._transaction() as db:
        db.execute("UPDATE entries SET deleted = ? WHERE id = ?", (int(to_trash), entry.id))
    store.reconcile()
    moved = store.get(entry.id)
    left = [p for p in entry.file.parent.iterdir() if p.name.startswith(entry.file.stem)] if entry.file.parent.exists() else []
    assert moved.file.exists() and not left
    assert store.request_for(moved).init_image is not None
    store.close()


def record_png(path: Path, record_json: str) -> Path:
    """A PNG whose sdstudio chunk holds exactly `record_json` (hand-written, so it may be hostile)."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt("sdstudio", record_json, zip=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tiny().save(path, pnginfo=info)
    return path


def _record(created: str = "1.5", seed: str = "1", prompt: str = '"a fox"') -> str:
    return (
        f'{{"format": 1, "id": "r1", "created": {created}, '
        f'"request": {{"prompt": {prompt}, "seed": {seed}, "width": 8, "height": 8}}}}'
    )


HOSTILE_FILES = {
    "steps overflow": lambda p: a1111_png(p, "x\nSteps: 9.9e999, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 8x8"),
    "5000-digit size": lambda p: a1111_png(p, "x\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 8x" + "9" * 5000),
    "4000-digit seed": lambda p: a1111_png(p, "x\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: " + "9" * 4000 + ", Size: 8x8"),
    "lone surrogate": lambda p: record_png(p, _record(prompt='"fox \\ud800"')),
    "integer past 2**63": lambda p: record_png(p, _record(seed=str(2**63))),
    "created NaN": lambda p: record_png(p, _record(created="NaN")),
    "created 1e999": lambda p: record_png(p, _record(created="1e999")),
    "200k-deep JSON": lambda p: record_png(p, "[" * 200_000 + "]" * 200_000),
}


def test_hostile_files_are_skipped_and_listed_while_good_ones_are_indexed(root: Path) -> None:
    for i, make in enumerate(HOSTILE_FILES.values()):
        make(root / "odd" / f"{i:05}.png")
    a1111_png(root / "good" / "00001.png")
    store = reopen(root)
    report = store.reconcile()  # a second pass lists the same files again: they stay out of the index
    # An A1111 text with a number we cannot use is still listed for browsing, that number as 0; a record we
    # cannot store is refused and its file listed with the reason.
    indexed = {e.file.relative_to(root).as_posix(): e for e in store.page()}
    assert indexed.keys() == {"good/00001.png", "odd/00000.png", "odd/00001.png", "odd/00002.png"}
    assert indexed["good/00001.png"].prompt == "a watercolor fox"
    assert (indexed["odd/00000.png"].steps, indexed["odd/00001.png"].height, indexed["odd/00002.png"].seed) == (0, 0, 0)
    listed = dict(report.skipped)
    assert sorted(listed) == [f"odd/{i:05}.png" for i in range(3, len(HOSTILE_FILES))]
    assert all(reason and "\n" not in reason and len(reason) < 300 for reason in listed.values())
    store.close()


def test_text_bomb_is_listed_not_stored(root: Path) -> None:
    import zlib

    info = PngImagePlugin.PngInfo()
    info.add(b"zTXt", b"parameters\0\0" + zlib.compress(b"fox, " * 50_000_000, 9))  # 250 MB of prompt
    root.mkdir(parents=True)
    tiny().save(root / "bomb.png", pnginfo=info)
    store = reopen(root)
    assert store.page() == []
    assert [name for name, _ in store.reconcile().skipped] == ["bomb.png"]
    store.close()


def test_files_skipped_at_open_are_told_once_and_listed_in_the_log(root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SDSTUDIO_HOME", str(tmp_path / "home"))
    a1111_png(root / "good" / "00001.png")
    record_png(root / "odd" / "\x1b[2Jfake.png", _record(created="NaN"))
    store = reopen(root)
    log = tmp_path / "home" / "logs" / "sdstudio.log"
    assert store.notice.startswith("1 file in the outputs folder could not be indexed") and str(log) in store.notice
    logged = log.read_text()
    assert "odd/\\x1b[2Jfake.png" in logged and "\x1b" not in logged
    assert [e.file.name for e in store.page()] == ["00001.png"]
    store.close()
