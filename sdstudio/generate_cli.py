"""`python -m sdstudio generate ...` and `python -m sdstudio params IMAGE.png`.

Generated PNGs carry A1111's `parameters` text (read by most SD tools) and our `sdstudio` JSON chunk with
the full request, so `generate --from IMAGE.png` reproduces an image made by us, A1111 or ComfyUI exports.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from sdstudio.engine.errors import RequestError, SDStudioError
from sdstudio.engine.names import DEVICE_CHOICES, SAMPLERS, SCHEDULERS
from sdstudio.engine.request import GenerationRequest, StepInfo

# CLI flag -> request field, for flags whose value is copied as given.
_FIELDS = {
    "prompt": "prompt", "negative": "negative_prompt", "steps": "steps", "cfg": "cfg_scale",
    "sampler": "sampler", "scheduler": "scheduler", "seed": "seed", "width": "width", "height": "height",
    "batch": "batch_size", "clip_skip": "clip_skip", "strength": "strength", "mask_blur": "mask_blur",
    "only_masked": "only_masked", "model": "model", "vae": "vae", "taesd": "taesd", "prediction": "prediction",
}


def add_generate_parser(sub) -> None:
    g = sub.add_parser("generate", help="generate images from the command line")
    g.add_argument("--model", help="checkpoint (.safetensors); default: the built-in model")
    g.add_argument("--prompt")
    g.add_argument("--negative", help="negative prompt")
    g.add_argument("--steps", type=int)
    g.add_argument("--cfg", type=float, help="classifier-free guidance scale")
    g.add_argument("--sampler", help=f"one of: {', '.join(SAMPLERS)}")
    g.add_argument("--scheduler", help=f"one of: {', '.join(SCHEDULERS)}")
    g.add_argument("--seed", type=int)
    g.add_argument("--width", type=int, help="default: the model's native size")
    g.add_argument("--height", type=int)
    g.add_argument("--batch", type=int, help="images per batch (seed, seed+1, ...)")
    g.add_argument("--clip-skip", type=int)
    g.add_argument("--init-image", help="img2img / inpainting source image")
    g.add_argument("--strength", type=float, help="img2img denoising strength in (0, 1]")
    g.add_argument("--mask", help="inpainting mask, white = repaint")
    g.add_argument("--mask-blur", type=int)
    g.add_argument("--only-masked", action="store_true", default=None, help="inpaint only the masked area")
    g.add_argument("--vae", help="replace the checkpoint's VAE")
    g.add_argument("--taesd", help="TAESD decoder for previews")
    g.add_argument("--prediction", choices=("eps", "v"), help="override the detected prediction type")
    g.add_argument("--from", dest="from_image", help="re-run the parameters stored in this PNG")
    g.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                   help="where to run: auto (CUDA, then Apple MPS, then the CPU), cpu, cuda or mps")
    g.add_argument("--out", default="outputs", help="output folder (default: ./outputs)")
    g.set_defaults(func=cmd_generate)


def add_params_parser(sub) -> None:
    p = sub.add_parser("params", help="print the generation parameters stored in an image")
    p.add_argument("image")
    p.set_defaults(func=cmd_params)


def _open_image(path: str, what: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise RequestError(f"{what} {path}: no such file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise RequestError(f"{what} {path}: not a readable image ({exc})") from None


def request_from_image(path: str, find_model: bool = True) -> GenerationRequest:
    """The request that re-creates an image: our full record (init image and mask from its sidecars)
    or its A1111 text, with the model it names found in the models folder (find_model=False: the
    caller names the model). Raises when it cannot be re-run as stored."""
    from sdstudio import paths
    from sdstudio.history.file_parameters import read_file_parameters

    try:
        found = read_file_parameters(Path(path), models_dir=paths.models_dir() if find_model else None,
                                     history_root=paths.outputs_dir())
    except FileNotFoundError:
        raise RequestError(f"{path}: no such file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(f"{path}: not a readable image ({exc})") from None
    return found.rerun_request()


def build_request(args: argparse.Namespace) -> GenerationRequest:
    req = request_from_image(args.from_image, find_model=args.model is None) if args.from_image else GenerationRequest()
    changes = {field: getattr(args, flag) for flag, field in _FIELDS.items() if getattr(args, flag) is not None}
    req = req.replace(**changes)
    if args.init_image:
        req = req.replace(init_image=_open_image(args.init_image, "init image").convert("RGB"))
    if args.mask:
        if not args.init_image:
            raise RequestError("--mask needs --init-image (the image to inpaint)")
        req = req.replace(mask=_open_image(args.mask, "mask").convert("L"))
    if args.init_image and args.width is None and args.height is None and not args.from_image:
        w, h = req.init_image.size
        req = req.replace(width=max(8, w - w % 8), height=max(8, h - h % 8))
    return req


class ProgressBar:
    def __init__(self, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width, self.t0 = width, time.perf_counter()

    def __call__(self, info: StepInfo) -> None:
        done = info.step + 1
        filled = self.width * done // info.total
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{info.total} "
                          f"{rate:.2f} it/s")
        if done == info.total:
            self.stream.write("\n")
        self.stream.flush()


def next_free(folder: Path, seed: int) -> Path:
    existing = [int(p.name.split("-")[0]) for p in folder.glob("[0-9]*-*.png") if p.name.split("-")[0].isdigit()]
    return folder / f"{max(existing, default=-1) + 1:05d}-{seed}.png"


def cmd_generate(args: argparse.Namespace) -> int:
    req = build_request(args)
    from sdstudio.engine.api import Engine
    from sdstudio.engine.validate import validate
    from sdstudio.history.parameters import format_parameters
    from sdstudio.history.png import save_png
    from sdstudio.history.record import Record

    engine = Engine(device=args.device)
    desc = engine.load_model(req.model, vae=req.vae, taesd=req.taesd, prediction=req.prediction)
    if args.width is None and args.height is None and req.init_image is None and not args.from_image:
        req = req.replace(width=desc.default_size, height=desc.default_size)
    validate(req, multiple=desc.vae_downscale)
    print(f"model: {desc.name} ({desc.summary()})", file=sys.stderr)
    result = engine.generate(req, on_step=ProgressBar())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for image, r in zip(result.images, result.requests, strict=True):
        path = next_free(out, r.seed)
        record = Record(id=path.stem, created=time.time(), request=r, model_name=result.model_name)
        save_png(path, image, format_parameters(r, result.model_name), record.to_json())
        print(path)
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from sdstudio.history.file_parameters import read_file_parameters
    from sdstudio.history.parameters import format_parameters
    from sdstudio.untrusted import printable

    path = Path(args.image)
    if not path.is_file():
        raise SDStudioError(f"{path}: no such file")
    try:
        found = read_file_parameters(path, pixels=False)
    except (OSError, SyntaxError, ValueError) as exc:
        raise SDStudioError(f"{path.name}: not a readable image ({printable(exc, multiline=False)})") from None
    # The text is the file's, not ours: escape sequences in it must not reach the terminal.
    if found.text:
        print(printable(found.text, PARAMS_LIMIT))
    elif found.request is not None:
        print(printable(format_parameters(found.request, found.model_name), PARAMS_LIMIT))
    else:
        raise SDStudioError(f"{path.name}: {printable(found.problem, multiline=False)}")
    return 0


PARAMS_LIMIT = 20_000  # characters of parameters `params` prints; real prompts are far shorter
