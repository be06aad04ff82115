"""Bring the outputs folder and the index back in step after a crash, a kill, or files changed by hand.

One pass over the folder (no image is decoded for files the index knows):
- temp files left by a killed writer are removed; those a live process holds (see atomic.reap_temp) stay;
- a row whose file sits on the other side of the trash finishes its interrupted delete/restore;
- a row whose file is gone is dropped, but only when its day folder is there: a missing outputs folder or
  day folder (unmounted drive, folder moved away) must not empty the history;
- a PNG with parameters (ours or A1111's) and no row is indexed, keeping the id of its ``sdstudio`` record;
  one in the trash is indexed as a deleted entry, and ids in `favourites` come back as favourites;
- an init/mask sidecar whose entry PNG never got written is removed, unless its entry is being written.

Another process may add entries while this runs: rows are read before the folder is scanned (a committed
row's file was written before its commit, so the scan sees it), a row that looks gone is looked at again,
and a row the other process inserts first is not an error (Index.insert_rows).

It works on the two things it reconciles, the folder `Layout` and the SQLite `Index` (plus the thumbnail
cache, whose files follow the rows), not on the whole store.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from sdstudio.history.atomic import atomic_move, reap_temp, temp_target
from sdstudio.history.file_parameters import read_file_parameters
from sdstudio.history.index import Index
from sdstudio.history.layout import Layout, Scan, sidecar_owner
from sdstudio.history.schema import COLUMNS, row_values
from sdstudio.history.thumbnails import ThumbnailCache


@dataclass(frozen=True)
class Report:
    temps_removed: int = 0
    rows_dropped: int = 0
    files_indexed: int = 0
    moves_finished: int = 0
    sidecars_removed: int = 0


def reconcile(
    layout: Layout, index: Index, thumbnails: ThumbnailCache, favourites: frozenset[str] = frozenset()
) -> Report:
    with index.lock:
        if not layout.root.is_dir():
            return Report()  # nothing to compare with; see HistoryStore for the read-only state this means
        live_rows, trashed_rows = index.indexed_files()
        scan = layout.scan()
        busy = [temp for temp in scan.temps if not reap_temp(temp)]
        being_written = {_relative(layout, temp_target(temp)) for temp in busy}
        # Set arithmetic keeps this linear and in C: 20,000 entries take a few milliseconds here.
        to_trash = (trashed_rows - scan.trash) & scan.live
        to_live = (live_rows - scan.live) & scan.trash
        for relative in to_trash:
            layout.move_entry(relative, to_trash=True)
        for relative in to_live:
            layout.move_entry(relative, to_trash=False)
        scan.live, scan.trash = (scan.live - to_trash) | to_live, (scan.trash - to_live) | to_trash
        unseen = (live_rows - scan.live) | (trashed_rows - scan.trash)
        gone = [r for r in sorted(unseen) if layout.day_folder_present(r) and not layout.entry_visible(r)]
        for entry_id in index.drop_files(gone):
            thumbnails.discard(entry_id)
        known = live_rows | trashed_rows
        taken: set[str] = set()
        rows = []
        for files, in_trash in ((scan.live - known, False), (scan.trash - known, True)):
            for relative in sorted(files):
                row = _row_for_file(layout, index, relative, taken, in_trash)
                if row is not None:
                    rows.append(_with_flags(row, row[0] in favourites, in_trash))
        index.insert_rows(rows)
        moves = len(to_trash) + len(to_live)
        removed = _remove_orphan_sidecars(layout, scan, being_written)
        return Report(len(scan.temps) - len(busy), len(gone), len(rows), moves, removed)


def _relative(layout: Layout, path: Path) -> str:
    """A path in the live folder or the trash as the index names it."""
    top = layout.trash if layout.trash in path.parents else layout.root
    return path.relative_to(top).as_posix()


def _with_flags(row: tuple, favourite: bool, deleted: bool) -> tuple:
    """`row` (schema.COLUMNS order) with those two set."""
    values = list(row)
    values[_FAVOURITE], values[_DELETED] = int(favourite), int(deleted)
    return tuple(values)


_FAVOURITE, _DELETED = COLUMNS.index("favourite"), COLUMNS.index("deleted")


def _remove_orphan_sidecars(layout: Layout, scan: Scan, being_written: set[str]) -> int:
    """Remove sidecars whose entry PNG never got written; a sidecar left behind by an interrupted move (the PNG
    goes first, see Layout.move_entry) follows its PNG."""
    removed = 0
    for sidecars, in_trash in ((scan.live_sidecars, False), (scan.trash_sidecars, True)):
        here, there = (scan.trash, scan.live) if in_trash else (scan.live, scan.trash)
        for relative in sidecars:
            owner = sidecar_owner(relative)
            source = layout.location(relative, in_trash)
            if owner in here or owner in being_written or not source.exists():
                continue
            if owner not in there and owner is not None and layout.entry_visible(owner):
                continue  # its PNG was written after the scan (its writer finished meanwhile)
            try:
                if owner in there:
                    atomic_move(source, layout.location(relative, not in_trash))
                else:
                    source.unlink()
                    removed += 1
            except FileNotFoundError:
                pass  # another process's reconcile got there first
    return removed


def _row_for_file(layout: Layout, index: Index, relative: str, taken: set[str], in_trash: bool = False) -> tuple | None:
    """Index values for an unknown PNG, or None when it carries no parameters (not an entry).
    `taken` collects the record ids given out in this pass."""
    path = layout.location(relative, in_trash)
    try:
        found = read_file_parameters(path, pixels=False)
        created = path.stat().st_mtime
    except (OSError, SyntaxError, ValueError):
        return None
    request = found.listing_request()
    if request is None:
        return None
    entry_id = uuid.uuid4().hex
    if found.record is not None:
        created = found.record.created
        # A copy of an entry's file keeps the record's id, which is taken: it gets a new one.
        if found.record.id and found.record.id not in taken and not index.has_id(found.record.id):
            entry_id = found.record.id
    taken.add(entry_id)
    return row_values(entry_id, created, relative, request, found.model_name, found.mode)
