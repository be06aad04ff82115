"""Our own ``sdstudio`` PNG chunk: the full request as JSON, so a re-run reproduces the exact image.

The A1111 text carries only what A1111 knows; this record carries every GenerationRequest field
except the images (those are stored as files beside the entry and named here), plus the entry id,
time, model name and hash and the parent entry, so the index can be rebuilt from the files alone.

Model, VAE and TAESD are written as bare file names, never paths: a PNG is shared, and a path tells the
world the user's name and folders. Readers find the files again by name and hash (file_parameters.py).
"""

from __future__ import annotations

import dataclasses
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

from PIL import Image

from sdstudio.engine.request import CONTROL_MODES, CONTROL_RESIZE_MODES, MODES, ControlUnit, GenerationRequest
from sdstudio.history.layout import MAX_CONTROL_UNITS

FORMAT = 1
_IMAGE_FIELDS = ("init_image", "mask")
# ControlNet units are JSON objects of their own (their images are sidecars, named in Record.control_files).
_UNITS = "control_units"
_FIELDS = {f.name: f for f in dataclasses.fields(GenerationRequest) if f.name not in (*_IMAGE_FIELDS, _UNITS)}
_UNIT_FIELDS = {f.name: f for f in dataclasses.fields(ControlUnit) if f.name not in ("image", "preprocessor_params")}
# Request fields holding a file; written as names only.
FILE_FIELDS = ("model", "vae", "taesd", "hires_checkpoint")
# Request fields holding (name, short hash) pairs (LoRAs, embeddings): JSON lists of [name, hash].
# Entry ids are uuid4 hex: an id read from a file is trusted only in that shape, because ids end up in
# file names, index rows and links.
_ENTRY_ID = re.compile(r"[0-9a-f]{32}")


def new_entry_id() -> str:
    return uuid.uuid4().hex


def is_entry_id(text: object) -> bool:
    """Whether `text` is an id in our own format (32 lowercase hex digits), safe to keep from a file."""
    return isinstance(text, str) and _ENTRY_ID.fullmatch(text) is not None


@dataclass(frozen=True)
class Record:
    """What the ``sdstudio`` chunk holds. `init_file`/`mask_file` are plain file names in the entry's folder
    (never paths: readers refuse anything else). `mode` is how the image was made, also when its init
    image was not kept (images written by `generate` without a history store)."""

    id: str
    created: float
    request: GenerationRequest
    model_name: str = ""
    init_file: str = ""
    mask_file: str = ""
    mode: str = ""
    control_files: tuple[str, ...] = ()  # one per ControlNet unit, "" for a unit whose image was not kept

    @property
    def made_from(self) -> str:
        """txt2img, img2img or inpaint: the written mode, else what the named sidecars imply."""
        if self.mode in MODES:
            return self.mode
        return "inpaint" if self.mask_file else "img2img" if self.init_file else "txt2img"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "id": self.id,
            "created": self.created,
            "model_name": self.model_name,
            "model_hash": self.request.model_hash,
            "parent_id": self.request.parent_id,
            "mode": self.mode or self.request.mode,
            "request": request_to_dict(self.request),
            "init_file": self.init_file,
            "mask_file": self.mask_file,
            **({"control_files": list(self.control_files)} if self.control_files else {}),
        }


def file_name(text: str) -> str:
    """The last part of a path written on any system ('C:\\m\\x.safetensors' and '/m/x.safetensors' give
    'x.safetensors'); '' stays ''."""
    return text.replace("\\", "/").rstrip("/").rpartition("/")[2]


def request_to_dict(request: GenerationRequest) -> dict[str, Any]:
    """The request's fields as JSON values, file fields reduced to their file names."""
    values = {name: getattr(request, name) for name in _FIELDS}
    units = {_UNITS: [_unit_to_dict(unit) for unit in request.control_units]} if request.control_units else {}
    return {**values, **{name: file_name(values[name]) for name in FILE_FIELDS}, **units}


def _unit_to_dict(unit: ControlUnit) -> dict[str, Any]:
    values = {name: getattr(unit, name) for name in _UNIT_FIELDS}
    return {**values, "model": file_name(unit.model), "preprocessor_params": [list(p) for p in unit.preprocessor_params]}


def _units(value: Any) -> tuple[ControlUnit, ...]:
    """The JSON list of ControlNet units as ControlUnits (no images: those are sidecars)."""
    if not isinstance(value, list) or len(value) > MAX_CONTROL_UNITS:
        raise ValueError(f"{_UNITS} should be a list of at most {MAX_CONTROL_UNITS} units, got {_shown(value)}")
    units = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("model"), str):
            raise ValueError(f"a ControlNet unit should be an object naming its model, got {_shown(item)}")
        fields = {name: _checked(f"ControlNet {name}", _UNIT_FIELDS[name].default, v)
                  for name, v in item.items() if name in _UNIT_FIELDS and name != "model"}
        for name, choices in (("mode", CONTROL_MODES), ("resize_mode", CONTROL_RESIZE_MODES)):
            if name in fields and fields[name] not in choices:
                raise ValueError(f"ControlNet {name} should be one of {', '.join(choices)}, got {_shown(fields[name])}")
        units.append(ControlUnit(model=_storable("ControlNet model", file_name(item["model"])),
                                 preprocessor_params=_settings(item.get("preprocessor_params", [])), **fields))
    return tuple(units)


def _settings(value: Any) -> tuple[tuple[str, float], ...]:
    """A unit's [[name, number], ...] preprocessor settings (their names and ranges are the engine's to check)."""
    if not isinstance(value, list) or len(value) > 16:
        raise ValueError(f"preprocessor_params should be a list of [name, number] pairs, got {_shown(value)}")
    pairs = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
                and isinstance(pair[1], (int, float)) and not isinstance(pair[1], bool)):
            raise ValueError(f"preprocessor_params should hold [name, number] pairs, got {_shown(pair)}")
        pairs.append((_storable("preprocessor setting", pair[0]), _storable("preprocessor setting", pair[1])))
    return tuple(pairs)


def _checked(name: str, default: Any, value: Any) -> Any:
    if isinstance(default, tuple):
        return _name_pairs(name, value)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"{name} should be {type(default).__name__}, got {_shown(value)}")
    return _storable(name, _converted(name, type(default), value))


MAX_PAIRS = 256  # (name, hash) pairs of LoRAs / embeddings one request may name


def _name_pairs(name: str, value: Any) -> tuple[tuple[str, str], ...]:
    """A JSON list of [name, hash] pairs (lora_hashes, ti_hashes) as the request's tuple of tuples."""
    if not isinstance(value, (list, tuple)) or len(value) > MAX_PAIRS:
        raise ValueError(f"{name} should be a list of at most {MAX_PAIRS} [name, hash] pairs, got {_shown(value)}")
    pairs = []
    for pair in value:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise ValueError(f"{name} should hold [name, hash] pairs of text, got {_shown(pair)}")
        pairs.append((_storable(name, pair[0]), _storable(name, pair[1])))
    return tuple(pairs)


# What the index (SQLite) can hold: 64-bit integers, finite reals (NaN would become NULL), and text that is
# valid UTF-8 (a lone surrogate from a JSON "\\ud800" escape is not).
_INT_RANGE = range(-(2**63), 2**63)


def _storable(name: str, value: Any) -> Any:
    """`value` when the index can store it, else ValueError naming `name`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value not in _INT_RANGE:
        raise ValueError(f"{name} {_shown(value)} is beyond 64 bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} {value!r} is not a finite number")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name} holds a lone surrogate, which is not text") from None
    return value


def _converted(name: str, kind: type, value: Any) -> Any:
    try:
        return kind(value)
    except OverflowError:  # float() of an integer past 1e308
        raise ValueError(f"{name} {_shown(value)} is out of range") from None


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else f"an integer of {len(str(abs(value)))} digits"
    return text if len(text) <= 60 else text[:60] + "..."


def request_from_dict(
    values: dict[str, Any], init_image: Image.Image | None = None, mask: Image.Image | None = None
) -> GenerationRequest:
    """Rebuild a request; unknown keys (from a newer version) are ignored, wrong types are rejected."""
    kwargs = {
        name: _checked(name, _FIELDS[name].default, value)
        for name, value in values.items() if name in _FIELDS
    }
    if _UNITS in values:
        kwargs[_UNITS] = _units(values[_UNITS])
    return GenerationRequest(init_image=init_image, mask=mask, **kwargs)


def record_from_json(data: dict[str, Any]) -> Record:
    """Parse the chunk's JSON; ValueError when it is not a record we understand."""
    if data.get("format") != FORMAT or not isinstance(data.get("request"), dict):
        raise ValueError("not an SD Studio record")
    created = data.get("created", 0.0)
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        raise ValueError(f"created should be a number, got {_shown(created)}")
    return Record(
        id=_storable("id", str(data.get("id", ""))),
        created=_storable("created", _converted("created", float, created)),
        request=request_from_dict(data["request"]),
        model_name=_storable("model_name", str(data.get("model_name", ""))),
        init_file=_storable("init_file", str(data.get("init_file", "") or "")),
        mask_file=_storable("mask_file", str(data.get("mask_file", "") or "")),
        mode=_storable("mode", str(data.get("mode", "") or "")),
        control_files=_control_files(data.get("control_files", [])),
    )


def _control_files(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_CONTROL_UNITS or not all(isinstance(v, str) for v in value):
        raise ValueError(f"control_files should be a list of at most {MAX_CONTROL_UNITS} file names, got {_shown(value)}")
    return tuple(_storable("control_files", v) for v in value)

