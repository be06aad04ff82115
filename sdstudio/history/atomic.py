"""Crash-safe file writes: a temp file in the target's folder, fsync, then one atomic rename.

A reader (or a restart after a kill) sees either the old file or the complete new one, never half of
it. Leftover temp files from a killed writer are recognisable by name and removed by the store, but only
when no one holds them: another process may be writing that very file. A writer holds its temp file
locked (POSIX: flock, which the kernel releases when the process dies, so a killed writer's temps are
free at once; Windows: the open handle itself, since Windows refuses to delete a file opened without
FILE_SHARE_DELETE, which Python never passes). `reap_temp` removes a temp only when it can take that lock.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: an open handle already keeps the file from being deleted
    fcntl = None

TEMP_SUFFIX = ".sdstudio-tmp"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


# Where flock is unsupported (some network file systems) only temps this old are taken for abandoned.
STALE_SECONDS = 600


def temp_target(temp: Path) -> Path:
    """'.x.png.1a2b3c4d.sdstudio-tmp' -> 'x.png' in the same folder: the file the temp is (or guards) for."""
    name = temp.name[1 : -len(TEMP_SUFFIX)]
    return temp.with_name(name.rsplit(".", 1)[0])


def _open_locked_temp(path: Path) -> tuple[int, Path]:
    """Create and lock a fresh temp beside `path`. A reaper that opened the new file before the lock was
    taken may have unlinked it: then the name is gone (no links) and another one is made."""
    while True:
        temp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        # os.open with 0o666 honours the umask, unlike mkstemp's private 0o600.
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        if fcntl is None:
            return fd, temp
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            return fd, temp  # no flock here: reap_temp falls back to the age of the file
        if os.fstat(fd).st_nlink > 0:
            return fd, temp
        os.close(fd)


@contextmanager
def hold_temp(path: Path) -> Iterator[Path]:
    """A locked, empty temp named for `path` while the block runs: tells other processes that `path` (and
    its sidecars) are being written, so their reconcile leaves them alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = _open_locked_temp(path)
    try:
        yield temp
    finally:
        os.close(fd)  # first: Windows cannot delete an open file
        temp.unlink(missing_ok=True)


def reap_temp(temp: Path) -> bool:
    """Remove a temp file unless a live writer holds it; True when it is gone."""
    if fcntl is None:
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            return False  # open in another process
        return True
    try:
        fd = os.open(temp, os.O_RDONLY)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # not ours to judge (no permission): left alone
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            if time.time() - os.fstat(fd).st_mtime < STALE_SECONDS:
                return False
        # Unlinked while locked: a writer that opened it but had not locked it yet sees no links and retries.
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            return False
        return True
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable. Windows cannot open folders; its renames are journaled."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(file)` on a temp file beside `path`, then replace `path` with it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = _open_locked_temp(path)
    file = os.fdopen(fd, "wb")
    try:
        write(file)
        file.flush()
        os.fsync(file.fileno())
        if fcntl is None:
            file.close()  # Windows cannot rename an open file
        # POSIX: the lock is held until the rename is done, so no reaper can take the finished temp.
        os.replace(temp, path)
    except BaseException:
        file.close()  # first: Windows cannot delete an open file
        temp.unlink(missing_ok=True)
        raise
    finally:
        file.close()
    fsync_dir(path.parent)


def atomic_move(source: Path, target: Path) -> None:
    """Move a file within one volume atomically (rename) and make both folders durable."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)  # FileNotFoundError when another process moved it first
    fsync_dir(target.parent)
    if source.parent != target.parent:
        fsync_dir(source.parent)
