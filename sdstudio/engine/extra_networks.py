"""AUTOMATIC1111's extra-network prompt tags: `<lora:NAME:TE:UNET:DYN>`, read as A1111 reads them.

Torch-free, so the UI (token counter, LoRA browser) and history read tags exactly as the engine does.

What A1111 does (modules/extra_networks.py `parse_prompt`, extensions-builtin/Lora/extra_networks_lora.py):
- a tag is `<KIND:ARGS>` with KIND a run of word characters and ARGS anything up to the next `>` (at least one
  character); the tag is replaced by "" and nothing else changes: the spaces and commas around it stay;
- ARGS split on ':'; an argument holding exactly one '=' is named (`te=0.5`), the others positional;
- LoRA: NAME = the first positional; TE = the second (default 1); UNET = the third (default: TE); DYN = the
  fourth (an int, default none); named `te=`, `unet=`, `dyn=` override the positional ones; `<lyco:…>` is an
  alias of `<lora:…>` (the built-in Lora extension registers it);
- DYN (dyn_dim) keeps only the first DYN ranks of a plain LoRA's up/down matrices (lyco_helpers
  `rebuild_conventional`), for DyLoRA files. It is read here and refused by the engine (lora_set.py) until the
  LoRA maths support it: applying the full rank instead would be a different image;
- only the positive prompt is parsed (processing.py `parse_extra_network_prompts` parses `self.prompts`): a tag
  in the negative prompt is not a network, it stays text and is encoded as text. We do the same.

Where A1111 is silent we refuse with one line (RequestError) instead: unknown kinds (A1111 logs "Skipping
unknown extra network" and drops the tag), weights that are not finite numbers, unknown named arguments or
surplus positional ones (A1111 ignores them), and `<lora:` text that is not a tag (`<lora:>`, an unclosed
`<lora:x`), which A1111 would encode as words.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sdstudio.engine.errors import RequestError
from sdstudio.untrusted import printable

# A1111's pattern, verbatim in meaning: KIND = \w+, ARGS = one or more characters other than '>'.
_TAG = re.compile(r"<(\w+):([^>]+)>")
# What is left of a LoRA tag the pattern did not take: "<lora:>", "<lora:x" (no closing '>').
_BROKEN = re.compile(r"<(lora|lyco):[^>]*(>|$)", re.IGNORECASE)
LORA_KINDS = ("lora", "lyco")
_NAMED = ("te", "unet", "dyn")
_SHOWN = 80  # characters of a tag quoted in a message


@dataclass(frozen=True)
class LoraUse:
    """One `<lora:…>` tag: the name as written (file stem or ss_output_name), the text-encoder and UNet
    multipliers, and DYN (A1111's dyn_dim; None when not given)."""

    name: str
    te: float = 1.0
    unet: float = 1.0
    dyn: int | None = None


@dataclass(frozen=True)
class ParsedPrompt:
    """The prompt with its tags removed (what is encoded) and the LoRA tags in prompt order."""

    prompt: str
    loras: tuple[LoraUse, ...] = ()


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Remove every `<KIND:ARGS>` tag from `prompt` as A1111 does and read the LoRA ones; RequestError (one
    line) for a tag SD Studio cannot honour exactly."""
    loras: list[LoraUse] = []

    def take(match: re.Match) -> str:
        kind, args = match.group(1), match.group(2)
        if kind not in LORA_KINDS:
            hint = " (lower case)" if kind.lower() in LORA_KINDS else ""
            raise RequestError(f"the prompt's tag {_shown(match.group(0))} is not one SD Studio reads: extra "
                               f"networks are written <lora:NAME:WEIGHT>{hint} (or <lyco:…>)")
        loras.append(_lora_use(match.group(0), args))
        return ""

    text = _TAG.sub(take, prompt)
    broken = _BROKEN.search(text)
    if broken is not None:
        raise RequestError(f"the prompt's {_shown(broken.group(0))} is not a complete tag: write "
                           "<lora:NAME:WEIGHT>, e.g. <lora:style:0.8>")
    return ParsedPrompt(text, tuple(loras))


def tag_spans(prompt: str) -> list[tuple[int, int]]:
    """(start, end) of every `<KIND:ARGS>` tag A1111 would remove, without judging them (never raises): for
    a token counter, which must count the text that is encoded and keep offsets into what the user typed."""
    return [match.span() for match in _TAG.finditer(prompt)]


def strip_tags(prompt: str) -> str:
    """The text that is encoded for `prompt` (tags removed); RequestError as `parse_prompt`."""
    return parse_prompt(prompt).prompt


def _lora_use(tag: str, args: str) -> LoraUse:
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in args.split(":"):
        # A1111 splits on '=' at most twice and counts the item as named only when that gives two parts.
        parts = item.split("=", 2)
        if len(parts) == 2:
            if parts[0] not in _NAMED:
                raise RequestError(f"{_shown(tag)}: unknown option {_value(parts[0])}=; a LoRA tag takes te=, "
                                   "unet= and dyn=")
            named[parts[0]] = parts[1]
        else:
            positional.append(item)
    if not positional or not positional[0]:
        raise RequestError(f"{_shown(tag)} names no LoRA: write <lora:NAME:WEIGHT>, NAME being the file's "
                           "name without .safetensors")
    if len(positional) > 4:
        raise RequestError(f"{_shown(tag)} has {len(positional)} parts; a LoRA tag is <lora:NAME:TE:UNET:DYN> "
                           "at most")
    name = positional[0]
    te = _weight(tag, "TE", positional[1]) if len(positional) > 1 else 1.0
    if "te" in named:
        te = _weight(tag, "te=", named["te"])
    unet = _weight(tag, "UNET", positional[2]) if len(positional) > 2 else te
    if "unet" in named:
        unet = _weight(tag, "unet=", named["unet"])
    dyn = _dyn(tag, positional[3]) if len(positional) > 3 else None
    if "dyn" in named:
        dyn = _dyn(tag, named["dyn"])
    return LoraUse(name, te, unet, dyn)


def _weight(tag: str, what: str, text: str) -> float:
    try:
        value = float(text)  # as A1111: surrounding spaces allowed, "1e-1" too
    except ValueError:
        raise RequestError(f"{_shown(tag)}: the {what} weight {_value(text)} is not a number; write e.g. "
                           "<lora:NAME:0.8>") from None
    if not math.isfinite(value):
        raise RequestError(f"{_shown(tag)}: the {what} weight {_value(text)} is not a finite number")
    return value


def _dyn(tag: str, text: str) -> int:
    try:
        value = int(text)  # A1111: int(), so "8" but not "8.0"
    except ValueError:
        raise RequestError(f"{_shown(tag)}: DYN {_value(text)} is not a whole number") from None
    if value < 1:
        raise RequestError(f"{_shown(tag)}: DYN {value} must be 1 or more")
    return value


def _shown(text: str) -> str:
    """A tag for a one-line message (prompts come from image files too): escaped, long ones cut."""
    return printable(text, _SHOWN, multiline=False)


def _value(text: str) -> str:
    return f"'{printable(text, 40, multiline=False)}'"


def hash_name(name: str) -> str:
    """The name A1111 writes into "Lora hashes": the tag's name without ':' and ',' (they would break the
    field's "name: hash, name: hash" list)."""
    return name.replace(":", "").replace(",", "")
