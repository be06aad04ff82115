"""Writer process for the crash-safety test: adds, deletes and restores entries until it is killed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PIL import Image

from sdstudio.engine.request import GenerationRequest
from sdstudio.history.store import HistoryStore


def main(root: Path, seed: int) -> None:
    store = HistoryStore(root)
    print("ready", flush=True)
    previous = ""
    for i in range(10**9):
        # Noise does not compress: every PNG takes real time to encode and write.
        noise = Image.frombytes("RGB", (96, 96), os.urandom(96 * 96 * 3))
        init = noise if i % 3 == 0 else None
        mask = Image.new("L", (96, 96), 255) if i % 6 == 0 else None
        request = GenerationRequest(
            prompt=f"crash {seed} {i}", seed=i, width=96, height=96, init_image=init, mask=mask, parent_id=previous
        )
        entry = store.add(noise, request, "crash-model")
        previous = entry.id
        if i % 4 == 1:
            store.delete(entry.id)
        if i % 8 == 5:
            store.restore(entry.id)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
