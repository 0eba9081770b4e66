"""`sap-ometria sql` and `sap-ometria snapshots`: read-only queries on the published snapshots.

Both read the lake beside the warehouse (lib/snapshots/), never the working warehouse, so they
never wait for a sync and never make one wait. A missing lake, an unknown snapshot or a query
error is one line on stderr and exit code 1 (never a traceback).
"""

from __future__ import annotations

import sys
from datetime import UTC
from pathlib import Path
from typing import TextIO

import duckdb
from rich.console import Console
from rich.table import Table

from sap_ometria_assets.lib.snapshots.catalog import list_snapshots, resolve_as_of
from sap_ometria_assets.lib.snapshots.lake import Lake, LakeError, open_reader

TSV_ESCAPES = str.maketrans({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"})


def tsv_value(value: object) -> str:
    return "" if value is None else str(value).translate(TSV_ESCAPES)


def _fail(message: str) -> int:
    print(f"ERROR: {message}", file=sys.stderr)
    return 1


def run_sql(warehouse_path: Path, sql: str, as_of: str | None, tsv: bool,
            console: Console | None = None, out: TextIO | None = None) -> int:
    """Run one read-only query on a snapshot (latest by default); print it; exit code."""
    lake = Lake.for_warehouse(warehouse_path)
    out = out or sys.stdout
    try:
        snapshot = resolve_as_of(lake, as_of)
        with open_reader(lake, snapshot_version=snapshot.snapshot_id) as con:
            try:
                cursor = con.execute(sql)
                columns = [d[0] for d in cursor.description or []]
                rows = cursor.fetchall() if columns else []
            except duckdb.Error as exc:
                return _fail(f"query failed on snapshot {snapshot.snapshot_id}: "
                             + " ".join(str(exc).split())[:500])
    except LakeError as exc:
        return _fail(str(exc))
    if tsv:
        print("\t".join(tsv_value(c) for c in columns), file=out)
        for row in rows:
            print("\t".join(tsv_value(v) for v in row), file=out)
        return 0
    console = console or Console(markup=False, highlight=False)
    console.print(f"snapshot {snapshot.snapshot_id} ({snapshot.time_text}): {len(rows):,} rows")
    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    console.print(table)
    return 0


def run_list(warehouse_path: Path, tsv: bool, console: Console | None = None,
             out: TextIO | None = None) -> int:
    """List the snapshots, newest first; exit code."""
    lake = Lake.for_warehouse(warehouse_path)
    out = out or sys.stdout
    try:
        snapshots = list_snapshots(lake)
    except LakeError as exc:
        return _fail(str(exc))
    if tsv:
        for s in snapshots:
            print("\t".join([str(s.snapshot_id), s.time.astimezone(UTC).isoformat(), s.run_id or "",
                             ",".join(s.tables)]), file=out)
        return 0
    console = console or Console(markup=False, highlight=False)
    console.print(f"Published snapshots of {lake.root}, newest first "
                  "(query one with `sap-ometria sql --as-of ID`):")
    table = Table()
    for column in ("id", "time (UTC)", "run id", "what changed"):
        table.add_column(column)
    for s in snapshots:
        changed = ", ".join(s.tables) if len(s.tables) <= 6 else (
            ", ".join(s.tables[:6]) + f" and {len(s.tables) - 6} more")
        table.add_row(str(s.snapshot_id), s.time_text, s.run_id or "", changed)
    console.print(table)
    if not snapshots:
        console.print("No snapshot yet: a successful sync publishes the first one.")
    return 0
