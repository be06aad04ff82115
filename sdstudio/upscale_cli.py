"""`python -m sdstudio upscale IMAGE.png --upscaler NAME [--scale F] [--sd-strength S] --out DIR`.

The upscaler is Lanczos, Nearest or a model file's stem from models/ESRGAN (and A1111's other upscaler
folders). With --sd-strength above 0 the upscaled image is refined by A1111's SD upscale: img2img in
overlapping tiles with the image's own prompt, seed and model (from its parameters; --model/--prompt
override). Checks run in order of cost: arguments, the image, the output folder, then the upscaler's name
(torch loads here), and the model only for an SD pass.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sdstudio.engine.errors import RequestError
from sdstudio.engine.names import DEVICE_CHOICES


def add_upscale_parser(sub) -> None:
    u = sub.add_parser("upscale", help="upscale an image (Lanczos, Nearest or an ESRGAN model), optionally "
                       "refined by SD upscale")
    u.add_argument("image")
    u.add_argument("--upscaler", required=True, help="Lanczos, Nearest, or a model file's name (its stem) in "
                   "models/ESRGAN, models/RealESRGAN, ...; a path to a model file works too")
    u.add_argument("--scale", type=float, help="factor of the image's size; default: the model's own factor "
                   "(Lanczos/Nearest: 2)")
    u.add_argument("--sd-strength", type=float, default=0.0,
                   help="denoising strength of an SD upscale pass in tiles after the upscale (0 = none; "
                   "0.1-0.3 adds detail)")
    u.add_argument("--overlap", type=int, default=None, help="SD upscale tile overlap in pixels (default 64)")
    u.add_argument("--model", help="checkpoint for the SD pass; default: the one the image names, or the "
                   "built-in model")
    u.add_argument("--prompt", help="prompt for the SD pass; default: the image's own")
    u.add_argument("--steps", type=int, help="steps of the SD pass's schedule (the strength's share runs)")
    u.add_argument("--tile", type=int, help="SD pass tile side in pixels; default: the image's generation size")
    u.add_argument("--out", required=True, help="folder for the result")
    u.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    u.add_argument("--allow-pickle", action="store_true", help="load a .ckpt checkpoint for the SD pass "
                   "(weights-only); upscaler .pth files are always read weights-only")
    u.set_defaults(func=cmd_upscale)


def _source_request(args: argparse.Namespace):
    """(request, model name): the image's own request (prompt, seed, model) when it carries readable
    parameters, else the defaults, with the command line's overrides. Only an SD pass needs it re-runnable
    (its model found here); a plain upscale just carries the parameters over."""
    from sdstudio.engine.request import GenerationRequest
    from sdstudio.generate_cli import request_from_image
    from sdstudio.history.file_parameters import read_file_parameters

    try:
        found = read_file_parameters(Path(args.image), pixels=False)
    except (OSError, SyntaxError, ValueError):
        found = None
    model_name = found.model_name if found is not None else ""
    req = found.request if found is not None and found.request is not None else GenerationRequest()
    if args.sd_strength > 0:
        if found is None or found.request is None:
            if args.prompt is None:
                raise RequestError(f"{args.image} carries no parameters SD Studio can re-run: give --prompt (and "
                                   "--model) for the SD upscale pass")
        else:
            req = request_from_image(args.image, find_model=args.model is None)
    changes = {k: getattr(args, k) for k in ("model", "prompt", "steps") if getattr(args, k) is not None}
    if args.tile is not None:
        changes.update(width=args.tile, height=args.tile)
    return req.replace(init_image=None, mask=None, **changes), model_name


def cmd_upscale(args: argparse.Namespace) -> int:
    from sdstudio.engine.upscale_job import OVERLAP, UpscaleSettings
    from sdstudio.generate_cli import _open_image, writable_folder

    image = _open_image(args.image, "image").convert("RGB")
    out_dir = writable_folder(Path(args.out))
    req, model_name = _source_request(args)
    from sdstudio.engine.devices import resolve_device
    from sdstudio.engine.upscale import check_upscaler, is_latent
    from sdstudio.engine.upscaler_models import register_model_upscalers

    source = register_model_upscalers(resolve_device(args.device))
    if is_latent(args.upscaler):
        raise RequestError(f"{args.upscaler} upscales latents (hires fix only); choose Lanczos, Nearest or a "
                           "model file")
    check_upscaler(args.upscaler)
    scale = args.scale
    if scale is None:
        scale = float(source.model(args.upscaler).scale) if source.has(args.upscaler) else 2.0
    settings = UpscaleSettings(args.upscaler, scale, args.sd_strength,
                               OVERLAP if args.overlap is None else args.overlap)
    settings.check(image.width, image.height)
    t0 = time.perf_counter()
    from sdstudio.engine.upscale_job import sd_refine, upscale

    big = upscale(image, settings)
    print(f"upscaled {image.width}x{image.height} -> {big.width}x{big.height} with {args.upscaler} "
          f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    tile = None
    if settings.sd_strength > 0:
        from sdstudio.engine.api import Engine

        engine = Engine(device=args.device, allow_pickle=args.allow_pickle)
        loaded = engine.load_model(req.model, vae=req.vae, taesd=req.taesd, prediction=req.prediction)
        model_name = loaded.name
        big, tile = sd_refine(big, req, settings, engine, on_tile=_tile_progress)
    return _save(out_dir, big, req, model_name, settings, tile, args.image)


def _tile_progress(index: int, count: int) -> None:
    print(f"SD upscale tile {index + 1}/{count}", file=sys.stderr)


def _save(out_dir: Path, image, req, model_name: str, settings, tile, source: str) -> int:
    from sdstudio.engine.errors import SDStudioError
    from sdstudio.history.parameters import format_parameters
    from sdstudio.history.png import save_png

    text = format_parameters(req, model_name, settings.infotext(tile))
    path = _free_name(out_dir, Path(source).stem)
    try:
        save_png(path, image, text)
    except OSError as exc:
        raise SDStudioError(f"{path}: cannot be saved ({exc.strerror or exc}); free some space or choose another "
                            "--out") from None
    print(path)
    return 0


def _free_name(folder: Path, stem: str) -> Path:
    path = folder / f"{stem}-upscaled.png"
    n = 1
    while path.exists():
        path = folder / f"{stem}-upscaled-{n}.png"
        n += 1
    return path
