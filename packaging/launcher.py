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
    """The message every entry point prints (sdstudio.cli.cannot_start), and a dialog when no terminal shows it."""
    from sdstudio.cli import cannot_start

    text = cannot_start(message)
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
    from sdstudio.cli import main as cli_main

    # The same checks as `sdstudio` and `python main.py` (sdstudio.cli.run_gui), told in a dialog too.
    return cli_main(argv, tell=tell_user)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
