"""`generate --init-image IN.png --outpaint left=128,right=128 [--outpaint-fill edge|blur|noise]`.

The input is placed on a larger canvas (engine/outpaint.py) and the job becomes an ordinary inpainting job at
the canvas's size: the filled canvas is its init image and the new area its mask, so the saved image re-runs
from its PNG (`generate --from`) like any inpainting image, and the original's pixels are kept exactly outside
`seam_band(--mask-blur)` of the seam (engine/outpaint.py). With --only-masked only the box around the new area
and the seam is sampled, by default at its own size (--width/--height: the size it is sampled at, as A1111's
"Only masked" takes them), and pasted back; the saved image is the whole canvas either way.
"""

from __future__ import annotations

import argparse

from sdstudio.engine.errors import RequestError
from sdstudio.engine.outpaint import DEFAULT_FILL, FILLS, Extension, extend, only_masked_size
from sdstudio.engine.request import GenerationRequest

# Outpainting's default strength: a 4-channel model must redraw the fill completely (A1111 advises 0.8-1).
OUTPAINT_STRENGTH = 1.0


def extension_arg(text: str) -> Extension:
    """argparse type for --outpaint."""
    try:
        return Extension.parse(text)
    except RequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_outpaint_arguments(g) -> None:
    g.add_argument("--outpaint", type=extension_arg, metavar="SIDE=PX,...",
                   help="extend the --init-image and paint the new area: sides left, right, up, down (or all), "
                   "e.g. left=128,right=128; the canvas grows to the model's multiple of 8 on an extended side; "
                   f"--strength defaults to {OUTPAINT_STRENGTH:g}; a --mask repaints inside the image too")
    g.add_argument("--outpaint-fill", choices=FILLS, help="what the new area starts as: edge colours, a blurred "
                   f"stretch of the border, or noise (default: {DEFAULT_FILL})")


def apply_outpaint(req: GenerationRequest, args: argparse.Namespace, multiple: int) -> GenerationRequest:
    """The request as an inpainting job on the extended canvas; unchanged without --outpaint."""
    check_outpaint(req, args)
    if args.outpaint is None:
        return req
    ext = args.outpaint.rounded(req.init_image.size, multiple)
    width, height = ext.size(req.init_image.size)
    for side, given, size in (("width", args.width, width), ("height", args.height, height)):
        if given is not None and given != size and not req.only_masked:
            raise RequestError(f"--outpaint makes the image {width}x{height} (the input plus {ext.text()}): leave "
                               f"out --{side}, or change the sides")
    canvas, mask = extend(req.init_image, ext, args.outpaint_fill or DEFAULT_FILL, seed=req.seed, mask=req.mask,
                          mask_blur=req.mask_blur)
    if req.only_masked:  # the box around the new area and the seam, sampled at its own size unless told
        own_w, own_h = only_masked_size(mask, req.only_masked_padding, multiple)
        width, height = args.width or own_w, args.height or own_h
    strength = req.strength if args.strength is not None else OUTPAINT_STRENGTH
    return req.replace(init_image=canvas, mask=mask, width=width, height=height, strength=strength)


def check_outpaint(req: GenerationRequest, args: argparse.Namespace) -> None:
    """The flags' mistakes that need no model, said before anything loads."""
    if args.outpaint is None:
        if args.outpaint_fill is not None:
            raise RequestError("--outpaint-fill needs --outpaint (which sides to extend)")
        return
    if req.init_image is None:
        raise RequestError("--outpaint needs --init-image (the image to extend)")
