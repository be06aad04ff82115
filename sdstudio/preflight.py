"""Can Qt open a window here? Answer before QApplication exists, because Qt's own failures abort the process.

A missing system library (libGL, an xcb helper) or an unreachable display makes Qt print a line to stderr
and call abort(): launched from a menu, the app just never appears. `qt_problem()` finds those causes first
and returns a sentence a user can act on (which package to install, which variable to set), or None.
Package names are Debian/Ubuntu's; the file name is given too, for other distributions.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb")
_MISSING_LIB = re.compile(r"([\w.+-]+\.so(?:\.\d+)*): cannot open shared object file")
# Debian names that do not follow "lib<name><soversion>".
_DEBIAN_EXCEPTIONS = {
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgobject-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
}


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package that usually ships `soname` (Debian policy 8.1: name + soversion)."""
    if soname in _DEBIAN_EXCEPTIONS:
        return _DEBIAN_EXCEPTIONS[soname]
    base, _, version = soname.partition(".so")
    name, version = base.lower(), version.lstrip(".").split(".")[0]
    return f"{name}-{version}" if version and name[-1].isdigit() else f"{name}{version}"


def missing_library(message: str) -> str | None:
    """The shared library a loader error names as missing, e.g. "libGL.so.1", or None."""
    found = _MISSING_LIB.search(message)
    return found.group(1) if found else None


def missing_library_advice(soname: str, what: str) -> str:
    return (f"{what} needs the system library {soname}, which is not installed.\n"
            f"On Debian/Ubuntu: sudo apt install {debian_package(soname)}\n"
            f"On other systems, install the package that provides {soname}.")


def qpa_platform(environ: Mapping[str, str]) -> str:
    """The Qt platform plugin the user forced (first of "a;b", without ":options"), or "" for Qt's choice."""
    return environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip().lower()


def has_display(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def _import_problem() -> str | None:
    try:
        import PySide6.QtGui  # noqa: F401  (loads libQt6Gui and with it libGL, libEGL, fontconfig, ...)
        import PySide6.QtWidgets  # noqa: F401
    except ImportError as exc:
        soname = missing_library(str(exc))
        if soname:
            return missing_library_advice(soname, "SD Studio's user interface (Qt)")
        return f"SD Studio's user interface (Qt) cannot be loaded: {exc}"
    return None


def _xcb_plugin() -> Path | None:
    from PySide6.QtCore import QCoreApplication, QLibraryInfo

    folders = [*QCoreApplication.libraryPaths(), QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)]
    for folder in folders:
        plugin = Path(folder) / "platforms" / "libqxcb.so"
        if plugin.is_file():
            return plugin
    return None


def _xcb_problem(display: str) -> str | None:
    """Load the X11 platform plugin's libraries and connect to the display, as Qt is about to."""
    plugin = _xcb_plugin()
    if plugin is not None:
        try:
            ctypes.CDLL(str(plugin))
        except OSError as exc:
            soname = missing_library(str(exc))
            if soname:
                return missing_library_advice(soname, "Qt's X11 support")
            return f"Qt's X11 support cannot be loaded: {exc}"
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return missing_library_advice("libxcb.so.1", "Qt's X11 support")
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    connection = xcb.xcb_connect(display.encode(), None)
    failed = xcb.xcb_connection_has_error(connection)
    xcb.xcb_disconnect(connection)
    if failed:
        return (f"cannot open a window on the X display {display!r}: no X server answers there, or this user "
                "may not use it (check DISPLAY and XAUTHORITY).")
    return None


def qt_problem(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str | None:
    """Why Qt cannot start a GUI here, in words a user can act on; None when it should start."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    forced = qpa_platform(environ)
    if platform.startswith("linux") and not forced and not has_display(environ):
        return ("no display found: SD Studio is a desktop application and needs an X11 or Wayland session "
                "(DISPLAY or WAYLAND_DISPLAY is not set).\n"
                "To check the installation without one, run it with --self-test.")
    problem = _import_problem()
    if problem or not platform.startswith("linux"):
        return problem
    if forced in HEADLESS_PLATFORMS or forced == "wayland" or (not forced and environ.get("WAYLAND_DISPLAY")):
        return None
    return _xcb_problem(environ.get("DISPLAY", ""))
