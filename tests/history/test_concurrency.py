"""Two processes on one store: one adds entries while the other opens (and so reconciles) it again and
again. Before the fix the opener reaped the writer's in-flight temp files and sidecars and most adds failed."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from PIL import Image

from sdstudio.engine.request import GenerationRequest
from sdstudio.history.atomic import hold_temp, reap_temp
from sdstudio.history.layout import sidecar_name
from sdstudio.history.store import HistoryStore

ADDS = 24


def _writer(root: str, started) -> None:
    store = HistoryStore(Path(root))
    started.set()
    for i in range(ADDS):
        noise = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
        init = noise if i % 2 == 0 else None  # sidecars are written first: the opener must not take them
        entry = store.add(noise, GenerationRequest(prompt=f"writer {i}", seed=i, width=64, height=64, init_image=init))
        if i % 3 == 0:
            store.delete(entry.id)  # moves to the trash race the opener's reconcile too
        if i % 6 == 0:
            store.restore(entry.id)
    store.close()


def _opener(root: str, started, stop) -> None:
    started.wait(30)
    while not stop.is_set():
        HistoryStore(Path(root)).close()


def test_writer_and_repeated_opener_lose_nothing(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    HistoryStore(root).close()
    context = multiprocessing.get_context("spawn")
    started, stop = context.Event(), context.Event()
    opener = context.Process(target=_opener, args=(str(root), started, stop))
    writer = context.Process(target=_writer, args=(str(root), started))
    opener.start()
    writer.start()
    writer.join(120)
    stop.set()
    opener.join(60)
    assert writer.exitcode == 0, "an add failed in the writer"
    assert opener.exitcode == 0, "opening the store failed while another process wrote"
    store = HistoryStore(root)
    entries = store.page(limit=1000) + store.page(limit=1000, deleted=True)
    assert sorted(e.prompt for e in entries) == sorted(f"writer {i}" for i in range(ADDS))
    for entry in entries:
        assert entry.deleted == (entry.seed % 3 == 0 and entry.seed % 6 != 0)
        assert entry.file.is_file()
        if entry.seed % 2 == 0:
            assert entry.file.with_name(entry.file.name[: -len(".png")] + ".init.png").is_file()
    store.close()


def test_a_held_temp_is_not_reaped_and_a_released_one_is(tmp_path: Path) -> None:
    with hold_temp(tmp_path / "day" / "x.png") as temp:
        assert not reap_temp(temp) and temp.exists()
    leftover = tmp_path / "day" / ".y.png.00000000.sdstudio-tmp"
    leftover.write_bytes(b"half a png from a killed writer")
    assert reap_temp(leftover) and not leftover.exists()


def test_a_sidecar_of_an_entry_being_written_stays(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    store = HistoryStore(root)
    sidecar = root / sidecar_name("2025-01-31/120000-1-abcdef01.png", "init")
    sidecar.parent.mkdir(parents=True)
    sidecar.write_bytes(b"init image")
    with hold_temp(root / "2025-01-31/120000-1-abcdef01.png"):
        store.reconcile()
        assert sidecar.exists()
    store.reconcile()
    assert not sidecar.exists()  # once no one writes it, an orphan is removed as before
    store.close()


def test_a_row_already_indexed_by_another_process_is_not_an_error(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "outputs")
    entry = store.add(Image.new("RGB", (8, 8), "red"), GenerationRequest(prompt="once", width=8, height=8))
    row = store.index.select("id = ?", [entry.id])[0]
    store.insert_rows([tuple(row.values())])
    assert store.count() == 1
    store.close()
