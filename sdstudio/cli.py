"""Command line: `python -m sdstudio inspect|generate|params|walk|upscale|serve|train ...`, and `sdstudio`
with no command starts the app (an unknown command gets the usage message, not the app).

Heavy imports (torch) happen inside the commands that need them, so `inspect` and `params` stay
fast and a bad argument is reported before anything loads.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from sdstudio.engine.errors import SDStudioError
from sdstudio.untrusted import printable


def cmd_inspect(args: argparse.Namespace) -> int:
    from sdstudio.engine.detect import detect
    from sdstudio.engine.safetensors_file import PICKLE_SUFFIXES, read_header

    path = Path(args.path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not args.allow_pickle:
            raise SDStudioError(f"{path.name}: pickled checkpoints can run code when opened, so they are not "
                                "inspected by default; convert it to .safetensors, or pass --allow-pickle to "
                                "read it in weights-only mode")
        from sdstudio.engine.weights import open_pickle_checkpoint

        header = open_pickle_checkpoint(path)
    else:
        header = read_header(path)
    desc = detect(header, prediction=args.prediction or "")
    if args.json:
        print(json.dumps(desc.to_json(), indent=2))
        return 0
    print(f"{printable(desc.name, 200, multiline=False)}: {desc.summary()}")  # a file name from the web
    rows = [("family", desc.family_label), ("inpainting", "yes" if desc.inpainting else "no"),
            ("prediction", f"{desc.prediction} ({desc.prediction_source})"), ("dtype", desc.dtype),
            ("context dim", desc.context_dim), ("latent scale", desc.scale_factor),
            ("VAE factor", desc.vae_downscale), ("default size", desc.default_size)]
    rows += [(f"params {k}", f"{v / 1e6:.1f}M") for k, v in desc.params.items()]
    if desc.missing:
        rows.append(("missing", ", ".join(desc.missing)))
    for k, v in rows:
        print(f"  {k:<14} {v}")
    for note in desc.notes:
        print(f"  note: {note}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdstudio", description="SD Studio: local Stable Diffusion")
    sub = p.add_subparsers(dest="command")
    ins = sub.add_parser("inspect", help="describe a checkpoint without loading its weights")
    ins.add_argument("path")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.add_argument("--prediction", choices=("eps", "v"), help="override the prediction type")
    ins.add_argument("--allow-pickle", action="store_true",
                     help="read a .ckpt/.pt checkpoint (weights-only, memory-mapped); only for files you trust")
    ins.set_defaults(func=cmd_inspect)
    _add_generate(sub)
    _add_params(sub)
    _add_walk(sub)
    _add_upscale(sub)
    _add_serve(sub)
    _add_train(sub)
    return p


def _add_generate(sub) -> None:
    from sdstudio.generate_cli import add_generate_parser

    add_generate_parser(sub)


def _add_params(sub) -> None:
    from sdstudio.generate_cli import add_params_parser

    add_params_parser(sub)


def _add_walk(sub) -> None:
    from sdstudio.walk_cli import add_walk_parser

    add_walk_parser(sub)


def _add_upscale(sub) -> None:
    from sdstudio.upscale_cli import add_upscale_parser

    add_upscale_parser(sub)


def _add_serve(sub) -> None:
    from sdstudio.serve_cli import add_serve_parser

    add_serve_parser(sub)


def _add_train(sub) -> None:
    from sdstudio.train_cli import add_train_parser

    add_train_parser(sub)


COMMANDS = ("inspect", "generate", "params", "walk", "upscale", "serve", "train", "-h", "--help")
EXIT_NO_GUI = 3


def cannot_start(problem: str) -> str:
    """What every entry point (sdstudio, python -m sdstudio, main.py, the bundle) says when Qt cannot start."""
    return f"SD Studio cannot start.\n\n{problem}"


def print_problem(problem: str) -> None:
    print(cannot_start(problem), file=sys.stderr, flush=True)


def is_gui_argv(argv: list[str]) -> bool:
    """Arguments for the app rather than a command: none, options (--screenshot, Qt's -platform) or image files
    to open. Any other first word is a mistyped command."""
    if not argv or (argv[0].startswith("-") and argv[0] not in COMMANDS):
        return True
    try:
        return Path(argv[0]).is_file()
    except OSError:  # a name too long for the file system is no file
        return False


def run_gui(argv: list[str], tell: Callable[[str], None] = print_problem) -> int:
    """Start the app, after checking that Qt can open a window here (sdstudio/preflight.py): Qt itself would
    abort the process with a line only a developer reads. `tell` shows the reason (the bundle adds a dialog)."""
    if "--self-test" in argv:  # headless by design: checks the installation without a window
        from sdstudio.selftest import run

        return run(argv)
    from sdstudio.preflight import qt_problem

    problem = qt_problem()
    if problem:
        tell(problem)
        return EXIT_NO_GUI
    from sdstudio.ui.app import run_app

    return run_app(argv)


def main(argv: list[str] | None = None, tell: Callable[[str], None] = print_problem) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if is_gui_argv(argv):
        return run_gui(argv, tell)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; an unexpected traceback goes to the log file
        from sdstudio.errorlog import user_message

        # Messages quote file names and metadata, untrusted text: escaped so they cannot drive the terminal.
        print(f"error: {printable(user_message(exc, f'sdstudio {argv[0]}'), 4000, multiline=False)}", file=sys.stderr)
        return 2 if isinstance(exc, SDStudioError) else 1
