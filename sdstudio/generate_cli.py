"""`python -m sdstudio generate ...` and `python -m sdstudio params IMAGE.png`.

Generated PNGs carry A1111's `parameters` text (read by most SD tools) and our `sdstudio` JSON chunk with
the full request, so `generate --from IMAGE.png` reproduces an image made by us, A1111 or ComfyUI exports.

Its defaults are the app's (GenerationRequest's field defaults; the seed drawn at random) and, without --out,
its images go into the app's outputs folder and history, so they show in the gallery.

`generate` checks in order of cost: the arguments and the output folder, then the model's header (sizes not
given come from it, and a job far beyond it is refused unless --yes), and only then imports torch and loads.
A prompt's `<lora:NAME:WEIGHT>` tags are read and their files found (models/Lora and each --lora-dir) before
anything loads; a LoRA file that cannot be applied in full stops the job with one line.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from sdstudio.control_cli import add_control_flags, control_options
from sdstudio.engine.errors import RequestError, SDStudioError
from sdstudio.engine.job_size import TILED_VAE_MODES, default_size, estimate, job_problem, physical_memory
from sdstudio.engine.names import DEVICE_CHOICES, SAMPLERS, SCHEDULERS
from sdstudio.engine.request import MAX_SEED, RANDOM_SEED, GenerationRequest, StepInfo
from sdstudio.engine.validate import check_side, validate, validate_settings
from sdstudio.hires_cli import add_hires_flags, hires_options, largest_pass
from sdstudio.history.animation import next_free
from sdstudio.outpaint_cli import add_outpaint_arguments, apply_outpaint, check_outpaint

# CLI flag -> request field, for flags whose value is copied as given.
_FIELDS = {
    "prompt": "prompt", "negative": "negative_prompt", "steps": "steps", "cfg": "cfg_scale",
    "sampler": "sampler", "scheduler": "scheduler", "seed": "seed", "width": "width", "height": "height",
    "batch": "batch_size", "clip_skip": "clip_skip", "strength": "strength", "mask_blur": "mask_blur",
    "only_masked": "only_masked", "model": "model", "vae": "vae", "taesd": "taesd", "prediction": "prediction",
    "draft_decode": "draft_decode", "tiled_vae": "tiled_vae",
}


_DEFAULTS = GenerationRequest()  # the app's defaults too (ui/prompt_state.py)


def add_generate_parser(sub) -> None:
    g = sub.add_parser("generate", help="generate images from the command line (the app's defaults)")
    g.add_argument("--model", help="checkpoint (.safetensors); default: the built-in model")
    g.add_argument("--prompt")
    g.add_argument("--negative", help="negative prompt")
    g.add_argument("--steps", type=int, help=f"default: {_DEFAULTS.steps}")
    g.add_argument("--cfg", type=float, help=f"classifier-free guidance scale; default: {_DEFAULTS.cfg_scale:g}")
    g.add_argument("--sampler", help=f"one of: {', '.join(SAMPLERS)}; default: {_DEFAULTS.sampler}")
    g.add_argument("--scheduler", help=f"one of: {', '.join(SCHEDULERS)}; default: {_DEFAULTS.scheduler}")
    g.add_argument("--seed", type=int, help=f"default: random (or {RANDOM_SEED}); the seed used is in the file name")
    g.add_argument("--width", type=int, help="default: the model's native size, or the init image's aspect "
                   "ratio at about the native area")
    g.add_argument("--height", type=int, help="default: as --width")
    g.add_argument("--batch", type=int, help="images per batch (seed, seed+1, ...; with a variation strength: "
                   "the seed each time and variation seed, variation seed+1, ...)")
    g.add_argument("--variation-seed", type=int, metavar="N",
                   help=f"A1111's variation seed (default with --variation-strength: random, or {RANDOM_SEED})")
    g.add_argument("--variation-strength", type=float, metavar="S",
                   help="how far the starting noise moves from the seed's toward the variation seed's, 0..1")
    g.add_argument("--seed-resize-from", type=seed_resize_size, metavar="WxH",
                   help="draw the noise as for an image of this size, pasted centred, so an image keeps its "
                   "composition at the new --width/--height (0x0: off)")
    g.add_argument("--clip-skip", type=int)
    g.add_argument("--init-image", help="img2img / inpainting source image")
    g.add_argument("--strength", type=float, help="img2img denoising strength in (0, 1]")
    g.add_argument("--mask", help="inpainting mask, white = repaint")
    g.add_argument("--mask-blur", type=int)
    g.add_argument("--only-masked", action="store_true", default=None, help="inpaint only the masked area")
    add_hires_flags(g)
    add_control_flags(g)
    add_outpaint_arguments(g)
    g.add_argument("--vae", help="replace the checkpoint's VAE")
    g.add_argument("--taesd", help="TAESD decoder for previews")
    g.add_argument("--draft-decode", action="store_true", default=None,
                   help="decode the final image with the --taesd decoder instead of the full VAE (fast, softer)")
    g.add_argument("--tiled-vae", choices=TILED_VAE_MODES,
                   help="decode/encode the VAE in tiles with whole-image statistics (same pixels, far less memory); "
                   "default: auto, above 1536x1536 or when memory is short")
    g.add_argument("--prediction", choices=("eps", "v"), help="override the detected prediction type")
    g.add_argument("--from", dest="from_image", help="re-run the parameters stored in this PNG")
    g.add_argument("--lora-dir", action="append", default=[], metavar="DIR",
                   help="also look for <lora:NAME:WEIGHT> files here (repeatable; $SDSTUDIO_HOME/models/Lora "
                   "is always searched first)")
    g.add_argument("--embeddings-dir", action="append", default=[], metavar="DIR",
                   help="also look for textual-inversion embeddings here (repeatable; $SDSTUDIO_HOME/embeddings "
                   "is always searched first)")
    g.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                   help="where to run: auto (CUDA, then Apple MPS, then the CPU), cpu, cuda or mps")
    g.add_argument("--out", help="write plain PNGs to this folder instead of the app's outputs folder and history")
    g.add_argument("--yes", "--force", dest="yes", action="store_true",
                   help="run a job far beyond the model's native size or this machine's memory instead of refusing it")
    g.add_argument("--allow-pickle", action="store_true",
                   help="load .ckpt/.pt checkpoints (weights-only); pickles can run code when opened, so only "
                   "use this for files you trust")
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


def seed_resize_size(text: str) -> tuple[int, int]:
    """argparse type for --seed-resize-from: "WxH" pixels."""
    width, x, height = text.strip().lower().partition("x")
    if not x or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: use WxH, e.g. 512x768 (0x0 turns it off)")
    return int(width), int(height)


def build_request(args: argparse.Namespace) -> GenerationRequest:
    req = request_from_image(args.from_image, find_model=args.model is None) if args.from_image else GenerationRequest()
    varied_before = req.subseed_strength != 0
    changes = {field: getattr(args, flag) for flag, field in _FIELDS.items() if getattr(args, flag) is not None}
    req = req.replace(**changes)
    if args.seed == RANDOM_SEED or (args.seed is None and not args.from_image):
        req = req.replace(seed=random.randrange(MAX_SEED + 1))  # as the app draws it (prompt_state.build_requests)
    req = variation_options(req, args, varied_before)
    req = hires_options(req, args)
    req = control_options(req, args)
    if args.init_image:
        req = req.replace(init_image=_open_image(args.init_image, "init image").convert("RGB"))
    if args.mask:
        if not args.init_image:
            raise RequestError("--mask needs --init-image (the image to inpaint)")
        req = req.replace(mask=_open_image(args.mask, "mask").convert("L"))
    return req


def variation_options(req: GenerationRequest, args: argparse.Namespace, varied_before: bool) -> GenerationRequest:
    """--variation-seed/--variation-strength/--seed-resize-from applied; the variation seed is drawn at
    random when a strength is given without one (unless the --from image had its own)."""
    if args.variation_strength is not None:
        req = req.replace(subseed_strength=args.variation_strength)
    if args.variation_seed is not None and args.variation_seed != RANDOM_SEED:
        req = req.replace(subseed=args.variation_seed)
    elif args.variation_seed == RANDOM_SEED or (args.variation_strength is not None and not varied_before):
        req = req.replace(subseed=random.randrange(MAX_SEED + 1))
    if args.variation_seed is not None and req.subseed_strength == 0:
        raise RequestError("--variation-seed does nothing at strength 0: give --variation-strength too (0..1)")
    if args.seed_resize_from is not None:
        width, height = args.seed_resize_from
        req = req.replace(seed_resize_from_w=width, seed_resize_from_h=height)
    return req


def check_before_loading(req: GenerationRequest, args: argparse.Namespace):
    """Everything that needs no model, checked before torch loads (seconds) and the model (up to a minute):
    the settings, the sides given, and where the images go: the --out folder, created and probed, or the
    app's history, opened. Returns that folder or the HistoryStore."""
    validate_settings(req)
    check_outpaint(req, args)
    for side in ("width", "height"):
        if getattr(args, side) is not None:
            check_side(side, getattr(args, side), multiple=1)
    return writable_folder(Path(args.out)) if args.out is not None else open_history()


def open_history():
    """The app's history (outputs folder and index), ready to add to; SDStudioError when it is read-only."""
    from sdstudio import paths
    from sdstudio.history.store import HistoryStore

    store = HistoryStore(paths.outputs_dir(), paths.history_db(), reconcile=False)  # the app reconciles
    if store.read_only:
        store.close()
        raise SDStudioError(f"cannot add to the history: {store.read_only_reason}; or pass --out DIR to write "
                            "the images to a folder")
    return store


def writable_folder(out: Path) -> Path:
    """`out`, created; a file written and removed there proves the images can be saved after the job."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".sdstudio-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RequestError(f"--out {out}: cannot write images there ({exc.strerror or exc}); choose another "
                           "folder") from None
    return out


def describe_model(req: GenerationRequest):
    """The model's description read from its header alone (no torch), or None for a pickle, which only the
    engine can open."""
    from sdstudio.engine.detect import detect
    from sdstudio.engine.model_files import builtin_model_path
    from sdstudio.engine.safetensors_file import PICKLE_SUFFIXES, read_header

    path = Path(req.model) if req.model else builtin_model_path()
    if path.suffix.lower() in PICKLE_SUFFIXES or (not req.model and not path.is_file()):
        return None  # the engine says why it cannot load these
    return detect(read_header(path), req.prediction)


def fit_to_model(req: GenerationRequest, args: argparse.Namespace, desc) -> GenerationRequest:
    """The sizes not given, from the model (or the init image's aspect ratio, or --outpaint's canvas); then
    the size checks and the job's estimate, which refuses a job far beyond the model or the machine unless
    --yes confirms it."""
    if args.outpaint is not None:
        req = apply_outpaint(req, args, desc.vae_downscale)  # the size is the extended canvas's
    elif not args.from_image:
        init_size = req.init_image.size if req.init_image is not None else None
        width, height = default_size(args.width, args.height, desc.default_size, desc.vae_downscale, init_size)
        req = req.replace(width=width, height=height)
    validate(req, multiple=desc.vae_downscale)
    width, height = largest_pass(req, desc.vae_downscale)
    problem = job_problem(estimate(width, height, req.steps, req.batch_size, desc.default_size),
                          physical_memory(), req.tiled_vae)
    if problem and not args.yes:
        raise RequestError(f"{problem}: choose a smaller --width/--height{'/hires size' if req.hires else ''} "
                           "or --batch (or pass --yes to run it anyway)")
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


def cmd_generate(args: argparse.Namespace) -> int:
    from sdstudio.engine.lora_set import resolve_loras

    req = build_request(args)
    out = check_before_loading(req, args)
    resolve_loras(req, args.lora_dir)  # bad tags and missing LoRA files are said before torch and the model load
    desc = describe_model(req)
    if desc is not None:
        req = fit_to_model(req, args, desc)
    from sdstudio.engine.api import Engine
    from sdstudio.history.parameters import format_parameters
    from sdstudio.history.png import save_png
    from sdstudio.history.record import Record

    engine = Engine(device=args.device, allow_pickle=args.allow_pickle)
    engine.lora_dirs, engine.embedding_dirs = list(args.lora_dir), list(args.embeddings_dir)
    loaded = engine.load_model(req.model, vae=req.vae, taesd=req.taesd, prediction=req.prediction)
    if desc is None:
        req = fit_to_model(req, args, loaded)
    print(f"model: {loaded.name} ({loaded.summary()})", file=sys.stderr)
    result = engine.generate(req, on_step=ProgressBar())
    if not isinstance(out, Path):
        return save_to_history(out, result)
    for n, (image, r) in enumerate(zip(result.images, result.requests, strict=True)):
        path = next_free(out, r.seed)
        record = Record(id=path.stem, created=time.time(), request=r, model_name=result.model_name)
        try:
            save_png(path, image, format_parameters(r, result.model_name), record.to_json())
        except OSError as exc:
            raise SDStudioError(f"{path}: cannot be saved ({exc.strerror or exc}); {n} of {len(result.images)} "
                                "images were saved before it: free some space or choose another --out") from None
        print(path)
    return 0


def save_to_history(store, result) -> int:
    """Add the images to the app's history, printing each file as it is saved."""
    try:
        for n, (image, r) in enumerate(zip(result.images, result.requests, strict=True)):
            try:
                entry = store.add(image, r, result.model_name)
            except OSError as exc:
                raise SDStudioError(f"{store.root}: an image cannot be saved ({exc.strerror or exc}); {n} of "
                                    f"{len(result.images)} images were saved before it: free some space or pass "
                                    "--out DIR") from None
            print(entry.file)
    finally:
        store.close()
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
