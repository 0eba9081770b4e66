"""Reconciliation (group `recon`): what Ometria holds, read back, and the tables that compare it
with SAP and with what was sent.

They read what the other layers built (sap_raw, ometria, ometria_push, ops) and write only the
`recon` schema. All logic lives in lib/recon/.
"""

from datetime import datetime, timezone

import dagster as dg

from sap_ometria_assets.defs.ops.assets import PUSH_ERRORS, PUSH_KEYS, SYNC_EXCEPTIONS
from sap_ometria_assets.defs.ometria.metadata import described_table
from sap_ometria_assets.defs.resources import OmetriaResource, WarehouseResource
from sap_ometria_assets.lib.config.secrets import scrub
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.ometria.errors import OmetriaError
from sap_ometria_assets.lib.quality.checks_config import get_checks_config, mapping_facts
from sap_ometria_assets.lib.recon.build import create_recon_views
from sap_ometria_assets.lib.recon.columns import CUSTOMER_NET_REVENUE
from sap_ometria_assets.lib.recon.snapshot import (
    SNAPSHOT_DDL,
    read_back_records,
    snapshot_available,
    write_snapshot,
)
from sap_ometria_assets.lib.warehouse.sql import ddl_columns
from sap_ometria_assets.lib.recon.summaries import reason_counts, summarise_status_view

SNAPSHOT = dg.AssetKey(["recon", "ometria_snapshot"])
RECON_VIEWS = dg.AssetKey(["recon", "views"])


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dg.asset(
    key=SNAPSHOT,
    deps=[*PUSH_KEYS, PUSH_ERRORS],
    group_name="recon",
    kinds={"ometria", "duckdb"},
    pool="duckdb",
    metadata=described_table("recon.ometria_snapshot", ddl_columns(SNAPSHOT_DDL)["recon.ometria_snapshot"]),
)
def ometria_snapshot(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                     ometria: OmetriaResource) -> dg.MaterializeResult:
    """What Ometria actually holds, read back from its API (`recon.ometria_snapshot`): every
    contact of our collection, every order and every product, one row each with the JSON
    Ometria returned. Reconciliation compares it with SAP and with what we sent. In dry run
    nothing was sent and nothing is read; the previous snapshot is kept and marked unavailable.

    A read-back that fails (Ometria down, a 404 or 403 on a listing, an API that ignores
    `offset`) does not fail the run: the pushes and exceptions of the run stand, the previous
    snapshot is kept but no longer compared, `recon.snapshot_runs` says `unavailable` with the
    reason, and the `ometria_read_back_available` check (ERROR) raises the alert."""
    now = _now()
    with ometria.open_client() as client:
        if client is None:
            with warehouse.connect() as con:
                write_snapshot(con, [], now, available=False, outcome="dry_run",
                               note="dry run: Ometria was not contacted")
            return dg.MaterializeResult(metadata={
                "dagster/row_count": 0, "available": False, "outcome": "dry_run",
                "note": "Dry run: Ometria was not read, reconciliation compares SAP with the ledger only.",
            })
        collection = ometria.target().collection
        try:
            records = list(read_back_records(client, collection))
        except OmetriaError as exc:
            note = scrub(f"read-back failed, reconciliation with Ometria unavailable: {exc}")
            context.log.error(f"{note} The pushes of this run stand; recon compares SAP with the "
                              "ledger only until a read-back succeeds.")
            with warehouse.connect() as con:
                write_snapshot(con, [], now, available=False, outcome="unavailable", note=note)
            return dg.MaterializeResult(metadata={
                "dagster/row_count": 0, "available": False, "outcome": "unavailable", "note": note,
            })
    with warehouse.connect() as con:
        counts = write_snapshot(con, records, now)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(records),
        "available": True,
        "outcome": "read",
        "contacts": counts["contact"],
        "orders": counts["order"],
        "products": counts["product"],
    })


@dg.asset(
    key=RECON_VIEWS,
    deps=[SNAPSHOT, SYNC_EXCEPTIONS],
    group_name="recon",
    kinds={"duckdb", "sql"},
    pool="duckdb",
    metadata=described_table("recon.customer_net_revenue", CUSTOMER_NET_REVENUE),
)
def recon_views(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Reconciliation tables for finance (DuckDB schema `recon`, queryable with the duckdb CLI),
    rebuilt on each run so the checks and SQL users see one picture as of this moment:

    - `recon.customer_net_revenue`: per customer and currency, SAP orders minus credit memos vs
      what the ledger says was sent vs what Ometria holds;
    - `recon.orders_by_day`: order counts and values per day, SAP vs sent vs Ometria;
    - `recon.missing_in_ometria` / `recon.extra_in_ometria`: records on one side only, with why;
    - `recon.stale_records`: changes Ometria has not acknowledged for too long (drift).

    The two largest (`recon.sent_orders`, `recon.ometria_records`, a row per order or record)
    are refreshed by their differences after their first build, and rebuilt from scratch by the
    periodic full pass (`SAP_OMETRIA_FULL_PASS_HOURS`, default 24).

    Rows have `status` agrees / explained (by open sync exceptions or changes still in flight) /
    differs. Example: `duckdb data/warehouse.duckdb -c "FROM recon.customer_net_revenue WHERE
    status = 'differs'"`."""
    config = get_checks_config()
    facts = mapping_facts()
    with warehouse.connect() as con:
        views = create_recon_views(con, facts, config, _now(),
                                   get_settings().sap_ometria_full_pass_hours)
        metadata: dict = {
            "views": dg.MetadataValue.json(views.created),
            "skipped_views": dg.MetadataValue.json(views.skipped),
            # the large tables are refreshed by their differences; a full pass rebuilds them
            "large_tables_refreshed": dg.MetadataValue.json({
                name: {"mode": r.mode, "rows_deleted": r.deleted, "rows_inserted": r.inserted,
                       **({"full_build_reason": r.reason} if r.reason else {})}
                for name, r in views.refreshes.items()}),
            "ometria_read_back": snapshot_available(con),
        }
        if "customer_net_revenue" in views.created:
            s = summarise_status_view(con, "customer_net_revenue",
                                      ("sap_net_local", "sent_net", "ometria_net"),
                                      "abs(sent_difference) DESC")
            metadata["customers_by_status"] = dg.MetadataValue.json(s.counts)
            metadata["dagster/row_count"] = sum(s.counts.values())
        if "missing_in_ometria" in views.created:
            metadata["missing_in_ometria"] = dg.MetadataValue.json(reason_counts(con, "missing_in_ometria"))
        if "extra_in_ometria" in views.created:
            metadata["extra_in_ometria"] = dg.MetadataValue.json(reason_counts(con, "extra_in_ometria"))
        if "stale_records" in views.created:
            metadata["stale_records"] = int(
                con.execute("SELECT count(*) FROM recon.stale_records").fetchall()[0][0])
    return dg.MaterializeResult(metadata=metadata)
