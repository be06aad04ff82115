"""Tiled against untiled VAE decode and encode (sdstudio/engine/vae_tiles.py) with the full-size SD 1.5 VAE
(random fan-in scaled weights, as tests/engine/full_size.py), fp32: the largest per-pixel difference in 1/255
of the image's [-1, 1] range (and of the latent), wall time, and peak working memory. On CUDA the peak is
torch.cuda.max_memory_allocated above the memory held before the call (the tiled run keeps its whole-image
tensors on the CPU, as the engine does on an accelerator); on the CPU it is the highest resident memory seen
during the call minus the resident memory just before it, sampled every 5 ms. Full-size and slow on a
2-core CPU (minutes per 1024 px decode), so run it under the shared lock:

    flock /tmp/sdstudio-big.lock python bench/vae_tiles.py --sizes 1024 [--untiled-max 1024] [--device cuda]

An untiled run above --untiled-max is skipped (at 2048 px it needs about 4x the 1024 px figure).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sdstudio.engine.vae import AutoencoderKL, VAEConfig  # noqa: E402
from sdstudio.engine.vae_tiles import tiled_decode, tiled_encode  # noqa: E402
from tests.engine.full_size import random_tensor  # noqa: E402


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class Peak:
    """Peak working memory of the `with` body on `device` (see the module docstring)."""

    def __init__(self, device: torch.device):
        self.device, self.bytes = device, 0

    def __enter__(self) -> Peak:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._base, self._peak, self._done = _rss(), _rss(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self._peak = max(self._peak, _rss())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base
            return
        self._done.set()
        self._thread.join()
        self.bytes = max(self._peak, _rss()) - self._base


def sd15_vae(device: torch.device) -> AutoencoderKL:
    vae = AutoencoderKL(VAEConfig(), device="meta")
    g = torch.Generator().manual_seed(0)
    state = {name: random_tensor(name, tuple(t.shape), g) for name, t in vae.state_dict().items()}
    vae = AutoencoderKL(VAEConfig(), device=device)
    vae.load_state_dict(state)
    return vae.eval()


def measure(fn, device: torch.device) -> tuple[torch.Tensor, float, int]:
    start = time.perf_counter()
    with torch.no_grad(), Peak(device) as peak:
        out = fn()
        out = (out[0] if isinstance(out, tuple) else out).cpu()
    return out, time.perf_counter() - start, peak.bytes


def run_one(op: str, size: int, tiled: bool, device: torch.device, out: str) -> None:
    """One measurement in this (fresh) process, so an earlier run's freed heap cannot hide this one's peak."""
    torch.set_grad_enabled(False)
    vae = sd15_vae(device)
    storage = torch.device("cpu") if device.type != "cpu" else None
    g = torch.Generator().manual_seed(size)
    if op == "decode":
        x = torch.randn(1, 4, size // 8, size // 8, generator=g).to(device)
        fn = (lambda: tiled_decode(vae, x, storage=storage)) if tiled else (lambda: vae.decode(x))
    else:
        x = (torch.rand(1, 3, size, size, generator=g) * 2 - 1).to(device)
        fn = (lambda: tiled_encode(vae, x, storage=storage)) if tiled else (lambda: vae.encode(x))
    result, seconds, peak = measure(fn, device)
    torch.save({"result": result, "seconds": seconds, "peak": peak}, out)


def child(op: str, size: int, tiled: bool, device: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "r.pt")
        # glibc would otherwise serve the run from heap kept since the weights were built, hiding its peak.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
        subprocess.run([sys.executable, __file__, "--one", op, str(size), str(int(tiled)), "--device", device,
                        "--out", out], check=True, env=env)
        return torch.load(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024])
    parser.add_argument("--untiled-max", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ops", nargs="+", default=["decode", "encode"])
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one[0], int(args.one[1]), args.one[2] == "1", torch.device(args.device), args.out)
        return
    print("| op | size | untiled s | untiled peak GiB | tiled s | tiled peak GiB | peak ratio | max diff /255 |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for op in args.ops:
            tiled = child(op, size, True, args.device)
            cells = f"skipped | - | {tiled['seconds']:.1f} | {tiled['peak'] / 2**30:.2f} | - | -"
            if size <= args.untiled_max:
                ref = child(op, size, False, args.device)
                diff = (tiled["result"] - ref["result"]).abs().max().item() * 127.5
                cells = f"{ref['seconds']:.1f} | {ref['peak'] / 2**30:.2f} | {tiled['seconds']:.1f} | " \
                        f"{tiled['peak'] / 2**30:.2f} | {tiled['peak'] / max(ref['peak'], 1):.2f} | {diff:.4f}"
            print(f"| {op} | {size} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
