"""Full-size ESRGAN ×4 (RRDBNet: 23 blocks, 64 features, growth 32; random weights, the standard old layout
file) upscaling one image untiled and in tiles: time, peak resident memory (each run in a child process,
ru_maxrss minus the child's memory before the run) and the largest 8-bit difference between the two.

    flock /tmp/sdstudio-big.lock python bench/upscaler_tiles.py [--size 128] [--tile 64] [--overlap 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def child(path: str, size: int, tile: int, overlap: int, out: str) -> None:
    import torch
    from PIL import Image

    from sdstudio.engine.upscaler_models import load_upscaler, upscale_pil

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_upscaler(path)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)  # textured, not noise
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = upscale_pil(model, image, tile=tile, overlap=overlap)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result.save(out)
    print(json.dumps({"seconds": seconds, "peak_mib": (peak - before) / 1024}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--child", nargs=5)
    args = p.parse_args()
    if args.child:
        path, size, tile, overlap, out = args.child
        child(path, int(size), int(tile), int(overlap), out)
        return
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.engine.esrgan_files import old_esrgan, old_state

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "4x-random.pth"
        torch.save(old_state(old_esrgan(nf=64, gc=32, blocks=23, scale=4, seed=0)), path)
        runs = {}
        for name, tile in (("untiled", 0), (f"tile {args.tile}", args.tile)):
            out = Path(tmp) / f"{tile}.png"
            done = subprocess.run([sys.executable, __file__, "--child", str(path), str(args.size), str(tile),
                                   str(args.overlap), str(out)], capture_output=True, text=True, check=True)
            runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
            runs[name]["image"] = np.asarray(__import__("PIL.Image").Image.open(out), dtype=int)
        a, b = (r.pop("image") for r in runs.values())
        print(f"{args.size}x{args.size} -> {args.size * 4}x{args.size * 4}, overlap {args.overlap}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        for name, r in runs.items():
            print(f"  {name:<10} {r['seconds']:7.1f} s   peak +RSS {r['peak_mib']:7.0f} MiB")
        print(f"  largest difference tiled vs untiled: {np.abs(a - b).max()} / 255, "
              f"pixels differing: {(np.abs(a - b).max(-1) > 0).mean():.2%}")


if __name__ == "__main__":
    main()
