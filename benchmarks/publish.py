"""The publish stage of `make bench`: the working warehouse into its DuckLake (lib/snapshots).

Run by `benchmarks/run.py` after the full run's checks (the first publish: everything is new)
and after the incremental hour's checks (what the 1% edits and that hour's business changed),
each in its own worker process like every stage. Every table is a candidate (as in a
full_sync_job run, which materialises every asset): the fingerprints decide what is compared
with the lake row by row.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def _lake_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _views(warehouse: Path) -> int:
    import duckdb

    from sap_ometria_assets.lib.snapshots.publish import PUBLISHED_SCHEMAS

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal AND schema_name IN "
                           f"{tuple(PUBLISHED_SCHEMAS)}").fetchall()[0][0]
    finally:
        con.close()


def stage_publish(args: argparse.Namespace) -> dict[str, Any]:
    from sap_ometria_assets.lib.snapshots.lake import Lake
    from sap_ometria_assets.lib.snapshots.publish import publish
    from sap_ometria_assets.lib.warehouse.db import connect

    warehouse = Path(args.workdir) / "warehouse.duckdb"
    lake = Lake.for_warehouse(warehouse)
    started = time.perf_counter()
    with connect(warehouse) as con:
        result = publish(con, lake, f"bench-{int(time.time())}", retention_days=30)
    wall = time.perf_counter() - started
    return {
        "phase": "publish", "success": True, "wall_s": round(wall, 3),
        "publish_s": round(result.seconds, 3), "snapshot_id": result.snapshot_id,
        "tables_compared": result.tables_compared, "views": _views(warehouse), "tables_diffed": result.tables_diffed,
        "tables_changed": len(result.tables_changed), "tables_created": len(result.tables_created),
        "rows_deleted": result.rows_deleted, "rows_inserted": result.rows_inserted,
        "lake_mb": round(_lake_bytes(lake.root) / 2**20, 1),
        "warehouse_mb": round(warehouse.stat().st_size / 2**20, 1),
    }


def report_rows(scale: dict[str, Any]) -> list[list[Any]]:
    """Rows of the publish table of one scale (empty when the stage did not run)."""
    rows = []
    for label, res in (("full (first publish)", scale.get("stages", {}).get("publish")),
                       ("after the incremental hour", scale.get("incremental", {}).get("publish"))):
        if not res:
            continue
        rows.append([label, f"{res['publish_s']:.1f}", f"{res['tables_changed'] + res['tables_created']}"
                     f" of {res['tables_compared'] + res.get('views', 0)}", f"{res['rows_deleted']:,}", f"{res['rows_inserted']:,}",
                     f"{res['lake_mb']:.0f}", f"{res['peak_rss_mb']:.0f}"])
    return rows


REPORT_HEAD = ["publish", "wall s", "tables and views changed", "rows deleted", "rows inserted", "lake MiB",
               "peak RSS MiB"]
