"""HistoryStore: every generated image kept as a PNG with its parameters, indexed in SQLite.

Write order makes a crash harmless: sidecar images and the PNG are written atomically first, then the
index row is committed in one transaction. A kill before the commit leaves a complete PNG without a
row, which `reconcile` (run at open) indexes again from the PNG's own ``sdstudio`` record; a row is
never committed before its file exists. Deleting marks the row first and then moves the files to the
trash; `reconcile` finishes a move that a crash interrupted.

Several processes may use one store at once (two app windows, a script): a writer holds a locked temp
named for the entry while it writes (atomic.hold_temp), so another process's reconcile leaves its files
alone, and a row that process indexed first is not an error.

Opening never loses history: a damaged index is set aside as ``<name>.damaged-<time>`` and rebuilt from the
PNGs; an outputs folder that the index knows had files but that is missing (unmounted drive) is not
recreated empty, and a data folder the user cannot write is opened read-only. In both cases browsing works
and every change raises HistoryReadOnly with the reason. `notice` holds what the user should hear once.
Favourites are also kept in a small file beside the index (``<name>.favourites``, one id a line), written
in the same transaction as the flag, so a rebuild from the PNGs restores them.

The store is the one object the app holds; it composes the folder `Layout`, the SQLite `Index` and the
thumbnail cache, and reads files back through `file_parameters` like every other reader.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from sdstudio import paths
from sdstudio.engine.errors import HistoryReadOnly, RequestError
from sdstudio.engine.request import GenerationRequest, GenerationResult
from sdstudio.errorlog import log_lines
from sdstudio.history.atomic import atomic_write, hold_temp
from sdstudio.history.file_parameters import FileParameters, read_file_parameters
from sdstudio.history.index import Index, IndexDamaged
from sdstudio.history.layout import MAX_CONTROL_UNITS, Layout, sidecar_name
from sdstudio.history.parameters import format_parameters
from sdstudio.history.png import save_png
from sdstudio.history.reconcile import Report
from sdstudio.history.reconcile import reconcile as reconcile_files
from sdstudio.history.record import Record, new_entry_id
from sdstudio.history.schema import COLUMNS, Filter, row_values
from sdstudio.history.thumbnails import ThumbnailCache
from sdstudio.untrusted import printable


@dataclass(frozen=True)
class Entry:
    """One indexed image. `file` is where it is now (inside the trash when `deleted`)."""

    id: str
    created: float
    file: Path
    prompt: str
    negative: str
    model_name: str
    model_hash: str
    sampler: str
    scheduler: str
    steps: int
    cfg: float
    seed: int
    width: int
    height: int
    mode: str
    parent_id: str
    favourite: bool
    deleted: bool
    walk_id: str = ""  # the latent walk this entry is a frame of (GenerationRequest.walk_id)


class HistoryStore:
    """The outputs folder plus its SQLite index. Thread-safe; one instance per process is enough."""

    def __init__(self, root: Path, db_path: Path | None = None, *, reconcile: bool = True) -> None:
        self.root = Path(root)
        self.layout = Layout(self.root)
        self.thumbnails = ThumbnailCache(self.layout.thumbnails)
        db_path = Path(db_path) if db_path is not None else self.root / "history.sqlite3"
        self.favourites_file = db_path.with_name(db_path.name + ".favourites")
        self.notice = ""
        self.read_only_reason = _unwritable(db_path)
        root_was_missing = not self.root.is_dir()
        if root_was_missing and not self.read_only_reason and not db_path.exists():
            self.root.mkdir(parents=True, exist_ok=True)  # first start: nothing to lose
            root_was_missing = False
        if not self.read_only_reason:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        self.index = self._open_index(db_path)
        if root_was_missing:
            if self.index.is_empty() and not self.read_only_reason:
                self.root.mkdir(parents=True, exist_ok=True)
            else:
                self.read_only_reason = self.read_only_reason or (
                    f"the outputs folder {self.root} is missing (unmounted drive?); reconnect it and restart SD Studio"
                )
        if self.read_only_reason:
            self.notice = self.notice or f"History is read-only: {self.read_only_reason}"
            return
        if not self.favourites_file.exists() and (favourites := self.index.favourite_ids()):
            self._write_favourites(favourites)
        if reconcile or self.notice:
            report = self.reconcile()
            if self.notice:
                self.notice += f"; {report.files_indexed} images were indexed again from their files"
            if report.skipped:
                self.notice = "; ".join(filter(None, (self.notice, _skipped_notice(report))))

    def _open_index(self, db_path: Path) -> Index:
        """The index, or a fresh one when the file is damaged (kept as `<name>.damaged-<time>`)."""
        try:
            return Index(db_path, read_only=bool(self.read_only_reason))
        except IndexDamaged as exc:
            if self.read_only_reason:
                raise
            damaged = db_path.with_name(f"{db_path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):  # the log belongs to the damaged file, not to a new one
                source = db_path.with_name(db_path.name + suffix)
                if source.exists():
                    os.replace(source, damaged.with_name(damaged.name + suffix))
            self.notice = f"The history index was damaged ({exc}); a copy was kept as {damaged.name}"
            return Index(db_path)

    @classmethod
    def default(cls) -> HistoryStore:
        """The user's store: paths.outputs_dir() indexed by paths.history_db()."""
        return cls(paths.outputs_dir(), paths.history_db())

    @property
    def read_only(self) -> bool:
        return bool(self.read_only_reason)

    def _writable(self) -> None:
        if self.read_only_reason:
            raise HistoryReadOnly(f"history is read-only: {self.read_only_reason}")

    def _favourites(self) -> frozenset[str]:
        try:
            return frozenset(self.favourites_file.read_text(encoding="utf-8").split())
        except FileNotFoundError:
            return frozenset()

    def _write_favourites(self, ids: list[str]) -> None:
        text = "".join(f"{entry_id}\n" for entry_id in ids)
        atomic_write(self.favourites_file, lambda file: file.write(text.encode("utf-8")))

    @property
    def db_path(self) -> Path:
        return self.index.db_path

    @property
    def has_fts(self) -> bool:
        return self.index.has_fts

    def close(self) -> None:
        self.index.close()

    def _transaction(self):
        return self.index.transaction()

    def _entry(self, values: dict[str, Any]) -> Entry:
        deleted = bool(values["deleted"])
        return Entry(**{
            **values,
            "file": self.layout.location(values["file"], deleted),
            "favourite": bool(values["favourite"]),
            "deleted": deleted,
        })

    # Writing -------------------------------------------------------------------------------------

    def add(
        self, image: Image.Image, request: GenerationRequest, model_name: str = "", *, created: float | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> Entry:
        """Save `image` (made by `request`) as a new entry; init image and mask are kept beside it. `extra` pairs
        are added to the A1111 text (an upscaled copy's "Postprocess upscaler", ...)."""
        self._writable()
        created = time.time() if created is None else created
        entry_id = new_entry_id()
        relative = self.layout.new_relative_path(created, request.seed, entry_id)
        with hold_temp(self.root / relative):
            row = self._write_entry(image, request, model_name, created, entry_id, relative, extra)
        try:
            self.thumbnails.make(image, entry_id)
        except OSError:
            pass  # the entry is saved; the gallery makes the thumbnail from the PNG when it needs it
        return self._entry(dict(zip(COLUMNS, row, strict=True)))

    def _write_entry(
        self, image: Image.Image, request: GenerationRequest, model_name: str, created: float, entry_id: str,
        relative: str, extra: Mapping[str, object] | None = None,
    ) -> tuple:
        if len(request.control_units) > MAX_CONTROL_UNITS:
            raise RequestError(f"{len(request.control_units)} ControlNet units: history keeps at most {MAX_CONTROL_UNITS}")
        sidecars = {"init": request.init_image, "mask": request.mask}
        sidecars.update({f"control{n}": unit.image for n, unit in enumerate(request.control_units)})
        for kind, picture in sidecars.items():
            if picture is not None:
                save_png(self.root / sidecar_name(relative, kind), picture, "")
        record = Record(
            id=entry_id,
            created=created,
            request=request,
            model_name=model_name,
            init_file=Path(sidecar_name(relative, "init")).name if request.init_image is not None else "",
            mask_file=Path(sidecar_name(relative, "mask")).name if request.mask is not None else "",
            control_files=tuple(Path(sidecar_name(relative, f"control{n}")).name if unit.image is not None else ""
                                for n, unit in enumerate(request.control_units)),
        )
        save_png(self.root / relative, image, format_parameters(request, model_name, extra), record.to_json())
        row = row_values(entry_id, created, relative, request, model_name)
        self.index.insert_rows([row])
        return row

    def add_result(self, result: GenerationResult) -> list[Entry]:
        """One entry per image of an engine result, in order. A result from a server (remote/a1111.py puts its
        name in `info["backend"]`) says so in the A1111 text: "Backend: name"."""
        backend = result.info.get("backend")
        extra = {"Backend": backend} if isinstance(backend, str) and backend else None
        return [self.add(image, request, result.model_name, extra=extra)
                for image, request in zip(result.images, result.requests, strict=True)]

    def insert_rows(self, rows: list[tuple]) -> None:
        """Index rows (in `schema.COLUMNS` order) in one transaction; the files must already exist."""
        self._writable()
        self.index.insert_rows(rows)

    def drop_files(self, relatives: list[str]) -> None:
        """Forget the rows of these files (and their thumbnails); the files stay."""
        self._writable()
        for entry_id in self.index.drop_files(relatives):
            self.thumbnails.discard(entry_id)

    def set_favourite(self, entry_id: str, favourite: bool = True) -> None:
        self._writable()
        self.index.set_favourite(entry_id, favourite, then=self._write_favourites)

    def delete(self, entry_id: str) -> None:
        """Move the entry to the trash (restorable)."""
        self._set_deleted(entry_id, True)

    def restore(self, entry_id: str) -> None:
        """Bring a deleted entry back from the trash."""
        self._set_deleted(entry_id, False)

    def _set_deleted(self, entry_id: str, deleted: bool) -> None:
        self._writable()
        with self.index.lock:
            found = self.index.select("id = ?", [entry_id])
            if not found:
                raise KeyError(entry_id)
            if bool(found[0]["deleted"]) == deleted:
                return
            self.index.set_deleted(entry_id, deleted)
            self.layout.move_entry(found[0]["file"], deleted)

    def empty_trash(self) -> int:
        """Delete every trashed entry for good; returns how many."""
        self._writable()
        with self.index.lock:
            trashed = self.index.remove_trashed()
            for entry_id, relative in trashed:
                self.layout.remove_trashed(relative)
                self.thumbnails.discard(entry_id)
        return len(trashed)

    def purge(self, entry_id: str) -> None:
        """Delete one entry for good: its row first, then its files (live or trashed) and thumbnail."""
        self._writable()
        with self.index.lock:
            found = self.index.select("id = ?", [entry_id])
            if not found:
                raise KeyError(entry_id)
            relative, deleted = found[0]["file"], bool(found[0]["deleted"])
            self.index.drop_files([relative])
            for name in self.layout.entry_files(relative):
                self.layout.location(name, deleted).unlink(missing_ok=True)
            self.thumbnails.discard(entry_id)

    # Reading -------------------------------------------------------------------------------------

    def get(self, entry_id: str) -> Entry | None:
        found = self.index.select("id = ?", [entry_id])
        return self._entry(found[0]) if found else None

    def page(
        self,
        offset: int = 0,
        limit: int = 100,
        query: str = "",
        model: str | None = None,
        since: float | None = None,
        until: float | None = None,
        favourite: bool | None = None,
        deleted: bool = False,
    ) -> list[Entry]:
        """Entries newest first, filtered (see `schema.Filter`)."""
        return self.page_for(Filter(query, model, since, until, favourite, deleted), offset, limit)

    def page_for(self, selection: Filter, offset: int = 0, limit: int = 100) -> list[Entry]:
        return [self._entry(values) for values in self.index.page(selection, offset, limit)]

    def count(self, selection: Filter | None = None, **filters: object) -> int:
        """How many entries match; pass a Filter or the same keywords as `page`."""
        return self.index.count(selection or Filter(**filters))

    def rank(self, entry_id: str, selection: Filter) -> int | None:
        """The entry's row in `page_for(selection)` order, or None when the filter excludes it."""
        return self.index.rank(entry_id, selection)

    def models(self) -> list[str]:
        """Model names of live entries, sorted, for a filter list."""
        return self.index.models()

    def parent(self, entry_id: str) -> Entry | None:
        entry = self.get(entry_id)
        return self.get(entry.parent_id) if entry is not None and entry.parent_id else None

    def children(self, entry_id: str) -> list[Entry]:
        """Live entries made from this one (img2img / inpainting), newest first."""
        rows = self.index.select("parent_id = ? AND deleted = 0", [entry_id], "ORDER BY created DESC, seq DESC")
        return [self._entry(values) for values in rows]

    def walk_frames(self, walk_id: str) -> list[Entry]:
        """The live frames of a walk in walk order (they are saved in frame order), [] for ""."""
        if not walk_id:
            return []
        return [self._entry(values) for values in self.index.select("walk_id = ? AND deleted = 0", [walk_id],
                                                                    "ORDER BY seq")]

    def parameters_text(self, entry: Entry) -> str:
        """The A1111 text stored in the entry's file ("" when it has none)."""
        return read_file_parameters(entry.file, pixels=False).text

    def read(self, entry: Entry, models_dir: Path | None = None) -> FileParameters:
        """What the entry's file holds (see `read_file_parameters`), its model looked up in `models_dir`
        (default: the user's models folder). OSError when the file is gone or unreadable."""
        return read_file_parameters(entry.file, models_dir=models_dir or paths.models_dir(), history_root=self.root)

    def request_for(self, entry: Entry, models_dir: Path | None = None) -> GenerationRequest:
        """The request that re-creates this entry's pixels, init image and mask included, on a model found
        on this machine. RequestError / ModelNotFound when it cannot (see `FileParameters.rerun_request`)."""
        return self.read(entry, models_dir).rerun_request()

    def reconcile(self) -> Report:
        """Bring files and index back in step (run at open; see sdstudio.history.reconcile)."""
        self._writable()
        return reconcile_files(self.layout, self.index, self.thumbnails, self._favourites())


def _skipped_notice(report: Report) -> str:
    """One line for the user; the files and reasons (escaped: they come from the files) go to the log."""
    lines = [f"{printable(name, 300, multiline=False)}: {printable(why, 300, multiline=False)}"
             for name, why in report.skipped]
    log = log_lines(lines, "history: files in the outputs folder that were not indexed")
    count = len(report.skipped)
    return (f"{count} file{'s' if count != 1 else ''} in the outputs folder could not be indexed (damaged or not "
            f"ours) and {'were' if count != 1 else 'was'} left as they are; the list is in {log}")


def _unwritable(db_path: Path) -> str:
    """Why the index cannot be written here, or "" when it can."""
    folder = db_path.parent
    if folder.is_dir() and not os.access(folder, os.W_OK):
        return f"the data folder {folder} is not writable; make it writable and restart SD Studio"
    if db_path.exists() and not os.access(db_path, os.W_OK):
        return f"the history index {db_path} is not writable; make it writable and restart SD Studio"
    return ""
