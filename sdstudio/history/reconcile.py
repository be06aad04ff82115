"""Bring the outputs folder and the index back in step after a crash, a kill, or files changed by hand.

One pass over the folder (no image is decoded for files the index knows):
- temp files left by a killed writer are removed; those a live process holds (see atomic.reap_temp) stay;
- a row whose file sits on the other side of the trash finishes its interrupted delete/restore;
- a row whose file is gone is dropped, but only when its day folder is there: a missing outputs folder or
  day folder (unmounted drive, folder moved away) must not empty the history;
- a PNG with parameters (ours or A1111's) and no row is indexed, keeping the id of its ``sdstudio`` record
  when it is one of ours in form (anything else gets a fresh id: ids become file names and links); one in
  the trash is indexed as a deleted entry, and ids in `favourites` come back as favourites;
- a file that cannot be read or indexed (a hostile or damaged PNG) is skipped and listed in the report: one
  bad file never blocks the index;
- an init/mask sidecar whose entry PNG never got written is removed, unless its entry is being written.

Another process may add entries while this runs: rows are read before the folder is scanned (a committed
row's file was written before its commit, so the scan sees it), a row that looks gone is looked at again,
and a row the other process inserts first is not an error (Index.insert_rows).

A file that cannot be indexed (values SQLite cannot hold, text over the size limits, a record that does not
parse) is skipped and listed in `Report.skipped` with the reason: one odd file never blocks the index.

It works on the two things it reconciles, the folder `Layout` and the SQLite `Index` (plus the thumbnail
cache, whose files follow the rows), not on the whole store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from sdstudio.history.atomic import atomic_move, reap_temp, temp_target
from sdstudio.history.file_parameters import read_file_parameters
from sdstudio.history.index import Index
from sdstudio.history.layout import Layout, Scan, sidecar_owner
from sdstudio.history.png import MAX_TEXT_BYTES
from sdstudio.history.record import is_entry_id, new_entry_id
from sdstudio.history.schema import COLUMNS, row_values
from sdstudio.history.thumbnails import ThumbnailCache


@dataclass(frozen=True)
class Report:
    temps_removed: int = 0
    rows_dropped: int = 0
    files_indexed: int = 0
    moves_finished: int = 0
    sidecars_removed: int = 0
    skipped: tuple[tuple[str, str], ...] = ()  # (file relative to the outputs folder, why it was not indexed)


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
        rows: list[tuple] = []
        skipped: list[tuple[str, str]] = []
        for files, in_trash in ((scan.live - known, False), (scan.trash - known, True)):
            for relative in sorted(files):
                try:
                    row = _row_for_file(layout, index, relative, taken, in_trash)
                    if row is not None:
                        rows.append(_storable(_with_flags(row, row[0] in favourites, in_trash)))
                except Exception as e:  # noqa: BLE001 - whatever a hostile file makes a reader raise, it is listed, not fatal
                    skipped.append((relative, _reason(e)))
        index.insert_rows(rows)
        moves = len(to_trash) + len(to_live)
        removed = _remove_orphan_sidecars(layout, scan, being_written)
        return Report(len(scan.temps) - len(busy), len(gone), len(rows), moves, removed, tuple(skipped))


def _reason(error: Exception) -> str:
    """One short line: a hostile file's message may carry megabytes of its own text."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:200] + "..."


# SQLite INTEGER is 64-bit; a NaN REAL is stored as NULL (refused by NOT NULL); text must encode as UTF-8.
_INT_RANGE = range(-(2**63), 2**63)


def _storable(row: tuple) -> tuple:
    """The row when the index can hold each value, else ValueError naming the first that it cannot."""
    for value in row:
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and value not in _INT_RANGE:
            raise ValueError("a whole number in it is beyond 64 bits")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"a number in it is {value}")
        if isinstance(value, str):
            if len(value) > MAX_TEXT_BYTES:
                raise ValueError(f"a text in it has {len(value):,} characters, over the {MAX_TEXT_BYTES:,} stored")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a text in it holds a lone surrogate, which is not text") from None
    return row


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
    found = read_file_parameters(path, pixels=False)
    created = path.stat().st_mtime
    request = found.listing_request()
    if request is None:
        if found.refused:
            raise ValueError(found.refused[0])
        return None
    entry_id = new_entry_id()
    if found.record is not None:
        created = found.record.created
        # A copy of an entry's file keeps the record's id, which is taken: it gets a new one.
        if is_entry_id(found.record.id) and found.record.id not in taken and not index.has_id(found.record.id):
            entry_id = found.record.id
    taken.add(entry_id)
    return row_values(entry_id, created, relative, request, found.model_name, found.mode)
