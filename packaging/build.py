"""Build the SD Studio bundle: `python packaging/build.py [--self-test]` makes dist/sdstudio/ (see README.md).

Steps: render the Windows/macOS icons from the SVG, run PyInstaller on sdstudio.spec, strip the libraries
where that is safe (trim.STRIPPED_FILES), copy the Linux install scripts next to the executable, print the
bundle's size, and with --self-test run the frozen self-test from another working directory.
Needs `pip install -e ".[package]"` (PyInstaller).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # icons.py and trim.py
LINUX_SCRIPTS = ("install-linux.sh", "uninstall-linux.sh")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=Path, default=ROOT / "sdstudio" / "resources" / "models",
                   help="folder holding sdstudio-emoji.safetensors (default: sdstudio/resources/models)")
    p.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder (default: dist)")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "pyinstaller",
                   help="PyInstaller's work folder (default: build/pyinstaller)")
    p.add_argument("--clean", action="store_true", help="empty PyInstaller's cache first")
    p.add_argument("--self-test", action="store_true", help="run the bundle's --self-test after building")
    return p.parse_args(argv)


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def executable(bundle: Path) -> Path:
    if sys.platform == "darwin":
        return bundle.parent / "SD Studio.app" / "Contents" / "MacOS" / "sdstudio"
    return bundle / ("sdstudio.exe" if sys.platform == "win32" else "sdstudio")


def run_pyinstaller(args: argparse.Namespace, icon_dir: Path) -> None:
    env = dict(os.environ, SDSTUDIO_MODELS_DIR=str(args.models.resolve()), SDSTUDIO_ICON_DIR=str(icon_dir))
    cmd = [sys.executable, "-m", "PyInstaller", str(HERE / "sdstudio.spec"), "--noconfirm",
           "--distpath", str(args.dist), "--workpath", str(args.work)]
    if args.clean:
        cmd.append("--clean")
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)


def strip_libraries(internal: Path) -> int:
    """Strip the symbol tables of the libraries trim.STRIPPED_FILES names (Linux, GNU strip); bytes saved."""
    from trim import is_stripped

    strip = shutil.which("strip")
    if not sys.platform.startswith("linux") or strip is None:
        return 0
    saved = 0
    for path in sorted(internal.rglob("*")):
        if path.is_file() and not path.is_symlink() and is_stripped(path.relative_to(internal).as_posix()):
            before = path.stat().st_size
            subprocess.run([strip, "--strip-unneeded", str(path)], check=True)
            saved += before - path.stat().st_size
    return saved


def self_test(exe: Path) -> int:
    """The frozen self-test, started from an unrelated folder: the bundle must not rely on the working dir."""
    with tempfile.TemporaryDirectory(prefix="sdstudio-cwd-") as cwd:
        return subprocess.run([str(exe), "--self-test"], cwd=cwd).returncode


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # the icon renderer needs no display
    from icons import platform_icons

    icon_dir = args.work / "icons"
    platform_icons(icon_dir)
    run_pyinstaller(args, icon_dir)
    bundle = args.dist / "sdstudio"
    saved = strip_libraries(bundle / "_internal")
    if saved:
        print(f"stripped symbol tables: {saved / 2**20:.0f} MiB")
    if sys.platform.startswith("linux"):
        for name in LINUX_SCRIPTS:
            shutil.copy2(HERE / name, bundle / name)
    seconds = time.perf_counter() - start
    print(f"bundle: {bundle} ({folder_size(bundle) / 2**20:.0f} MiB) built in {seconds:.0f} s")
    if args.self_test:
        return self_test(executable(bundle))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
