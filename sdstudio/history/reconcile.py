"""Bring the outputs folder and the index back in step after a crash, a kill, or files changed by hand.

One pass over the folder (no image is decoded for files the index knows):
- temp files left by a killed writer are removed;
- a row whose file sits on the other side of the trash finishes its interrupted delete/restore;
- a row whose file is gone is dropped;
- a PNG with parameters (ours or A1111's) and no row is indexed, keeping the id of its ``sdstudio`` record;
- an init/mask sidecar whose entry PNG never got written is removed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.atomic import atomic_move
from sdstudio.history.layout import Scan, sidecar_owner
from sdstudio.history.parameters import parse_parameters, request_from_parameters
from sdstudio.history.png import read_png_parameters
from sdstudio.history.record import record_or_none
from sdstudio.history.schema import row_values

if TYPE_CHECKING:
    from sdstudio.history.store import HistoryStore


@dataclass(frozen=True)
class Report:
    temps_removed: int = 0
    rows_dropped: int = 0
    files_indexed: int = 0
    moves_finished: int = 0
    sidecars_removed: int = 0


def reconcile(store: HistoryStore) -> Report:
    scan = store.layout.scan()
    for temp in scan.temps:
        temp.unlink(missing_ok=True)
    live_rows, trashed_rows = store.indexed_files()
    # Set arithmetic keeps this linear and in C: 20,000 entries take a few milliseconds here.
    to_trash = (trashed_rows - scan.trash) & scan.live
    to_live = (live_rows - scan.live) & scan.trash
    for relative in to_trash:
        store.move_files(relative, to_trash=True)
    for relative in to_live:
        store.move_files(relative, to_trash=False)
    scan.live, scan.trash = (scan.live - to_trash) | to_live, (scan.trash - to_live) | to_trash
    gone = (live_rows - scan.live) | (trashed_rows - scan.trash)
    store.drop_files(sorted(gone))
    new_files = sorted(scan.live - live_rows - trashed_rows)
    rows = [row for relative in new_files if (row := _row_for_file(store, relative))]
    store.insert_rows(rows)
    moves = len(to_trash) + len(to_live)
    return Report(len(scan.temps), len(gone), len(rows), moves, _remove_orphan_sidecars(store, scan))


def _remove_orphan_sidecars(store: HistoryStore, scan: Scan) -> int:
    """Remove sidecars whose entry PNG never got written; a sidecar left behind by an interrupted move (the PNG
    goes first, see HistoryStore.move_files) follows its PNG."""
    removed = 0
    for sidecars, in_trash in ((scan.live_sidecars, False), (scan.trash_sidecars, True)):
        here, there = (scan.trash, scan.live) if in_trash else (scan.live, scan.trash)
        for relative in sidecars:
            owner = sidecar_owner(relative)
            source = store.layout.location(relative, in_trash)
            if owner in here or not source.exists():
                continue
            if owner in there:
                atomic_move(source, store.layout.location(relative, not in_trash))
            else:
                source.unlink()
                removed += 1
    return removed


def _row_for_file(store: HistoryStore, relative: str) -> tuple | None:
    """Index values for an unknown PNG, or None when it carries no parameters (not an entry)."""
    path = store.root / relative
    try:
        text, data = read_png_parameters(path)
        created = path.stat().st_mtime
    except OSError:
        return None
    record = record_or_none(data)
    if record is not None:
        # A copy of an entry's file keeps the record's id, which is taken: it gets a new one.
        entry_id = record.id if record.id and store.get(record.id) is None else uuid.uuid4().hex
        mode = "inpaint" if record.mask_file else "img2img" if record.init_file else "txt2img"
        return row_values(entry_id, record.created, relative, record.request, record.model_name, mode)
    if not text:
        return None
    params = parse_parameters(text)
    return row_values(uuid.uuid4().hex, created, relative, lenient_request(params), params.get("Model", ""), a1111_mode(params))


def a1111_mode(params: dict[str, str]) -> str:
    """Best guess of how an A1111 image was made (its hires fix also writes a denoising strength)."""
    if "Mask blur" in params or "Inpaint area" in params:
        return "inpaint"
    if "Denoising strength" in params and not any(key.startswith("Hires") for key in params):
        return "img2img"
    return "txt2img"


def _number(text: str, kind: type, default: float) -> float:
    try:
        return kind(text)
    except (TypeError, ValueError):
        return default


def lenient_request(params: dict[str, str]) -> GenerationRequest:
    """The request for indexing: exact when the text is one we can re-run, else raw names kept for display."""
    try:
        return request_from_parameters(params)
    except RequestError:
        width, _, height = params.get("Size", "").partition("x")
        return GenerationRequest(
            prompt=params.get("Prompt", ""),
            negative_prompt=params.get("Negative prompt", ""),
            sampler=params.get("Sampler", ""),
            scheduler=params.get("Schedule type", ""),
            steps=int(_number(params.get("Steps", ""), int, 0)),
            cfg_scale=_number(params.get("CFG scale", ""), float, 0.0),
            seed=int(_number(params.get("Seed", ""), int, 0)),
            width=int(_number(width, int, 0)),
            height=int(_number(height, int, 0)),
            model_hash=params.get("Model hash", ""),
        )
