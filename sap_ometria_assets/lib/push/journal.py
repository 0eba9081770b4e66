"""The push's acknowledgement journal: each acknowledged request made durable before the next goes.

Writing every acknowledgement to DuckDB at once costs a transaction with its audit rows (12-20
ms a request measured at x100 on 2 cores), more than the request itself takes against a fast
endpoint. So an acknowledged request is first appended to this journal, one line and one
`fdatasync` (1-2 ms), and only then is the next request sent; the acknowledged group reaches
the DuckDB tables (`acks`, `requests`, `sent_records`, lib/push/ledger.py) once a second or every
`OMETRIA_ACK_EVERY_REQUESTS` requests, after which the journal is emptied.

A process killed outright leaves its journal behind. The next push (or error read) replays it
into DuckDB before planning (`replay`), skipping requests `ometria_push.requests` already holds
(a kill between the DuckDB commit and the emptying records nothing twice) and a torn last line
(that request was never journalled whole: it is sent again). So a killed run re-sends at most
the batch in flight, whatever the group size.

The journal lives in a private folder beside the warehouse (`.push_journal/<warehouse file>/`,
mode 0700), one file per feed. It holds record ids, payload hashes and request ids, never
payloads or keys. An in-memory warehouse has no journal (nothing of it survives a kill anyway).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import polars as pl

from sap_ometria_assets.lib.push.ledger import merge_acknowledged, write_acknowledged

FOLDER = ".push_journal"
_RECORD_COLUMNS = ("record_type", "id", "payload_hash")


def journal_dir(con: duckdb.DuckDBPyConnection) -> Path | None:
    """The journal folder of the warehouse `con` writes to (None for an in-memory one)."""
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    path = row[0] if row else None
    if not path or path == ":memory:":
        return None
    db = Path(path).resolve()
    return db.parent / FOLDER / db.name


class Journal:
    """The append-only journal of one feed's push (see the module docstring)."""

    def __init__(self, folder: Path, feed: str) -> None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder.parent, 0o700)
        self.path = folder / f"{feed}.ndjson"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, feed: str, dry_run: bool, records: pl.DataFrame, request: dict[str, Any]) -> None:
        """Journal one acknowledged request, durably, before the caller sends the next."""
        line = orjson.dumps({
            "feed": feed, "dry_run": dry_run, "request": request,
            "records": {c: records[c].to_list() for c in _RECORD_COLUMNS},
        }) + b"\n"
        os.write(self._fd, line)
        os.fdatasync(self._fd)

    def clear(self) -> None:
        """Everything journalled is in DuckDB now: start empty."""
        os.ftruncate(self._fd, 0)
        os.fdatasync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def _entries(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        for line in f:
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                return  # a torn last line: that request was never journalled whole


def replay(con: duckdb.DuckDBPyConnection) -> int:
    """Write what a killed push journalled but had not yet written to DuckDB; returns the
    requests replayed. Idempotent: requests already in `ometria_push.requests` are skipped."""
    folder = journal_dir(con)
    if folder is None or not folder.is_dir():
        return 0
    replayed = 0
    for path in sorted(folder.glob("*.ndjson")):
        entries = list(_entries(path)) if path.stat().st_size else []
        if entries:
            ids = [e["request"]["request_id"] for e in entries]
            known = {r[0] for r in con.execute(
                "SELECT request_id FROM ometria_push.requests WHERE request_id IN (SELECT unnest(?))",
                [ids]).fetchall()}
            fresh = [e for e in entries if e["request"]["request_id"] not in known]
            for (feed, dry_run), group in _by_feed(fresh).items():
                write_acknowledged(con, feed, dry_run, group)
            replayed += len(fresh)
        path.unlink()
    return replayed


def _by_feed(entries: list[dict[str, Any]]) -> dict[tuple[str, bool], list[tuple[pl.DataFrame, dict[str, Any]]]]:
    out: dict[tuple[str, bool], list[tuple[pl.DataFrame, dict[str, Any]]]] = {}
    for e in entries:
        request = dict(e["request"])
        request["sent_at"] = datetime.fromisoformat(request["sent_at"])
        records = pl.DataFrame(e["records"], schema=dict.fromkeys(_RECORD_COLUMNS, pl.String))
        out.setdefault((e["feed"], bool(e["dry_run"])), []).append((records, request))
    return out


def settle(con: duckdb.DuckDBPyConnection) -> int:
    """Replay a killed push's journal, then fold every pending acknowledgement into the ledger,
    so what a push plans from (or errors are matched against) is complete."""
    replay(con)
    return merge_acknowledged(con)
