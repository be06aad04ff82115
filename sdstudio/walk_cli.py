"""`python -m sdstudio walk --from A.png --to B.png --frames N [--what noise|prompt|both] [--out DIR]
[--webp walk.webp] [--gif walk.gif]`: a latent walk (engine/walk.py) between two images carrying parameters.

Every parameter but the seed and prompt comes from A (and the flags that override it: --model, --steps,
--width/--height); of B only its seed and prompt are read. Each frame is an ordinary image whose parameters
re-run to its pixels (frame k of N at t = k/(N-1): A1111's variation seed for the noise, `Blend prompt` for
the prompt). Frames go into the app's history unless --out names a folder; --webp/--gif add an animation.
Checks run in order of cost, as `generate`'s do: arguments and paths, the model's header, then torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdstudio.engine.errors import RequestError, SDStudioError
from sdstudio.engine.names import DEVICE_CHOICES
from sdstudio.engine.walk import MAX_FRAMES, MIN_FRAMES, WHATS, WalkRequest, check_walk


def add_walk_parser(sub) -> None:
    w = sub.add_parser("walk", help="render the frames between two images (their seeds and/or prompts)")
    w.add_argument("--from", dest="from_image", required=True, help="start image (its parameters are used)")
    w.add_argument("--to", dest="to_image", required=True, help="end image (its seed and prompt are used)")
    w.add_argument("--frames", type=int, default=8, help=f"frames including both ends, {MIN_FRAMES}..{MAX_FRAMES}; "
                   "default: 8")
    w.add_argument("--what", choices=WHATS, default="both",
                   help="what moves: the initial noise (seed), the prompt, or both (default)")
    w.add_argument("--model", help="checkpoint to use instead of the one the start image names")
    w.add_argument("--steps", type=int, help="override the start image's steps")
    w.add_argument("--width", type=int, help="override the start image's width")
    w.add_argument("--height", type=int, help="override the start image's height")
    w.add_argument("--out", help="write plain PNGs to this folder instead of the app's outputs folder and history")
    w.add_argument("--webp", help="also write the frames as an animated WebP here")
    w.add_argument("--gif", help="also write the frames as an animated GIF here")
    w.add_argument("--frame-ms", type=int, default=125, help="milliseconds per animation frame; default: 125")
    w.add_argument("--bounce", action="store_true", help="the animation plays forwards, then back")
    w.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto, cpu, cuda or mps")
    w.add_argument("--yes", "--force", dest="yes", action="store_true",
                   help="run a job far beyond the model's native size or this machine's memory")
    w.add_argument("--allow-pickle", action="store_true", help="load .ckpt/.pt checkpoints (weights-only)")
    w.set_defaults(func=cmd_walk, outpaint=None, outpaint_fill=None)  # generate's checks, shared, ask for them


def build_walk(args: argparse.Namespace) -> WalkRequest:
    from sdstudio.generate_cli import request_from_image

    start = request_from_image(args.from_image, find_model=args.model is None)
    end = request_from_image(args.to_image, find_model=False)
    for name, req in (("--from", start), ("--to", end)):
        if req.init_image is not None:
            raise RequestError(f"{name} image was made by {req.mode}; walks run txt2img: use a txt2img image")
    changes = {flag: getattr(args, flag) for flag in ("model", "steps", "width", "height")
               if getattr(args, flag) is not None}
    walk = WalkRequest(start.replace(**changes), end, frames=args.frames, what=args.what)
    check_walk(walk)
    return walk


def check_animation_paths(args: argparse.Namespace) -> None:
    from sdstudio.history.animation import animation_format

    for flag, suffix in (("webp", ".webp"), ("gif", ".gif")):
        path = getattr(args, flag)
        if path is None:
            continue
        if animation_format(Path(path)) and Path(path).suffix.lower() != suffix:
            raise RequestError(f"--{flag} {path}: the file name must end in {suffix}")
        if not Path(path).resolve().parent.is_dir():
            raise RequestError(f"--{flag} {path}: no such folder")


def cmd_walk(args: argparse.Namespace) -> int:
    from sdstudio.engine.lora_set import resolve_loras
    from sdstudio.generate_cli import ProgressBar, check_before_loading, describe_model, fit_to_model

    walk = build_walk(args)
    check_animation_paths(args)
    out = check_before_loading(walk.start, args)
    resolve_loras(walk.start, [])
    desc = describe_model(walk.start)
    start = fit_to_model(walk.start, args, desc) if desc is not None else walk.start
    from sdstudio.engine.api import Engine
    from sdstudio.engine.walk import run_walk

    engine = Engine(device=args.device, allow_pickle=args.allow_pickle)
    engine.check_memory = not args.yes  # --yes runs it anyway, here as before loading
    loaded = engine.load_model(start.model, vae=start.vae, taesd=start.taesd, prediction=start.prediction)
    if desc is None:
        start = fit_to_model(start, args, loaded)
    walk = WalkRequest(start, walk.end, walk.frames, walk.what)
    print(f"model: {loaded.name} ({loaded.summary()}); {walk.frames} frames, moving {walk.what}", file=sys.stderr)
    save = FrameSaver(out)
    try:
        result = run_walk(engine, walk, on_frame=save, on_step=ProgressBar())
    finally:
        save.close()
    from sdstudio.history.animation import save_animation

    for path in (args.webp, args.gif):
        if path is not None:
            try:
                print(save_animation(Path(path), result.images, args.frame_ms, args.bounce))
            except OSError as exc:
                raise SDStudioError(f"{path}: cannot be saved ({exc.strerror or exc})") from None
    return 0


class FrameSaver:
    """Saves each frame as it is made (a cancelled walk keeps the frames it made): into the history, or as
    PNGs with parameters into a folder."""

    def __init__(self, out):
        from sdstudio.history.record import new_entry_id

        self.out = out
        self.walk_id = new_entry_id()  # the frames in the history share it: the gallery shows one walk tile

    def __call__(self, k: int, frame) -> None:
        from sdstudio.history.animation import save_frame

        image, request = frame.images[0], frame.requests[0]
        if isinstance(self.out, Path):
            print(save_frame(self.out, image, request, frame.model_name))
            return
        try:
            entry = self.out.add(image, request.replace(walk_id=self.walk_id), frame.model_name)
        except OSError as exc:
            raise SDStudioError(f"{self.out.root}: frame {k} cannot be saved ({exc.strerror or exc}); free some "
                                "space or pass --out DIR") from None
        print(entry.file)

    def close(self) -> None:
        if not isinstance(self.out, Path):
            self.out.close()
