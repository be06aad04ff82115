"""The AUTOMATIC1111 "parameters" text that most Stable Diffusion tools write into and read from images.

Format (A1111 ``modules/processing.py: create_infotext``, parsed by ``modules/infotext_utils.py``)::

    <prompt, possibly several lines>
    Negative prompt: <negative, possibly several lines>      (absent when empty)
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, ...

A value is JSON-quoted when it contains ``,``, ``:`` or a newline. The last line is the parameters line
only when it holds at least three ``key: value`` pairs. Files written before A1111 1.9 have no
"Schedule type" and put the schedule into the sampler name ("DPM++ 2M Karras").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

from sdstudio.engine.errors import RequestError
from sdstudio.engine.extra_networks import hash_name
from sdstudio.engine.names import SCHEDULER_LABELS, NotOffered, canonical_sampler, canonical_scheduler
from sdstudio.engine.request import GenerationRequest
from sdstudio.untrusted import quoted

# A1111's pairs: a key starts with a word character and may hold spaces, '-' and '/'; a value is either
# a JSON string (escapes allowed) ending at a comma or the line's end, or anything up to the next comma.
# A1111 finds them with one regex whose findall backtracks O(n²) on a line without ':' (60 KB froze the
# GUI for minutes); `_pairs` reads the same pairs in one forward pass, each piece matched anchored.
_KEY = re.compile(r"\w[\w \-/]+")
_WORD_CHAR = re.compile(r"\w")
_KEY_CHARS = re.compile(r"[\w \-/]*")
_SPACE = re.compile(r"\s*")
_QUOTED = re.compile(r'"(?:\\.|[^\\"])+"(?=,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_HASH = re.compile(r"[0-9a-fA-F]{8,64}")  # A1111 writes 12 hex digits; some tools 8 or all 64
_NEGATIVE = "Negative prompt:"

# What A1111 >= 1.9 means by "Schedule type: Automatic": the sampler's own default schedule
# (modules/sd_samplers_kdiffusion.py, option 'scheduler'); every other sampler uses the uniform
# timestep spacing that we call "normal".
_AUTOMATIC_SCHEDULE = {
    "DPM++ 2M": "karras",
    "DPM++ SDE": "karras",
    "DPM++ 2M SDE": "exponential",
    "DPM++ 2S a": "karras",
    "DPM++ 3M SDE": "exponential",
    "DPM2": "karras",
    "DPM2 a": "karras",
    "Restart": "karras",
}
# A1111 writes its UniPC variant as a setting of its own ("UniPC variant: bh2"; bh1 is its default).
_UNIPC_VARIANT = "UniPC variant"
_UNIPC_BY_VARIANT = {"bh1": "UniPC", "bh2": "UniPC bh2"}


def quote(value: object) -> str:
    """A1111's quoting: JSON only when the value would break the line (comma, colon, newline).

    A value that itself starts with a double quote is quoted too, so that reading it back cannot
    mistake it for a JSON string.
    """
    text = str(value)
    if any(c in text for c in ",:\n") or text.startswith('"'):
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _number(value: float) -> str:
    # repr keeps every digit (round trip); whole numbers print as A1111 users expect ("7", not "7.0").
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def request_fields(request: GenerationRequest, model_name: str) -> dict[str, object]:
    """The ``key: value`` pairs A1111 would write for this request, in A1111's order."""
    fields: dict[str, object] = {
        "Steps": request.steps,
        "Sampler": "UniPC" if request.sampler in _UNIPC_BY_VARIANT.values() else request.sampler,
        "Schedule type": SCHEDULER_LABELS.get(request.scheduler, request.scheduler),
        "CFG scale": _number(request.cfg_scale),
        "Seed": request.seed,
        "Size": f"{request.width}x{request.height}",
    }
    if request.sampler == _UNIPC_BY_VARIANT["bh2"]:
        fields[_UNIPC_VARIANT] = "bh2"
    if request.model_hash:
        fields["Model hash"] = request.model_hash
    if model_name:
        fields["Model"] = model_name
    # A1111 writes the variation pair only while it is on (strength != 0), seed resize only when both are set.
    if request.subseed_strength != 0:
        fields["Variation seed"] = request.subseed
        fields["Variation seed strength"] = _number(request.subseed_strength)
    if request.seed_resize_from is not None:
        fields["Seed resize from"] = "{}x{}".format(*request.seed_resize_from)
    if request.mode != "txt2img" or request.hires:
        fields["Denoising strength"] = _number(request.strength)
    if request.clip_skip > 1:
        fields["Clip skip"] = request.clip_skip
    if request.mode == "inpaint":
        fields["Mask blur"] = request.mask_blur
        if request.only_masked:
            fields["Inpaint area"] = "Only masked"
            fields["Masked area padding"] = request.only_masked_padding
    from sdstudio.history.hires_parameters import hires_fields  # it reads with this module's helpers

    fields.update(hires_fields(request))
    from sdstudio.history.control_parameters import control_fields

    fields.update(control_fields(request))
    # A1111 writes these among its extra generation params, after the img2img ones.
    for key, pairs in (("Lora hashes", request.lora_hashes), ("TI hashes", request.ti_hashes)):
        if pairs:
            fields[key] = format_hashes(pairs)
    if request.draft_decode:
        fields["Draft decode"] = True  # SD Studio's own: the tiny VAE made the final pixels
    # Ours, not A1111's (which ignores keys it does not know): a prompt-walk frame's blend (request.py).
    if request.blend_strength:
        fields["Blend prompt"] = request.blend_prompt
        fields["Blend strength"] = _number(request.blend_strength)
    return fields


def format_hashes(pairs: Sequence[tuple[str, str]]) -> str:
    """A1111's "Lora hashes" / "TI hashes" value: "name: 0123456789ab, name2: …" (names without ':' and ',',
    as A1111 strips them; the whole value is then JSON-quoted by `quote`)."""
    return ", ".join(f"{hash_name(name)}: {short}" for name, short in pairs)


def parse_hashes(params: Mapping[str, str], key: str) -> tuple[tuple[str, str], ...]:
    """The (name, hash) pairs of a "Lora hashes" / "TI hashes" value, read as A1111 reads it (split on ',',
    then on the first ':'; spaces stripped); RequestError for a pair that is not "name: hex"."""
    value = params.get(key, "").strip()
    if not value:
        return ()
    pairs = []
    for item in value.split(","):
        name, colon, short = item.partition(":")
        name, short = name.strip(), short.strip()
        if not colon or not name or not _HASH.fullmatch(short):
            raise RequestError(f'{key} must look like "name: 0123456789ab, name2: …", got {_shown(value)}')
        pairs.append((name, short.lower()))
    return tuple(pairs)


def format_parameters(request: GenerationRequest, model_name: str, extra: Mapping[str, object] | None = None) -> str:
    """The A1111 "parameters" text for one image; `extra` pairs are appended in order (None skips one)."""
    fields = request_fields(request, model_name)
    for key, value in (extra or {}).items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"parameter name {key!r} cannot be read back: use letters, digits, space, - or /")
        if value is not None:
            fields[key] = value
    line = ", ".join(f"{key}: {quote(value)}" for key, value in fields.items())
    negative = f"\n{_NEGATIVE} {request.negative_prompt}" if request.negative_prompt else ""
    return f"{request.prompt}{negative}\n{line}".strip()


def parse_parameters(text: str) -> dict[str, str]:
    """Split a "parameters" text into {"Prompt", "Negative prompt", every key of the last line}.

    Follows A1111's parser: each prompt line is stripped, and the last line counts as the parameters
    line only when it holds at least three pairs.
    """
    *lines, last = text.strip().replace("\r\n", "\n").split("\n")
    pairs = _pairs(last)
    if len(pairs) < 3:
        lines.append(last)
        pairs = []
    prompt: list[str] = []
    negative: list[str] = []
    target = prompt
    for line in lines:
        line = line.strip()
        if line.startswith(_NEGATIVE):
            target = negative
            line = line[len(_NEGATIVE):].strip()
        target.append(line)
    result = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in pairs:
        result[key] = unquote(value.strip())
    return result


def _pairs(line: str) -> list[tuple[str, str]]:
    """The (key, raw value) pairs of one line, as A1111's pattern finds them, in time linear in the line.

    Every position inside a run of key characters ends at the same place, so a run not followed by ':'
    is skipped whole instead of being retried from each of its characters.
    """
    pairs: list[tuple[str, str]] = []
    position = 0
    while (word := _WORD_CHAR.search(line, position)) is not None:
        start = word.start()
        end = _KEY_CHARS.match(line, start).end()
        if end - start < 2 or not line.startswith(":", end):
            position = end
            continue
        value_start = _SPACE.match(line, end + 1).end()
        quoted = _QUOTED.match(line, value_start)
        if quoted is not None:
            value_end = quoted.end()
        else:
            comma = line.find(",", value_start)
            value_end = len(line) if comma < 0 else comma
        pairs.append((line[start:end], line[value_start:value_end]))
        position = value_end + 1
    return pairs


def sampler_and_schedule(params: Mapping[str, str]) -> tuple[str, str]:
    """Our (sampler, schedule) for the text's Sampler and Schedule type, old combined names included.

    A schedule carried by the sampler name wins, as in A1111; no schedule at all (files before 1.9)
    means the sampler's plain uniform schedule. RequestError for a name we lack (`request_and_problem` reads it anyway).
    """
    sampler, schedule, problem = _sampler_and_schedule(params)
    if problem:
        raise RequestError(f"cannot re-create this image: {problem}")
    return sampler, schedule


def _sampler_and_schedule(params: Mapping[str, str]) -> tuple[str, str, str]:
    """(sampler, schedule, problem): a sampler or schedule another tool has and SD Studio lacks is kept as
    written, and the problem names our nearest; RequestError for a name no tool has."""
    written_sampler = params.get("Sampler", "Euler a")
    label = params.get("Schedule type", "")
    problems = []
    try:
        try:
            sampler, schedule = canonical_sampler(written_sampler)
        except NotOffered as e:
            problems.append(str(e))
            sampler, schedule = written_sampler, e.nearest[1]
        if sampler == "UniPC" and _UNIPC_VARIANT in params:
            variant = params[_UNIPC_VARIANT].strip().lower()
            if variant in _UNIPC_BY_VARIANT:
                sampler = _UNIPC_BY_VARIANT[variant]
            else:
                problems.append(f"UniPC variant {quoted(params[_UNIPC_VARIANT])} is not in SD Studio; "
                                "the nearest is 'UniPC' (bh1)")
        if schedule is None:
            if not label:
                schedule = "normal"
            elif label.strip().lower() == "automatic":
                schedule = _AUTOMATIC_SCHEDULE.get(sampler, "normal")
            else:
                try:
                    schedule = canonical_scheduler(label)
                except NotOffered as e:
                    problems.append(str(e))
                    schedule = label
    except ValueError as e:
        raise RequestError(f"cannot re-create this image: {e}") from None
    return sampler, schedule, "; ".join(problems)


def with_nearest(params: Mapping[str, str]) -> dict[str, str]:
    """The parameters with a sampler and schedule SD Studio lacks replaced by our nearest (names.NEAREST_*),
    for a re-run the user has agreed to; the rest unchanged. Names we have, or no tool has, stay as written."""
    out = dict(params)
    if out.get(_UNIPC_VARIANT, "bh1").strip().lower() not in _UNIPC_BY_VARIANT:
        del out[_UNIPC_VARIANT]  # A1111's default variant, bh1
    try:
        canonical_sampler(out.get("Sampler", "Euler a"))
    except NotOffered as e:
        sampler, carried = e.nearest
        out["Sampler"] = sampler
        if carried is not None:
            out["Schedule type"] = SCHEDULER_LABELS[carried]
    except ValueError:
        pass
    try:
        canonical_scheduler(out.get("Schedule type", "") or "normal")
    except NotOffered as e:
        out["Schedule type"] = SCHEDULER_LABELS[e.nearest]
    except ValueError:
        pass
    return out


def nearest_choice(sampler: str, scheduler: str) -> tuple[str, str, str] | None:
    """For a sampler and schedule as a request holds them (names SD Studio lacks kept as written): our nearest
    (sampler, schedule) and the substitution in words ("sampler 'DEIS' → DPM++ 2M"); None when there is
    nothing to substitute or no tool has the name."""
    written = {"Sampler": sampler, "Schedule type": SCHEDULER_LABELS.get(scheduler, scheduler)}
    params = with_nearest(written)
    if params == written:
        return None
    try:
        ours, schedule, problem = _sampler_and_schedule(params)
    except RequestError:
        return None
    if problem:
        return None
    changes = [f"{kind} {quoted(old, 60)} → {new}" for kind, old, new in (
        ("sampler", sampler, ours), ("schedule", written["Schedule type"], SCHEDULER_LABELS[schedule]),
    ) if old != new]
    return ours, schedule, ", ".join(changes)


# Numbers from a file go into the index's SQLite INTEGER/REAL columns: a whole number must fit in 64 bits and
# a real must be finite (SQLite stores NaN as NULL). A longer text is no number we could use, and cutting it
# short keeps int() off its slow path for thousands of digits.
_MAX_NUMBER_TEXT = 40
_INT_RANGE = range(-(2**63), 2**63)


def _whole_number(text: str) -> int:
    """A whole number from "20" or "20.0"; ValueError for anything else, infinite, NaN or beyond 64 bits."""
    text = text.strip()
    if len(text) > _MAX_NUMBER_TEXT:
        raise ValueError(f"{len(text)} characters is too long for a number")
    number = int(_real_number(text)) if "." in text else int(text)  # A1111 truncates "20.0", as int(float()) does
    if number not in _INT_RANGE:
        raise ValueError(f"{text!r} is beyond 64 bits")
    return number


def _real_number(text: str) -> float:
    """A finite float; ValueError for anything else."""
    if len(text.strip()) > _MAX_NUMBER_TEXT:
        raise ValueError(f"{len(text.strip())} characters is too long for a number")
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not a finite number")
    return number


def _int(params: Mapping[str, str], key: str, default: int) -> int:
    value = params.get(key)
    if value is None or value == "":
        return default
    try:
        return _whole_number(value)
    except ValueError:
        raise RequestError(f"{key} must be a whole number, got {_shown(value)}") from None


def _float(params: Mapping[str, str], key: str, default: float) -> float:
    value = params.get(key)
    if value is None or value == "":
        return default
    try:
        return _real_number(value)
    except ValueError:
        raise RequestError(f"{key} must be a number, got {_shown(value)}") from None


def _shown(value: str) -> str:
    """A value for a one-line message: a hostile file's 1 MB value is cut, not echoed."""
    return repr(value) if len(value) <= 60 else repr(value[:60]) + f"... ({len(value)} characters)"


def _flag(params: Mapping[str, str], key: str) -> bool:
    """A yes/no field as A1111 writes Python bools ("True" / "False"); absent is False."""
    value = params.get(key, "").strip().lower()
    if value not in ("", "true", "false"):
        raise RequestError(f"{key} must be True or False, got {_shown(params[key])}")
    return value == "true"


def _size(params: Mapping[str, str]) -> tuple[int, int]:
    value = params.get("Size", "512x512").strip()
    match = _SIZE.match(value)
    try:
        if match is None:
            raise ValueError(value)
        return _whole_number(match.group(1)), _whole_number(match.group(2))
    except ValueError:
        raise RequestError(f"Size must look like 512x768, got {_shown(value)}") from None


_RESIZE = re.compile(r"^(-?\d+)x(-?\d+)$")


def _seed_resize(params: Mapping[str, str]) -> tuple[int, int]:
    """"Seed resize from: WxH" as (w, h); (0, 0) when absent or not positive (A1111's "off", e.g. -1x-1)."""
    value = params.get("Seed resize from", "").strip()
    if not value:
        return 0, 0
    match = _RESIZE.match(value)
    try:
        if match is None:
            raise ValueError(value)
        w, h = _whole_number(match.group(1)), _whole_number(match.group(2))
    except ValueError:
        raise RequestError(f"Seed resize from must look like 512x768, got {_shown(value)}") from None
    return (w, h) if w > 0 and h > 0 else (0, 0)


def request_from_parameters(params: Mapping[str, str]) -> GenerationRequest:
    """A request from parsed "parameters" (see `parse_parameters`); raises RequestError on bad values.

    The text names the model but holds no path, so `model` stays "" for the caller to resolve from
    ``params["Model"]`` / `model_hash`; init image and mask are not in the text either.
    """
    request, problem = request_and_problem(params)
    if problem:
        raise RequestError(f"cannot re-create this image: {problem}")
    return request


def request_and_problem(params: Mapping[str, str]) -> tuple[GenerationRequest, str]:
    """The request as `request_from_parameters` builds it, and what keeps it from running ("" when nothing).

    A sampler or schedule SD Studio lacks does not stop the reading: the request keeps the name as written
    and the problem says so and names our nearest (`with_nearest` makes the request that uses it). Other
    bad values raise RequestError.
    """
    from sdstudio.history.control_parameters import control_settings
    from sdstudio.history.hires_parameters import hires_settings

    defaults = GenerationRequest()
    sampler, scheduler, problem = _sampler_and_schedule(params)
    width, height = _size(params)
    resize_w, resize_h = _seed_resize(params)
    request = GenerationRequest(
        prompt=params.get("Prompt", ""),
        negative_prompt=params.get("Negative prompt", ""),
        steps=_int(params, "Steps", defaults.steps),
        cfg_scale=_float(params, "CFG scale", defaults.cfg_scale),
        sampler=sampler,
        scheduler=scheduler,
        seed=_int(params, "Seed", defaults.seed),
        subseed=_int(params, "Variation seed", defaults.subseed),
        subseed_strength=_float(params, "Variation seed strength", defaults.subseed_strength),
        seed_resize_from_w=resize_w,
        seed_resize_from_h=resize_h,
        width=width,
        height=height,
        clip_skip=_int(params, "Clip skip", defaults.clip_skip),
        strength=_float(params, "Denoising strength", defaults.strength),
        mask_blur=_int(params, "Mask blur", defaults.mask_blur),
        only_masked=params.get("Inpaint area", "").strip().lower() == "only masked",
        only_masked_padding=_int(params, "Masked area padding", defaults.only_masked_padding),
        model_hash=params.get("Model hash", ""),
        lora_hashes=parse_hashes(params, "Lora hashes"),
        ti_hashes=parse_hashes(params, "TI hashes"),
        draft_decode=_flag(params, "Draft decode"),
        blend_prompt=params.get("Blend prompt", ""),
        blend_strength=_float(params, "Blend strength", defaults.blend_strength),
        **hires_settings(params),
        **control_settings(params),
    )
    return request, problem


def a1111_mode(params: Mapping[str, str]) -> str:
    """Best guess of how an A1111 image was made (its hires fix also writes a denoising strength)."""
    if "Mask blur" in params or "Inpaint area" in params:
        return "inpaint"
    if "Denoising strength" in params and not any(key.startswith("Hires") for key in params):
        return "img2img"
    return "txt2img"


def _lenient_number(text: str, kind: type, default: float) -> float:
    try:
        return _whole_number(text) if kind is int else _real_number(text)
    except (TypeError, ValueError):
        return default


def lenient_request(params: Mapping[str, str]) -> GenerationRequest:
    """The request for listing: exact when the text is one we can re-run, else raw names kept for display."""
    try:
        return request_and_problem(params)[0]
    except RequestError:
        width, _, height = params.get("Size", "").partition("x")
        return GenerationRequest(
            prompt=params.get("Prompt", ""),
            negative_prompt=params.get("Negative prompt", ""),
            sampler=params.get("Sampler", ""),
            scheduler=params.get("Schedule type", ""),
            steps=int(_lenient_number(params.get("Steps", ""), int, 0)),
            cfg_scale=_lenient_number(params.get("CFG scale", ""), float, 0.0),
            seed=int(_lenient_number(params.get("Seed", ""), int, 0)),
            width=int(_lenient_number(width, int, 0)),
            height=int(_lenient_number(height, int, 0)),
            model_hash=params.get("Model hash", ""),
        )
