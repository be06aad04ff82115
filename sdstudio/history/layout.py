"""Where history files live under the outputs folder, and one pass that lists them all.

    outputs/2025-01-31/142501-1234-ab12cd34.png        an entry (parameters inside)
    outputs/2025-01-31/142501-1234-ab12cd34.init.png   its init image, when it had one
    outputs/2025-01-31/142501-1234-ab12cd34.mask.png   its inpainting mask, when it had one
    outputs/2025-01-31/142501-1234-ab12cd34.control0.png  its first ControlNet unit's image (control1, ...)
    outputs/.trash/2025-01-31/...                      deleted entries, same relative paths
    outputs/.thumbnails/<hash of id>.jpg               thumbnail cache

Paths in the index are relative to the outputs folder, with forward slashes, so the folder can move.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from sdstudio.history.atomic import atomic_move, is_temp_name

TRASH = ".trash"
THUMBNAILS = ".thumbnails"
# A1111 offers at most 10 ControlNet units; each unit's image is the sidecar "control<n>" (n from 0).
MAX_CONTROL_UNITS = 10
SIDECARS = ("init", "mask", *(f"control{n}" for n in range(MAX_CONTROL_UNITS)))
_SIDECAR_ENDINGS = tuple(f".{kind}.png" for kind in SIDECARS)


def sidecar_name(relative: str, kind: str) -> str:
    """'day/x.png', 'init' -> 'day/x.init.png'."""
    return f"{relative[: -len('.png')]}.{kind}.png"


def sidecar_owner(relative: str) -> str | None:
    """'day/x.init.png' -> 'day/x.png'; None when the name is not a sidecar."""
    for kind in SIDECARS:
        suffix = f".{kind}.png"
        if relative.endswith(suffix):
            return relative[: -len(suffix)] + ".png"
    return None


def _day(created: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(created))


@dataclass
class Scan:
    """Every file the store cares about, as relative paths (live folder and trash separately)."""

    live: set[str] = field(default_factory=set)
    trash: set[str] = field(default_factory=set)
    live_sidecars: list[str] = field(default_factory=list)
    trash_sidecars: list[str] = field(default_factory=list)
    temps: list[Path] = field(default_factory=list)


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.trash = root / TRASH
        self.thumbnails = root / THUMBNAILS

    def location(self, relative: str, deleted: bool) -> Path:
        return (self.trash if deleted else self.root) / relative

    def new_relative_path(self, created: float, seed: int, entry_id: str) -> str:
        moment = time.localtime(created)
        return f"{_day(created)}/{time.strftime('%H%M%S', moment)}-{seed}-{entry_id[:8]}.png"

    def day_folders(self, created: float) -> list[Path]:
        """Where an entry made at `created` lives: its day folder, live and in the trash."""
        return [self.root / _day(created), self.trash / _day(created)]

    def entry_files(self, relative: str) -> list[str]:
        """An entry's PNG and the sidecar names it may have."""
        return [relative] + [sidecar_name(relative, kind) for kind in SIDECARS]

    def move_entry(self, relative: str, to_trash: bool) -> None:
        """Move an entry's PNG (first) and its sidecars between the live folder and the trash, if present."""
        for name in self.entry_files(relative):
            source = self.location(name, not to_trash)
            if source.exists():
                try:
                    atomic_move(source, self.location(name, to_trash))
                except FileNotFoundError:
                    pass  # another process's reconcile moved it first

    def entry_visible(self, relative: str) -> bool:
        """Whether the entry's PNG is in the live folder or the trash (a second look before a row is dropped)."""
        return self.location(relative, False).exists() or self.location(relative, True).exists()

    def day_folder_present(self, relative: str) -> bool:
        """Whether the folder an entry's file would be in exists, live or in the trash. When neither does, the
        files may just be out of sight (a folder moved away or a drive not mounted), so rows are kept."""
        folder = relative.rpartition("/")[0]
        return self.root.is_dir() and ((self.root / folder).is_dir() or (self.trash / folder).is_dir())

    def remove_trashed(self, relative: str) -> None:
        for name in self.entry_files(relative):
            self.location(name, True).unlink(missing_ok=True)

    def scan(self) -> Scan:
        scan = Scan()
        self._walk(self.root, scan.live, scan.live_sidecars, scan.temps, skip_hidden=True)
        if self.trash.is_dir():
            self._walk(self.trash, scan.trash, scan.trash_sidecars, scan.temps, skip_hidden=False)
        if self.thumbnails.is_dir():
            scan.temps += [Path(e.path) for e in os.scandir(self.thumbnails) if is_temp_name(e.name)]
        return scan

    @staticmethod
    def _walk(top: Path, pngs: set[str], sidecars: list[str], temps: list[Path], skip_hidden: bool) -> None:
        for folder, dirs, files in os.walk(top):
            if skip_hidden:
                dirs[:] = [d for d in dirs if not d.startswith(".")]
            prefix = Path(folder).relative_to(top).as_posix()
            prefix = "" if prefix == "." else prefix + "/"
            for name in files:
                if name[-4:].lower() == ".png" and not name.startswith("."):
                    if name.endswith(_SIDECAR_ENDINGS):
                        sidecars.append(prefix + name)
                    else:
                        pngs.add(prefix + name)
                elif is_temp_name(name):
                    temps.append(Path(folder) / name)
