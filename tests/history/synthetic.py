"""Many history entries fast: one real PNG hard-linked under every row, rows inserted with executemany."""

from __future__ import annotations

import os
import uuid

from PIL import Image

from sdstudio.engine.request import GenerationRequest
from sdstudio.history import schema
from sdstudio.history.png import save_png
from sdstudio.history.store import HistoryStore

WORDS = ("cat", "dog", "castle", "forest", "portrait", "city", "ocean", "robot", "dragon", "flower")


def bulk_entries(store: HistoryStore, count: int, newest: float, step: float = 1.0) -> list[str]:
    """`count` entries, the first `newest` and each next one `step` seconds older; returns their ids."""
    folder = store.root / "synthetic"
    folder.mkdir(exist_ok=True)
    template = folder / ".template.png"  # hidden: reconcile does not index it
    if not template.exists():
        save_png(template, Image.new("RGB", (64, 64), (70, 110, 170)), "synthetic\nSteps: 1, Seed: 1, Size: 64x64")
    rows, start = [], sum(1 for name in os.listdir(folder) if not name.startswith("."))
    for i in range(start, start + count):
        relative = f"synthetic/{i:06d}.png"
        os.link(template, store.root / relative)
        words = f"a {WORDS[i % len(WORDS)]} and a {WORDS[(i // 10) % len(WORDS)]}, number {i}"
        request = GenerationRequest(prompt=words, seed=i, width=64, height=64, steps=20)
        model = ("sd15", "sdxl", "dreamshaper")[i % 3]
        rows.append(schema.row_values(uuid.uuid4().hex, newest - (i - start) * step, relative, request, model))
    store.insert_rows(rows)
    return [row[0] for row in rows]
