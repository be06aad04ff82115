"""Peak resident memory of untiled against tiled VAE decode and encode (sdstudio/engine/vae_tiles.py) with
the full-size SD 1.5 VAE (random fan-in scaled weights, as tests/engine/full_size.py), fp32 on the CPU, and
the largest tiled-vs-untiled difference in 1/255 of the image's [-1, 1] range (of the latent mean for encode).

Each case runs in its own child process and its peak is the kernel's high-water mark of that child alone
(`os.wait4`'s rusage, the per-child form of `getrusage(RUSAGE_CHILDREN).ru_maxrss`): nothing is sampled, so
no short spike is missed, and no earlier run's heap can hide a peak. A "setup" child builds the same VAE and
inputs and runs nothing; "working" memory is a case's peak minus that baseline (torch, the weights, the
input). The weights are filled in place, parameter by parameter, so building them never holds two copies.

    flock /tmp/sdstudio-big.lock nice -n 15 python bench/vae_tiles_memory.py --sizes 1024 [2048]

Minutes per 1024 px case on a 2-core CPU; at 2048 px the untiled decode needs about 15 GiB and 20+ minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sdstudio.engine.vae import AutoencoderKL, VAEConfig  # noqa: E402
from sdstudio.engine.vae_tiles import tiled_decode, tiled_encode  # noqa: E402
from tests.engine.full_size import random_tensor  # noqa: E402

CASES = ("setup", "untiled", "tiled")


def sd15_vae() -> AutoencoderKL:
    vae = AutoencoderKL(VAEConfig())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in vae.state_dict().items():
            tensor.copy_(random_tensor(name, tuple(tensor.shape), g))
    return vae.eval()


def run_case(op: str, size: int, case: str, out: str) -> None:
    """One case in this fresh process; the result tensor goes to `out` (small: the latent, or the image)."""
    torch.set_grad_enabled(False)
    vae = sd15_vae()
    g = torch.Generator().manual_seed(size)
    if op == "decode":
        x = torch.randn(1, 4, size // 8, size // 8, generator=g)
        fn = {"untiled": lambda: vae.decode(x), "tiled": lambda: tiled_decode(vae, x)}.get(case)
    else:
        x = torch.rand(1, 3, size, size, generator=g) * 2 - 1
        fn = {"untiled": lambda: vae.encode(x)[0], "tiled": lambda: tiled_encode(vae, x)[0]}.get(case)
    start = time.perf_counter()
    result = None if fn is None else fn()
    torch.save({"result": result, "seconds": time.perf_counter() - start}, out)


def child(op: str, size: int, case: str) -> dict:
    """The case's result, seconds and peak RSS (bytes) from a child process of its own."""
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "r.pt")
        proc = subprocess.Popen([sys.executable, __file__, "--one", op, str(size), case, "--out", out])
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{op} {size} {case}: the child exited with {proc.returncode}")
        found = torch.load(out)
    found["peak"] = usage.ru_maxrss * 1024  # Linux reports KiB
    return found


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--ops", nargs="+", choices=("decode", "encode"), default=["decode", "encode"])
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_case(args.one[0], int(args.one[1]), args.one[2], args.out)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU; "
          "peak = child's ru_maxrss, working = peak - setup")
    print("| op | size | setup GiB | untiled peak / working GiB | tiled peak / working GiB | working ratio | "
          "untiled s | tiled s | max diff /255 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for op in args.ops:
            base, ref, tiled = (child(op, size, case) for case in CASES)
            work_ref, work_tiled = ref["peak"] - base["peak"], tiled["peak"] - base["peak"]
            diff = (tiled["result"] - ref["result"]).abs().max().item()
            # decode: in 1/255 of the [-1, 1] image; encode: the latent mean's own units
            shown = f"{diff * 127.5:.4f}" if op == "decode" else f"{diff:.1e} (latent)"
            print(f"| {op} | {size} | {gib(base['peak'])} | {gib(ref['peak'])} / {gib(work_ref)} | "
                  f"{gib(tiled['peak'])} / {gib(work_tiled)} | {work_tiled / max(work_ref, 1):.2f} | "
                  f"{ref['seconds']:.1f} | {tiled['seconds']:.1f} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
