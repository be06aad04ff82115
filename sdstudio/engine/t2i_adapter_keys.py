"""What T2I-Adapter files look like (Mou et al. 2023, arXiv:2302.08453), torch-free so the app's file lists
can tell an adapter and its family from a header alone: the layouts' marks and the architecture table.

The first conv's input width is the hint's channels times the pixel-unshuffle factor squared; the factor
tells the architecture and so the family (8: SD 1.x, 16: SDXL).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

FULL, FULL_XL, LIGHT = "full", "full_xl", "light"
DIFFUSERS_PREFIX = "adapter."
# Marks of each layout (any one key tells): diffusers' T2IAdapter, TencentARC's Adapter and Adapter_light.
DIFFUSERS_MARK = "adapter.body.0.resnets.0.block1.weight"
FULL_MARK = "body.0.block1.weight"
LIGHT_MARK = "body.0.body.0.block1.weight"
# First conv input width -> (hint channels, pixel-unshuffle factor).
UNSHUFFLED = {1 * 8**2: (1, 8), 3 * 8**2: (3, 8), 1 * 16**2: (1, 16), 3 * 16**2: (3, 16)}
_FIRST_CONVS = (
    "adapter.conv_in.weight",
    "conv_in.weight",
    "adapter.body.0.in_conv.weight",
    "body.0.in_conv.weight",
)


@dataclass(frozen=True)
class AdapterKind:
    """One adapter architecture: which family it was made for, its pixel-unshuffle factor and which of its
    four levels average-pool their input first."""

    name: str
    family: str
    unshuffle: int
    downs: tuple[bool, ...]
    light: bool = False


KINDS = (
    AdapterKind(FULL, "sd1", 8, (False, True, True, True)),
    AdapterKind(FULL_XL, "sdxl", 16, (False, False, True, False)),
    AdapterKind(LIGHT, "sd1", 8, (False, True, True, True), light=True),
)


def kind(name: str) -> AdapterKind:
    return next(k for k in KINDS if k.name == name)


def is_adapter(keys: Iterable[str]) -> bool:
    """Whether a file with these tensor names is a T2I-Adapter in a layout we read."""
    return bool(set(keys) & {DIFFUSERS_MARK, FULL_MARK, LIGHT_MARK})


def adapter_family(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The family (families.py name) of an adapter with these tensor shapes (any layout), None if not told."""
    first = next((shapes[k] for k in _FIRST_CONVS if k in shapes), None)
    if first is None or len(first) != 4 or first[1] not in UNSHUFFLED:
        return None
    unshuffle = UNSHUFFLED[first[1]][1]
    return next(k.family for k in KINDS if k.unshuffle == unshuffle)
