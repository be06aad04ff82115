"""Work around PySide6 6.12 wrappers that return a singleton without owning a reference to it.

`SignalInstance.emit` returns `True` so, and calls of C++ methods that return void (QPainter.setPen,
QImage.setPixelColor, every paint) return `None` so: each call lowers that object's reference count by one,
and on Python < 3.12 (where they are not immortal) the interpreter later aborts with "bool_dealloc" or
"none_dealloc". When either leak is detected, `True`, `False` and `None` get a huge reference count, which is
what Python 3.12 does for them anyway (PEP 683, immortal objects). Nothing happens on a PySide6 without the bug.
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


def make_singletons_immortal() -> None:
    for value in (True, False, None):
        _add_refs(value, _HEADROOM)


def _add_refs(obj: object, count: int) -> None:
    # ob_refcnt is the first field of every CPython object header.
    ctypes.c_ssize_t.from_address(id(obj)).value += count


def install() -> None:
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return
    # Both probes run (each repays what it leaked); either leak makes all three singletons immortal.
    true_leaks, none_leaks = emit_leaks_true(), void_call_leaks_none()
    if true_leaks or none_leaks:
        make_singletons_immortal()
