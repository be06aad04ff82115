import sys

import pytest

from sdstudio import preflight


@pytest.mark.parametrize("soname, package", [
    ("libGL.so.1", "libgl1"),
    ("libEGL.so.1", "libegl1"),
    ("libxcb-cursor.so.0", "libxcb-cursor0"),
    ("libxcb-icccm.so.4", "libxcb-icccm4"),
    ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
    ("libdbus-1.so.3", "libdbus-1-3"),
    ("libX11-xcb.so.1", "libx11-xcb1"),
    ("libglib-2.0.so.0", "libglib2.0-0"),
])
def test_debian_package_follows_debian_library_naming(soname, package):
    assert preflight.debian_package(soname) == package


def test_missing_library_is_read_from_the_loaders_message():
    message = "libGL.so.1: cannot open shared object file: No such file or directory"
    assert preflight.missing_library(message) == "libGL.so.1"
    assert preflight.missing_library("undefined symbol: foo") is None


@pytest.mark.parametrize("value, platform", [
    ("", ""), ("offscreen", "offscreen"), ("xcb:dpi=96", "xcb"), ("wayland;xcb", "wayland"),
    (" Offscreen ", "offscreen"),
])
def test_qpa_platform_reads_the_first_forced_plugin(value, platform):
    assert preflight.qpa_platform({"QT_QPA_PLATFORM": value}) == platform


def test_no_display_is_explained_with_the_way_out():
    problem = preflight.qt_problem({}, "linux")
    assert problem is not None
    assert "no display" in problem and "--self-test" in problem


def test_a_headless_platform_needs_no_display():
    assert preflight.qt_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None


def test_an_unreachable_x_display_is_explained_before_qt_aborts():
    # Either the xcb plugin's libraries are missing here (then: which package) or nothing listens on :987.
    problem = preflight.qt_problem({"DISPLAY": ":987"}, "linux")
    assert problem is not None
    assert "sudo apt install" in problem or "no X server answers" in problem


class _FailingQtGui:
    """A meta-path finder that makes `import PySide6.QtGui` fail as it does on a system without libGL."""

    def find_spec(self, name, path=None, target=None):
        if name == "PySide6.QtGui":
            raise ImportError("libGL.so.1: cannot open shared object file: No such file or directory")
        return None


def test_a_missing_libgl_names_the_package_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "PySide6.QtGui")
    monkeypatch.setattr(sys, "meta_path", [_FailingQtGui(), *sys.meta_path])
    problem = preflight.qt_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert problem is not None
    assert "libGL.so.1" in problem and "sudo apt install libgl1" in problem
