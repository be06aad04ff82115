"""Command line: `python -m sdstudio.training [--quick] [--stage STAGE ...]`.

Stages run in order (dataset, autoencoder, latents, diffusion, decoder, preview, export, controlnet,
export_controlnet); each resumes from its saved state, so the command can be re-run after an interruption,
and `--stage export` (`--stage export_controlnet`) ships the latest weights of every stage at any time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from sdstudio.paths import builtin_models_dir
from sdstudio.training.adopt import adopt_shipped
from sdstudio.training.plan import full_plan, quick_plan
from sdstudio.training.run import STAGES, run_stages

DEFAULT_WORK_DIR = Path("build/training")
DEFAULT_LOG_DIR = Path("training/logs/generation2")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sdstudio.training", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few steps of every stage on a handful of images")
    parser.add_argument("--stage", action="append", choices=STAGES,
                        help="run only these stages (repeatable); default: all, in order")
    parser.add_argument("--work-dir", type=Path, default=None, help="caches and resumable state")
    parser.add_argument("--log-dir", type=Path, default=None, help="loss-curve CSV files")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the shipped model files go")
    parser.add_argument("--adopt-shipped", action="store_true",
                        help="first give every stage the weights shipped in the output folder as its saved"
                             " state (a checkout without the work folder continuing the shipped model)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    work_dir = args.work_dir or (DEFAULT_WORK_DIR / ("quick" if args.quick else "full"))
    log_dir = args.log_dir or (work_dir / "logs" if args.quick else DEFAULT_LOG_DIR)
    out_dir = args.out_dir or (work_dir / "models" if args.quick else builtin_models_dir())
    plan = (quick_plan if args.quick else full_plan)(work_dir, log_dir)
    if args.adopt_shipped:
        print(f"adopted the shipped weights for: {', '.join(adopt_shipped(plan, out_dir))}")
    run_stages(plan, args.stage or list(STAGES), out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
