"""Bring the outputs folder and the index back in step after a crash, a kill, or files changed by hand.

One pass over the folder (no image is decoded for files the index knows):
- temp files left by a killed writer are removed;
- a row whose file sits on the other side of the trash finishes its interrupted delete/restore;
- a row whose file is gone is dropped;
- a PNG with parameters (ours or A1111's) and no row is indexed, keeping the id of its ``sdstudio`` record
  when it is one of ours in form (anything else gets a fresh id: ids become file names and links);
- an init/mask sidecar whose entry PNG never got written is removed.

It works on the two things it reconciles, the folder `Layout` and the SQLite `Index` (plus the thumbnail
cache, whose files follow the rows), not on the whole store.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdstudio.history.atomic import atomic_move
from sdstudio.history.file_parameters import read_file_parameters
from sdstudio.history.index import Index
from sdstudio.history.layout import Layout, Scan, sidecar_owner
from sdstudio.history.record import is_entry_id, new_entry_id
from sdstudio.history.schema import row_values
from sdstudio.history.thumbnails import ThumbnailCache


@dataclass(frozen=True)
class Report:
    temps_removed: int = 0
    rows_dropped: int = 0
    files_indexed: int = 0
    moves_finished: int = 0
    sidecars_removed: int = 0


def reconcile(layout: Layout, index: Index, thumbnails: ThumbnailCache) -> Report:
    with index.lock:
        scan = layout.scan()
        for temp in scan.temps:
            temp.unlink(missing_ok=True)
        live_rows, trashed_rows = index.indexed_files()
        # Set arithmetic keeps this linear and in C: 20,000 entries take a few milliseconds here.
        to_trash = (trashed_rows - scan.trash) & scan.live
        to_live = (live_rows - scan.live) & scan.trash
        for relative in to_trash:
            layout.move_entry(relative, to_trash=True)
        for relative in to_live:
            layout.move_entry(relative, to_trash=False)
        scan.live, scan.trash = (scan.live - to_trash) | to_live, (scan.trash - to_live) | to_trash
        gone = (live_rows - scan.live) | (trashed_rows - scan.trash)
        for entry_id in index.drop_files(sorted(gone)):
            thumbnails.discard(entry_id)
        new_files = sorted(scan.live - live_rows - trashed_rows)
        taken: set[str] = set()
        rows = [row for relative in new_files if (row := _row_for_file(layout, index, relative, taken))]
        index.insert_rows(rows)
        moves = len(to_trash) + len(to_live)
        return Report(len(scan.temps), len(gone), len(rows), moves, _remove_orphan_sidecars(layout, scan))


def _remove_orphan_sidecars(layout: Layout, scan: Scan) -> int:
    """Remove sidecars whose entry PNG never got written; a sidecar left behind by an interrupted move (the PNG
    goes first, see Layout.move_entry) follows its PNG."""
    removed = 0
    for sidecars, in_trash in ((scan.live_sidecars, False), (scan.trash_sidecars, True)):
        here, there = (scan.trash, scan.live) if in_trash else (scan.live, scan.trash)
        for relative in sidecars:
            owner = sidecar_owner(relative)
            source = layout.location(relative, in_trash)
            if owner in here or not source.exists():
                continue
            if owner in there:
                atomic_move(source, layout.location(relative, not in_trash))
            else:
                source.unlink()
                removed += 1
    return removed


def _row_for_file(layout: Layout, index: Index, relative: str, taken: set[str]) -> tuple | None:
    """Index values for an unknown PNG, or None when it carries no parameters (not an entry).
    `taken` collects the record ids given out in this pass."""
    path = layout.root / relative
    try:
        found = read_file_parameters(path, pixels=False)
        created = path.stat().st_mtime
    except (OSError, SyntaxError, ValueError):
        return None
    request = found.listing_request()
    if request is None:
        return None
    entry_id = new_entry_id()
    if found.record is not None:
        created = found.record.created
        # A copy of an entry's file keeps the record's id, which is taken: it gets a new one.
        if is_entry_id(found.record.id) and found.record.id not in taken and not index.has_id(found.record.id):
            entry_id = found.record.id
    taken.add(entry_id)
    return row_values(entry_id, created, relative, request, found.model_name, found.mode)
