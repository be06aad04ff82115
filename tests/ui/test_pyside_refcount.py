import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from sdstudio.ui.pyside_refcount import emit_leaks_true

# Each loop runs in a child: without the guard, PySide6 6.12 on Python 3.11 aborts once True's or None's
# reference count reaches zero ("bool_dealloc" / "none_dealloc").
LEAKING_LOOPS = {
    # emit returns True without owning a reference
    "signal emits": "from PySide6.QtCore import QObject, Signal\n"
                    "class O(QObject):\n    s = Signal(int)\n"
                    "o = O()\nfor i in range(20000):\n    o.s.emit(i)\n",
    # void C++ calls (each QPainter.setPen in a paint) return None without owning a reference
    "void calls": "from PySide6.QtCore import QObject\n"
                  "o = QObject()\nfor i in range(200000):\n    o.setObjectName('x')\n",
    "setPixelColor": "from PySide6.QtGui import QColor, QGuiApplication, QImage\n"
                     "app = QGuiApplication([])\nimage = QImage(200, 200, QImage.Format.Format_RGB32)\n"
                     "for i in range(40000):\n    image.setPixelColor(i % 200, i // 200, QColor(1, 2, 3))\n",
}


@pytest.mark.parametrize("name", LEAKING_LOOPS)
def test_many_leaking_calls_do_not_abort_the_interpreter(name):
    code = "import sdstudio.ui\n" + LEAKING_LOOPS[name] + "import gc; gc.collect()\nprint('survived')\n"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "survived" in out.stdout


PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def pinned_pyside6() -> SpecifierSet:
    # The one PySide6 requirement string of [project] dependencies (tomllib is 3.11+; we support 3.10).
    (pin,) = re.findall(r'^\s*"(PySide6(?:-Essentials)?\s*[<>=!~][^"]*)",?\s*$', PYPROJECT.read_text(encoding="utf-8"), re.M)
    return Requirement(pin).specifier


def test_the_installed_pyside6_is_the_pinned_one_the_guard_was_verified_on():
    installed = version("PySide6-Essentials")  # QtCore/QtGui/QtWidgets; what the app depends on
    assert pinned_pyside6().contains(installed), (
        f"PySide6 {installed} is outside the pin {pinned_pyside6()} in pyproject.toml: re-verify "
        "sdstudio/ui/pyside_refcount.py on it (does emit still leak True?) and move the pin")


@pytest.mark.skipif(sys.version_info >= (3, 12) or sys.implementation.name != "cpython",
                    reason="True is immortal from CPython 3.12 (PEP 683); install() does nothing there")
def test_on_the_pinned_pyside6_emit_still_leaks_true_so_the_guard_is_needed():
    assert emit_leaks_true(), (
        f"PySide6 {version('PySide6')} no longer leaks a reference to True on emit: the guard in "
        "sdstudio/ui/pyside_refcount.py is dead code; re-verify, then remove it and widen the pin in pyproject.toml")
