"""`sdstudio --self-test`: prove that this installation (a PyInstaller bundle above all) works, headless.

It runs what a user's first image runs, in order, and stops at the first failure with a message naming it:
  1. Qt can start (sdstudio.preflight; without a display the "offscreen" platform is used),
  2. the engine imports (torch: the part a bundle is most likely to lack),
  3. the resources are found (tokenizer, built-in model) where sdstudio.paths says,
  4. one image from the built-in model: the requested size, not blank, the request recorded with a model hash,
  5. its A1111 "parameters" survive a PNG round trip (the format the history writes),
  6. the main window builds and paints offscreen, and the image converts to a QImage.
User data goes to a temporary SDSTUDIO_HOME, so a self-test never touches a real user's files.
Exit status: 0 when every check passed, 1 when one failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdstudio import paths, preflight

PROMPT = "red apple"
MIN_PIXEL_STD = 2.0  # on 0..255: a flat image (blank, black, or decoded from NaNs) has 0
MIN_COLOURS = 16


class CheckFailed(Exception):
    """A self-test check found the installation broken; the message says what and where."""


@dataclass
class Context:
    """What the checks pass along: the options, then the generated image and its request."""

    model: str
    steps: int
    out: Path | None
    home: Path
    results: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sdstudio --self-test", description=__doc__.split("\n")[0])
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("--model", default="", help="checkpoint to use instead of the built-in model")
    parser.add_argument("--steps", type=int, default=6, help="sampler steps (default 6)")
    parser.add_argument("--out", type=Path, help="also save the generated PNG in this folder")
    return parser.parse_args(argv)


def check_qt(ctx: Context) -> str:
    if not preflight.has_display(os.environ) and not preflight.qpa_platform(os.environ):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    problem = preflight.qt_problem()
    if problem:
        raise CheckFailed(problem)
    return f"platform {preflight.qpa_platform(os.environ) or 'default'}"


def check_engine(ctx: Context) -> str:
    import torch

    import sdstudio.engine.api  # noqa: F401  (the engine's whole import graph: a frozen bundle may lack parts)

    threads = torch.get_num_threads()
    return f"torch {torch.__version__}, {threads} threads"


def check_resources(ctx: Context) -> str:
    from sdstudio.engine.model_files import builtin_model_path

    needed = [paths.tokenizer_dir() / "vocab.json", paths.tokenizer_dir() / "merges.txt"]
    needed.append(Path(ctx.model) if ctx.model else builtin_model_path())
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise CheckFailed(f"missing from this installation: {', '.join(missing)}")
    return f"in {paths.resources_dir()}"


def check_generate(ctx: Context) -> str:
    from sdstudio.engine.api import Engine
    from sdstudio.engine.request import GenerationRequest

    engine = Engine()
    size = engine.load_model(ctx.model).default_size
    request = GenerationRequest(prompt=PROMPT, steps=ctx.steps, cfg_scale=5.0, sampler="Euler", seed=1,
                                width=size, height=size, model=ctx.model)
    result = engine.generate(request)
    if len(result.images) != 1 or len(result.requests) != 1:
        raise CheckFailed(f"asked for 1 image, got {len(result.images)} images and "
                          f"{len(result.requests)} requests")
    image, done = result.images[0], result.requests[0]
    if image.size != (size, size) or image.mode != "RGB":
        raise CheckFailed(f"image is {image.mode} {image.size}, expected RGB {(size, size)}")
    if (done.prompt, done.steps, done.seed, done.sampler) != (PROMPT, ctx.steps, 1, "Euler"):
        raise CheckFailed(f"the result's request differs from the one asked for: {done}")
    if len(done.model_hash) != 10:
        raise CheckFailed(f"no model hash recorded (got {done.model_hash!r})")
    std, colours = pixel_spread(image)
    if std < MIN_PIXEL_STD or colours < MIN_COLOURS:
        raise CheckFailed(f"the image is blank: pixel std {std:.2f}, {colours} colours")
    ctx.results.update(image=image, request=done, model_name=result.model_name)
    return (f"{size}x{size}, {ctx.steps} steps, model {result.model_name} [{done.model_hash}], "
            f"pixel std {std:.1f}")


def pixel_spread(image) -> tuple[float, int]:
    """(largest per-channel standard deviation across pixels, number of distinct colours) of an RGB image."""
    import numpy as np

    pixels = np.asarray(image, dtype=np.float64).reshape(-1, 3)
    width, height = image.size
    return float(pixels.std(axis=0).max()), len(image.getcolors(width * height))


def check_png(ctx: Context) -> str:
    from sdstudio.history.parameters import format_parameters, parse_parameters, request_from_parameters
    from sdstudio.history.png import read_png_parameters, save_png

    request = ctx.results["request"]
    folder = ctx.out or ctx.home
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "self-test.png"
    save_png(path, ctx.results["image"], format_parameters(request, ctx.results["model_name"]))
    text, _ = read_png_parameters(path)
    if text is None:
        raise CheckFailed(f"{path} has no parameters chunk")
    back = request_from_parameters(parse_parameters(text))
    keys = ("prompt", "steps", "seed", "sampler", "cfg_scale", "width", "height", "model_hash")
    wrong = [k for k in keys if getattr(back, k) != getattr(request, k)]
    if wrong:
        raise CheckFailed(f"parameters did not survive the PNG round trip: {', '.join(wrong)} in {text!r}")
    return str(path) if ctx.out else "parameters read back"


def check_window(ctx: Context) -> str:
    from PySide6.QtWidgets import QApplication

    from sdstudio.ui.imageconv import pil_to_qimage
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.settings import open_settings
    from sdstudio.ui.token_counter import LazyTokenCounter
    from sdstudio.ui.worker import Worker

    app = QApplication.instance() or QApplication([sys.argv[0]])
    window = MainWindow(Worker(), open_settings(), LazyTokenCounter())
    window.show()
    app.processEvents()
    grab = window.grab()
    image = pil_to_qimage(ctx.results["image"])
    window.close()
    if grab.isNull() or grab.width() < 100 or image.isNull():
        raise CheckFailed(f"the main window did not paint ({grab.width()}x{grab.height()})")
    return f"main window painted at {grab.width()}x{grab.height()}"


CHECKS: list[tuple[str, Callable[[Context], str]]] = [
    ("qt", check_qt), ("engine", check_engine), ("resources", check_resources), ("generate", check_generate),
    ("png", check_png), ("window", check_window),
]


@contextmanager
def temporary_home():
    """SDSTUDIO_HOME pointing at a fresh folder for the duration; the previous value is restored."""
    before = os.environ.get("SDSTUDIO_HOME")
    with tempfile.TemporaryDirectory(prefix="sdstudio-selftest-") as folder:
        os.environ["SDSTUDIO_HOME"] = folder
        try:
            yield Path(folder)
        finally:
            if before is None:
                os.environ.pop("SDSTUDIO_HOME", None)
            else:
                os.environ["SDSTUDIO_HOME"] = before


def run(argv: list[str]) -> int:
    """Run every check, printing one line each; 0 when all passed."""
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    start = time.perf_counter()
    kind = "bundle" if getattr(sys, "frozen", False) else "source"
    print(f"SD Studio self-test ({kind}: {sys.executable})", flush=True)
    with temporary_home() as home:
        ctx = Context(model=args.model, steps=args.steps, out=args.out, home=home)
        for name, check in CHECKS:
            t0 = time.perf_counter()
            try:
                detail = check(ctx)
            except CheckFailed as exc:
                print(f"FAIL {name}: {exc}", flush=True)
                return 1
            except Exception as exc:  # anything else is a broken installation too: name it, don't crash
                print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
                return 1
            print(f"ok   {name:<10} {time.perf_counter() - t0:6.2f} s  {detail}", flush=True)
    print(f"self-test passed in {time.perf_counter() - start:.1f} s", flush=True)
    return 0
