"""Published snapshots (group `snapshots`): what SQL users, finance and BI tools read.

`snapshots/published` is the last step of every writing job. It depends on every other asset,
so it runs after all of them and is skipped when one of them fails: a reader never sees half a
run. It publishes what this run wrote into the DuckLake beside the warehouse (lib/snapshots/)
as one new snapshot, expires those older than SAP_OMETRIA_SNAPSHOT_RETENTION_DAYS, and writes
the alerts that sensors queued since the last run into `ops.alerts` first (sensors never open
the warehouse).
"""


import dagster as dg

from sap_ometria_assets.defs.automation.jobs import PUBLISHED
from sap_ometria_assets.defs.backfill import assets as backfill_assets
from sap_ometria_assets.defs.ometria import assets as ometria_assets
from sap_ometria_assets.defs.ometria_push import assets as push_assets
from sap_ometria_assets.defs.ops import assets as ops_assets
from sap_ometria_assets.defs.ops import report as report_assets
from sap_ometria_assets.defs.recon import assets as recon_assets
from sap_ometria_assets.defs.resources import WarehouseResource
from sap_ometria_assets.defs.sap_raw import assets as sap_raw_assets
from sap_ometria_assets.lib.automation.spool import flush_alerts
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.snapshots.lake import Lake
from sap_ometria_assets.lib.snapshots.publish import PUBLISHED_SCHEMAS, publish
from sap_ometria_assets.lib.snapshots.scope import tables_written


_MODULES = [sap_raw_assets, ometria_assets, push_assets, ops_assets, report_assets, recon_assets,
            backfill_assets]
UPSTREAM_KEYS = sorted(
    {key for a in dg.load_assets_from_modules(_MODULES) if isinstance(a, dg.AssetsDefinition)
     for key in a.keys},
    key=lambda k: k.to_user_string())


def _materialised_this_run(context: dg.AssetExecutionContext) -> list[dg.AssetKey]:
    records = context.instance.get_records_for_run(
        run_id=context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=100_000)
    keys = []
    for record in records.records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.asset_key is not None:
            keys.append(event.asset_key)
    return keys


@dg.asset(
    key=PUBLISHED,
    deps=UPSTREAM_KEYS,
    group_name="snapshots",
    kinds={"duckdb", "ducklake"},
    pool="duckdb",
)
def published(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The snapshot people query: `sap_raw`, `sap_history`, `ometria`, `ometria_push` (ledger and
    request audit), `ops` and `recon` as this run left them, in the DuckLake `lake/` beside the
    warehouse. Open it with `sap-ometria sql "..."`, `duckdb -init <warehouse dir>/lake/open.sql`
    or any DuckDB client (docs/operations.md); `sap-ometria snapshots` lists the past syncs, each
    queryable with `--as-of`. A run that changed nothing makes no new snapshot."""
    settings = get_settings()
    flushed = flush_alerts(duckdb_path=warehouse.path, webhook=settings.sap_ometria_alert_webhook,
                           lock_wait_s=settings.sap_ometria_duckdb_lock_wait_s)
    candidates = tables_written(_materialised_this_run(context))
    if candidates is not None and flushed.written:
        candidates.add(("ops", "alerts"))
    lake = Lake.for_warehouse(warehouse.path)
    with warehouse.connect() as con:
        result = publish(con, lake, context.run.run_id, candidates,
                         retention_days=settings.sap_ometria_snapshot_retention_days)
    changed = sorted(result.tables_created + result.tables_changed)
    if result.snapshot_id is None:
        context.log.info(f"Nothing changed in {result.tables_compared} table(s): no new snapshot.")
    else:
        context.log.info(f"Published snapshot {result.snapshot_id} in {result.seconds:.2f}s: "
                         f"{len(changed)} table(s) changed, -{result.rows_deleted:,} "
                         f"+{result.rows_inserted:,} rows.")
    return dg.MaterializeResult(metadata={
        "snapshot_id": result.snapshot_id if result.snapshot_id is not None else "none (nothing changed)",
        "lake": dg.MetadataValue.path(str(lake.root)),
        "open_with": f"duckdb -init {lake.open_sql}",
        "seconds": round(result.seconds, 3),
        "tables_changed": dg.MetadataValue.json(changed),
        "tables_compared": result.tables_compared,
        "rows_deleted": result.rows_deleted,
        "rows_inserted": result.rows_inserted,
        "snapshots_expired": result.expired_snapshots,
        "schemas": ", ".join(PUBLISHED_SCHEMAS),
    })
