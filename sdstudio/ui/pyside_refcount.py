"""Work around PySide6 6.12's `SignalInstance.emit`, which returns `True` without owning a reference.

Each Python-side emit therefore lowers `True`'s reference count by one; on Python < 3.12 (where `True` is not
immortal) a few hundred emits later the interpreter aborts with "bool_dealloc: deallocating True or False".
When the leak is detected, `True` and `False` get a huge reference count, which is what Python 3.12 does for
them anyway (PEP 683, immortal objects). Nothing happens on a PySide6 without the bug.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal

_PROBES = 16
_HEADROOM = 1 << 48


class _Probe(QObject):
    fired = Signal()


def emit_leaks_true() -> bool:
    """Whether emitting a signal from Python drops a reference to `True`."""
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(_PROBES):
        probe.fired.emit()
    leaked = before - sys.getrefcount(True)
    if leaked > 0:
        _add_refs(True, leaked)
    return leaked >= _PROBES // 2


def void_call_leaks_none() -> bool:
    """Whether calling a C++ method that returns void drops a reference to `None` (PySide6 6.12 does: every
    paint call, e.g. QPainter.setPen, so a long session would abort with "none_dealloc")."""
    probe = _Probe()
    before = sys.getrefcount(None)
    for _ in range(_PROBES):
        probe.setObjectName("probe")
    leaked = before - sys.getrefcount(None)
    if leaked > 0:
        _add_refs(None, leaked)
    return leaked >= _PROBES // 2


def make_bools_immortal() -> None:
    for value in (True, False):
        _add_refs(value, _HEADROOM)


def _add_refs(obj: object, count: int) -> None:
    # ob_refcnt is the first field of every CPython object header.
    ctypes.c_ssize_t.from_address(id(obj)).value += count


def install() -> None:
    if sys.version_info < (3, 12) and sys.implementation.name == "cpython" and emit_leaks_true():
        make_bools_immortal()
    if sys.version_info < (3, 12) and sys.implementation.name == "cpython" and void_call_leaks_none():
        _add_refs(None, _HEADROOM)
