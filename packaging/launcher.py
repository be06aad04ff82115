"""Entry point of the frozen SD Studio: PyInstaller makes this script the `sdstudio` executable.

It does what `python main.py` and `python -m sdstudio` do (the app, or a command such as `generate`), plus
what a double-clicked bundle needs:
- never reach the network: everything the engine reads is inside the bundle (HF_HUB_OFFLINE=1);
- `--self-test` checks the installation headless and exits 0 or 1 (sdstudio/selftest.py);
- when Qt cannot start (a missing libGL or xcb library, no display), say why and what to install instead
  of letting Qt abort: on stderr, and in a dialog when started from a menu and the system has a tool for one.
"""

import os
import shutil
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

EXIT_NO_GUI = 3
DIALOG_TOOLS = (
    ("zenity", "--error", "--no-markup", "--title=SD Studio", "--text"),
    ("kdialog", "--title", "SD Studio", "--error"),
    ("xmessage", "-center"),
)


def attach_windows_console() -> None:
    """A windowed Windows build has no stdout; borrow the console it was started from, if any."""
    if sys.platform == "win32" and sys.stdout is None:
        import ctypes

        if ctypes.windll.kernel32.AttachConsole(-1):  # ATTACH_PARENT_PROCESS
            sys.stdout = sys.stderr = open("CONOUT$", "w")  # kept open for the life of the process


def system_environment() -> dict[str, str]:
    """os.environ without the bundle's library path, so system tools load their own libraries."""
    env = dict(os.environ)
    original = env.pop("LD_LIBRARY_PATH_ORIG", None)  # saved by PyInstaller's bootloader
    if original is None:
        env.pop("LD_LIBRARY_PATH", None)
    else:
        env["LD_LIBRARY_PATH"] = original
    return env


def tell_user(message: str) -> None:
    text = f"SD Studio cannot start.\n\n{message}"
    if sys.stderr is not None:
        print(text, file=sys.stderr, flush=True)
        if sys.stderr.isatty():
            return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return
    for tool in DIALOG_TOOLS:
        if shutil.which(tool[0]):
            subprocess.Popen([*tool, text], env=system_environment(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
            return


def main(argv: list[str]) -> int:
    attach_windows_console()
    if "--self-test" in argv:
        from sdstudio.selftest import run

        return run(argv)
    from sdstudio.cli import COMMANDS
    from sdstudio.cli import main as cli_main

    if not argv or argv[0] not in COMMANDS:
        from sdstudio.preflight import qt_problem

        problem = qt_problem()
        if problem:
            tell_user(problem)
            return EXIT_NO_GUI
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
