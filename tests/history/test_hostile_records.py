"""Hostile PNGs dropped into the outputs folder or opened by the user: what their records name (ids, sidecars,
model, VAE, TAESD) never makes the app write, delete or open a file outside the folder it belongs to."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from sdstudio.engine.model_files import model_hash
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.file_parameters import RefusedFile, checked_file, read_file_parameters
from sdstudio.history.parameters import format_parameters
from sdstudio.history.png import read_png_parameters, save_png
from sdstudio.history.record import Record, is_entry_id
from sdstudio.history.store import HistoryStore
from sdstudio.history.thumbnails import ThumbnailCache
from tests.history.test_file_parameters import textured

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")


def hostile_png(path: Path, entry_id: str = "0" * 32, **record_fields) -> Path:
    request = record_fields.pop("request", GenerationRequest(prompt="hostile", width=24, height=24))
    record = Record(id=entry_id, created=1.0, request=request, **record_fields)
    data = record.to_json()
    data["id"] = entry_id  # written raw, as an attacker's own tool would
    data["request"].update({k: getattr(request, k) for k in ("model", "vae", "taesd")})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(path, textured(), format_parameters(request, ""), data)
    return path


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def in_thread(call):
    """Run `call` on a daemon thread so a reader that blocks (a FIFO) fails the test instead of hanging it."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the reader blocked on a FIFO"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.parametrize("bad_id", [
    "../../../outside/photo", "../victim", "..", "", "A" * 32, "0" * 31, "0" * 33 + "/x", "g" * 32, "0" * 31 + "\n",
])
def test_an_id_not_of_our_format_gets_a_fresh_one_and_no_file_outside_is_touched(tmp_path, bad_id) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "photo.jpg").write_bytes(b"the user's photo")
    (tmp_path / "victim.jpg").write_bytes(b"another photo")
    before = files_under(outside) | {"victim": (tmp_path / "victim.jpg").read_bytes()}
    root = tmp_path / "a" / "b" / "outputs"
    png = hostile_png(root / "dropped" / "x.png", bad_id)

    store = HistoryStore(root)
    [entry] = store.page()
    assert is_entry_id(entry.id) and entry.id != bad_id and entry.file == png
    thumb = store.thumbnails.get(entry.id, entry.file)
    assert thumb.parent == store.layout.thumbnails
    png.unlink()
    store.reconcile()  # drops the row and discards its thumbnail
    store.close()
    assert not thumb.exists()
    assert files_under(outside) | {"victim": (tmp_path / "victim.jpg").read_bytes()} == before
    assert not (tmp_path / "outside" / "photo.jpg.jpg").exists()


def test_our_own_id_is_kept() -> None:
    assert is_entry_id("0123456789abcdef0123456789abcdef")
    for bad in ("0123456789ABCDEF0123456789ABCDEF", "../" + "0" * 29, 12, None):
        assert not is_entry_id(bad)


@pytest.mark.parametrize("text", ["../../x", "/etc/passwd", "C:\\Windows\\x", "..", "", "a\0b", "\ud800", "x" * 5000])
def test_thumbnail_names_are_hashes_inside_the_cache_whatever_the_text(tmp_path, text) -> None:
    cache = ThumbnailCache(tmp_path / "thumbs")
    path = cache.path(text)
    assert path.parent == cache.folder and len(path.name) == 36 and path.suffix == ".jpg"
    cache.make(textured(), text)
    assert [p.name for p in cache.folder.iterdir()] == [path.name]
    cache.discard(text)
    assert list(cache.folder.iterdir()) == []
    assert cache.path(text) != cache.path(text + "1")


def test_a_sidecar_symlink_leading_out_of_the_folder_is_refused(tmp_path) -> None:
    secret = tmp_path / "secret.png"
    textured().save(secret)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "e.init.png").symlink_to(secret)
    found = read_file_parameters(hostile_png(folder / "e.png", init_file="e.init.png", mode="img2img"))
    assert "refused" in found.problem and found.request.init_image is None


@needs_fifo
def test_a_sidecar_that_is_a_fifo_is_refused_without_blocking(tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "e.init.png")
    png = hostile_png(folder / "e.png", init_file="e.init.png", mode="img2img")
    found = in_thread(lambda: read_file_parameters(png))
    assert "not a regular file" in found.problem and found.request.init_image is None


@needs_fifo
def test_a_fifo_named_like_a_png_neither_blocks_the_reader_nor_reconcile(tmp_path) -> None:
    root = tmp_path / "outputs"
    (root / "day").mkdir(parents=True)
    os.mkfifo(root / "day" / "trap.png")
    with pytest.raises(RefusedFile, match="trap.png is not a regular file"):
        in_thread(lambda: read_file_parameters(root / "day" / "trap.png", pixels=False))
    hostile_png(root / "day" / "fine.png")
    store = in_thread(lambda: HistoryStore(root))
    assert [e.file.name for e in store.page()] == ["fine.png"]
    store.close()


def test_checked_file_refuses_folders_and_files_outside(tmp_path) -> None:
    inside = tmp_path / "models"
    inside.mkdir()
    (inside / "m.safetensors").write_bytes(b"m")
    (tmp_path / "elsewhere.safetensors").write_bytes(b"e")
    assert checked_file(inside / "m.safetensors", [inside]) == inside / "m.safetensors"
    with pytest.raises(RefusedFile, match="outside"):
        checked_file(inside / ".." / "elsewhere.safetensors", [inside])
    with pytest.raises(RefusedFile, match="not a regular file"):
        checked_file(inside)
    with pytest.raises(FileNotFoundError):
        checked_file(inside / "gone.safetensors")


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    (folder / "vae").mkdir(parents=True)
    (folder / "mine.safetensors").write_bytes(b"a small stand-in checkpoint")
    (folder / "vae" / "good.vae.safetensors").write_bytes(b"a small stand-in vae")
    return folder


def test_a_record_path_outside_the_models_folder_is_never_used(tmp_path, models) -> None:
    evil = tmp_path / "evil" / "evil.safetensors"
    evil.parent.mkdir()
    evil.write_bytes(b"a checkpoint the panel must not be pointed at")
    request = GenerationRequest(prompt="r", width=24, height=24, model=str(evil), model_hash=model_hash(evil))
    found = read_file_parameters(hostile_png(tmp_path / "a.png", request=request, model_name="evil"), models_dir=models)
    assert found.request.model != str(evil) and "'evil'" in found.model_problem

    # The same path with the hash of a model that is here: found by hash, inside the models folder.
    request = request.replace(model_hash=model_hash(models / "mine.safetensors"))
    found = read_file_parameters(hostile_png(tmp_path / "b.png", request=request, model_name="evil"), models_dir=models)
    assert found.rerun_request().model == str(models / "mine.safetensors")

    # An old record of this machine whose path lies inside the models folder still runs as it is.
    inside = GenerationRequest(prompt="r", width=24, height=24, model=str(models / "mine.safetensors"))
    found = read_file_parameters(hostile_png(tmp_path / "c.png", request=inside, model_name="mine"), models_dir=models)
    assert found.rerun_request().model == str(models / "mine.safetensors")


@pytest.mark.parametrize("part", ["vae", "taesd"])
def test_vae_and_taesd_are_found_by_name_in_the_models_folder_never_at_the_written_path(tmp_path, models, part) -> None:
    evil = tmp_path / "evil" / "good.vae.safetensors"
    evil.parent.mkdir()
    evil.write_bytes(b"same name, outside")
    request = GenerationRequest(prompt="r", width=24, height=24, **{part: str(evil)})
    found = read_file_parameters(hostile_png(tmp_path / "a.png", request=request), models_dir=models)
    assert getattr(found.rerun_request(), part) == str(models / "vae" / "good.vae.safetensors")

    request = request.replace(**{part: "/nowhere/missing.safetensors"})
    found = read_file_parameters(hostile_png(tmp_path / "b.png", request=request), models_dir=models)
    assert "'missing.safetensors'" in found.model_problem and str(models) in found.model_problem
    assert "/nowhere" not in getattr(found.request, part)

    # Unresolved (no models folder given), only the name is handed on, never the written path.
    found = read_file_parameters(tmp_path / "a.png")
    assert getattr(found.request, part) == "good.vae.safetensors"


@needs_fifo
def test_a_fifo_in_the_models_folder_is_never_chosen(tmp_path, models) -> None:
    os.mkfifo(models / "trap.safetensors")
    request = GenerationRequest(prompt="r", width=24, height=24, vae=str(models / "trap.safetensors"))
    found = in_thread(lambda: read_file_parameters(hostile_png(tmp_path / "a.png", request=request), models_dir=models))
    assert "'trap.safetensors'" in found.model_problem


def test_read_back_record_never_holds_the_writers_paths(tmp_path) -> None:
    request = GenerationRequest(prompt="r", width=24, height=24, model=str(tmp_path / "m" / "x.safetensors"),
                                vae=str(tmp_path / "v.safetensors"), taesd="C:\\Users\\me\\t.safetensors")
    save_png(tmp_path / "a.png", textured(), "", Record(id="0" * 32, created=1.0, request=request).to_json())
    _, data = read_png_parameters(tmp_path / "a.png")
    assert {k: data["request"][k] for k in ("model", "vae", "taesd")} == {
        "model": "x.safetensors", "vae": "v.safetensors", "taesd": "t.safetensors"}


if sys.platform == "win32":  # pragma: no cover - symlinks need privileges there
    test_a_sidecar_symlink_leading_out_of_the_folder_is_refused = pytest.mark.skip(
        test_a_sidecar_symlink_leading_out_of_the_folder_is_refused)
