"""`python -m sdstudio train lora ...`: fine-tune a LoRA on a folder of images (sdstudio/training/lora_*.py).

Checks in order of cost, so a mistake costs nothing: the arguments, the output name (an existing LoRA is never
replaced), the state folder, every image (one that cannot be read is named), and only then the model loads.
The run's state lives in a folder (default: <data folder>/training/lora/<name>), saved every --save-every
seconds; a run killed at any point continues with `--resume DIR` and ends with the LoRA the uninterrupted run
would have made. The finished file goes to models/Lora (or the path given as --out), usable as
`<lora:NAME:1>`.

`train dreambooth` is listed and refuses: it is not built yet.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

from sdstudio import paths
from sdstudio.engine.errors import RequestError, SDStudioError

MAX_STEPS = 1_000_000
MAX_RESOLUTION = 2048


def add_train_parser(sub) -> None:
    train = sub.add_parser("train", help="fine-tune the model on your images (LoRA)")
    methods = train.add_subparsers(dest="method", required=True)
    lora = methods.add_parser("lora", help="train a LoRA (kohya format, for A1111, ComfyUI and SD Studio)")
    add_flags(lora)
    lora.set_defaults(func=cmd_train_lora)
    dream = methods.add_parser("dreambooth", help="full fine-tune (not built yet)")
    add_flags(dream)
    dream.set_defaults(func=cmd_train_dreambooth)


def add_flags(lora: argparse.ArgumentParser) -> None:
    lora.add_argument("--base", help="checkpoint to train on (.safetensors); default: the built-in model")
    lora.add_argument("--images", help="folder of 5-50 images (captions: NAME.txt beside NAME.png)")
    lora.add_argument("--trigger", help='the word that calls the concept up in prompts, e.g. "sks"')
    lora.add_argument("--class", dest="class_word", default="", help='what it is, e.g. "dog"')
    lora.add_argument("--steps", type=int, default=500)
    lora.add_argument("--rank", type=int, default=4)
    lora.add_argument("--alpha", type=float, help="LoRA alpha (default: the rank, scale 1)")
    lora.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    lora.add_argument("--warmup", type=int, default=0, help="warm-up steps")
    lora.add_argument("--resolution", type=int, default=0, help="pixels (default: the model's size)")
    lora.add_argument("--batch", type=int, default=1, help="images per step")
    lora.add_argument("--text-encoder", action="store_true", help="train the text encoder(s) too")
    lora.add_argument("--conv", action="store_true", help="also the ResBlock and resampler convs (LoCon)")
    lora.add_argument("--random-crop", action="store_true", help="crop at random places, not centred")
    lora.add_argument("--flip", action="store_true", help="mirror half the images at random")
    lora.add_argument("--gradient-checkpointing", action="store_true", help="less memory, ~30%% slower")
    lora.add_argument("--seed", type=int, default=0)
    lora.add_argument("--out", help="LoRA name (saved in models/Lora) or a .safetensors path; "
                                    "default: TRIGGER_CLASS")
    lora.add_argument("--resume", metavar="DIR", help="continue the run whose state is in DIR")
    lora.add_argument("--save-every", type=float, default=60.0, metavar="SECONDS",
                      help="how often the run's state is saved")
    lora.add_argument("--threads", type=int, default=0,
                      help="CPU threads (default: torch's); 1 is much faster on a machine busy with other jobs")


def cmd_train_dreambooth(args: argparse.Namespace) -> int:
    raise SDStudioError("train dreambooth: not built yet; use `train lora`")


def output_path(out: str) -> Path:
    """A bare name goes to models/Lora/NAME.safetensors; a path is used as given."""
    if "/" in out or "\\" in out or out.lower().endswith(".safetensors"):
        path = Path(out).expanduser()
        return path if path.suffix.lower() == ".safetensors" else path.with_suffix(".safetensors")
    return paths.lora_dir() / f"{out}.safetensors"


def default_name(trigger: str, class_word: str) -> str:
    name = re.sub(r"[^\w.-]+", "_", "_".join(w for w in (trigger, class_word) if w.strip())).strip("._")
    return name or "lora"


def check_numbers(args: argparse.Namespace) -> None:
    if not 1 <= args.steps <= MAX_STEPS:
        raise RequestError(f"--steps {args.steps}: choose between 1 and {MAX_STEPS}")
    if not 1 <= args.rank <= 1024:
        raise RequestError(f"--rank {args.rank}: a LoRA rank must be between 1 and 1024 (4 to 32 is usual)")
    if args.alpha is not None and not (args.alpha > 0 and math.isfinite(args.alpha)):
        raise RequestError(f"--alpha {args.alpha}: must be a positive number")
    if not (args.lr > 0 and math.isfinite(args.lr)) or args.lr > 1:
        raise RequestError(f"--lr {args.lr}: choose a learning rate above 0 and at most 1 (1e-4 is usual)")
    if args.resolution and not 8 <= args.resolution <= MAX_RESOLUTION:
        raise RequestError(f"--resolution {args.resolution}: choose between 8 and {MAX_RESOLUTION} pixels")
    if not 1 <= args.batch <= 64:
        raise RequestError(f"--batch {args.batch}: choose between 1 and 64")
    if not 0 <= args.warmup < args.steps:
        raise RequestError(f"--warmup {args.warmup}: choose from 0 to fewer than --steps")
    if not args.save_every >= 0:
        raise RequestError(f"--save-every {args.save_every}: must be 0 or more seconds")


def settings_from(args: argparse.Namespace):
    """The run's settings: from the arguments, or from a resumed run's folder when --images is not given."""
    from sdstudio.training.lora_train import LoraSettings

    resume = Path(args.resume).expanduser() if args.resume else None
    saved = resume / "settings.json" if resume else None
    if resume is not None and not (saved and saved.is_file()):
        raise RequestError(f"--resume {resume}: not a LoRA training folder (no settings.json there)")
    if resume is not None and args.images is None:
        return LoraSettings.from_json(saved.read_text()), resume
    if not args.images or not args.trigger:
        raise RequestError("train lora needs --images DIR and --trigger WORD (or --resume DIR)")
    check_numbers(args)
    name = args.out or default_name(args.trigger, args.class_word)
    settings = LoraSettings(
        images=str(Path(args.images).expanduser().resolve()), trigger=args.trigger.strip(),
        class_word=args.class_word.strip(), steps=args.steps, rank=args.rank,
        alpha=float(args.rank if args.alpha is None else args.alpha), lr=args.lr, resolution=args.resolution,
        batch_size=args.batch, text_encoder=args.text_encoder, conv=args.conv, random_crop=args.random_crop,
        flip=args.flip, gradient_checkpointing=args.gradient_checkpointing, seed=args.seed,
        warmup=args.warmup,
        base=str(Path(args.base).expanduser().resolve()) if args.base else "", out=str(output_path(name)))
    if resume is None:
        resume = paths.home() / "training" / "lora" / output_path(name).stem
        if (resume / "settings.json").exists():
            raise RequestError(f"{resume} already holds a training run; continue it with --resume {resume} "
                               "or choose another --out name")
    return settings, resume


class TrainProgress:
    """One terminal line: step, loss, seconds per step (of this session) and the time left."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.t0, self.first = time.perf_counter(), None

    def __call__(self, step: int, total: int, loss: float) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = step - 1
        done = step - self.first
        per = (now - self.t0) / max(done, 1)
        left = int(per * (total - step))
        self.stream.write(f"\rstep {step}/{total}  loss {loss:.4f}  {per:.2f} s/step  "
                          f"ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d} ")
        if step == total:
            self.stream.write("\n")
        self.stream.flush()


def cmd_train_lora(args: argparse.Namespace) -> int:
    from sdstudio.training.lora_data import load_examples

    if not 0 <= args.threads <= 1024:
        raise RequestError(f"--threads {args.threads}: choose 1 or more (0: torch's default)")
    settings, state_dir = settings_from(args)
    out = Path(settings.out)
    if out.exists():
        raise RequestError(f"{out} exists; choose another --out name (nothing was overwritten)")
    base = Path(settings.base) if settings.base else None
    if base is not None and not base.is_file():
        raise RequestError(f"--base {base}: no such file")
    examples = load_examples(Path(settings.images), settings.trigger, settings.class_word)
    import torch

    from sdstudio.engine.checkpoint import load_checkpoint
    from sdstudio.engine.model_files import builtin_model_path
    from sdstudio.training.lora_export import export_lora, lora_metadata
    from sdstudio.training.lora_train import train_lora

    if args.threads:
        torch.set_num_threads(args.threads)
    state_dir.mkdir(parents=True, exist_ok=True)
    stamp = state_dir / "started_at"  # kept for ss_training_started_at when the run is resumed
    if not stamp.is_file():
        stamp.write_text(str(time.time()))
    started = float(stamp.read_text())
    model = load_checkpoint(base or builtin_model_path(), device="cpu", dtype=torch.float32)
    resolution = settings.resolution or model.description.default_size
    settings = replace(settings, resolution=resolution)
    desc = model.description
    print(f"training a rank-{settings.rank} LoRA of {desc.name} ({desc.family_label}) "
          f"on {len(examples)} images at {resolution} px; state in {state_dir}", file=sys.stderr)
    network = train_lora(model, examples, settings, state_dir, args.save_every, TrainProgress())
    meta = lora_metadata(model, settings, examples, out.stem, started, (resolution, resolution))
    export_lora(network, out, meta)
    print(out)
    print(f"use it with <lora:{out.stem}:1> and the trigger word '{settings.trigger}'", file=sys.stderr)
    return 0
