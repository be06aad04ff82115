"""HistoryStore: every generated image kept as a PNG with its parameters, indexed in SQLite.

Write order makes a crash harmless: sidecar images and the PNG are written atomically first, then the
index row is committed in one transaction. A kill before the commit leaves a complete PNG without a
row, which `reconcile` (run at open) indexes again from the PNG's own ``sdstudio`` record; a row is
never committed before its file exists. Deleting marks the row first and then moves the files to the
trash; `reconcile` finishes a move that a crash interrupted.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sdstudio import paths
from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import GenerationRequest, GenerationResult
from sdstudio.history import schema
from sdstudio.history.atomic import atomic_move
from sdstudio.history.layout import SIDECARS, Layout, sidecar_name
from sdstudio.history.parameters import format_parameters, parse_parameters, request_from_parameters
from sdstudio.history.png import read_png_parameters, save_png
from sdstudio.history.reconcile import Report
from sdstudio.history.reconcile import reconcile as reconcile_files
from sdstudio.history.record import Record, record_or_none
from sdstudio.history.schema import Filter
from sdstudio.history.thumbnails import ThumbnailCache


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


class HistoryStore:
    """The outputs folder plus its SQLite index. Thread-safe; one instance per process is enough."""

    def __init__(self, root: Path, db_path: Path | None = None, *, reconcile: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.layout = Layout(self.root)
        self.thumbnails = ThumbnailCache(self.layout.thumbnails)
        self.db_path = Path(db_path) if db_path is not None else self.root / "history.sqlite3"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        # NORMAL is safe against a killed process in WAL mode; a power cut may lose the newest rows,
        # which reconcile restores from the PNG files.
        self._db.execute("PRAGMA synchronous = NORMAL")
        self.has_fts = schema.fts5_available(self._db)
        schema.create(self._db, self.has_fts)
        if reconcile:
            self.reconcile()

    @classmethod
    def default(cls) -> HistoryStore:
        """The user's store: paths.outputs_dir() indexed by paths.history_db()."""
        return cls(paths.outputs_dir(), paths.history_db())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _entry(self, row: tuple) -> Entry:
        values = dict(zip(schema.COLUMNS, row, strict=True))
        deleted = bool(values["deleted"])
        values.update(
            file=self.layout.location(values["file"], deleted),
            favourite=bool(values["favourite"]),
            deleted=deleted,
        )
        return Entry(**values)

    def _select(self, where: str, params: list[object], tail: str = "") -> list[Entry]:
        sql = f"SELECT {', '.join(schema.COLUMNS)} FROM entries WHERE {where} {tail}"
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [self._entry(row) for row in rows]

    # Writing -------------------------------------------------------------------------------------

    def add(
        self, image: Image.Image, request: GenerationRequest, model_name: str = "", *, created: float | None = None
    ) -> Entry:
        """Save `image` (made by `request`) as a new entry; init image and mask are kept beside it."""
        created = time.time() if created is None else created
        entry_id = uuid.uuid4().hex
        relative = self.layout.new_relative_path(created, request.seed, entry_id)
        sidecars = {"init": request.init_image, "mask": request.mask}
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
        )
        save_png(self.root / relative, image, format_parameters(request, model_name), record.to_json())
        row = schema.row_values(entry_id, created, relative, request, model_name)
        self.insert_rows([row])
        try:
            self.thumbnails.make(image, entry_id)
        except OSError:
            pass  # the entry is saved; the gallery makes the thumbnail from the PNG when it needs it
        return self._entry(row)

    def add_result(self, result: GenerationResult) -> list[Entry]:
        """One entry per image of an engine result, in order."""
        return [self.add(image, request, result.model_name) for image, request in zip(result.images, result.requests, strict=True)]

    def insert_rows(self, rows: list[tuple]) -> None:
        """Index rows (in `schema.COLUMNS` order) in one transaction; the files must already exist."""
        marks = ", ".join("?" * len(schema.COLUMNS))
        with self._transaction() as db:
            db.executemany(f"INSERT INTO entries ({', '.join(schema.COLUMNS)}) VALUES ({marks})", rows)

    def set_favourite(self, entry_id: str, favourite: bool = True) -> None:
        with self._transaction() as db:
            db.execute("UPDATE entries SET favourite = ? WHERE id = ?", (int(favourite), entry_id))

    def delete(self, entry_id: str) -> None:
        """Move the entry to the trash (restorable)."""
        self._set_deleted(entry_id, True)

    def restore(self, entry_id: str) -> None:
        """Bring a deleted entry back from the trash."""
        self._set_deleted(entry_id, False)

    def _set_deleted(self, entry_id: str, deleted: bool) -> None:
        with self._lock:
            entry = self.get(entry_id)
            if entry is None:
                raise KeyError(entry_id)
            if entry.deleted == deleted:
                return
            with self._transaction() as db:
                db.execute("UPDATE entries SET deleted = ? WHERE id = ?", (int(deleted), entry_id))
            self.move_files(self._relative(entry_id), deleted)

    def move_files(self, relative: str, to_trash: bool) -> None:
        """Move an entry's PNG and sidecars between the live folder and the trash, if present."""
        for name in [relative] + [sidecar_name(relative, kind) for kind in SIDECARS]:
            source = self.layout.location(name, not to_trash)
            if source.exists():
                atomic_move(source, self.layout.location(name, to_trash))

    def empty_trash(self) -> int:
        """Delete every trashed entry for good; returns how many."""
        with self._lock:
            trashed = self._db.execute("SELECT id, file FROM entries WHERE deleted = 1").fetchall()
            with self._transaction() as db:
                db.execute("DELETE FROM entries WHERE deleted = 1")
            for entry_id, relative in trashed:
                for name in [relative] + [sidecar_name(relative, kind) for kind in SIDECARS]:
                    self.layout.location(name, True).unlink(missing_ok=True)
                self.thumbnails.discard(entry_id)
        return len(trashed)

    # Reading -------------------------------------------------------------------------------------

    def get(self, entry_id: str) -> Entry | None:
        found = self._select("id = ?", [entry_id])
        return found[0] if found else None

    def _relative(self, entry_id: str) -> str:
        with self._lock:
            return self._db.execute("SELECT file FROM entries WHERE id = ?", (entry_id,)).fetchone()[0]

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
        where, params = selection.where(self.has_fts)
        return self._select(where, params + [limit, offset], "ORDER BY created DESC, seq DESC LIMIT ? OFFSET ?")

    def count(self, selection: Filter | None = None, **filters: object) -> int:
        """How many entries match; pass a Filter or the same keywords as `page`."""
        where, params = (selection or Filter(**filters)).where(self.has_fts)
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM entries WHERE {where}", params).fetchone()[0]

    def rank(self, entry_id: str, selection: Filter) -> int | None:
        """The entry's row in `page_for(selection)` order, or None when the filter excludes it."""
        where, params = selection.where(self.has_fts)
        with self._lock:
            found = self._db.execute(
                f"SELECT created, seq FROM entries WHERE id = ? AND {where}", [entry_id] + params
            ).fetchone()
            if found is None:
                return None
            newer = f"{where} AND (created > ? OR (created = ? AND seq > ?))"
            return self._db.execute(
                f"SELECT COUNT(*) FROM entries WHERE {newer}", params + [found[0], found[0], found[1]]
            ).fetchone()[0]

    def models(self) -> list[str]:
        """Model names of live entries, sorted, for a filter list."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT model_name FROM entries WHERE deleted = 0 ORDER BY model_name"
            ).fetchall()
        return [name for (name,) in rows]

    def parent(self, entry_id: str) -> Entry | None:
        entry = self.get(entry_id)
        return self.get(entry.parent_id) if entry is not None and entry.parent_id else None

    def children(self, entry_id: str) -> list[Entry]:
        """Live entries made from this one (img2img / inpainting), newest first."""
        return self._select("parent_id = ? AND deleted = 0", [entry_id], "ORDER BY created DESC, seq DESC")

    def parameters_text(self, entry: Entry) -> str:
        """The A1111 text stored in the entry's file ("" when it has none)."""
        text, _ = read_png_parameters(entry.file)
        return text or ""

    def request_for(self, entry: Entry) -> GenerationRequest:
        """The request that re-creates this entry's pixels, init image and mask included."""
        text, data = read_png_parameters(entry.file)
        record = record_or_none(data)
        if record is not None:
            folder = entry.file.parent
            init = _load(folder / record.init_file, "RGB") if record.init_file else None
            mask = _load(folder / record.mask_file, "L") if record.mask_file else None
            return record.request.replace(init_image=init, mask=mask)
        if text:
            return request_from_parameters(parse_parameters(text))
        raise RequestError(f"{entry.file.name} carries no generation parameters to re-run")

    def reconcile(self) -> Report:
        """Bring files and index back in step (run at open; see sdstudio.history.reconcile)."""
        with self._lock:
            return reconcile_files(self)

    def indexed_files(self) -> tuple[set[str], set[str]]:
        """Relative files of the (live, trashed) rows."""
        with self._lock:
            rows = self._db.execute("SELECT file, deleted FROM entries").fetchall()
        return {f for f, deleted in rows if not deleted}, {f for f, deleted in rows if deleted}

    def drop_files(self, relatives: list[str]) -> None:
        """Forget the rows of these files (and their thumbnails)."""
        if not relatives:
            return
        with self._transaction() as db:
            ids = [db.execute("SELECT id FROM entries WHERE file = ?", (f,)).fetchone()[0] for f in relatives]
            db.executemany("DELETE FROM entries WHERE file = ?", [(f,) for f in relatives])
        for entry_id in ids:
            self.thumbnails.discard(entry_id)


def _load(path: Path, mode: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert(mode)
