"""Peak memory while loading an SD 1.5-size fp16 single-file checkpoint into fp32 modules (issue 2's target:
at most 1.3x the size of the fp32 weights).

Writes a random-weight SD 1.5 checkpoint in fp16 (tests/engine/full_size.py), then runs `load_checkpoint`
in a child process under `/usr/bin/time -v` and reads its "Maximum resident set size". A second child that
only imports the same modules gives the interpreter's own footprint (Python, torch, transformers), reported
separately. Needs GNU time (`apt-get install -y time`) and ~3 GB of free disk in the temp folder.

    flock /tmp/sdstudio-big.lock python bench/load_memory.py [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIME = "/usr/bin/time"
TARGET = 1.3
FLOAT_DTYPES = ("F16", "F32", "BF16", "F64")


def fp32_weight_bytes(path: Path) -> int:
    """Bytes of every floating tensor of the file once converted to fp32, read from its header."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return sum(4 * math.prod(t["shape"]) for k, t in header.items()
               if k != "__metadata__" and t["dtype"] in FLOAT_DTYPES)


def max_rss_kib(args: list[str]) -> int:
    """Peak RSS of this script run as a child with `args`; the child's own output is passed through."""
    result = subprocess.run([TIME, "-v", sys.executable, __file__, *args], capture_output=True, text=True,
                            check=True)
    print(result.stdout, end="")
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    if match is None:
        raise RuntimeError(f"no peak memory in /usr/bin/time output:\n{result.stderr}")
    return int(match.group(1))


def child(path: str | None) -> None:
    """Import what loading needs; load the checkpoint into fp32 modules unless `path` is None."""
    import torch

    from sdstudio.engine.checkpoint import load_checkpoint

    if path is not None:
        model = load_checkpoint(path, dtype=torch.float32)
        print(model.description.summary(), f"loaded in {model.load_seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="an SD 1.5 fp16 file to reuse (written when missing)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or args.child_baseline:
        child(args.child)
        return
    if not Path(TIME).exists():
        sys.exit(f"{TIME} is missing: install GNU time (apt-get install -y time)")
    with tempfile.TemporaryDirectory() as folder:
        path = args.checkpoint or Path(folder) / "sd15-fp16.safetensors"
        if not path.exists():
            sys.path.insert(0, str(ROOT))
            import torch

            from tests.engine.full_size import write_full_checkpoint

            write_full_checkpoint(path, "sd15", torch.float16)
        size, weights = path.stat().st_size, fp32_weight_bytes(path)
        peak = max_rss_kib(["--child", str(path)]) * 1024
        baseline = max_rss_kib(["--child-baseline"]) * 1024
    gib = 2**30
    print("| file, fp16 | fp32 weights | peak RSS | peak / fp32 | imports only | (peak - imports) / fp32 |\n"
          "|---|---|---|---|---|---|\n"
          f"| {size / gib:.2f} GiB | {weights / gib:.2f} GiB | {peak / gib:.2f} GiB | {peak / weights:.2f}x "
          f"| {baseline / gib:.2f} GiB | {(peak - baseline) / weights:.2f}x |")
    print(f"target: peak / fp32 <= {TARGET}: {'met' if peak / weights <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
