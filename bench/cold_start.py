"""Cold start (issue 20): a fresh interpreter each run, the built-in model, medians of N runs.

(a) CLI: `python -m sdstudio generate --prompt "red apple" --out <tmp>` — wall time of the whole process
    (target on a quiet machine: <= 3 s);
(b) app: `python -m sdstudio --measure-first-image` offscreen — the app's own figure from process start to the
    first finished image (target <= 5 s); the process's wall time also counts its shut-down;
(c) imports: `import sdstudio.engine.api`, and for comparison transformers' CLIP classes (what every cold
    start imported before sdstudio/engine/clip_text.py), when transformers is installed.

Every run gets an empty SDSTUDIO_HOME, so settings and history start empty (the built-in model is the
default).
"Cold" is the interpreter, not the disk: the files are in the OS page cache after the first run. CPU seconds
(user + sys of the child) are printed too: on a shared machine they move less than the wall time does.

    nice -n 15 python bench/cold_start.py --runs 3
    nice -n 15 python bench/cold_start.py --runs 3 --only cli --root /tmp/before   # another checkout
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_IMAGE = re.compile(r"first image after (\d+) ms")


def run(command: list[str], home: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, output) of one child process."""
    env = {**os.environ, "SDSTUDIO_HOME": str(home), "QT_QPA_PLATFORM": "offscreen", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, cpu, done.stdout + done.stderr


def measure(name: str, command: list[str], runs: int, first_image: bool = False) -> None:
    walls, cpus, marks = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="sdstudio-cold-") as tmp:
            cmd = [part.replace("{tmp}", tmp) for part in command]
            wall, cpu, output = run(cmd, Path(tmp) / "home")
        walls.append(wall)
        cpus.append(cpu)
        if first_image:
            found = FIRST_IMAGE.search(output)
            if not found:
                raise SystemExit(f"{name}: no 'first image after' line in:\n{output[-2000:]}")
            marks.append(int(found.group(1)) / 1000)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    line = f"{name:<34} wall median {wall:6.2f} s  CPU median {cpu:6.2f} s"
    if marks:
        line += f"  first image median {statistics.median(marks):6.2f} s"
    runs_text = ", ".join(f"{w:.2f}" for w in walls)
    print(f"{line}  (wall: {runs_text})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("cli", "app", "imports"), help="one measurement only")
    parser.add_argument("--root", type=Path, help="the checkout to measure (default: this one)")
    args = parser.parse_args(argv)
    if args.root:
        global ROOT
        ROOT = args.root.resolve()
    py = sys.executable
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{ROOT}: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.1f}, "
          f"{args.runs} runs")
    if args.only in (None, "imports"):
        measure("import sdstudio.engine.api", [py, "-c", "import sdstudio.engine.api"], args.runs)
        if importlib.util.find_spec("transformers") is not None:
            clip = "from transformers import CLIPTextModel, CLIPTokenizer; CLIPTextModel, CLIPTokenizer"
            measure("import transformers' CLIP (was)", [py, "-c", f"import torch; {clip}"], args.runs)
            measure("import torch (for scale)", [py, "-c", "import torch"], args.runs)
    if args.only in (None, "cli"):
        measure("CLI generate, built-in model",
                [py, "-m", "sdstudio", "generate", "--prompt", "red apple", "--out", "{tmp}/out"], args.runs)
    if args.only in (None, "app"):
        measure("app launch -> first image", [py, "-m", "sdstudio", "--measure-first-image"], args.runs,
                first_image=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
