"""ControlNet units in A1111's infotext (sd-webui-controlnet's `extra_generation_params`), written and read back.

One key per enabled unit, numbered from 0, its value one quoted string of "Field: value" pairs (the unit's
fields in display case, hidden sliders left out)::

    ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: Crop and
    Resize, Processor Res: 512, Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, Guidance End: 1.0,
    Pixel Perfect: False, Control Mode: Balanced"

"Processor Res" is the preprocessor's "resolution" setting and Thresholds A and B its first two other
settings (engine/preprocessors.py), written only for a preprocessor that has them; sd-webui-controlnet's
parser refuses fields it does not know, so settings beyond two (canny's sigma) live only in our record. The
text names the model without a path: re-running finds the file by name (file_parameters.py). Older
sd-webui-controlnet versions wrote the enums' names ("ControlMode.BALANCED"); those read too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sdstudio.engine import preprocessors
from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import CONTROL_MODES, CONTROL_RESIZE_MODES, ControlUnit, GenerationRequest
from sdstudio.history import parameters as p
from sdstudio.history.record import file_name

PREFIX = "ControlNet "
_KEY = re.compile(r"ControlNet (\d{1,3})")
_MODEL = re.compile(r"^(.*?)\s*\[([0-9a-fA-F]{8,64})\]$")
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt", ".bin")
# sd-webui-controlnet's enum names, as its older infotext wrote them.
_ENUM_MODES = dict(zip(("controlmode.balanced", "controlmode.prompt", "controlmode.control"), CONTROL_MODES,
                       strict=True))
_ENUM_RESIZE = dict(zip(("resizemode.resize", "resizemode.inner_fit", "resizemode.outer_fit"),
                        CONTROL_RESIZE_MODES, strict=True))
_THRESHOLDS = ("Threshold A", "Threshold B")


def model_label(unit: ControlUnit) -> str:
    """The model as sd-webui-controlnet names it: the file's stem, then " [hash]" when the hash is known. ',' and
    ':' are dropped (they would split the unit's text)."""
    name = file_name(unit.model)
    for suffix in MODEL_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = name.replace(",", "").replace(":", "").strip()
    return f"{name} [{unit.model_hash}]" if unit.model_hash else name


def _value(number: float, whole: bool) -> str:
    return str(int(number)) if whole else repr(float(number))


def unit_text(unit: ControlUnit) -> str:
    """One unit's value, in sd-webui-controlnet's field order."""
    entry = preprocessors.describe(unit.preprocessor)
    values = preprocessors.settings(entry.name, unit.preprocessor_params)
    fields = {"Module": entry.name, "Model": model_label(unit), "Weight": repr(float(unit.strength)),
              "Resize Mode": unit.resize_mode}
    if entry.resolution:
        fields["Processor Res"] = str(values[preprocessors.RESOLUTION.name])
    for key, param in zip(_THRESHOLDS, entry.sliders, strict=False):
        fields[key] = _value(values[param.name], param.whole)
    fields.update({"Guidance Start": repr(float(unit.start)), "Guidance End": repr(float(unit.end)),
                   "Pixel Perfect": "False", "Control Mode": unit.mode})
    return ", ".join(f"{key}: {value}" for key, value in fields.items())


def control_fields(request: GenerationRequest) -> dict[str, object]:
    return {f"{PREFIX}{n}": unit_text(unit) for n, unit in enumerate(request.control_units)}


def control_settings(params: Mapping[str, str]) -> dict[str, object]:
    """The request's control_units from parsed parameters ({} when the text has none); units without a model
    ("Model: None", a preprocessor preview) are skipped, as sd-webui-controlnet runs nothing for them.
    RequestError for a field that cannot be read or a preprocessor SD Studio does not have."""
    keyed = sorted((int(m.group(1)), key) for key in params if (m := _KEY.fullmatch(key)))
    if not keyed:
        return {}
    units = [unit for _, key in keyed if (unit := parse_unit(params[key], key)) is not None]
    return {"control_units": tuple(units)}


def _fields(text: str, key: str) -> dict[str, str]:
    fields = {}
    for item in text.split(","):
        name, colon, value = item.partition(":")
        if not colon:
            if item.strip():
                raise RequestError(f"{key}: {p._shown(item.strip())} is not a 'Field: value' pair")
            continue
        fields[name.strip().lower()] = value.strip()
    return fields


def parse_unit(text: str, key: str = "ControlNet 0") -> ControlUnit | None:
    """One unit from its text; None when it names no model."""
    fields = _fields(text, key)
    model = fields.get("model", "")
    if model.lower() in ("", "none"):
        return None
    match = _MODEL.match(model)
    name, model_hash = (match.group(1), match.group(2).lower()) if match else (model, "")
    try:
        entry = preprocessors.describe(fields.get("module", preprocessors.NONE) or preprocessors.NONE)
    except RequestError as e:
        raise RequestError(f"{key}: {e}") from None
    given: list[tuple[str, float]] = []
    if entry.resolution and "processor res" in fields:
        given.append((preprocessors.RESOLUTION.name, _number(fields, "processor res", key)))
    for field, param in zip(_THRESHOLDS, entry.sliders, strict=False):
        if field.lower() in fields:
            given.append((param.name, _number(fields, field.lower(), key)))
    # -1 is sd-webui-controlnet's "slider not shown"; out of the range it means nothing either way.
    given = [(name, value) for name, value in given if value != -1]
    try:
        preprocessors.settings(entry.name, given)
    except RequestError as e:
        raise RequestError(f"{key}: {e}") from None
    defaults = ControlUnit(model="")
    return ControlUnit(
        model=name,
        preprocessor=entry.name,
        preprocessor_params=tuple(given),
        strength=_real(fields, "weight", defaults.strength, key),
        start=_real(fields, "guidance start", defaults.start, key),
        end=_real(fields, "guidance end", defaults.end, key),
        mode=_choice(fields, "control mode", CONTROL_MODES, _ENUM_MODES, defaults.mode, key),
        resize_mode=_choice(fields, "resize mode", CONTROL_RESIZE_MODES, _ENUM_RESIZE, defaults.resize_mode, key),
        model_hash=model_hash,
    )


def _number(fields: Mapping[str, str], name: str, key: str) -> float:
    number = _real(fields, name, 0.0, key)
    return int(number) if number.is_integer() else number


def _real(fields: Mapping[str, str], name: str, default: float, key: str) -> float:
    try:
        return p._float(fields, name, default)
    except RequestError:
        raise RequestError(f"{key}: {name} must be a number, got {p._shown(fields[name])}") from None


def _choice(fields: Mapping[str, str], name: str, choices: tuple[str, ...], enums: Mapping[str, str], default: str,
            key: str) -> str:
    value = fields.get(name, "").strip()
    if not value:
        return default
    by_lower = {choice.lower(): choice for choice in choices} | dict(enums)
    if value.lower() not in by_lower:
        raise RequestError(f"{key}: {name} must be one of {', '.join(choices)}, got {p._shown(value)}")
    return by_lower[value.lower()]
