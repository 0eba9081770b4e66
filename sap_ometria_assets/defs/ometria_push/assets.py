"""Layer 3: pushes of the Ometria-ready tables to Ometria (group `ometria_push`).

Each push sends only records that are new or changed since Ometria last acknowledged them, in
requests of at most 100 records of one type, at the configured rate, and records every request
in `ometria_push.requests`. Contacts and products go before orders (an order refers to both);
stock flags only need their product and run on their own, faster schedule.
"""

import dagster as dg
from pydantic import Field

from sap_ometria_assets.defs.ometria.metadata import described_table
from sap_ometria_assets.defs.resources import OmetriaResource, OmetriaTarget, WarehouseResource
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.push.errors import error_counts, errors_fetch_due, sync_errors
from sap_ometria_assets.lib.push.ledger import (
    DDL,
    ensure_push_tables,
    ledger_rows,
    rejected_by_feed,
    status_counts,
)
from sap_ometria_assets.lib.push.results import PushAbortedError, PushResult
from sap_ometria_assets.lib.push.send import push_feed
from sap_ometria_assets.lib.warehouse.sql import ddl_columns

GROUP = "ometria_push"
# The table each push asset keeps: its rows of the ledger (its feed); the errors asset's table.
_LEDGER, _ERRORS = "ometria_push.ledger", "ometria_push.errors"


class PushConfig(dg.Config):
    retry_rejected: bool = Field(
        default=False,
        description="Send again records Ometria rejected even if unchanged (after fixing the "
                    "cause in Ometria, e.g. creating a missing custom field).",
    )


def _metadata(result: PushResult, target: OmetriaTarget, ledger_rows: int | None) -> dict:
    md: dict = {
        "target": target.describe(),
        "dry_run": result.dry_run,
        "records_sent": result.records_sent,
        "skipped_unchanged": result.skipped_unchanged,
        "held_back": result.held_back,
        "invalid_not_sent": result.invalid,
        "waiting_for_product": result.waiting_for_parent,
        "rejected": result.records_rejected,
        "rejected_outstanding": result.rejected_outstanding,
        "refused_4xx": result.records_failed,
        "unconfirmed": result.records_unconfirmed,
        "requests": result.requests,
        "bytes_sent": result.bytes_sent,
        "duration_s": result.duration_s,
        "rows_in_table": result.rows_in_table,
    }
    if ledger_rows is not None:
        md["dagster/row_count"] = ledger_rows
    if result.outbox_path:
        md["outbox_path"] = dg.MetadataValue.path(result.outbox_path)
    if result.errors is not None:
        md["ometria_errors_new"] = result.errors.new
        md["ometria_errors_matched"] = result.errors.matched
    if result.aborted:
        md["aborted"] = result.aborted
    return md


def _push(context: dg.AssetExecutionContext, feed: str, config: PushConfig,
          ometria: OmetriaResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    with ometria.open_client() as client, warehouse.connect() as con:
        target = ometria.target(client)
        context.log.info(f"Pushing {feed} to {target.describe()}")
        try:
            result = push_feed(
                con, client, feed,
                dry_run=ometria.is_dry_run(),
                outbox_dir=get_settings().outbox_dir,
                run_id=context.run.run_id,
                logger=context.log,
                retry_rejected=config.retry_rejected,
            )
        except PushAbortedError as exc:
            raise dg.Failure(description=str(exc), metadata=_metadata(exc.result, target, None)) from exc
        acknowledged = ledger_rows(con, feed)
    return dg.MaterializeResult(metadata=_metadata(result, target, acknowledged))


def _push_asset(feed: str, deps: list[dg.AssetKey], description: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=dg.AssetKey([GROUP, feed]),
        deps=deps,
        group_name=GROUP,
        kinds={"ometria"},
        pool="duckdb",
        description=description,
        metadata=described_table(_LEDGER, ddl_columns(DDL)[_LEDGER]),
    )
    def _asset(context: dg.AssetExecutionContext, config: PushConfig, ometria: OmetriaResource,
               warehouse: WarehouseResource) -> dg.MaterializeResult:
        return _push(context, feed, config, ometria, warehouse)

    return _asset


_AUDIT = (
    "\n\nOnly new or changed records are sent (a record is compared with the version Ometria "
    "last acknowledged); a sync with no SAP change sends nothing. Every request is listed in "
    "`ometria_push.requests`, each record's last acknowledged version in `ometria_push.ledger`, "
    "and records Ometria rejected in `ometria_push.errors`. In dry run (`OMETRIA_DRY_RUN=1`, or "
    "no API key) the requests are written to the outbox folder instead, for review."
)

contacts = _push_asset(
    "contacts",
    [dg.AssetKey(["ometria", "contacts"])],
    "SAP business partners (customers) sent to Ometria as contacts of the SAP collection."
    + _AUDIT,
)
products = _push_asset(
    "products",
    [dg.AssetKey(["ometria", "products"])],
    "SAP items sent to Ometria as products (title, price, listings, attributes)." + _AUDIT,
)
orders = _push_asset(
    "orders",
    [dg.AssetKey(["ometria", "orders"]), contacts.key, products.key],
    "SAP sales orders (and credit notes, depending on the refund method) sent to Ometria as "
    "orders. Runs after the contacts and products pushes, so every order's customer and "
    "products already exist in Ometria." + _AUDIT,
)
stock = _push_asset(
    "stock",
    [dg.AssetKey(["ometria", "stock"]), products.key],
    "In-stock flags of SAP items (on hand minus committed, per the mapping) sent to Ometria as "
    "partial product updates (`@merge`). Runs on its own, faster schedule; after the products "
    "push when both run. A flag is only sent for a product Ometria already holds (a flag alone "
    "would create an empty product), and again after its product was re-sent." + _AUDIT,
)


@dg.asset(
    key=dg.AssetKey([GROUP, "errors"]),
    deps=[contacts.key, products.key, orders.key, stock.key],
    group_name=GROUP,
    kinds={"ometria"},
    pool="duckdb",
    metadata=described_table(_ERRORS, ddl_columns(DDL)[_ERRORS]),
)
def errors(context: dg.AssetExecutionContext, ometria: OmetriaResource,
           warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Records Ometria rejected. Ometria validates pushed records after answering, and keeps
    only its 100 most recent errors, so this reads its error list after pushes, stores each
    error in `ometria_push.errors` and marks the record it concerns as rejected in the ledger
    (it is sent again once its data changes). The list is only read when something was pushed
    since the last read, or once more after Ometria had time to finish validating."""
    fetched = None
    with warehouse.connect() as con:
        ensure_push_tables(con)
        if not ometria.is_dry_run() and errors_fetch_due(con):
            with ometria.open_client() as client:
                assert client is not None
                fetched = sync_errors(con, client, run_id=context.run.run_id, logger=context.log)
        by_status = status_counts(con)
        rejected = rejected_by_feed(con)
        total_errors, unmatched_24h = error_counts(con)
    md: dict = {
        "dagster/row_count": int(total_errors),
        "fetched_from_ometria": fetched is not None,
        "records_rejected_outstanding": int(by_status.get("rejected", 0)),
        "records_unconfirmed": int(by_status.get("unconfirmed", 0) + by_status.get("pending", 0)),
        "unmatched_errors_last_24h": int(unmatched_24h),
    }
    if fetched is not None:
        md.update({"errors_returned": fetched.fetched, "errors_new": fetched.new,
                   "errors_matched": fetched.matched})
    if rejected.height:
        md["rejected_by_feed"] = dg.MetadataValue.md(
            "\n".join(["| feed | rejected |", "|---|---|"]
                      + [f"| {f} | {n} |" for f, n in rejected.rows()]))
    return dg.MaterializeResult(metadata=md)
