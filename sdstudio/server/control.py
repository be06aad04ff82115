"""sd-webui-controlnet's API units (`alwayson_scripts.controlnet.args`, the script name in any case) ->
our ControlUnits.

A unit's fields are sd-webui-controlnet's (scripts/controlnet_ui/controlnet_ui_group.py, its API docs):
module, model (a file of models/ControlNet by name, with or without its " [hash]"), weight, image (base64, or
{"image", "mask"}), resize_mode and control_mode (names or their index), guidance_start/end, processor_res and
threshold_a/b (the preprocessor's first and second slider; -1 = its default). Disabled units are skipped, as
there. Anything we cannot do as asked (a unit mask, a missing model or image) is refused.
"""

from __future__ import annotations

from typing import Any

from sdstudio.engine import preprocessors
from sdstudio.engine.controlnet_folder import controlnet_files
from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import CONTROL_MODES, CONTROL_RESIZE_MODES, ControlUnit
from sdstudio.server.body import Body, decode_image, shown
from sdstudio.server.checkpoints import is_path_like

SCRIPT = "controlnet"
MAX_UNITS = 8
_DEFAULT = -1  # sd-webui-controlnet's "the preprocessor's own value" for processor_res and the thresholds


def control_units(scripts: dict) -> tuple[ControlUnit, ...]:
    """The enabled units of the body's ControlNet script; other always-on scripts are refused by name."""
    units: tuple[ControlUnit, ...] = ()
    for name, value in scripts.items():
        script = Body(value, f"alwayson_scripts {shown(name)}")
        if str(name).lower() != SCRIPT:
            if script.items("args"):
                raise RequestError(f"script {shown(name)} is not available on this server (ControlNet is)")
            continue
        args = script.items("args")
        if len(args) > MAX_UNITS:
            raise RequestError(f"{len(args)} ControlNet units: at most {MAX_UNITS}")
        units += tuple(unit for n, arg in enumerate(args) if (unit := _unit(arg, n)) is not None)
    return units


def _unit(arg: Any, n: int) -> ControlUnit | None:
    what = f"ControlNet unit {n}"
    if isinstance(arg, bool) and not arg:
        return None  # some clients send False for an unused slot
    unit = Body(arg, what)
    if not unit.flag("enabled", True):
        return None
    image_field = unit.data.get("image")
    if isinstance(image_field, dict):
        if image_field.get("mask"):
            raise RequestError(f"{what}: a unit mask is not available; send the image alone")
        image_field = image_field.get("image")
    if unit.data.get("mask") or unit.data.get("mask_image"):
        raise RequestError(f"{what}: a unit mask is not available; send the image alone")
    if not image_field:
        raise RequestError(f"{what}: send the unit's image (the init image is not used in its place here)")
    module = preprocessors.canonical(unit.text("module", "none") or "none")
    return ControlUnit(
        model=_model_path(unit.text("model", "None"), what), image=decode_image(image_field, f"{what} image"),
        preprocessor=module, preprocessor_params=_params(unit, module), strength=unit.number("weight", 1.0),
        start=unit.number("guidance_start", 0.0), end=unit.number("guidance_end", 1.0),
        mode=_choice(unit, "control_mode", CONTROL_MODES, CONTROL_MODES[0], what),
        resize_mode=_choice(unit, "resize_mode", CONTROL_RESIZE_MODES, "Crop and Resize", what),
    )


def _model_path(name: str, what: str) -> str:
    wanted = name.strip()
    if " [" in wanted and wanted.endswith("]"):
        wanted = wanted.rsplit(" [", 1)[0]
    if not wanted or wanted.lower() == "none":
        raise RequestError(f"{what}: name its ControlNet model (GET /controlnet/model_list lists them)")
    if is_path_like(wanted):
        raise RequestError(f"{what}: model {shown(name)} is a path, not a model name")
    for found in controlnet_files():
        if wanted in (found.name, found.name + ".safetensors"):
            return found.path
    raise RequestError(f"{what}: no ControlNet model named {shown(name)} on this server")


def _params(unit: Body, module: str) -> tuple[tuple[str, float], ...]:
    """processor_res -> "resolution"; threshold_a/b -> the preprocessor's first and second slider."""
    entry = preprocessors.describe(module)
    given: list[tuple[str, float]] = []
    if entry.resolution and (res := unit.number("processor_res", _DEFAULT)) != _DEFAULT:
        given.append(("resolution", int(res) if res.is_integer() else res))
    for key, param in zip(("threshold_a", "threshold_b"), entry.sliders, strict=False):
        if (value := unit.number(key, _DEFAULT)) != _DEFAULT:
            given.append((param.name, int(value) if param.whole and value.is_integer() else value))
    return tuple(preprocessors.settings(module, given).items())


def _choice(unit: Body, key: str, names: tuple[str, ...], default: str, what: str) -> str:
    value = unit.data.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    for name in names:
        if isinstance(value, str) and value.lower() == name.lower():
            return name
    raise RequestError(f"{what}: {key} must be one of {', '.join(names)} (or 0..{len(names) - 1}), "
                       f"got {shown(value)}")
