"""The error log: unexpected failures with their tracebacks, appended to `<data>/logs/sdstudio.log`.

The user sees a one-line message and where this file is; the traceback goes here, never on screen. The file
is capped: past MAX_BYTES it becomes `sdstudio.log.1` (replacing the previous one) and a new file starts.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from pathlib import Path

from sdstudio import paths
from sdstudio.engine.errors import SDStudioError

LOG_NAME = "sdstudio.log"
MAX_BYTES = 1_000_000
_LOCK = threading.Lock()  # the engine thread and the GUI thread may both log


def log_path() -> Path:
    return paths.logs_dir() / LOG_NAME


def log_exception(exc: BaseException, context: str = "") -> Path:
    """Append a timestamped traceback of `exc` (with its cause chain) under `context`; returns the log's path."""
    path = log_path()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    lines = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    entry = f"--- {stamp} {context}\n{lines}\n"
    with _LOCK:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and path.stat().st_size + len(entry) > MAX_BYTES:
            os.replace(path, path.with_name(LOG_NAME + ".1"))
        with open(path, "a", encoding="utf-8") as f:
            f.write(entry)
    return path


def log_lines(lines: list[str], context: str) -> Path:
    """Append plain lines (already escaped) under `context`, e.g. the files a history scan skipped."""
    path = log_path()
    entry = f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {context}\n" + "".join(f"{line}\n" for line in lines) + "\n"
    with _LOCK:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(entry)
    return path


def user_message(exc: BaseException, context: str = "") -> str:
    """The short text a user sees for an exception, logging it first when it hides a traceback worth keeping.

    An SDStudioError's message is already for the user; when it chains an unexpected cause (`raise ... from
    exc`), the cause goes to the log. Anything else is unexpected: logged, and named in one line.
    """
    if isinstance(exc, SDStudioError):
        if exc.__cause__ is None:
            return str(exc)
        return f"{exc} (details in {log_exception(exc, context)})"
    path = log_exception(exc, context)
    return f"Unexpected error ({type(exc).__name__}: {exc}); details in {path}"
