"""The emulator's store: accepted records and recent errors in SQLite (in memory unless a file is
given, so the embedded demo keeps what it was sent between runs), with keyset pagination for the
read-back listings.
"""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sap_ometria_assets.emulators.ometria.validation import MAX_ERRORS_KEPT, _CURSORS_KEPT


# --------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------
class _Store:
    """Records and errors in SQLite (":memory:" unless a file is given); callers hold the lock."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False,
                                  isolation_level=None, timeout=30)
        if path is not None:
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS records (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                type TEXT NOT NULL, collection TEXT NOT NULL, id TEXT NOT NULL,
                body TEXT NOT NULL, updated_at TEXT NOT NULL, update_seq INTEGER NOT NULL,
                UNIQUE (type, collection, id));
            CREATE INDEX IF NOT EXISTS records_update_seq ON records (update_seq);
            CREATE INDEX IF NOT EXISTS records_type_seq ON records (type, seq);
            CREATE INDEX IF NOT EXISTS records_type_update_seq ON records (type, update_seq);
            CREATE TABLE IF NOT EXISTS errors (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
            """
        )
        # Where each recently served page ended: (listing, offset) -> sort key of the last row
        # before that offset, valid while nothing is written (`_version`). The next page of a
        # listing then starts from that key through the index (keyset pagination) instead of
        # skipping `offset` rows: reading a whole listing costs in proportion to its size.
        self._version = 0
        self._cursors: OrderedDict[tuple, tuple[int, int]] = OrderedDict()

    def next_update_seq(self) -> int:
        row = self.db.execute("SELECT coalesce(max(update_seq), 0) FROM records").fetchone()
        return int(row[0]) + 1

    def get(self, kind: str, collection: str, rid: str) -> dict | None:
        row = self.db.execute("SELECT body FROM records WHERE type=? AND collection=? AND id=?",
                              (kind, collection, rid)).fetchone()
        return json.loads(row[0]) if row else None

    def upsert(self, rows: list[tuple[str, str, str, str]]) -> None:
        self._version += 1
        now = datetime.now(UTC).isoformat()
        seq = self.next_update_seq()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT INTO records (type, collection, id, body, updated_at, update_seq) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (type, collection, id) DO UPDATE SET "
                "body = excluded.body, updated_at = excluded.updated_at, update_seq = excluded.update_seq",
                [(k, c, i, b, now, seq + n) for n, (k, c, i, b) in enumerate(rows)],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def add_errors(self, errors: list[dict]) -> None:
        if not errors:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT INTO errors (body) VALUES (?)",
                                [(json.dumps(e, separators=(",", ":")),) for e in errors])
            self.db.execute("DELETE FROM errors WHERE seq <= (SELECT max(seq) FROM errors) - ?",
                            (MAX_ERRORS_KEPT,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def recent_errors(self) -> list[dict]:
        rows = self.db.execute("SELECT body FROM errors ORDER BY seq DESC LIMIT ?", (MAX_ERRORS_KEPT,))
        return [json.loads(r[0]) for r in rows]

    def page(self, kind: str, collection: str | None, limit: int, offset: int, order: str,
             active: bool | None) -> list[dict]:
        """`limit` records from position `offset` of a listing, in `seq` (first stored) or
        `update_seq` (`orderby=timestamp_update`) order. Offsets are positions as of now, as
        the API's; the page following one just served is read from where that one ended."""
        key = "update_seq" if order == "timestamp_update" else "seq"
        sql = f"SELECT {key}, body FROM records WHERE type = ?"
        params: list[Any] = [kind]
        if collection is not None:
            sql += " AND collection = ?"
            params.append(collection)
        if active is not None:
            sql += " AND coalesce(json_extract(body, '$.is_active'), 1) = ?"
            params.append(1 if active else 0)
        listing = (kind, collection, key, active)
        cursor = self._cursors.get((listing, offset)) if offset else None
        if cursor is not None and cursor[0] == self._version:
            rows = self.db.execute(f"{sql} AND {key} > ? ORDER BY {key} LIMIT ?",
                                   [*params, cursor[1], limit]).fetchall()
        else:
            rows = self.db.execute(f"{sql} ORDER BY {key} LIMIT ? OFFSET ?",
                                   [*params, limit, offset]).fetchall()
        if rows:
            self._cursors[(listing, offset + len(rows))] = (self._version, rows[-1][0])
            self._cursors.move_to_end((listing, offset + len(rows)))
            while len(self._cursors) > _CURSORS_KEPT:
                self._cursors.popitem(last=False)
        return [json.loads(body) for _, body in rows]

    def existing_ids(self, kind: str, ids: set[str]) -> set[str]:
        found: set[str] = set()
        todo = sorted(ids)
        for start in range(0, len(todo), 500):
            chunk = todo[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.db.execute(
                f"SELECT id FROM records WHERE type = ? AND collection = '' AND id IN ({marks})",
                [kind, *chunk]))
        return found

    def collections(self) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT collection FROM records WHERE type = 'contact' ORDER BY 1")]

    def all(self, kind: str) -> dict[tuple[str, str], dict]:
        return {(r[0], r[1]): json.loads(r[2]) for r in self.db.execute(
            "SELECT collection, id, body FROM records WHERE type = ?", (kind,))}

    def clear(self) -> None:
        self._version += 1
        self.db.executescript("DELETE FROM records; DELETE FROM errors;")

    def close(self) -> None:
        self.db.close()
