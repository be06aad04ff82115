"""Killing a writer at random moments (SIGKILL, many times) never leaves a corrupt PNG or a dangling row."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from sdstudio.history.atomic import is_temp_name
from sdstudio.history.layout import sidecar_owner
from sdstudio.history.png import read_png_parameters
from sdstudio.history.store import HistoryStore

WRITER = Path(__file__).with_name("crash_writer.py")
KILLS = 20


def run_and_kill(root: Path, seed: int, rng: random.Random) -> None:
    process = subprocess.Popen(
        [sys.executable, str(WRITER), str(root), str(seed)], stdout=subprocess.PIPE, text=True
    )
    try:
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.05, 0.5))  # lands in start-up or in the reconcile at open
        else:
            assert process.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.02, 0.3))  # lands somewhere in add/delete/restore
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL semantics are POSIX")
def test_sigkilled_writer_leaves_no_corrupt_png_and_no_dangling_row(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    rng = random.Random(1234)
    for seed in range(KILLS):
        run_and_kill(root, seed, rng)

    store = HistoryStore(root)
    with sqlite3.connect(store.db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    entries = store.page(limit=10**6) + store.page(limit=10**6, deleted=True)
    print(f"after {KILLS} kills: {len(entries)} entries, {len(list(root.rglob('*.png')))} PNG files")
    assert len(entries) >= KILLS // 2, "the writer should have added entries between kills"
    by_file = {}
    for entry in entries:
        with Image.open(entry.file) as image:
            image.load()  # raises on a truncated or corrupt file
        text, record = read_png_parameters(entry.file)
        assert text.startswith(entry.prompt) and record["id"] == entry.id
        by_file[entry.file] = entry
    pngs = [p for p in root.rglob("*.png") if store.layout.thumbnails not in p.parents]
    for path in pngs:
        owner = sidecar_owner(path.name)
        if owner is None:
            assert path in by_file, f"{path} has no row"
        else:
            assert path.with_name(owner) in by_file, f"{path} is a sidecar of nothing"
    assert not [p for p in root.rglob("*") if is_temp_name(p.name)]
    store.close()
