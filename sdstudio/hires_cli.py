"""`generate`'s hires fix flags (engine/hires.py): a second pass at a bigger size, A1111's options.

Any hires flag turns hires fix on; `--no-hires` turns off one that a `--from` image had.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sdstudio.engine.model_files import resolve_model
from sdstudio.engine.names import LATENT_UPSCALERS, PIXEL_UPSCALERS
from sdstudio.engine.request import GenerationRequest

_DEFAULTS = GenerationRequest()
# flag -> request field, applied when given
_FIELDS = {"hires_scale": "hires_scale", "hires_upscaler": "hires_upscaler", "hires_steps": "hires_steps",
           "hires_sampler": "hires_sampler", "hires_scheduler": "hires_scheduler", "hires_prompt": "hires_prompt",
           "hires_negative": "hires_negative_prompt", "hires_cfg_scale": "hires_cfg_scale"}


def resize_size(text: str) -> tuple[int, int]:
    """argparse type for --hires-resize: "WxH" pixels, one side 0 to keep the aspect."""
    width, x, height = text.strip().lower().partition("x")
    if not x or not width.isdigit() or not height.isdigit() or (int(width), int(height)) == (0, 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: use WxH, e.g. 1024x1536 (0 for one side keeps "
                                         "the aspect)")
    return int(width), int(height)


def add_hires_flags(g) -> None:
    h = g.add_argument_group("hires fix", "txt2img, then upscaled and sampled again as img2img (A1111's hires fix)")
    h.add_argument("--hires", action=argparse.BooleanOptionalAction, default=None,
                   help=f"turn hires fix on (default scale {_DEFAULTS.hires_scale:g}, upscaler "
                   f"{_DEFAULTS.hires_upscaler}) or off; any --hires-* flag turns it on")
    size = h.add_mutually_exclusive_group()
    size.add_argument("--hires-scale", type=float, metavar="F", help="upscale the first pass by F (1..8)")
    size.add_argument("--hires-resize", type=resize_size, metavar="WxH",
                      help="upscale to W x H (one side 0: keep the aspect; both: cover and crop to it)")
    h.add_argument("--hires-upscaler", metavar="NAME",
                   help=f"{', '.join([*LATENT_UPSCALERS, *PIXEL_UPSCALERS])}, or an upscaler model's name; "
                   f"default: {_DEFAULTS.hires_upscaler}")
    h.add_argument("--hires-steps", type=int, metavar="N", help="steps of the second pass (0 = same as --steps)")
    h.add_argument("--hires-cfg-scale", type=float, metavar="S",
                   help="CFG scale of the second pass (0 = same as --cfg)")
    h.add_argument("--denoising-strength", dest="strength", type=float, metavar="S",
                   help=f"how much the second pass changes, (0, 1]; default: {_DEFAULTS.strength:g} (same as "
                   "--strength)")
    h.add_argument("--hires-sampler", metavar="NAME", help="sampler of the second pass (default: --sampler's)")
    h.add_argument("--hires-scheduler", metavar="NAME", help="schedule of the second pass (default: --scheduler's)")
    h.add_argument("--hires-prompt", metavar="TEXT", help="prompt of the second pass (default: --prompt)")
    h.add_argument("--hires-negative", metavar="TEXT", help="negative prompt of the second pass (default: --negative)")
    h.add_argument("--hires-checkpoint", metavar="FILE|NAME",
                   help="another checkpoint for the second pass, of the same family: a .safetensors "
                   "file or a model's name in the models folder; 'same' for --model's (default)")


def hires_options(req: GenerationRequest, args: argparse.Namespace) -> GenerationRequest:
    """The request with the hires flags applied."""
    changes = {field: getattr(args, flag) for flag, field in _FIELDS.items() if getattr(args, flag) is not None}
    if args.hires_scale is not None:
        changes.update(hires_resize_w=0, hires_resize_h=0)
    if args.hires_resize is not None:
        changes.update(hires_resize_w=args.hires_resize[0], hires_resize_h=args.hires_resize[1])
    if args.hires_checkpoint is not None:
        path = hires_checkpoint_path(args.hires_checkpoint)
        changes.update(hires_checkpoint=path, hires_checkpoint_hash="")
    if changes:
        changes["hires"] = True
    if args.hires is not None:
        changes["hires"] = args.hires
    return req.replace(**changes)


def hires_checkpoint_path(text: str) -> str:
    """--hires-checkpoint's file: a path as given, or a model's name looked up in the models folder
    (ModelNotFound says where it looked); "" for 'same'."""
    if text.strip().lower() in ("", "same", "use same checkpoint"):
        return ""
    if Path(text).is_file():
        return str(Path(text))
    return str(resolve_model(text, "", None))
