"""Ometria-ready tables (group `ometria`, DuckDB schema `ometria`): exactly the records Ometria
should hold, one row per record, built from the landed SAP tables by the pure transforms in
`lib/transforms`. Every row keeps its SAP source (`sap_object`, `sap_key`), the exact JSON to
push (`payload`, `payload_hash`) and, when it must not be sent, `held_back_reason`.
"""

from datetime import UTC, datetime

import dagster as dg
import polars as pl

from sap_ometria_assets.defs.ometria.metadata import (
    LINEAGE,
    definition_metadata,
    held_back_counts,
    raw,
    result_metadata,
    table_schema,
    table_summary,
)
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.transforms import contacts_build as cb
from sap_ometria_assets.lib.transforms import products as tp
from sap_ometria_assets.lib.transforms import stock as ts
from sap_ometria_assets.defs.resources import WarehouseResource
from sap_ometria_assets.lib.transforms.orders_build import build_orders_tables
from sap_ometria_assets.lib.transforms.tables import load_run_mapping, previous_hashes, read_raw, write_ometria

GROUP = "ometria"
KINDS = {"polars", "duckdb"}
# Products and stock are rebuilt whole every run: under a second for 20,000 items (x100), and
# stock depends on warehouse-wide rows (OWHS, the mapping's warehouse rules) and reports on all.
ALWAYS_FULL = "always full (products and stock are cheap; stock depends on every warehouse row)"


# ---------------------------------------------------------------------------------------------
# Assets
# ---------------------------------------------------------------------------------------------

def _run_started_at(context: dg.AssetExecutionContext) -> datetime:
    """When the current run started (opt-outs for deletions wait until they are a run old)."""
    record = context.instance.get_run_record_by_id(context.run.run_id)
    start = getattr(record, "start_time", None) if record is not None else None
    if start:
        return datetime.fromtimestamp(float(start), UTC)
    return datetime.now(UTC)


class ContactsBuildConfig(dg.Config):
    """`full_rebuild`: rebuild every contact instead of only the business partners SAP changed."""

    full_rebuild: bool = False


@dg.asset(
    key=["ometria", "contacts"],
    group_name=GROUP,
    kinds=KINDS,
    deps=[raw("ocrd"), raw("ocrg"), raw("cufd")],
    pool="duckdb",
    metadata=definition_metadata("contacts"),
)
def ometria_contacts(context: dg.AssetExecutionContext, config: ContactsBuildConfig,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Ometria contacts: one row per SAP customer (Business Partner of the configured types).

    id and customer_id are the CardCode (so orders link to the contact), email trimmed and
    lower-cased, names split from CardName, phone in E.164, country, consent from SAP's
    block-marketing flag and the opt-in UDF (never an implied opt-in), UDFs and the BP group as
    custom properties, segments from the mapping's rules. Sent with `@merge: true` into the
    `OMETRIA_COLLECTION` collection. Customers without an email are sent without one; an invalid
    email or a BP deleted in SAP holds the row back (`held_back_reason`) for the exceptions report.

    A run rebuilds only the business partners whose OCRD row (or group) was landed since the
    previous build, or whose deletion mark changed (metadata `build_mode`); a changed mapping,
    time zone or collection, the run config `full_rebuild: true`, or a last full build older
    than `SAP_OMETRIA_FULL_PASS_HOURS` (default 24) rebuilds everything.
    """
    settings = get_settings()
    with warehouse.connect() as con:
        mapping = load_run_mapping(con)
        build = cb.build_contacts_table(
            con, mapping, zone=settings.sap_ometria_timezone, collection=settings.ometria_collection,
            run_started_at=_run_started_at(context), full_rebuild=config.full_rebuild,
            full_pass_hours=settings.sap_ometria_full_pass_hours)
        whole = None if build.full else whole_table_counts(con, "contacts")
    frame = build.frame
    context.log.info("ometria.contacts: %s (%s), %s row(s) built", "full rebuild" if build.full else "incremental",
                     build.base.full_reason or f"landed after {build.base.since}", frame.height)
    metadata = result_metadata("contacts", frame, build.previous, {
        "mapping_file": str(settings.mapping_path),
        "collection": settings.ometria_collection,
        "phones_validated_this_run": build.phones_validated,
        "build_mode": "full" if build.full else "incremental",
        "full_rebuild_reason": build.base.full_reason or "",
        "contacts_rebuilt": frame.height,
    })
    if whole is not None:  # counts of the whole table: what was not rebuilt is unchanged by construction
        metadata.update(whole)
        metadata["payloads_unchanged"] = (whole["dagster/row_count"] - metadata["payloads_new"]
                                          - metadata["payloads_changed"])
    return dg.MaterializeResult(metadata=metadata)


def whole_table_counts(con, table: str) -> dict:
    """Row, hold-back and warning counts over a whole ometria table (after an incremental build)."""
    rows = con.sql(f"SELECT held_back_reason, len(warnings) > 0 AS warned FROM ometria.{table}").pl()
    held = rows.filter(pl.col("held_back_reason").is_not_null()).height
    return {
        "dagster/row_count": rows.height,
        "held_back": held,
        "pushable": rows.height - held,
        "held_back_by_reason": dg.MetadataValue.json(held_back_counts(rows)),
        "rows_with_warnings": rows.filter(pl.col("warned").fill_null(False)).height,
    }


class OrdersBuildConfig(dg.Config):
    """`full_rebuild`: rebuild every order and credit memo instead of only those SAP changed."""

    full_rebuild: bool = False


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key=["ometria", "orders"],
            group_name=GROUP,
            kinds=KINDS,
            deps=[raw(t) for t in ("ordr", "rdr1", "rdr3", "odln", "dln1", "oinv", "inv1", "orin",
                                   "rin1", "rin3", "ocrd", "cufd")],
            metadata=definition_metadata("orders"),
            description=(
                "Ometria orders: every SAP sales order (ORDR with its lines and freight), rebuilt whole "
                "whenever anything it depends on changes, so edits, deliveries, cancellations and refunds "
                "reach Ometria as the full updated order. A run rebuilds only the orders and credit memos "
                "whose SAP rows were landed since the previous build (metadata `build_mode`); a changed "
                "mapping, or the run config `full_rebuild: true`, rebuilds everything. Status and is_valid follow the mapping (cancelled orders: "
                "`cancelled`, is_valid false); totals are SAP's to the penny in the document currency "
                "(grand_total = DocTotal or DocTotalFc); `timestamp` carries the company time zone "
                "offset. In `negative_order` mode each A/R credit memo is also an order here "
                "(sap_object ORIN, negative amounts, `properties.original_order_id`); in "
                "`refund_on_original` mode credit memos update the original order's refund fields. "
                "Cancellation documents never become orders."
            ),
        ),
        dg.AssetSpec(
            key=["ometria", "refunds"],
            group_name=GROUP,
            kinds=KINDS,
            deps=[raw(t) for t in ("orin", "rin1", "rin3", "oinv", "inv1", "dln1", "ordr", "rdr1")],
            metadata=definition_metadata("refunds"),
            description=(
                "Trace of every A/R credit memo (ORIN): the order it was traced to (credit memo line -> "
                "invoice line -> delivery/order line), the amount, and how it reached Ometria "
                "(negative order, refund on the original, fallback, or excluded as a cancellation). "
                "Not pushed: the orders feed carries the refunds."
            ),
        ),
    ],
    pool="duckdb",
)
def ometria_orders_and_refunds(context: dg.AssetExecutionContext, config: OrdersBuildConfig,
                               warehouse: WarehouseResource):
    settings = get_settings()
    zone = settings.sap_ometria_timezone
    with warehouse.connect() as con:
        mapping = load_run_mapping(con)
        build = build_orders_tables(con, mapping, zone, full_rebuild=config.full_rebuild)
        summary = table_summary(con)
    result, plan, full, previous = build.result, build.plan, build.full, build.previous
    context.log.info("ometria.orders: %s (%s), %s order(s) and %s credit memo(s) rebuilt",
                     "full rebuild" if full else "incremental", plan.full_reason or f"landed after {plan.since}",
                     result.orders.filter(pl.col("sap_object") == "ORDR").height, result.refunds.height)
    build_md = {
        "build_mode": "full" if full else "incremental",
        "full_rebuild_reason": plan.full_reason or "",
        "orders_rebuilt": result.orders.filter(pl.col("sap_object") == "ORDR").height,
        "credit_memos_rebuilt": result.refunds.height,
    }
    metadata = result_metadata("orders", result.orders, previous, {
        "credit_memo_mode": mapping.credit_memos.mode, **build_md, **summary["objects"],
        **({k: v for k, v in result.stats.items()} if full else {}),
    })
    if not full:  # counts of the whole table: what was not rebuilt is unchanged by construction
        metadata.update(summary["orders"])
        metadata["payloads_unchanged"] = (summary["orders"]["dagster/row_count"] - metadata["payloads_new"]
                                          - metadata["payloads_changed"])
    yield dg.MaterializeResult(asset_key=["ometria", "orders"], metadata=metadata)
    yield dg.MaterializeResult(
        asset_key=["ometria", "refunds"],
        metadata={
            "dagster/row_count": summary["refunds_rows"],
            "dagster/table_name": "ometria.refunds",
            "dagster/column_schema": table_schema("refunds"),
            "dagster/column_lineage": LINEAGE["refunds"],
            "credit_memo_mode": mapping.credit_memos.mode,
            "by_mode_applied": dg.MetadataValue.json(summary["by_mode_applied"]),
            **build_md,
        },
    )


@dg.asset(
    key=["ometria", "products"],
    group_name=GROUP,
    kinds=KINDS,
    deps=[raw("oitm"), raw("itm1"), raw("cufd")],
    pool="duckdb",
    metadata=definition_metadata("products"),
)
def ometria_products(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Ometria products: one row per SAP item (OITM).

    id and sku are the ItemCode; title is the web-title UDF when set, else ItemName; price and
    currency come from the configured price list (ITM1), also on the store listing; is_active is
    SalesItem and not Frozen and not deleted in SAP (items that are not sold are sent inactive);
    attributes come from the mapped item UDFs. Sent with `@merge: true` and without
    is_in_stock, which the stock feed owns.
    """
    settings = get_settings()
    with warehouse.connect() as con:
        mapping = load_run_mapping(con)
        frame = tp.build_products(read_raw(con, "oitm"), read_raw(con, "itm1", required=False), mapping)  # type: ignore[arg-type]
        previous = previous_hashes(con, "products")
        write_ometria(con, "products", frame, tp.DESCRIPTIONS)
    context.log.info("ometria.products: %s rows", frame.height)
    return dg.MaterializeResult(metadata=result_metadata("products", frame, previous, {
        "mapping_file": str(settings.mapping_path), "price_list": mapping.products.price_list,
        "build_mode": "full", "full_rebuild_reason": ALWAYS_FULL,
    }))


@dg.asset(
    key=["ometria", "stock"],
    group_name=GROUP,
    kinds=KINDS,
    deps=[raw("oitm"), raw("oitw"), raw("owhs"), raw("cufd")],
    pool="duckdb",
    metadata=definition_metadata("stock"),
)
def ometria_stock(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Stock per SAP item for Ometria: the `is_in_stock` flag as a partial product update.

    available_qty = sum over the warehouses that count of (InStock - Committed); a warehouse
    counts when the mapping includes it, it is active in SAP and the item is not locked there.
    Ring-fenced warehouses (e.g. WHS-WHOLESALE) never count; channel warehouses (stores) have
    their own available_qty_<channel> columns. is_in_stock = available_qty > the mapping's
    threshold, sent as `{"@type":"product","id":..,"is_in_stock":..,"@merge":true}`.
    Warehouses SAP has but the mapping does not list are reported in `unmapped_warehouses`.
    """
    with warehouse.connect() as con:
        mapping = load_run_mapping(con)
        result = ts.build_stock(read_raw(con, "oitm"), read_raw(con, "oitw", required=False),  # type: ignore[arg-type]
                                read_raw(con, "owhs", required=False), mapping)
        descriptions = ts.column_descriptions(mapping)
        previous = previous_hashes(con, "stock")
        write_ometria(con, "stock", result.stock, descriptions)
    frame = result.stock
    if result.stats["unmapped_warehouses"]:
        context.log.warning("warehouses not in the mapping (rule %s applied): %s",
                            mapping.stock.default_rule, result.stats["unmapped_warehouses"])
    return dg.MaterializeResult(metadata=result_metadata("stock", frame, previous, {
        "in_stock": frame.filter(pl.col("is_in_stock")).height,
        "in_stock_threshold": mapping.stock.in_stock_threshold,
        "unmapped_warehouses": dg.MetadataValue.json(result.stats["unmapped_warehouses"]),
        "inactive_warehouses": dg.MetadataValue.json(result.stats["inactive_warehouses"]),
        "locked_item_warehouse_rows": result.stats["locked_rows"],
        "build_mode": "full", "full_rebuild_reason": ALWAYS_FULL,
    }, descriptions=descriptions))
