"""Historical backfill of orders and credit memos, one calendar month of SAP document date
(`DocDate`) per partition (group `backfill`).

A partition run, for its month:
1. lands the SAP documents dated in the month (orders, deliveries for `backfill/orders`;
   invoices, credit memos for `backfill/credit_memos`) with the regular landing code and a
   `DocDate` window filter, leaving the incremental watermarks exactly as they were (a window
   read says nothing about what else changed in SAP);
2. rebuilds `ometria.orders`/`ometria.refunds` from the landed tables, as the regular
   `ometria/orders` asset does (credit memos change orders of other months);
3. pushes, through the regular delta push and its ledger: the contacts and products those
   documents refer to (if Ometria does not have them yet), then the month's orders, negative
   orders or refunded originals.

Resumable: each month succeeds or fails on its own (Dagster keeps the status per partition), and
the ledger means a re-run of a month sends only what Ometria has not acknowledged. Launch it from
the UI: Jobs -> `backfill_documents_job` -> Partitions -> Launch backfill, pick the months.

It does not block the regular syncs: runs carry a low priority and the `backfill` lane tag
(the run queue lets one backfill run go beside one sync run), the asset takes no `duckdb` pool
slot for its whole run but holds the warehouse only for short steps (one table landing, the
rebuild, a slice of at most `BACKFILL_SLICE_RECORDS` records to push), and it pushes at
`SAP_OMETRIA_BACKFILL_RATE_LIMIT_PER_S` (default 1 request/s, 100 records/s) with the Ometria
client's rate limiter, 429 and queue-size handling, leaving Ometria's budget to the syncs.
"""

import dataclasses
import math
import time
from collections.abc import Callable

import dagster as dg
import duckdb

from sap_ometria_assets.defs.automation.config import automation_config
from sap_ometria_assets.defs.automation.jobs import LANE_TAG, PUBLISHED
from sap_ometria_assets.lib.warehouse import db as warehouse_lib
from sap_ometria_assets.lib.warehouse.sql import table_exists, transaction
from sap_ometria_assets.lib.landing.land import land_table
from sap_ometria_assets.defs.resources import OmetriaResource, SapB1Resource, WarehouseResource
from sap_ometria_assets.lib.automation.partitions import DocDateWindow, monthly_docdate_partitions, window_for_partition
from sap_ometria_assets.lib.push.results import PushAbortedError, PushResult
from sap_ometria_assets.lib.push.send import push_feed
from sap_ometria_assets.lib.sap.tables import TABLES_BY_NAME
from sap_ometria_assets.lib.transforms.orders import OrdersResult
from sap_ometria_assets.lib.transforms.orders_build import build_orders_tables
from sap_ometria_assets.lib.transforms.tables import load_run_mapping
from sap_ometria_assets.lib.config.settings import get_settings

GROUP = "backfill"
ORDERS = dg.AssetKey([GROUP, "orders"])
CREDIT_MEMOS = dg.AssetKey([GROUP, "credit_memos"])

# SAP entities landed per backfill asset (headers; their lines and freight come with them).
LANDED: dict[dg.AssetKey, tuple[str, ...]] = {
    ORDERS: ("ordr", "odln"),
    CREDIT_MEMOS: ("oinv", "orin"),
}
# At most this many records pushed per warehouse hold; between slices the file is free.
BACKFILL_SLICE_RECORDS = 1_000
# Pause between slices, longer than the longest back-off of a process waiting for the lock
# (lib/warehouse.connect), so a waiting sync really gets the file.
SLICE_PAUSE_S = 2.5
# A backfill step waits this long for a sync that holds the warehouse (a long push).
LOCK_WAIT_S = 30 * 60.0

_cfg = automation_config()
backfill_partitions = monthly_docdate_partitions(_cfg.backfill_start, _cfg.timezone)


# ---------------------------------------------------------------------------------------------
# Landing a DocDate window (the regular landing with a window filter; watermark untouched)
# ---------------------------------------------------------------------------------------------

def land_window(con: duckdb.DuckDBPyConnection, client, table: str, window: DocDateWindow,
                *, settings, logger=None):
    """Land the documents of `table` dated in `window` (with their lines and freight).

    `land_table` advances the incremental watermark to the newest UpdateDate it saw; for a
    window read that would skip every other change since the last sync, so the watermark row
    is put back as it was, in the same transaction scope of this connection."""
    spec = TABLES_BY_NAME[table]
    if not spec.is_document:
        raise ValueError(f"{table} is not a document table; only documents are backfilled by DocDate")
    windowed = dataclasses.replace(
        spec, filter=" and ".join(f"({f})" for f in (spec.filter, window.odata_filter()) if f)
    )
    before = _watermark_row(con, table)
    # full_refresh: read the window whole instead of "changed since the watermark".
    result = land_table(con, client, windowed, settings=settings, full_refresh=True, logger=logger)
    with transaction(con):
        con.execute("DELETE FROM sap_meta.watermarks WHERE entity = ?", [table])
        if before is not None:
            con.execute("INSERT INTO sap_meta.watermarks VALUES (?, ?, ?, ?, ?)", list(before))
    return result


def _watermark_row(con: duckdb.DuckDBPyConnection, table: str) -> tuple | None:
    if not table_exists(con, "sap_meta", "watermarks"):
        return None
    rows = con.execute(
        "SELECT entity, update_date, update_time, landed_at, rows_landed FROM sap_meta.watermarks "
        "WHERE entity = ?", [table]).fetchall()
    return tuple(rows[0]) if rows else None


# ---------------------------------------------------------------------------------------------
# What to push for a window
# ---------------------------------------------------------------------------------------------

def _docs(table: str, window: DocDateWindow) -> str:
    return f'SELECT CAST("DocEntry" AS VARCHAR) FROM sap_raw."{table}" WHERE {window.contains_sql()}'


def push_predicates(asset: dg.AssetKey, window: DocDateWindow) -> dict[str, str]:
    """SQL predicates (on the ometria tables) of the records a partition pushes, per feed,
    in push order: contacts and products the documents refer to, then the orders."""
    header, lines = ("ordr", "rdr1") if asset == ORDERS else ("orin", "rin1")
    customers = f'SELECT "CardCode" FROM sap_raw."{header}" WHERE {window.contains_sql()}'
    items = f'SELECT "ItemCode" FROM sap_raw."{lines}" WHERE CAST("DocEntry" AS VARCHAR) IN ({_docs(header, window)})'
    if asset == ORDERS:
        orders = f"sap_object = 'ORDR' AND sap_key IN ({_docs('ordr', window)})"
    else:
        # A credit memo reaches Ometria as its own negative order or as a refund on the
        # original order (per the mapping): ometria.refunds names the order that carries it.
        orders = (f"id IN (SELECT id FROM ometria.refunds WHERE id IS NOT NULL AND sap_key IN "
                  f"({_docs('orin', window)}))")
    return {
        "contacts": f"sap_key IN ({customers})",
        "products": f"sap_key IN ({items})",
        "orders": orders,
    }


def push_in_slices(connect: Callable, client, feed: str, where: str, *, dry_run: bool, run_id: str,
                   logger, slice_records: int = BACKFILL_SLICE_RECORDS,
                   pause_s: float = SLICE_PAUSE_S) -> list[PushResult]:
    """`push_feed` over `where`, split by id hash into slices of about `slice_records`
    records; the warehouse is opened per slice and released (with a pause) in between."""
    with connect() as con:
        if not table_exists(con, "ometria", feed):
            raise dg.Failure(
                description=f"ometria.{feed} does not exist yet: run the regular sync once "
                "(land_sap_job and push_ometria_job) before backfilling history.")
        total = con.execute(f'SELECT count(*) FROM ometria."{feed}" WHERE {where}').fetchall()[0][0]
    slices = max(1, math.ceil(total / slice_records))
    results = []
    for i in range(slices):
        part = where if slices == 1 else f"({where}) AND hash(id) % {slices} = {i}"
        if i:
            time.sleep(pause_s)
        with connect() as con:
            results.append(push_feed(
                con, client, feed, dry_run=dry_run, outbox_dir=get_settings().outbox_dir,
                run_id=run_id, logger=logger, where=part,
            ))
    return results


def rebuild_orders(con: duckdb.DuckDBPyConnection) -> OrdersResult:
    """`ometria.orders` and `ometria.refunds` rebuilt in full from sap_raw by the build the
    `ometria/orders` asset runs, so the hashes the backfill pushes are the ones the regular
    push compares with (it then finds them acknowledged and sends nothing twice)."""
    mapping = load_run_mapping(con)
    return build_orders_tables(con, mapping, get_settings().sap_ometria_timezone, full_rebuild=True).result


# ---------------------------------------------------------------------------------------------
# The asset
# ---------------------------------------------------------------------------------------------

@dg.multi_asset(
    name="backfill_documents",
    specs=[
        dg.AssetSpec(
            ORDERS,
            group_name=GROUP,
            skippable=True,
            kinds={"sap", "ometria"},
            deps=[dg.AssetKey(["ometria", "contacts"]), dg.AssetKey(["ometria", "products"])],
            description=(
                "Historical SAP sales orders (with their deliveries) of one month of DocDate: "
                "landed into sap_raw, rebuilt as Ometria orders and pushed (with the contacts "
                "and products they refer to) through the push ledger, slowly enough to leave "
                "Ometria's rate budget to the regular syncs. One partition per month; a month "
                "re-run sends only what Ometria has not acknowledged."
            ),
        ),
        dg.AssetSpec(
            CREDIT_MEMOS,
            group_name=GROUP,
            skippable=True,
            kinds={"sap", "ometria"},
            deps=[ORDERS],
            description=(
                "Historical SAP A/R credit memos (with the invoices that link them to orders) of "
                "one month of DocDate: landed, traced to their orders and pushed as negative "
                "orders or refunds on the original order (per the mapping's credit memo mode)."
            ),
        ),
    ],
    partitions_def=backfill_partitions,
    can_subset=True,
)
def backfill_documents(
    context: dg.AssetExecutionContext,
    sap_b1: SapB1Resource,
    ometria: OmetriaResource,
    warehouse: WarehouseResource,
):
    if not context.has_partition_key:
        # A whole-graph run (e.g. the implicit "all assets" job) has no month to backfill.
        context.log.warning(
            "The backfill runs one month at a time: launch backfill_documents_job for the months "
            "you need (Partitions tab). Nothing done in this unpartitioned run.")
        return
    window = window_for_partition(context.partition_key)
    settings = get_settings()
    selected = [k for k in (ORDERS, CREDIT_MEMOS) if k in context.selected_asset_keys]

    def connect():
        return warehouse_lib.connect(warehouse.path, wait_s=LOCK_WAIT_S)

    landed: dict[dg.AssetKey, dict[str, int]] = {}
    with sap_b1.client(context.log) as client:
        for key in selected:
            landed[key] = {}
            for table in LANDED[key]:
                with connect() as con:
                    result = land_window(con, client, table, window, settings=settings, logger=context.log)
                landed[key][table] = result.rows_landed
    context.log.info(f"{window.start:%B %Y}: landed {landed}")

    with connect() as con:
        rebuilt = rebuild_orders(con)
    context.log_event(dg.AssetMaterialization(
        asset_key=["ometria", "orders"],
        description=f"Rebuilt by the backfill of {window.start:%B %Y}.",
        metadata={"dagster/row_count": rebuilt.orders.height},
    ))

    # Leave Ometria's budget to the syncs: the backfill's own, lower request rate.
    paced = OmetriaResource(
        dry_run=ometria.dry_run,
        rate_limit_per_s=min(ometria.rate_limit_per_s or math.inf,
                             automation_config().backfill_rate_limit_per_s),
    )
    target = paced.target()
    context.log.info(f"Pushing {window.start:%B %Y} to {target.describe()} at "
                     f"{paced.rate_limit_per_s} request(s)/s")
    pushed: dict[dg.AssetKey, dict[str, PushResult]] = {k: {} for k in selected}
    with paced.open_client() as ometria_client:
        for key in selected:
            for feed, where in push_predicates(key, window).items():
                try:
                    parts = push_in_slices(
                        connect, ometria_client, feed, where, dry_run=paced.is_dry_run(),
                        run_id=context.run.run_id, logger=context.log,
                    )
                except PushAbortedError as exc:
                    raise dg.Failure(
                        description=f"Backfill of {window.start:%B %Y} stopped while pushing {feed}: "
                        f"{exc}. Re-run this month: acknowledged records are not sent again."
                    ) from exc
                pushed[key][feed] = _total(parts)

    for key in selected:
        sent = pushed[key]
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "window": f"{window.start.isoformat()} .. {window.end.isoformat()} (DocDate, end excluded)",
                "target": target.describe(),
                "rows_landed": dg.MetadataValue.json(landed[key]),
                "records_sent": sum(r.records_sent for r in sent.values()),
                "records_sent_by_feed": dg.MetadataValue.json({f: r.records_sent for f, r in sent.items()}),
                "skipped_unchanged": sum(r.skipped_unchanged for r in sent.values()),
                "held_back": sent["orders"].held_back,
                "rejected": sum(r.records_rejected for r in sent.values()),
                "requests": sum(r.requests for r in sent.values()),
                "dagster/row_count": sent["orders"].rows_in_table,
            },
        )


def _total(parts: list[PushResult]) -> PushResult:
    total = PushResult(feed=parts[0].feed, dry_run=parts[0].dry_run)
    for p in parts:
        for name in ("rows_in_table", "held_back", "invalid", "skipped_unchanged", "to_send",
                     "records_sent", "records_rejected", "records_failed", "requests", "bytes_sent"):
            setattr(total, name, getattr(total, name) + getattr(p, name))
    return total


backfill_documents_job = dg.define_asset_job(
    "backfill_documents_job",
    selection=dg.AssetSelection.assets(ORDERS, CREDIT_MEMOS, PUBLISHED),
    description="Historical orders and credit memos, one month of DocDate per partition. Launch "
    "from the Partitions tab over the months you need; each month is resumable.",
    tags={LANE_TAG: "backfill", "dagster/priority": "-1"},
)
