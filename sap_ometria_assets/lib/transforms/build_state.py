"""What an incremental build of an ometria table remembers, and whether it can build on it.

A build records (in a one-row state table `ometria._<name>_build_state`) the newest `_landed_at`
it read over its sources, a fingerprint of the settings it used (the mapping, the time zone,
the transform's version and anything else its output depends on), when it ran, when the last
full build ran and the run's start. The next build rebuilds only what was landed after that
high-water mark, unless the state cannot serve as a base: no state, a changed fingerprint, a
missing output or source table, a source without `_landed_at`, or a last full build older than
the periodic full pass (`SAP_OMETRIA_FULL_PASS_HOURS`), which proves incremental == full.
Dropping the state table forces a full rebuild.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import duckdb
import polars as pl

from sap_ometria_assets.lib.ometria.mapping import Mapping
from sap_ometria_assets.lib.warehouse.db import append_rows
from sap_ometria_assets.lib.warehouse.sql import has_column, lit, table_exists

STATE_COLUMNS = ("built_at TIMESTAMPTZ, landed_high_water TIMESTAMPTZ, fingerprint VARCHAR, "
                 "mode VARCHAR, full_built_at TIMESTAMPTZ, run_started_at TIMESTAMPTZ")


def state_table(name: str) -> str:
    return f"_{name}_build_state"


def fingerprint(version: str, zone: str, mapping: Mapping, *extra: str) -> str:
    text = "|".join((version, zone, mapping.model_dump_json(), *extra))
    return hashlib.sha256(text.encode()).hexdigest()


def landed_high_water(con: duckdb.DuckDBPyConnection, tables: Iterable[str]) -> datetime | None:
    """The newest `_landed_at` over the given sap_raw tables (None when none has one)."""
    parts = [f'SELECT max("_landed_at") AS m FROM sap_raw."{t}"' for t in tables
             if table_exists(con, "sap_raw", t) and has_column(con, "sap_raw", t, "_landed_at")]
    if not parts:
        return None
    return con.execute(f"SELECT max(m) FROM ({' UNION ALL '.join(parts)})").fetchall()[0][0]


@dataclass
class BuildState:
    """The previous build, as its state table holds it."""

    built_at: datetime | None
    landed_high_water: datetime | None
    fingerprint: str | None
    mode: str | None
    full_built_at: datetime | None
    run_started_at: datetime | None


def read_state(con: duckdb.DuckDBPyConnection, name: str) -> BuildState | None:
    """The previous build's state (None when there is none, or more than one row)."""
    if not table_exists(con, "ometria", state_table(name)):
        return None
    rows = con.sql(f"SELECT * FROM ometria.{state_table(name)}").fetchall()
    if len(rows) != 1:
        return None
    columns = [c[0] for c in con.sql(f"SELECT * FROM ometria.{state_table(name)} LIMIT 0").description]
    values = dict(zip(columns, rows[0], strict=True))
    return BuildState(*(values.get(f) for f in BuildState.__dataclass_fields__))


def record_build(con: duckdb.DuckDBPyConnection, name: str, *, high_water: datetime | None,
                 fingerprint: str, mode: str, now: datetime,
                 run_started_at: datetime | None = None) -> None:
    """Store this build as the base of the next (a full build also resets the full-pass clock)."""
    previous = read_state(con, name)
    full_at = now if mode == "full" else (previous.full_built_at if previous else None)
    table = f"ometria.{state_table(name)}"
    con.execute(f"CREATE OR REPLACE TABLE {table} ({STATE_COLUMNS})")
    con.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)",
                [now, high_water, fingerprint, mode, full_at, run_started_at])
    con.execute(f"COMMENT ON TABLE {table} IS " + lit(
        f"Last build of ometria.{name}: the newest sap_raw _landed_at it read, the settings "
        "fingerprint and when the last full build ran; the next build rebuilds only what was "
        "landed after it. Drop it to force a full rebuild."))


def forget_build(con: duckdb.DuckDBPyConnection, name: str) -> None:
    con.execute(f"DROP TABLE IF EXISTS ometria.{state_table(name)}")


@dataclass
class Base:
    """Why the build must be full, or the previous build it can add to."""

    full_reason: str | None
    state: BuildState | None = None

    @property
    def since(self) -> datetime | None:
        return self.state.landed_high_water if self.state else None


def plan_base(con: duckdb.DuckDBPyConnection, name: str, fingerprint: str, *,
              outputs: Iterable[str], required: Iterable[str], sources: Iterable[str],
              optional: Iterable[str] = (), full_pass_hours: float | None = None,
              now: datetime | None = None) -> Base:
    """Full (with the reason) or incremental on the previous build.

    `outputs`: the ometria tables the build writes; `required`: the sap_raw tables it cannot do
    without; `sources`: every sap_raw table it reads, which must all be landed with `_landed_at`;
    `optional`: sources that may be absent (read as empty) but must carry `_landed_at` when present.
    `full_pass_hours` (> 0): a full build when the last one is older than that.
    """
    if not table_exists(con, "ometria", state_table(name)):
        return Base("no previous build")
    for table in outputs:
        if not table_exists(con, "ometria", table):
            return Base(f"ometria.{table} does not exist")
    state = read_state(con, name)
    if state is None or state.landed_high_water is None:
        return Base("no previous high-water mark")
    if state.fingerprint != fingerprint:
        return Base("mapping, time zone or transform version changed")
    if full_pass_hours and full_pass_hours > 0 and now is not None:
        age = None if state.full_built_at is None else (now - state.full_built_at).total_seconds() / 3600
        if age is None or age >= full_pass_hours:
            return Base(f"periodic full pass (every {full_pass_hours:g} h)")
    for table in required:
        if not table_exists(con, "sap_raw", table):
            return Base(f"sap_raw.{table} does not exist")
    sources = list(sources)
    present = {t for t in sources if table_exists(con, "sap_raw", t)}
    if present != set(sources):
        return Base(f"sap_raw lacks {sorted(set(sources) - present)}")
    for table in sorted(present | {t for t in optional if table_exists(con, "sap_raw", t)}):
        if not has_column(con, "sap_raw", table, "_landed_at"):
            return Base(f"sap_raw.{table} has no _landed_at")
    return Base(None, state)


def replace_keyed_rows(con: duckdb.DuckDBPyConnection, table: str, key_set: str, frame: pl.DataFrame,
                       key_column: str = "sap_key") -> None:
    """Replace the rows of `ometria.<table>` whose `key_column` is in the temp table `key_set`
    (column `key`; a NULL key stands for rows without one) by `frame`; every other row is left
    untouched. Run it inside `transaction(con)`, so readers never see half a build."""
    con.execute(f'DELETE FROM ometria."{table}" WHERE "{key_column}" IN (SELECT key FROM {key_set}) '
                f'OR ("{key_column}" IS NULL AND EXISTS (SELECT 1 FROM {key_set} WHERE key IS NULL))')
    if frame.height:
        append_rows(con, "ometria", table, frame)


def rebuilt_hashes(con: duckdb.DuckDBPyConnection, table: str, key_set: str,
                   key_column: str = "sap_key") -> pl.DataFrame:
    """id/payload_hash of the rows `replace_keyed_rows` is about to replace (new/changed counts)."""
    return con.sql(f'SELECT id, payload_hash FROM ometria."{table}" WHERE "{key_column}" IN '
                   f'(SELECT key FROM {key_set}) OR ("{key_column}" IS NULL AND EXISTS '
                   f'(SELECT 1 FROM {key_set} WHERE key IS NULL))').pl()
