"""Checks on reconciliation: ERROR when SAP, what we sent and what Ometria holds disagree and no
open sync exception or in-flight change explains it (explained differences pass and are listed in
the metadata), and when the read-back of Ometria was unavailable.
"""

import dagster as dg

from sap_ometria_assets.defs.recon.assets import RECON_VIEWS, SNAPSHOT
from sap_ometria_assets.defs.resources import WarehouseResource
from sap_ometria_assets.lib.quality.checks_config import get_checks_config
from sap_ometria_assets.lib.recon.snapshot import latest_snapshot_run, snapshot_available
from sap_ometria_assets.lib.recon.summaries import markdown_table, reason_counts, summarise_status_view
from sap_ometria_assets.lib.warehouse.sql import table_exists


def _view_exists(con, view: str) -> bool:
    return table_exists(con, "recon", view)


def _not_built(view: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False, severity=dg.AssetCheckSeverity.WARN,
        description=f"recon.{view} does not exist yet (its inputs were not built): nothing compared.",
    )


def status_view_result(con, view: str, totals: tuple[str, ...], order_by: str,
                       columns: list[str]) -> dg.AssetCheckResult:
    if not _view_exists(con, view):
        return _not_built(view)
    s = summarise_status_view(con, view, totals, order_by)
    metadata = {
        "rows_by_status": dg.MetadataValue.json(s.counts),
        "differs": s.differs,
        "explained": s.explained,
        "largest_differences": dg.MetadataValue.md(markdown_table(s.worst, columns)),
    }
    for name, value in s.totals.items():
        metadata[f"total_{name}"] = None if value is None else float(value)
    return dg.AssetCheckResult(
        passed=s.differs == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={k: v for k, v in metadata.items() if v is not None},
        description=(
            f"{s.differs} row(s) of recon.{view} differ with no open exception to explain them "
            f"({s.explained} explained by listed exceptions): investigate."
            if s.differs else
            f"recon.{view}: SAP, sent and Ometria agree to the penny"
            + (f", except {s.explained} row(s) explained by listed exceptions." if s.explained else ".")
        ),
    )


@dg.asset_check(asset=RECON_VIEWS, name="customer_net_revenue_agrees", pool="duckdb",
                description="ERROR when a customer's net revenue (orders minus credit memos) in "
                "SAP differs from what was sent or what Ometria holds, unexplained.")
def customer_net_revenue_agrees(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return status_view_result(
            con, "customer_net_revenue", ("sap_net", "sent_net", "ometria_net"),
            "abs(coalesce(sent_difference, 0)) + abs(coalesce(ometria_difference, 0)) DESC",
            ["card_code", "currency", "sap_net", "sent_net", "ometria_net", "status", "explanation"],
        )


@dg.asset_check(asset=RECON_VIEWS, name="orders_by_day_agrees", pool="duckdb",
                description="ERROR when order counts or values per day differ between SAP, what "
                "was sent and what Ometria holds, unexplained.")
def orders_by_day_agrees(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return status_view_result(
            con, "orders_by_day", ("sap_value", "sent_value", "ometria_value"),
            "abs(coalesce(sent_difference, 0)) + abs(coalesce(ometria_difference, 0)) DESC",
            ["day", "currency", "sap_orders", "sap_value", "sent_orders", "sent_value",
             "ometria_orders", "ometria_value", "status", "explanation"],
        )


UNEXPLAINED_MISSING = ("acknowledged but not in Ometria", "no Ometria-ready record")
PENDING_MISSING = ("not sent yet", "not confirmed yet")


def _read_back_note(con) -> str:
    if snapshot_available(con):
        return ""
    latest = latest_snapshot_run(con) or {}
    why = "dry run" if latest.get("outcome") == "dry_run" else "read-back unavailable"
    return (f" Ometria was not read back ({why}), so only SAP records without an Ometria record "
            "are compared.")


def read_back_result(con) -> dg.AssetCheckResult:
    latest = latest_snapshot_run(con)
    if latest is None or latest["outcome"] == "read":
        return dg.AssetCheckResult(passed=True, description="Ometria was read back whole.")
    if latest["outcome"] == "dry_run":
        return dg.AssetCheckResult(
            passed=True, description="Dry run: nothing was sent, so nothing was read back.")
    return dg.AssetCheckResult(
        passed=False, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"outcome": latest["outcome"], "note": latest["note"] or "",
                  "fetched_at": str(latest["fetched_at"])},
        description=(
            "Reconciliation with Ometria is unavailable: " + (latest["note"] or "read-back failed")
            + ". The run's pushes and exceptions stand; recon compares SAP with the ledger only "
            "until a read-back succeeds."),
    )


@dg.asset_check(asset=SNAPSHOT, name="ometria_read_back_available", pool="duckdb",
                description="ERROR (an alert) when reading Ometria back failed (outage, a 404 or "
                "403 on a listing, an API ignoring offset): reconciliation with Ometria is then "
                "unavailable. Passes in dry run (nothing sent, nothing to read).")
def ometria_read_back_available(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return read_back_result(con)


def missing_result(con) -> dg.AssetCheckResult:
    if not _view_exists(con, "missing_in_ometria"):
        return _not_built("missing_in_ometria")
    reasons = reason_counts(con, "missing_in_ometria")
    unexplained = sum(reasons.get(r, 0) for r in UNEXPLAINED_MISSING)
    pending = sum(reasons.get(r, 0) for r in PENDING_MISSING)
    sample = con.sql(
        "SELECT feed, id, sap_object, sap_key, reason, detail FROM recon.missing_in_ometria "
        "ORDER BY list_position(?, reason) NULLS LAST, feed, sap_key LIMIT 10",
        params=[list(UNEXPLAINED_MISSING + PENDING_MISSING)],
    ).pl()
    return dg.AssetCheckResult(
        passed=unexplained == 0 and pending == 0,
        severity=dg.AssetCheckSeverity.ERROR if unexplained else dg.AssetCheckSeverity.WARN,
        metadata={"by_reason": dg.MetadataValue.json(reasons),
                  "examples": dg.MetadataValue.md(markdown_table(sample))},
        description=(
            f"{unexplained} SAP record(s) missing in Ometria for no listed reason; "
            f"{pending} not sent yet; the rest are held back or rejected (see ops.sync_exceptions)."
            + _read_back_note(con)
        ),
    )


@dg.asset_check(asset=RECON_VIEWS, name="nothing_missing_in_ometria", pool="duckdb",
                description="ERROR when a SAP record is missing in Ometria although it was "
                "acknowledged, or never became an Ometria record; WARN when not sent yet. Held "
                "back and rejected records are listed exceptions.")
def nothing_missing_in_ometria(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return missing_result(con)


def extra_result(con) -> dg.AssetCheckResult:
    if not _view_exists(con, "extra_in_ometria"):
        return _not_built("extra_in_ometria")
    reasons = reason_counts(con, "extra_in_ometria")
    sample = con.sql("SELECT record_type, id, reason FROM recon.extra_in_ometria "
                     "ORDER BY reason, record_type, id LIMIT 10").pl()
    not_from_sap = reasons.get("not from SAP", 0)
    total = sum(reasons.values())
    return dg.AssetCheckResult(
        passed=total == 0,
        severity=dg.AssetCheckSeverity.ERROR if not_from_sap else dg.AssetCheckSeverity.WARN,
        metadata={"by_reason": dg.MetadataValue.json(reasons),
                  "examples": dg.MetadataValue.md(markdown_table(sample))},
        description=(f"Ometria holds {total} record(s) no current SAP record produces "
                     f"({not_from_sap} not from SAP)." if total else
                     "Ometria holds nothing that SAP does not." + _read_back_note(con)),
    )


@dg.asset_check(asset=RECON_VIEWS, name="nothing_extra_in_ometria", pool="duckdb",
                description="ERROR when Ometria holds records SAP never produced; WARN for "
                "records deleted in SAP that Ometria still holds.")
def nothing_extra_in_ometria(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return extra_result(con)


def stale_result(con, error_count: int | None) -> dg.AssetCheckResult:
    if not _view_exists(con, "stale_records"):
        return _not_built("stale_records")
    by_feed = dict(con.execute(
        "SELECT feed, count(*) FROM recon.stale_records GROUP BY 1").fetchall())
    total = sum(by_feed.values())
    oldest = con.sql("SELECT feed, id, sap_key, changed_at, hours_waiting FROM recon.stale_records "
                     "ORDER BY hours_waiting DESC LIMIT 10").pl()
    error = error_count is not None and total >= error_count
    return dg.AssetCheckResult(
        passed=total == 0,
        severity=dg.AssetCheckSeverity.ERROR if error else dg.AssetCheckSeverity.WARN,
        metadata={"stale_by_feed": dg.MetadataValue.json({str(k): int(v) for k, v in by_feed.items()}),
                  "oldest": dg.MetadataValue.md(markdown_table(oldest))},
        description=(f"{total} changed record(s) not acknowledged by Ometria for too long (drift)."
                     if total else "Every change older than the stale limit is acknowledged."),
    )


@dg.asset_check(asset=RECON_VIEWS, name="no_stale_records", pool="duckdb",
                description="WARN when SAP changes have waited longer than recon.stale_after_hours "
                "for Ometria's acknowledgement (ERROR from recon.stale_error_count records).")
def no_stale_records(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    config = get_checks_config()
    with warehouse.connect(read_only=True) as con:
        return stale_result(con, config.recon.stale_error_count)
