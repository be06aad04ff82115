"""`generate`'s ControlNet flags: one unit per --control-model, the n-th of every other --control-* flag
belonging to unit n (units without one take the default).

The image is used as the map unless --control-preprocessor names one (or "auto": the one that pairs with the
model's file name, engine/preprocessors.py). Everything here is checked before torch and the model load.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sdstudio.engine import preprocessors
from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import CONTROL_MODES, CONTROL_RESIZE_MODES, ControlUnit, GenerationRequest

AUTO = "auto"
MODES = dict(zip(("balanced", "prompt", "control"), CONTROL_MODES, strict=True))
RESIZE_MODES = dict(zip(("just", "crop", "fill"), CONTROL_RESIZE_MODES, strict=True))
_UNIT = ControlUnit(model="")
MAX_STRENGTH = 2.0  # A1111's weight slider

# flag (argparse dest) → what one value of it means, for the "n-th flag" messages
_PER_UNIT = ("control_image", "control_preprocessor", "control_params", "control_strength", "control_start",
             "control_end", "control_mode", "control_resize")


def add_control_flags(g) -> None:
    c = g.add_argument_group(
        "ControlNet", "condition the image on a map (edges, scribble, ...): each --control-model starts a unit; the "
        "n-th of every other --control-* flag belongs to the n-th unit")
    c.add_argument("--control-model", action="append", metavar="PATH",
                   help="a ControlNet or T2I-Adapter file (.safetensors), or the name of one in models/ControlNet "
                   "or among the built-in ones (sdstudio-emoji_canny, for the built-in model)")
    c.add_argument("--control-image", action="append", metavar="PATH",
                   help="the unit's image: the map itself, or the source its preprocessor turns into one")
    c.add_argument("--control-preprocessor", action="append", metavar="NAME",
                   help=f"make the map from the image with: {', '.join(preprocessors.names())}, or {AUTO} (the "
                   "one that pairs with the model's name); default: none (the image is the map)")
    c.add_argument("--control-params", action="append", type=params_text, metavar="K=V,...",
                   help="the preprocessor's settings, e.g. low=50,high=150 for canny (default: its own)")
    c.add_argument("--control-strength", action="append", type=float, metavar="S",
                   help=f"weight of the unit's residuals, 0..{MAX_STRENGTH:g}; default: {_UNIT.strength:g}")
    c.add_argument("--control-start", action="append", type=float, metavar="F",
                   help=f"fraction of the steps where the unit starts, 0..1; default: {_UNIT.start:g}")
    c.add_argument("--control-end", action="append", type=float, metavar="F",
                   help=f"fraction of the steps where it stops, 0..1; default: {_UNIT.end:g}")
    c.add_argument("--control-mode", action="append", choices=tuple(MODES), metavar="MODE",
                   help="balanced, prompt (my prompt is more important) or control (ControlNet is more "
                   "important); default: balanced")
    c.add_argument("--control-resize", action="append", choices=tuple(RESIZE_MODES), metavar="MODE",
                   help="fit the map to the image size: just (stretch), crop (cover, then crop) or fill (fit, "
                   "then pad); default: crop")
    c.add_argument("--no-control", action="store_true", help="drop the ControlNet units a --from image had")


def params_text(text: str) -> tuple[tuple[str, float], ...]:
    """argparse type for --control-params: "name=value,name=value" (numbers)."""
    pairs = []
    for item in text.split(","):
        if not item.strip():
            continue
        name, equals, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not equals or not name.strip() or not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"{item.strip()!r} is not a setting: use name=number, e.g. low=50")
        pairs.append((name.strip(), int(number) if number.is_integer() else number))
    return tuple(pairs)


def control_options(req: GenerationRequest, args: argparse.Namespace) -> GenerationRequest:
    """The request with the ControlNet flags applied: the units they describe replace any a --from image had;
    --no-control drops those. RequestError for a missing file, a flag without its unit or a bad value."""
    models = args.control_model or []
    if args.no_control:
        if models:
            raise RequestError("--no-control and --control-model contradict each other: give one of them")
        return req.replace(control_units=())
    if not models:
        stray = [flag for flag in _PER_UNIT if getattr(args, flag)]
        if stray:
            raise RequestError(f"--{stray[0].replace('_', '-')} needs a --control-model (the unit it belongs to)")
        return req
    images = args.control_image or []
    if len(images) != len(models):
        raise RequestError(f"{len(models)} --control-model but {len(images)} --control-image: give each unit its "
                           "image, in the same order")
    for flag in _PER_UNIT:
        given = getattr(args, flag) or []
        if len(given) > len(models):
            raise RequestError(f"{len(given)} --{flag.replace('_', '-')} for {len(models)} --control-model: the "
                               "n-th belongs to the n-th unit")
    units = tuple(_unit(args, n, model, image) for n, (model, image) in enumerate(zip(models, images, strict=True)))
    return req.replace(control_units=units)


def _nth(args: argparse.Namespace, flag: str, n: int, default):
    given = getattr(args, flag) or []
    return given[n] if n < len(given) else default


def _unit(args: argparse.Namespace, n: int, model: str, image_path: str) -> ControlUnit:
    where = f"ControlNet unit {n + 1}"
    if not Path(model).is_file():
        from sdstudio.engine.controlnet_folder import find_controlnet

        named = find_controlnet(model)
        if named is None:
            raise RequestError(f"{where}: --control-model {model}: no such file, nor a ControlNet of that name in "
                               "models/ControlNet or the built-in ones")
        model = str(named)
    from sdstudio.generate_cli import _open_image  # generate_cli imports this module

    image = _open_image(image_path, f"{where}: --control-image")
    name = _nth(args, "control_preprocessor", n, preprocessors.NONE)
    name = preprocessors.pairing(model) if name.strip().lower() == AUTO else preprocessors.canonical(name)
    reason = preprocessors.availability(name)
    if reason:
        raise RequestError(f"{where}: preprocessor {name} is {reason}")
    given = _nth(args, "control_params", n, ())
    preprocessors.settings(name, given)  # checked now, before anything loads
    unit = ControlUnit(
        model=model,
        image=image,
        preprocessor=name,
        preprocessor_params=tuple(given),
        strength=_nth(args, "control_strength", n, _UNIT.strength),
        start=_nth(args, "control_start", n, _UNIT.start),
        end=_nth(args, "control_end", n, _UNIT.end),
        mode=MODES[_nth(args, "control_mode", n, "balanced")],
        resize_mode=RESIZE_MODES[_nth(args, "control_resize", n, "crop")],
    )
    check_unit(unit, where)
    return unit


def check_unit(unit: ControlUnit, where: str) -> None:
    """Strength and the start/end window in range (RequestError naming the unit)."""
    for name, value, high in (("strength", unit.strength, MAX_STRENGTH), ("start", unit.start, 1.0),
                              ("end", unit.end, 1.0)):
        if not (math.isfinite(value) and 0 <= value <= high):
            raise RequestError(f"{where}: --control-{name} {value:g} is out of range: use 0..{high:g}")
    if unit.start >= unit.end:
        raise RequestError(f"{where}: --control-start {unit.start:g} must be below --control-end {unit.end:g}")
