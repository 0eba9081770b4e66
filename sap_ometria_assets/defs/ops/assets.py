"""Sync exceptions (group `ops`) and reconciliation (group `recon`).

Both read what the other layers built (sap_raw, ometria, ometria_push) and write only their own
schemas (`ops`, `recon`). All logic lives in lib/sync_exceptions/, lib/recon/ and lib/quality/drift.py.
"""

from datetime import datetime, timezone

import dagster as dg
import polars as pl

from sap_ometria_assets.lib.quality.checks_config import get_checks_config, mapping_facts
from sap_ometria_assets.lib.quality.drift import create_trend_views
from sap_ometria_assets.lib.sync_exceptions.catalogue import RULES_BY_ID
from sap_ometria_assets.lib.sync_exceptions.register import evaluate_exceptions, open_exceptions
from sap_ometria_assets.lib.recon.build import create_recon_views
from sap_ometria_assets.lib.recon.snapshot import read_back_records, snapshot_available, write_snapshot
from sap_ometria_assets.lib.recon.summaries import markdown_table, reason_counts, summarise_status_view
from sap_ometria_assets.lib.ometria.feeds import OMETRIA_FEEDS
from sap_ometria_assets.lib.ometria.errors import OmetriaError
from sap_ometria_assets.defs.resources import OmetriaResource
from sap_ometria_assets.lib.config.secrets import scrub
from sap_ometria_assets.defs.resources import WarehouseResource

OMETRIA_KEYS = [dg.AssetKey(["ometria", f]) for f in OMETRIA_FEEDS]
PUSH_KEYS = [dg.AssetKey(["ometria_push", f]) for f in OMETRIA_FEEDS]
# Reads Ometria's asynchronous validation errors into ometria_push.errors (the push layer).
PUSH_ERRORS = dg.AssetKey(["ometria_push", "errors"])

SYNC_EXCEPTIONS = dg.AssetKey(["ops", "sync_exceptions"])
EXCEPTION_HISTORY = dg.AssetKey(["ops", "exception_history"])
SNAPSHOT = dg.AssetKey(["recon", "ometria_snapshot"])
RECON_VIEWS = dg.AssetKey(["recon", "views"])


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dg.multi_asset(
    name="ops_sync_exceptions",
    specs=[
        dg.AssetSpec(
            SYNC_EXCEPTIONS,
            deps=[*OMETRIA_KEYS, *PUSH_KEYS, PUSH_ERRORS],
            group_name="ops",
            kinds={"duckdb"},
            description=(
                "Every SAP record that will not reach Ometria correctly, one row per problem "
                "(`ops.sync_exceptions`): the rule it breaks, the SAP record (entity + "
                "record_key), who owns the fix (marketing, finance or ops), the money at stake "
                "(`impact`, local currency: the customer's net revenue, the order value...), "
                "what is wrong (`detail`) and how to fix it (`fix_hint`). A row stays open "
                "(`resolved_at` empty) while the problem exists; `first_seen` says since when. "
                "Open exceptions: `SELECT * FROM ops.sync_exceptions WHERE resolved_at IS NULL "
                "ORDER BY impact DESC`."
            ),
        ),
        dg.AssetSpec(
            EXCEPTION_HISTORY,
            deps=[SYNC_EXCEPTIONS],
            group_name="ops",
            kinds={"duckdb"},
            description=(
                "The exception register over time (`ops.exception_history`): per rule and "
                "evaluation, open, new and resolved exceptions and the open impact. "
                "`ops.exception_rate_daily` and `ops.exception_trend` show whether a problem is "
                "growing (rising = the rate went up over the last weeks)."
            ),
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "all_rules_evaluated", asset=SYNC_EXCEPTIONS,
            description="Every exception rule ran. A rule that failed (ERROR) or could not run "
            "because its tables do not exist yet (WARN) leaves its exceptions as they were.",
        )
    ],
    pool="duckdb",
)
def ops_sync_exceptions(warehouse: WarehouseResource):
    config = get_checks_config()
    facts = mapping_facts()
    now = _now()
    with warehouse.connect() as con:
        result = evaluate_exceptions(con, now, config, facts)
        create_trend_views(con, config.trend)
        top = open_exceptions(con).head(10)
        total_open = con.execute(
            "SELECT count(*) FROM ops.sync_exceptions WHERE resolved_at IS NULL").fetchall()[0][0]
        total_rows = con.execute("SELECT count(*) FROM ops.sync_exceptions").fetchall()[0][0]
        history_rows = con.execute("SELECT count(*) FROM ops.exception_history").fetchall()[0][0]
        by_owner = dict(con.execute(
            "SELECT owner, count(*) FROM ops.sync_exceptions WHERE resolved_at IS NULL GROUP BY 1"
        ).fetchall())

    counts = [
        {"rule": o.rule, "status": o.status, "open": o.open, "new": o.new,
         "resolved": o.resolved, "impact": round(o.impact, 2),
         "owner": RULES_BY_ID[o.rule].owner, "note": o.reason or ""}
        for o in result.outcomes.values()
    ]
    yield dg.MaterializeResult(
        asset_key=SYNC_EXCEPTIONS,
        metadata={
            "dagster/row_count": int(total_rows),
            "open_exceptions": int(total_open),
            "new_exceptions": sum(o.new for o in result.outcomes.values()),
            "resolved_exceptions": sum(o.resolved for o in result.outcomes.values()),
            "open_impact": round(sum(o.impact for o in result.outcomes.values()), 2),
            "open_by_owner": dg.MetadataValue.json({str(k): int(v) for k, v in by_owner.items()}),
            "rules": dg.MetadataValue.md(markdown_table(pl.DataFrame(counts))),
            "top_10_by_impact": dg.MetadataValue.md(markdown_table(
                top, ["rule", "entity", "record_key", "impact", "currency", "owner", "detail"])),
        },
    )
    failed = result.failed
    skipped = [o for o in result.outcomes.values() if o.status == "skipped"]
    yield dg.AssetCheckResult(
        asset_key=SYNC_EXCEPTIONS,
        check_name="all_rules_evaluated",
        passed=not failed and not skipped,
        severity=dg.AssetCheckSeverity.ERROR if failed else dg.AssetCheckSeverity.WARN,
        metadata={
            "failed": dg.MetadataValue.json({o.rule: o.reason for o in failed}),
            "skipped": dg.MetadataValue.json({o.rule: o.reason for o in skipped}),
        },
        description=(
            f"{len(failed)} rule(s) failed, {len(skipped)} skipped" if failed or skipped
            else f"All {len(result.outcomes)} rules evaluated."
        ),
    )
    yield dg.MaterializeResult(
        asset_key=EXCEPTION_HISTORY,
        metadata={"dagster/row_count": int(history_rows), "evaluated_at": now.isoformat()},
    )


@dg.asset(
    key=SNAPSHOT,
    deps=[*PUSH_KEYS, PUSH_ERRORS],
    group_name="recon",
    kinds={"ometria", "duckdb"},
    pool="duckdb",
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
)
def recon_views(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Reconciliation tables for finance (DuckDB schema `recon`, queryable with the duckdb CLI),
    rebuilt on each run so the checks and SQL users see one picture as of this moment:

    - `recon.customer_net_revenue`: per customer and currency, SAP orders minus credit memos vs
      what the ledger says was sent vs what Ometria holds;
    - `recon.orders_by_day`: order counts and values per day, SAP vs sent vs Ometria;
    - `recon.missing_in_ometria` / `recon.extra_in_ometria`: records on one side only, with why;
    - `recon.stale_records`: changes Ometria has not acknowledged for too long (drift).

    Rows have `status` agrees / explained (by open sync exceptions or changes still in flight) /
    differs. Example: `duckdb data/warehouse.duckdb -c "FROM recon.customer_net_revenue WHERE
    status = 'differs'"`."""
    config = get_checks_config()
    facts = mapping_facts()
    with warehouse.connect() as con:
        views = create_recon_views(con, facts, config)
        metadata: dict = {
            "views": dg.MetadataValue.json(views.created),
            "skipped_views": dg.MetadataValue.json(views.skipped),
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
