"""Layer 1, `sap_raw`: SAP Business One tables landed from the Service Layer as SAP has them.

One asset per SAP table (built from the registry in `lib/sap/tables.py`); a table and its child
tables (order lines, addresses, prices) are landed together by one step, since they come from
the same Service Layer read. Column names are Service Layer property names, values as SAP
returns them (`CardType = 'cCustomer'`, `DocumentStatus = 'bost_Open'`), amounts exact
decimals. Reads are incremental on UpdateDate/UpdateTime where SAP allows it; a re-run lands
nothing new. See `lib/landing/land.py` for the rules (bad values, deletions, history).

Run config (Launchpad): `deletion_scan: true` also scans all keys of master data to mark records
deleted in SAP (`_deleted_at`); `full_refresh: true` re-reads everything instead of the changes.
"""

import json

import dagster as dg

from sap_ometria_assets.defs.ometria.metadata import table_schema
from sap_ometria_assets.lib.automation.alerts import make_alert
from sap_ometria_assets.lib.automation.spool import raise_alerts
from sap_ometria_assets.lib.landing.land import land_table
from sap_ometria_assets.lib.landing.results import LandResult, TableCounts
from sap_ometria_assets.lib.landing.split import ROW_HASH
from sap_ometria_assets.defs.resources import SapB1Resource
from sap_ometria_assets.defs.sap_raw.checks import landing_check_results, landing_check_specs
from sap_ometria_assets.lib.sap.descriptions import column_description, udf_descriptions
from sap_ometria_assets.lib.sap.tables import (
    DELETED_AT,
    IS_CANCELLATION,
    LANDED_AT,
    SAP_TABLES,
    SapTable,
    contract_columns,
)
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.warehouse.sql import table_columns
from sap_ometria_assets.defs.resources import WarehouseResource

GROUP = "sap_raw"
_CUFD = [GROUP, "cufd"]  # UDF types come from here


class SapLandingConfig(dg.Config):
    """Options for one landing run."""

    deletion_scan: bool = False
    """Master data: also page through every key (`$select=<key>`) and mark keys SAP no longer
    holds with `_deleted_at` (SAP leaves no trace of deleted records)."""
    full_refresh: bool = False
    """Read everything instead of the changes since the watermark (also implies a deletion
    check for master data)."""


def _types_udfs(spec: SapTable) -> bool:
    return spec.table != "cufd" and (
        spec.udf_table is not None or any(c.udf_table for c in spec.children)
    )


def _described(table: str, types: dict[str, str], udfs: dict[str, str] | None = None) -> dg.TableSchema:
    return table_schema(table, types=types,
                        descriptions={c: column_description(table, c, udfs) for c in types})


def _declared_schema(spec: SapTable, table: str) -> dg.TableSchema:
    """Before any landing: the contract columns and the columns the landing adds, described
    (the other standard properties and the UDFs appear once the table is landed)."""
    types = {**contract_columns(table), ROW_HASH: "VARCHAR", LANDED_AT: "TIMESTAMP WITH TIME ZONE"}
    if spec.is_master_data:  # children too (lib/landing/merge.py: _metadata_columns)
        types[DELETED_AT] = "TIMESTAMP WITH TIME ZONE"
    if spec.is_document and table == spec.table:
        types[IS_CANCELLATION] = "BOOLEAN"
    return _described(table, types)


def _column_schema(con, table: str) -> dg.TableSchema:
    """Every landed column with its type and description (UDFs from sap_raw.cufd)."""
    return _described(table, table_columns(con, GROUP, table), udf_descriptions(con, table))


def _metadata(con, result: LandResult, table: str) -> dict:
    counts = result.tables.get(table, TableCounts())
    md: dict = {
        "dagster/row_count": counts.rows_total,
        "dagster/column_schema": _column_schema(con, table),
        "dagster/table_name": f"{GROUP}.{table}",
        "rows_landed": counts.rows_landed,
        "rows_changed": counts.rows_changed,
        "rows_unchanged": counts.rows_unchanged,
        "keys_marked_deleted": counts.keys_marked_deleted,
        "keys_restored": counts.keys_restored,
        "rejected_values": counts.rejected_values,
        "columns_added": ", ".join(counts.columns_added) or "none",
        "read": result.read,
        "entity_set": result.entity_set,
        "pages": result.pages,
        "requests": result.requests,
        "bytes_read": result.bytes_read,
        "watermark_before": result.watermark_before or "none",
        "watermark_after": result.watermark_after or "none",
        "duration_s": round(result.duration_s, 3),
    }
    if counts.rows_removed:
        md["rows_removed"] = counts.rows_removed
    if result.filter:
        md["filter"] = result.filter
    if table != result.table:
        md["landed_with"] = f"{GROUP}.{result.table}"
    return md


def build_sap_raw_asset(spec: SapTable) -> dg.AssetsDefinition:
    """One multi-asset per registry entry: the SAP table and its child tables."""
    deps = [dg.AssetKey(_CUFD)] if _types_udfs(spec) else []
    specs = [
        dg.AssetSpec(
            key=dg.AssetKey([GROUP, spec.table]), description=spec.description, group_name=GROUP,
            kinds={"sap", "duckdb"}, deps=deps,
            metadata={"sap_object": spec.sap_object, "entity_set": spec.entity_set,
                      "key": ", ".join(spec.key), "read_mode": spec.read_mode,
                      "dagster/column_schema": _declared_schema(spec, spec.table),
                      "dagster/table_name": f"{GROUP}.{spec.table}"},
        )
    ]
    for child in spec.children:
        specs.append(dg.AssetSpec(
            key=dg.AssetKey([GROUP, child.table]), description=child.description,
            group_name=GROUP, kinds={"sap", "duckdb"}, deps=deps,
            metadata={"sap_object": child.table.upper(),
                      "entity_set": f"{spec.entity_set}.{child.collection}",
                      "key": ", ".join(child.key), "read_mode": spec.read_mode,
                      "landed_with": f"{GROUP}.{spec.table}",
                      "dagster/column_schema": _declared_schema(spec, child.table),
                      "dagster/table_name": f"{GROUP}.{child.table}"},
        ))
    tables = [spec.table, *(c.table for c in spec.children)]

    @dg.multi_asset(
        name=f"{GROUP}__{spec.table}", specs=specs, can_subset=False, pool="duckdb",
        description=spec.description, check_specs=landing_check_specs(tables),
    )
    def _land(context: dg.AssetExecutionContext, config: SapLandingConfig, sap_b1: SapB1Resource,
              warehouse: WarehouseResource):
        settings = get_settings()
        with sap_b1.client(logger=context.log) as client, warehouse.connect() as con:
            result = land_table(
                con, client, spec, settings=settings, deletion_scan=config.deletion_scan,
                full_refresh=config.full_refresh, logger=context.log,
            )
            for table in tables:
                yield dg.MaterializeResult(asset_key=dg.AssetKey([GROUP, table]),
                                           metadata=_metadata(con, result, table))
            yield from landing_check_results(con, tables)
        if result.deletion_refused:
            _alert_refused_scan(context, spec.table, result.deletion_refused, settings)
        if result.rejected_values:
            context.log.warning(
                "%s: %d value(s) did not fit their column and landed as NULL; see "
                "sap_meta.rejected_values (%s)", spec.table, result.rejected_values,
                json.dumps({t: c.rejected_values for t, c in result.tables.items() if c.rejected_values}),
            )

    return _land


def _alert_refused_scan(context: dg.AssetExecutionContext, table: str, reason: str,
                        settings) -> None:
    """A refused deletion scan pages ops (ops.alerts and the webhook) as well as being listed
    (deletion_scan_refused); the warehouse connection is closed by then."""
    alert = make_alert("check_failure", severity="ERROR", run_id=context.run.run_id,
                       job_name=context.job_name, asset_key=f"{GROUP}/{table}",
                       check_name="deletion_scan_refused",
                       message=f"{table}: {reason}")
    try:
        raise_alerts([alert], duckdb_path=settings.duckdb_path,
                     webhook=settings.sap_ometria_alert_webhook, ui_url=settings.sap_ometria_ui_url)
    except Exception as exc:  # noqa: BLE001 - the refusal is listed either way
        context.log.error("%s: the deletion-scan alert could not be raised: %s", table, exc)


sap_raw_assets = [build_sap_raw_asset(spec) for spec in SAP_TABLES]
