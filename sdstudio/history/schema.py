"""The SQLite index: table, indexes, the optional FTS5 prompt index, and the filter for queries.

FTS5 (https://sqlite.org/fts5.html) is an "external content" table over `entries`, kept in step by
triggers; search terms match word prefixes in prompt or negative prompt. SQLite builds without
FTS5 fall back to LIKE substring search.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from dataclasses import dataclass

from sdstudio.engine.request import GenerationRequest

SCHEMA_VERSION = 2  # 2: walk_id (an index of version 1 gets the column added, empty)

COLUMNS = (
    "id", "created", "file", "prompt", "negative", "model_name", "model_hash", "sampler", "scheduler",
    "steps", "cfg", "seed", "width", "height", "mode", "parent_id", "favourite", "deleted",
    "walk_id",
)

TABLE = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    file TEXT NOT NULL UNIQUE,
    prompt TEXT NOT NULL DEFAULT '',
    negative TEXT NOT NULL DEFAULT '',
    model_name TEXT NOT NULL DEFAULT '',
    model_hash TEXT NOT NULL DEFAULT '',
    sampler TEXT NOT NULL DEFAULT '',
    scheduler TEXT NOT NULL DEFAULT '',
    steps INTEGER NOT NULL DEFAULT 0,
    cfg REAL NOT NULL DEFAULT 0,
    seed INTEGER NOT NULL DEFAULT 0,
    width INTEGER NOT NULL DEFAULT 0,
    height INTEGER NOT NULL DEFAULT 0,
    mode TEXT NOT NULL DEFAULT 'txt2img',
    parent_id TEXT NOT NULL DEFAULT '',
    favourite INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    walk_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS entries_by_time ON entries(deleted, created DESC, seq DESC);
CREATE INDEX IF NOT EXISTS entries_by_model ON entries(model_name, deleted, created DESC);
CREATE INDEX IF NOT EXISTS entries_by_parent ON entries(parent_id);
"""
WALK_INDEX = "CREATE INDEX IF NOT EXISTS entries_by_walk ON entries(walk_id, seq);"

FTS = """
CREATE VIRTUAL TABLE IF NOT EXISTS entries_fts USING fts5(
    prompt, negative, content='entries', content_rowid='seq', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS entries_fts_insert AFTER INSERT ON entries BEGIN
    INSERT INTO entries_fts(rowid, prompt, negative) VALUES (new.seq, new.prompt, new.negative);
END;
CREATE TRIGGER IF NOT EXISTS entries_fts_delete AFTER DELETE ON entries BEGIN
    INSERT INTO entries_fts(entries_fts, rowid, prompt, negative)
    VALUES ('delete', old.seq, old.prompt, old.negative);
END;
CREATE TRIGGER IF NOT EXISTS entries_fts_update AFTER UPDATE OF prompt, negative ON entries BEGIN
    INSERT INTO entries_fts(entries_fts, rowid, prompt, negative)
    VALUES ('delete', old.seq, old.prompt, old.negative);
    INSERT INTO entries_fts(rowid, prompt, negative) VALUES (new.seq, new.prompt, new.negative);
END;
"""

_WORD = re.compile(r"\w+")


def row_values(
    entry_id: str, created: float, relative: str, request: GenerationRequest, model_name: str, mode: str = ""
) -> tuple:
    """Index values in `COLUMNS` order for a live, not-favourite entry (mode defaults to the request's)."""
    r = request
    return (
        entry_id, created, relative, r.prompt, r.negative_prompt, model_name, r.model_hash, r.sampler,
        r.scheduler, r.steps, r.cfg_scale, r.seed, r.width, r.height, mode or r.mode, r.parent_id, 0, 0,
        r.walk_id,
    )


def fts5_available(db: sqlite3.Connection) -> bool:
    """True when this SQLite build has FTS5 (the probe table lives in memory only)."""
    try:
        db.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x)")
        db.execute("DROP TABLE temp.fts5_probe")
    except sqlite3.OperationalError:
        return False
    return True


def create(db: sqlite3.Connection, with_fts: bool) -> None:
    """Create what is missing, in one transaction (executescript runs outside Python's own)."""
    had_fts = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'entries_fts'").fetchone() is not None
    # An index made where FTS5 was missing gets its search table filled from the rows it has.
    rebuild = "INSERT INTO entries_fts(entries_fts) VALUES ('rebuild');" if with_fts and not had_fts else ""
    # Version 1 lacks walk_id: added empty (its walks' frames were not tagged, so they stay single tiles).
    columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
    missing = columns and "walk_id" not in columns
    migrate = "ALTER TABLE entries ADD COLUMN walk_id TEXT NOT NULL DEFAULT '';" if missing else ""
    script = TABLE + migrate + WALK_INDEX + (FTS + rebuild if with_fts else "") + f"PRAGMA user_version = {SCHEMA_VERSION};"
    db.executescript(f"BEGIN IMMEDIATE; {script} COMMIT;")


@dataclass(frozen=True)
class Filter:
    """Which entries a page shows. Times are Unix seconds; `until` is exclusive."""

    query: str = ""
    model: str | None = None
    since: float | None = None
    until: float | None = None
    favourite: bool | None = None
    deleted: bool = False
    # `walk`: only that walk's frames; `group_walks`: one row per walk (its first frame), as the gallery shows.
    walk: str | None = None
    group_walks: bool = False

    def where(self, with_fts: bool) -> tuple[str, list[object]]:
        clauses = ["deleted = ?"]
        params: list[object] = [int(self.deleted)]
        words = _WORD.findall(self.query)
        if words and with_fts:
            # Words (\w+, so free of quotes) are quoted so no FTS syntax gets through; each is a prefix.
            match = " ".join(f'"{word}"*' for word in words)
            clauses.append("seq IN (SELECT rowid FROM entries_fts WHERE entries_fts MATCH ?)")
            params.append(match)
        else:
            for word in words:
                pattern = "%" + word.replace("_", "\\_") + "%"  # '_' is the one LIKE wildcard in \w
                clauses.append("(prompt LIKE ? ESCAPE '\\' OR negative LIKE ? ESCAPE '\\')")
                params += [pattern, pattern]
        if self.model is not None:
            clauses.append("model_name = ?")
            params.append(self.model)
        if self.since is not None:
            clauses.append("created >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("created < ?")
            params.append(self.until)
        if self.favourite is not None:
            clauses.append("favourite = ?")
            params.append(int(self.favourite))
        if self.walk is not None:
            clauses.append("walk_id = ?")
            params.append(self.walk)
        elif self.group_walks:
            # The first frame the filters admit stands for its walk (one tile per walk).
            inner, inner_params = dataclasses.replace(self, group_walks=False).where(with_fts)
            clauses.append(f"(walk_id = '' OR seq IN (SELECT MIN(seq) FROM entries WHERE walk_id != '' AND {inner} "
                           "GROUP BY walk_id))")
            params += inner_params
        return " AND ".join(clauses), params
