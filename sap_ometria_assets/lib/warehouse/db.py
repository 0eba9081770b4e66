"""The DuckDB warehouse: one file, one writer at a time, a schema per layer.

Schemas: `sap_raw` (landed SAP tables), `sap_history` (SCD2 change history), `sap_meta`
(watermarks, extract column lists), `ometria` (Ometria-ready records), `ometria_push` (ledger,
request audit, Ometria's reported errors), `ops` (exceptions, alerts), `recon` (reconciliation).

DuckDB lets one process hold the file for writing. Every step opens a connection, does its
work and closes it; `connect()` waits (bounded) when another process holds the lock instead of
failing the run, and says which file was locked when it finally gives up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from sap_ometria_assets.lib.config.settings import get_settings

SCHEMAS = ("sap_raw", "sap_history", "sap_meta", "ometria", "ometria_push", "ops", "recon")


class WarehouseLockedError(RuntimeError):
    """The DuckDB file stayed locked by another process for longer than we wait."""


def _lock_holder(exc: Exception) -> str:
    """DuckDB names the process holding the lock ("... held in /usr/bin/python3 (PID 123)")."""
    for line in str(exc).splitlines():
        if "PID" in line or "held" in line.lower():
            return f" DuckDB says: {line.strip()}"
    return ""


# A warehouse this creates is written in this DuckDB's newest storage format (a file keeps the
# format it was created with). DuckDB's default, v1.0-compatible format rewrites the metadata of
# the whole file on each checkpoint: at x100 (3 GB) every step that writes paid ~0.2 s at close
# for that, ~0.014 s in the newest format (and the file is 15% smaller).
STORAGE_VERSION = "latest"


def compacts_now(compact_hour_utc: int, now: datetime | None = None) -> bool:
    """Whether a step writing now lets DuckDB compact what it checkpoints.

    An hourly sync deletes and re-inserts about 1% of the large tables' rows (merges, rebuilt
    orders, refreshed recon tables). When it checkpoints, DuckDB rewrites every row group of a
    changed table that holds deleted rows (its vacuum): at x100, 1.5-4 s of each hour's 20 s went
    to recompressing 100,000-row groups of order payloads to drop 2% of their rows. Left in
    place, deleted rows cost only space and scan time, so they are compacted by the syncs of one
    hour a day (`SAP_OMETRIA_COMPACT_HOUR_UTC`), which rewrite each changed table's row groups
    once, whatever has accumulated since. -1: every step compacts (DuckDB's default).
    """
    if compact_hour_utc < 0:
        return True
    return (now or datetime.now(timezone.utc)).hour == compact_hour_utc


@contextmanager
def connect(path: str | Path, read_only: bool = False, wait_s: float | None = None,
            memory_limit: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse, waiting up to `wait_s` for another process to release its lock.

    `wait_s` and `memory_limit` default to SAP_OMETRIA_DUCKDB_LOCK_WAIT_S and
    SAP_OMETRIA_DUCKDB_MEMORY_LIMIT: DuckDB's own default takes 80% of RAM, so on a small
    machine a big merge would crowd out the rest of the run instead of spilling to disk. A new
    warehouse file is created in the newest storage format (`STORAGE_VERSION`).
    """
    settings = get_settings()
    wait_s = settings.sap_ometria_duckdb_lock_wait_s if wait_s is None else wait_s
    memory_limit = memory_limit or settings.sap_ometria_duckdb_memory_limit
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    config = {"storage_compatibility_version": STORAGE_VERSION}
    if memory_limit:
        config["memory_limit"] = memory_limit
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config=config)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                if "lock" in str(exc).lower():
                    raise WarehouseLockedError(
                        f"DuckDB file {path} is locked by another process (waited {wait_s:.0f}s). "
                        "Is a second sync or a duckdb CLI session holding it open?"
                        + _lock_holder(exc)
                    ) from exc
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    try:
        if not read_only:
            for schema in SCHEMAS:
                con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            if not compacts_now(settings.sap_ometria_compact_hour_utc):
                con.execute("SET max_vacuum_tasks = 0")
        yield con
    finally:
        con.close()


class WarehouseUnusableError(RuntimeError):
    """The warehouse file (or its folder) cannot be used: the message names it and what to do."""


# A DuckDB file is 3 header blocks of 4 KiB, then `total_blocks` blocks of `block_size`.
_DUCKDB_HEADER_BYTES = 3 * 4096


def check_usable(path: str | Path) -> None:
    """Refuse, before any step writes, a warehouse that cannot work: a folder that is not one or
    is not writable, a file that is not DuckDB, corrupt, or shorter than its own header says
    (truncated by a full disk or a bad copy: DuckDB opens some of those and fails steps later).
    Cheap: an open, one catalogue query and a size comparison. A file locked by a running sync
    is not checked here (that run has it open, so it opened)."""
    path = Path(path)
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise WarehouseUnusableError(
            f"warehouse folder {folder} is a file, not a directory: move it away or set "
            "SAP_OMETRIA_DUCKDB_PATH to a file in a writable directory")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise WarehouseUnusableError(
            f"warehouse folder {folder} is not writable (checked {probe}): fix its permissions "
            "or set SAP_OMETRIA_DUCKDB_PATH to a file in a writable directory")
    if not path.exists():
        return
    if not path.is_file():
        raise WarehouseUnusableError(f"warehouse {path} is not a file: move it away")
    if not os.access(path, os.R_OK | os.W_OK):
        raise WarehouseUnusableError(f"warehouse {path} is not readable and writable: fix its "
                                     "permissions")
    what_to_do = (f"restore {path} from a backup, or move it away so the next sync rebuilds "
                  "the warehouse from SAP (a full re-read; Ometria's push ledger restarts)")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        text = str(exc)
        if "lock" in text.lower():
            return
        if "newer version of duckdb" in text.lower():
            # A warehouse written by a later DuckDB (this release went back to 1.5.x for DuckLake)
            # is not damaged: it needs that DuckDB, or a rebuild from SAP.
            raise WarehouseUnusableError(
                f"warehouse {path} was written by a newer DuckDB than this one "
                f"({duckdb.__version__}); the demo's is disposable (`make clean-demo`); otherwise "
                f"move it away so the next sync rebuilds it from SAP (a full re-read; Ometria's "
                f"push ledger restarts)") from None
        raise WarehouseUnusableError(
            f"warehouse {path} is not a usable DuckDB file ({text.splitlines()[0][:200]}): "
            f"{what_to_do}") from None
    try:
        con.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
        blocks, block_size = con.execute(
            "SELECT total_blocks, block_size FROM pragma_database_size()").fetchall()[0]
    except duckdb.Error as exc:
        raise WarehouseUnusableError(
            f"warehouse {path} is corrupt ({str(exc).splitlines()[0][:200]}): {what_to_do}") from None
    finally:
        con.close()
    expected = _DUCKDB_HEADER_BYTES + int(blocks) * int(block_size)
    size = path.stat().st_size
    if size < expected:
        raise WarehouseUnusableError(
            f"warehouse {path} is truncated ({size} bytes, its header says {expected}): "
            f"{what_to_do}")


def read_table(con: duckdb.DuckDBPyConnection, schema: str, table: str,
               where: str | None = None, params: list | None = None) -> pl.DataFrame:
    """A whole table (or a filtered part) as a polars frame; any duckdb version."""
    sql = f'SELECT * FROM "{schema}"."{table}"'
    if where:
        sql += f" WHERE {where}"
    return con.sql(sql, params=params or []).pl()


def append_rows(con: duckdb.DuckDBPyConnection, schema: str, table: str, df: pl.DataFrame) -> None:
    """Append a frame to an existing table, columns matched by name."""
    con.register("_frame_to_append", df)
    try:
        con.execute(f'INSERT INTO "{schema}"."{table}" BY NAME SELECT * FROM _frame_to_append')
    finally:
        con.unregister("_frame_to_append")


def write_table(con: duckdb.DuckDBPyConnection, schema: str, table: str, df: pl.DataFrame) -> None:
    """Replace a table with a frame (empty frames still create a typed, empty table)."""
    con.register("_frame_to_write", df)
    try:
        con.execute(f'CREATE OR REPLACE TABLE "{schema}"."{table}" AS SELECT * FROM _frame_to_write')
    finally:
        con.unregister("_frame_to_write")
