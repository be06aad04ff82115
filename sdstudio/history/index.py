"""The SQLite index of the outputs folder: one row per entry, keyed by id and by relative file path.

It knows rows only; where the files are is `layout.Layout`'s job, and what an entry is made of is the
store's. WAL journal with synchronous=NORMAL survives a killed process; a power cut may lose the newest
rows, which `reconcile` restores from the PNG files.

Opening runs ``PRAGMA quick_check`` (https://sqlite.org/pragma.html#pragma_quick_check: every page read,
no index cross-check, so it stays cheap) and checks the table has the columns it needs; a damaged file
raises `IndexDamaged` so the store can set it aside and rebuild from the PNGs, instead of every later
add failing after its PNG is written. Several processes may share one index: an insert of a row another
process committed first is skipped, not an error.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import HistoryUnavailable
from sdstudio.history import schema
from sdstudio.history.schema import Filter


class IndexDamaged(HistoryUnavailable):
    """The index file is not a sound SQLite database with our table."""


class Index:
    """Thread-safe; `lock` (re-entrant) may be held around several calls that must not interleave.
    `read_only` opens the file with SQLite's ``mode=ro`` (a data folder the user cannot write)."""

    def __init__(self, db_path: Path, *, read_only: bool = False) -> None:
        self.db_path = Path(db_path)
        self.read_only = read_only
        self.lock = threading.RLock()
        try:
            if read_only:
                uri = f"{self.db_path.resolve().as_uri()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
            else:
                self._db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise HistoryUnavailable(f"cannot open the history index {self.db_path}: {exc}") from exc
        try:
            self._check()
            if not read_only:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
            self.has_fts = schema.fts5_available(self._db)
            if not read_only:
                schema.create(self._db, self.has_fts)
            missing = set(schema.COLUMNS) - {row[1] for row in self._db.execute("PRAGMA table_info(entries)")}
            if missing:
                raise IndexDamaged(f"the history index {self.db_path} lacks columns {', '.join(sorted(missing))}")
            self.has_fts = self.has_fts and self._has_table("entries_fts")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise IndexDamaged(f"the history index {self.db_path} is damaged: {exc}") from exc
        except IndexDamaged:
            self._db.close()
            raise

    def _check(self) -> None:
        found = [row[0] for row in self._db.execute("PRAGMA quick_check").fetchall()]
        if found != ["ok"]:
            raise IndexDamaged(f"the history index {self.db_path} is damaged: {'; '.join(map(str, found[:3]))}")

    def _has_table(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None

    def is_empty(self) -> bool:
        return not self._all("SELECT 1 FROM entries LIMIT 1")

    def favourite_ids(self) -> list[str]:
        return [entry_id for (entry_id,) in self._all("SELECT id FROM entries WHERE favourite = 1 ORDER BY seq")]

    def close(self) -> None:
        with self.lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _all(self, sql: str, params: list[Any] | tuple = ()) -> list[tuple]:
        with self.lock:
            return self._db.execute(sql, params).fetchall()

    # Rows ------------------------------------------------------------------------------------------

    def insert_rows(self, rows: list[tuple]) -> None:
        """Index rows (in `schema.COLUMNS` order) in one transaction; the files must already exist. A row whose
        id or file is already indexed (another process's reconcile indexed the new PNG first) is skipped."""
        marks = ", ".join("?" * len(schema.COLUMNS))
        sql = f"INSERT INTO entries ({', '.join(schema.COLUMNS)}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        with self.transaction() as db:
            db.executemany(sql, rows)

    def drop_files(self, relatives: list[str]) -> list[str]:
        """Forget the rows of these files; returns their ids."""
        if not relatives:
            return []
        with self.transaction() as db:
            found = [db.execute("SELECT id FROM entries WHERE file = ?", (f,)).fetchone() for f in relatives]
            ids = [row[0] for row in found if row is not None]  # another process may have dropped some
            db.executemany("DELETE FROM entries WHERE file = ?", [(f,) for f in relatives])
        return ids

    def set_favourite(self, entry_id: str, favourite: bool, then: Callable[[list[str]], None] | None = None) -> None:
        """Set the flag; `then(all favourite ids)` runs inside the same write transaction, so processes
        sharing the index call it one at a time with what each committed."""
        with self.transaction() as db:
            db.execute("UPDATE entries SET favourite = ? WHERE id = ?", (int(favourite), entry_id))
            if then is not None:
                then([entry_id for (entry_id,) in db.execute("SELECT id FROM entries WHERE favourite = 1 ORDER BY seq")])

    def set_deleted(self, entry_id: str, deleted: bool) -> None:
        with self.transaction() as db:
            db.execute("UPDATE entries SET deleted = ? WHERE id = ?", (int(deleted), entry_id))

    def remove_trashed(self) -> list[tuple[str, str]]:
        """Delete every trashed row; returns their (id, relative file)."""
        with self.lock:
            trashed = self._all("SELECT id, file FROM entries WHERE deleted = 1")
            with self.transaction() as db:
                db.execute("DELETE FROM entries WHERE deleted = 1")
        return [(entry_id, relative) for entry_id, relative in trashed]

    # Queries ---------------------------------------------------------------------------------------

    def select(self, where: str, params: list[object], tail: str = "") -> list[dict[str, Any]]:
        """Rows as {column: value} (see `schema.COLUMNS`)."""
        rows = self._all(f"SELECT {', '.join(schema.COLUMNS)} FROM entries WHERE {where} {tail}", params)
        return [dict(zip(schema.COLUMNS, row, strict=True)) for row in rows]

    def has_id(self, entry_id: str) -> bool:
        return bool(self._all("SELECT 1 FROM entries WHERE id = ?", (entry_id,)))

    def indexed_files(self) -> tuple[set[str], set[str]]:
        """Relative files of the (live, trashed) rows."""
        rows = self._all("SELECT file, deleted FROM entries")
        return {f for f, deleted in rows if not deleted}, {f for f, deleted in rows if deleted}

    def page(self, selection: Filter, offset: int, limit: int) -> list[dict[str, Any]]:
        where, params = selection.where(self.has_fts)
        return self.select(where, params + [limit, offset], "ORDER BY created DESC, seq DESC LIMIT ? OFFSET ?")

    def count(self, selection: Filter) -> int:
        where, params = selection.where(self.has_fts)
        return self._all(f"SELECT COUNT(*) FROM entries WHERE {where}", params)[0][0]

    def rank(self, entry_id: str, selection: Filter) -> int | None:
        """The entry's row in `page(selection)` order, or None when the filter excludes it."""
        where, params = selection.where(self.has_fts)
        with self.lock:
            found = self._all(f"SELECT created, seq FROM entries WHERE id = ? AND {where}", [entry_id] + params)
            if not found:
                return None
            created, seq = found[0]
            newer = f"{where} AND (created > ? OR (created = ? AND seq > ?))"
            return self._all(f"SELECT COUNT(*) FROM entries WHERE {newer}", params + [created, created, seq])[0][0]

    def models(self) -> list[str]:
        """Model names of live entries, sorted."""
        rows = self._all("SELECT DISTINCT model_name FROM entries WHERE deleted = 0 ORDER BY model_name")
        return [name for (name,) in rows]
