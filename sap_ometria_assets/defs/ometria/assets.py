"""Ometria-ready tables (group `ometria`, DuckDB schema `ometria`): exactly the records Ometria
should hold, one row per record, built from the landed SAP tables by the pure transforms in
`lib/transforms`. Every row keeps its SAP source (`sap_object`, `sap_key`), the exact JSON to
push (`payload`, `payload_hash`) and, when it must not be sent, `held_back_reason`.
"""


from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import dagster as dg
import duckdb
import polars as pl

from sap_ometria_assets.lib.ometria.mapping import Mapping, load_mapping, validate_against_cufd
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.transforms import contacts as tc
from sap_ometria_assets.lib.transforms import incremental as inc
from sap_ometria_assets.lib.transforms import orders as to
from sap_ometria_assets.lib.transforms import products as tp
from sap_ometria_assets.lib.transforms import refunds as tr
from sap_ometria_assets.lib.transforms import stock as ts
from sap_ometria_assets.defs.resources import WarehouseResource
from sap_ometria_assets.lib.warehouse.db import read_table, write_table
from sap_ometria_assets.lib.warehouse.sql import table_exists

GROUP = "ometria"
PHONE_LOOKUP = "_phone_lookup"  # internal cache table of the contacts asset
KINDS = {"polars", "duckdb"}


def raw(table: str) -> dg.AssetKey:
    return dg.AssetKey(["sap_raw", table])


# ---------------------------------------------------------------------------------------------
# Static column documentation (types are the DuckDB types the tables get)
# ---------------------------------------------------------------------------------------------

_LEAD_TYPES = {"record_type": "VARCHAR", "id": "VARCHAR", "sap_object": "VARCHAR", "sap_key": "VARCHAR"}
_TAIL_TYPES = {"warnings": "VARCHAR[]", "payload": "VARCHAR", "payload_hash": "VARCHAR",
               "payload_bytes": "INTEGER", "held_back_reason": "VARCHAR"}
_MONEY = "DECIMAL(18,2)"

COLUMN_TYPES: dict[str, dict[str, str]] = {
    "contacts": {
        **_LEAD_TYPES, "customer_id": "VARCHAR", "card_type": "VARCHAR", "sap_email": "VARCHAR",
        "email": "VARCHAR", "email_status": "VARCHAR", "prefix": "VARCHAR", "firstname": "VARCHAR",
        "middlename": "VARCHAR", "lastname": "VARCHAR", "phone_number": "VARCHAR", "phone_status": "VARCHAR",
        "country_id": "VARCHAR", "group_code": "BIGINT", "group_name": "VARCHAR", "segment": "VARCHAR",
        "marketing_optin": "VARCHAR", "is_deleted": "BOOLEAN", "sap_updated_at": "TIMESTAMPTZ", **_TAIL_TYPES,
    },
    "orders": {
        **_LEAD_TYPES, "doc_num": "BIGINT", "customer_id": "VARCHAR", "order_timestamp": "TIMESTAMPTZ",
        "sap_state": "VARCHAR", "status": "VARCHAR", "is_valid": "BOOLEAN", "currency": "VARCHAR",
        "sap_currency": "VARCHAR", "subtotal": _MONEY, "discount": _MONEY, "shipping": _MONEY, "tax": _MONEY,
        "grand_total": _MONEY, "grand_total_local": _MONEY, "refunded_total": _MONEY, "line_count": "INTEGER",
        "channel": "VARCHAR", "store": "VARCHAR", "original_order_ids": "VARCHAR[]",
        "credit_memo_fallback": "BOOLEAN", **_TAIL_TYPES,
    },
    "refunds": {
        "record_type": "VARCHAR", "id": "VARCHAR", "sap_object": "VARCHAR", "sap_key": "VARCHAR",
        "doc_num": "BIGINT", "customer_id": "VARCHAR", "refund_timestamp": "TIMESTAMPTZ", "currency": "VARCHAR",
        "sap_currency": "VARCHAR", "amount": _MONEY, "amount_local": _MONEY, "linked_order_ids": "VARCHAR[]",
        "linked_order_id": "VARCHAR", "link_path": "VARCHAR", "mode_applied": "VARCHAR",
        "is_full_refund": "BOOLEAN", "held_back_reason": "VARCHAR",
    },
    "products": {
        **_LEAD_TYPES, "sku": "VARCHAR", "title": "VARCHAR", "price": _MONEY, "currency": "VARCHAR",
        "sap_currency": "VARCHAR", "price_list": "INTEGER", "is_active": "BOOLEAN", "is_sales_item": "BOOLEAN",
        "is_frozen": "BOOLEAN", "is_deleted": "BOOLEAN",
        "attributes": "STRUCT(type VARCHAR, id VARCHAR, label VARCHAR)[]", **_TAIL_TYPES,
    },
    "stock": {
        **_LEAD_TYPES, "available_qty": "DECIMAL(38,6)", "in_stock_threshold": "DOUBLE", "is_in_stock": "BOOLEAN",
        "warehouses_counted": "VARCHAR[]", "is_inventory_item": "BOOLEAN", **_TAIL_TYPES,
    },
}

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "contacts": tc.DESCRIPTIONS,
    "orders": to.DESCRIPTIONS,
    "refunds": tr.DESCRIPTIONS,
    "products": tp.DESCRIPTIONS,
    "stock": ts.DESCRIPTIONS,
}


def table_schema(table: str, descriptions: dict[str, str] | None = None,
                 types: dict[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or DESCRIPTIONS[table]
    types = types or COLUMN_TYPES[table]
    return dg.TableSchema(columns=[
        dg.TableColumn(name=name, type=type_, description=descriptions.get(name))
        for name, type_ in types.items()
    ])


def _lineage(mapping: dict[str, Iterable[tuple[str, str]]]) -> dg.TableColumnLineage:
    return dg.TableColumnLineage(deps_by_column={
        column: [dg.TableColumnDep(asset_key=raw(t), column_name=c) for t, c in deps]
        for column, deps in mapping.items()
    })


LINEAGE: dict[str, dg.TableColumnLineage] = {
    "contacts": _lineage({
        "id": [("ocrd", "CardCode")], "sap_key": [("ocrd", "CardCode")], "customer_id": [("ocrd", "CardCode")],
        "card_type": [("ocrd", "CardType")], "sap_email": [("ocrd", "EmailAddress")],
        "email": [("ocrd", "EmailAddress")], "prefix": [("ocrd", "CardName")],
        "firstname": [("ocrd", "CardName")], "middlename": [("ocrd", "CardName")],
        "lastname": [("ocrd", "CardName")], "phone_number": [("ocrd", "Cellular"), ("ocrd", "Phone1")],
        "country_id": [("ocrd", "Country")], "group_code": [("ocrd", "GroupCode")],
        "group_name": [("ocrg", "Name")],
        "marketing_optin": [("ocrd", "BlockSendingMarketingContent")],
        "is_deleted": [("ocrd", "_deleted_at")],
        "sap_updated_at": [("ocrd", "UpdateDate"), ("ocrd", "UpdateTime")],
    }),
    "orders": _lineage({
        "sap_key": [("ordr", "DocEntry"), ("orin", "DocEntry")],
        "id": [("ordr", "DocEntry"), ("orin", "DocEntry")],
        "doc_num": [("ordr", "DocNum"), ("orin", "DocNum")],
        "customer_id": [("ordr", "CardCode"), ("orin", "CardCode")],
        "order_timestamp": [("ordr", "DocDate"), ("ordr", "DocTime"), ("orin", "DocDate"), ("orin", "DocTime")],
        "sap_currency": [("ordr", "DocCurrency"), ("orin", "DocCurrency")],
        "grand_total": [("ordr", "DocTotal"), ("ordr", "DocTotalFc"), ("orin", "DocTotal"), ("orin", "DocTotalFc")],
        "grand_total_local": [("ordr", "DocTotal"), ("orin", "DocTotal")],
        "tax": [("ordr", "VatSum"), ("ordr", "VatSumFc"), ("orin", "VatSum"), ("orin", "VatSumFc")],
        "shipping": [("rdr3", "LineTotal"), ("rdr3", "LineTotalFC"), ("rin3", "LineTotal"), ("rin3", "LineTotalFC")],
        "subtotal": [("rdr1", "Quantity"), ("rdr1", "UnitPrice"), ("rin1", "Quantity"), ("rin1", "UnitPrice")],
        "sap_state": [("ordr", "DocumentStatus"), ("ordr", "CancelStatus"), ("dln1", "BaseEntry"),
                      ("rdr1", "RemainingOpenQuantity")],
    }),
    "refunds": _lineage({
        "sap_key": [("orin", "DocEntry")], "doc_num": [("orin", "DocNum")],
        "customer_id": [("orin", "CardCode")], "sap_currency": [("orin", "DocCurrency")],
        "amount": [("orin", "DocTotal"), ("orin", "DocTotalFc")], "amount_local": [("orin", "DocTotal")],
        "refund_timestamp": [("orin", "DocDate"), ("orin", "DocTime")],
        "linked_order_ids": [("rin1", "BaseEntry"), ("inv1", "BaseEntry"), ("dln1", "BaseEntry")],
    }),
    "products": _lineage({
        "id": [("oitm", "ItemCode")], "sap_key": [("oitm", "ItemCode")], "sku": [("oitm", "ItemCode")],
        "title": [("oitm", "ItemName")], "price": [("itm1", "Price")], "sap_currency": [("itm1", "Currency")],
        "is_sales_item": [("oitm", "SalesItem")], "is_frozen": [("oitm", "Frozen")],
        "is_deleted": [("oitm", "_deleted_at")],
    }),
    "stock": _lineage({
        "id": [("oitm", "ItemCode")], "sap_key": [("oitm", "ItemCode")],
        "available_qty": [("oitw", "InStock"), ("oitw", "Committed")],
        "warehouses_counted": [("oitw", "WarehouseCode")],
        "is_inventory_item": [("oitm", "InventoryItem")],
    }),
}


def _definition_metadata(table: str) -> dict:
    return {
        "dagster/column_schema": table_schema(table),
        "dagster/column_lineage": LINEAGE[table],
        "dagster/table_name": f"ometria.{table}",
    }


# ---------------------------------------------------------------------------------------------
# Shared I/O helpers
# ---------------------------------------------------------------------------------------------

class MissingUpstreamError(RuntimeError):
    """A landed SAP table this asset needs is not in the warehouse yet."""


def read_raw(con: duckdb.DuckDBPyConnection, table: str, required: bool = True,
             columns: Iterable[str] | None = None, where: str | None = None,
             params: list | None = None) -> pl.DataFrame | None:
    """A landed table, or only `columns` of it (those it has; a missing one is the transform's
    to report) and only the rows matching `where`."""
    if not table_exists(con, "sap_raw", table):
        if required:
            raise MissingUpstreamError(
                f"sap_raw.{table} does not exist: materialise the sap_raw/{table} asset first"
            )
        return None
    if columns is None:
        return read_table(con, "sap_raw", table, where=where, params=params)
    have = [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'sap_raw' "
        "AND table_name = ? ORDER BY ordinal_position", [table]).fetchall()]
    wanted = set(columns)
    select = ", ".join('"' + c.replace('"', '""') + '"' for c in have if c in wanted)
    sql = f'SELECT {select or "*"} FROM sap_raw."{table}"'
    if where:
        sql += f" WHERE {where}"
    return con.sql(sql, params=params or []).pl()


def load_run_mapping(con: duckdb.DuckDBPyConnection) -> Mapping:
    """The mapping file, checked against the UDFs SAP declares (an error names file, key, value)."""
    mapping = load_mapping(get_settings().mapping_path)
    cufd = read_raw(con, "cufd")
    return validate_against_cufd(mapping, cufd)  # type: ignore[arg-type]


def _previous_hashes(con: duckdb.DuckDBPyConnection, table: str) -> pl.DataFrame | None:
    if not table_exists(con, "ometria", table):
        return None
    cols = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'ometria' AND table_name = ?",
        [table]).fetchall()}
    if not {"id", "payload_hash"} <= cols:
        return None
    return con.sql(f'SELECT id, payload_hash FROM ometria."{table}"').pl()


def change_counts(previous: pl.DataFrame | None, current: pl.DataFrame) -> dict[str, int]:
    """New / changed / unchanged payloads and removed records, by Ometria id."""
    cur = current.select("id", "payload_hash").drop_nulls("id").unique("id", keep="first")
    if previous is None:
        return {"payloads_new": cur.height, "payloads_changed": 0, "payloads_unchanged": 0, "records_removed": 0}
    prev = previous.drop_nulls("id").unique("id", keep="first").rename({"payload_hash": "_prev"})
    joined = cur.join(prev, on="id", how="left")
    return {
        "payloads_new": joined.filter(pl.col("_prev").is_null()).height,
        "payloads_changed": joined.filter(pl.col("_prev").is_not_null() & (pl.col("_prev") != pl.col("payload_hash"))).height,
        "payloads_unchanged": joined.filter(pl.col("_prev") == pl.col("payload_hash")).height,
        "records_removed": prev.join(cur, on="id", how="anti").height,
    }


def held_back_counts(frame: pl.DataFrame) -> dict[str, int]:
    """Rows per hold-back reason (a row with two reasons counts under both); validation details
    are grouped under their field (`invalid_payload: customer.email`)."""
    reasons = (
        frame.select(pl.col("held_back_reason").drop_nulls().str.split("; ").explode().alias("r"))
        .select(pl.when(pl.col("r").str.starts_with("invalid_payload"))
                .then(pl.col("r").str.extract(r"^(invalid_payload: [^:]+)", 1)).otherwise(pl.col("r")).alias("r"))
        .group_by("r").len()
    )
    return {str(r): int(n) for r, n in sorted(reasons.rows())}


def result_metadata(table: str, frame: pl.DataFrame, previous: pl.DataFrame | None,
                    extra: dict | None = None, descriptions: dict[str, str] | None = None) -> dict:
    held = frame.filter(pl.col("held_back_reason").is_not_null()).height
    types = {name: _duck_type(dtype) for name, dtype in frame.schema.items()}
    md: dict = {
        "dagster/row_count": frame.height,
        "dagster/table_name": f"ometria.{table}",
        "dagster/column_schema": table_schema(table, descriptions=descriptions or DESCRIPTIONS[table], types=types),
        "dagster/column_lineage": LINEAGE[table],
        "held_back": held,
        "pushable": frame.height - held,
        "held_back_by_reason": dg.MetadataValue.json(held_back_counts(frame)),
    }
    if "payload_hash" in frame.columns:
        md.update(change_counts(previous, frame))
    if "warnings" in frame.columns:
        md["rows_with_warnings"] = frame.filter(pl.col("warnings").list.len() > 0).height
    md.update(extra or {})
    return md


def _duck_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Decimal):
        return f"DECIMAL({dtype.precision},{dtype.scale})"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMPTZ" if dtype.time_zone else "TIMESTAMP"
    if isinstance(dtype, pl.List):
        return f"{_duck_type(dtype.inner)}[]"
    if isinstance(dtype, pl.Struct):
        return "STRUCT(" + ", ".join(f"{f.name} {_duck_type(f.dtype)}" for f in dtype.fields) + ")"
    return {pl.String: "VARCHAR", pl.Boolean: "BOOLEAN", pl.Int32: "INTEGER", pl.Int64: "BIGINT",
            pl.Float64: "DOUBLE", pl.Date: "DATE"}.get(dtype, str(dtype).upper())


@contextmanager
def fast_string_writes(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """DuckDB's DICT_FSST string compression took 18 s of a 22 s write of a million order
    payloads (x100 demo company, 2 cores); without it they are stored plain (~3x the disk) in
    4.5 s. Used for full rebuilds; incremental builds write a few rows with the defaults."""
    con.execute("SET disabled_compression_methods = 'dict_fsst'")
    try:
        yield
    finally:
        con.execute("RESET disabled_compression_methods")


def write_ometria(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame,
                  descriptions: dict[str, str]) -> None:
    """Replace the table and document it in DuckDB too (COMMENT ON), for SQL users."""
    with fast_string_writes(con):
        write_table(con, "ometria", table, frame)
    for column in frame.columns:
        text = descriptions.get(column)
        if text:
            con.execute(f'COMMENT ON COLUMN ometria."{table}"."{column}" IS ' + _sql_literal(text))


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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


@dg.asset(
    key=["ometria", "contacts"],
    group_name=GROUP,
    kinds=KINDS,
    deps=[raw("ocrd"), raw("ocrg"), raw("cufd")],
    pool="duckdb",
    metadata=_definition_metadata("contacts"),
)
def ometria_contacts(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Ometria contacts: one row per SAP customer (Business Partner of the configured types).

    id and customer_id are the CardCode (so orders link to the contact), email trimmed and
    lower-cased, names split from CardName, phone in E.164, country, consent from SAP's
    block-marketing flag and the opt-in UDF (never an implied opt-in), UDFs and the BP group as
    custom properties, segments from the mapping's rules. Sent with `@merge: true` into the
    `OMETRIA_COLLECTION` collection. Customers without an email are sent without one; an invalid
    email or a BP deleted in SAP holds the row back (`held_back_reason`) for the exceptions report.
    """
    settings = get_settings()
    with warehouse.connect() as con:
        mapping = load_run_mapping(con)
        ocrd = read_raw(con, "ocrd")
        ocrg = read_raw(con, "ocrg", required=False)
        # phone validations of earlier runs: only new numbers go through libphonenumber
        known = read_table(con, "ometria", PHONE_LOOKUP) if table_exists(con, "ometria", PHONE_LOOKUP) else None
        phones = tc.phone_lookup(ocrd, mapping, known)  # type: ignore[arg-type]
        frame = tc.build_contacts(ocrd, ocrg, mapping, collection=settings.ometria_collection,  # type: ignore[arg-type]
                                  zone=settings.sap_ometria_timezone, known_phones=phones,
                                  run_started_at=_run_started_at(context))
        previous = _previous_hashes(con, "contacts")
        write_ometria(con, "contacts", frame, tc.DESCRIPTIONS)
        write_table(con, "ometria", PHONE_LOOKUP, phones)
        con.execute(f"COMMENT ON TABLE ometria.{PHONE_LOOKUP} IS " + _sql_literal(
            "Cache of libphonenumber results per distinct (raw phone, region) of SAP customers, "
            "kept so later runs validate only new numbers. Safe to drop."))
    context.log.info("ometria.contacts: %s rows", frame.height)
    return dg.MaterializeResult(metadata=result_metadata("contacts", frame, previous, {
        "mapping_file": str(settings.mapping_path),
        "collection": settings.ometria_collection,
        "phones_validated_this_run": phones.height - (known.height if known is not None else 0),
    }))


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
            metadata=_definition_metadata("orders"),
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
            metadata=_definition_metadata("refunds"),
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
        print_ = inc.fingerprint(mapping, zone)
        # read before the sources: a row landed while we build is newer and caught next time
        high_water = inc.landed_high_water(con)
        plan = inc.RebuildPlan("full rebuild requested") if config.full_rebuild else inc.plan_rebuild(con, print_)
        full = plan.full_reason is not None
        slices = _full_build_slices(con) if full else 1
        if full:  # a full build that fails half-way must not be taken as a base for increments
            inc.forget_build(con)
        if full and slices > 1:
            # in slices, each written before the next is built: the sources, the frames and a
            # million payloads never sit in memory at once
            previous = _previous_hashes(con, "orders")
            inc.prepare_links(con, with_previous=False)
            # DuckDB's buffer pool would otherwise hold on to the slices' reads and writes (x100:
            # peak 4.2 GiB uncapped, 2.7 GiB at 1GB); beyond the limit it spills, it does not fail
            con.execute(f"SET memory_limit = '{FULL_BUILD_DUCKDB_MEMORY}'")
            try:
                for part in range(slices):
                    inc.fill_chunk(con, part, slices)
                    result = _build(con, mapping, zone, inc.subset_filters())
                    if part == 0:
                        write_ometria(con, "orders", result.orders, to.DESCRIPTIONS)
                        write_ometria(con, "refunds", result.refunds, tr.DESCRIPTIONS)
                    else:
                        with fast_string_writes(con):
                            _upsert_rebuilt(con, result)
                    del result
            finally:  # back to the warehouse's configured cap (lib/warehouse.connect)
                configured = settings.sap_ometria_duckdb_memory_limit
                con.execute(f"SET memory_limit = '{configured}'" if configured else "RESET memory_limit")
            # a credit memo reaching two slices is built in both: count from the stored table
            modes = dict(con.execute("SELECT mode_applied, count(*) FROM ometria.refunds GROUP BY 1").fetchall())
            result = to.OrdersResult(
                orders=con.sql("SELECT * EXCLUDE (payload) FROM ometria.orders").pl(),
                refunds=con.sql("SELECT * FROM ometria.refunds").pl(), stats={
                    "credit_memos_counted": sum(v for k, v in modes.items() if not str(k).startswith("excluded")),
                    "credit_memos_on_original": modes.get("refund_on_original", 0),
                    "credit_memos_negative_orders": modes.get("negative_order", 0) + modes.get("negative_order_fallback", 0),
                    "credit_memos_fallback": modes.get("negative_order_fallback", 0),
                })
        elif full or plan.orders or plan.memos:
            result = _build(con, mapping, zone, {} if full else inc.subset_filters())
            if full:
                previous = _previous_hashes(con, "orders")
                write_ometria(con, "orders", result.orders, to.DESCRIPTIONS)
                write_ometria(con, "refunds", result.refunds, tr.DESCRIPTIONS)
            else:
                previous = _previous_rebuilt_hashes(con)
                _upsert_rebuilt(con, result)
        else:
            result = _build(con, mapping, zone, {"ordr": "false", "rdr1": "false", **dict.fromkeys(
                ("rdr3", "orin", "rin1", "rin3", "odln", "dln1", "inv1", "ocrd"), "false")})
            previous = _previous_rebuilt_hashes(con)
        inc.record_build(con, high_water, print_, "full" if full else "incremental", datetime.now(UTC))
        summary = _table_summary(con)
    context.log.info("ometria.orders: %s (%s), %s order(s) and %s credit memo(s) rebuilt",
                     "full rebuild" if full else "incremental", plan.full_reason or f"landed after {plan.since}",
                     result.orders.filter(pl.col("sap_object") == "ORDR").height, result.refunds.height)
    build = {
        "build_mode": "full" if full else "incremental",
        "full_rebuild_reason": plan.full_reason or "",
        "orders_rebuilt": result.orders.filter(pl.col("sap_object") == "ORDR").height,
        "credit_memos_rebuilt": result.refunds.height,
    }
    metadata = result_metadata("orders", result.orders, previous, {
        "credit_memo_mode": mapping.credit_memos.mode, **build, **summary["objects"],
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
            **build,
        },
    )


FULL_BUILD_DUCKDB_MEMORY = "1GB"


def _build(con: duckdb.DuckDBPyConnection, mapping: Mapping, zone: str, filters: dict[str, str]) -> to.OrdersResult:
    """Read the projected (and, for a partial build, filtered) sources and build."""
    return to.build_orders(to.OrderInputs(**{  # type: ignore[arg-type]
        t: read_raw(con, t, required=t in ("ordr", "rdr1"), columns=c, where=filters.get(t))
        for t, c in to.input_columns(mapping).items()
    }), mapping, zone=zone)


def _full_build_slices(con: duckdb.DuckDBPyConnection) -> int:
    """How many slices a full build takes (1 when the tables slices need are not all landed)."""
    if not all(table_exists(con, "sap_raw", t) for t in inc.ORDER_TABLES):
        return 1
    n = con.execute("SELECT count(*) FROM sap_raw.ordr").fetchall()[0][0]
    return max(1, -(-n // inc.FULL_BUILD_SLICE))


def _previous_rebuilt_hashes(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """id/payload_hash of the rows an incremental build replaces (for new/changed counts)."""
    return con.sql(f"""SELECT id, payload_hash FROM ometria.orders
        WHERE (sap_object = 'ORDR' AND TRY_CAST(sap_key AS BIGINT) IN (SELECT entry FROM {inc.ORDER_SET}))
           OR (sap_object = 'ORIN' AND TRY_CAST(sap_key AS BIGINT) IN (SELECT entry FROM {inc.MEMO_SET}))""").pl()


def _upsert_rebuilt(con: duckdb.DuckDBPyConnection, result: to.OrdersResult) -> None:
    """Replace the rebuilt documents' rows (one transaction: readers never see half a build)."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"""DELETE FROM ometria.orders
            WHERE (sap_object = 'ORDR' AND TRY_CAST(sap_key AS BIGINT) IN (SELECT entry FROM {inc.ORDER_SET}))
               OR (sap_object = 'ORIN' AND TRY_CAST(sap_key AS BIGINT) IN (SELECT entry FROM {inc.MEMO_SET}))""")
        con.execute(f"DELETE FROM ometria.refunds WHERE TRY_CAST(sap_key AS BIGINT) IN (SELECT entry FROM {inc.MEMO_SET})")
        for table, frame in (("orders", result.orders), ("refunds", result.refunds)):
            if frame.height:
                con.register("_rebuilt_rows", frame)
                try:
                    con.execute(f"INSERT INTO ometria.{table} BY NAME SELECT * FROM _rebuilt_rows")
                finally:
                    con.unregister("_rebuilt_rows")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _table_summary(con: duckdb.DuckDBPyConnection) -> dict:
    """Counts over the whole ometria.orders / ometria.refunds tables."""
    rows = con.sql("SELECT sap_object, held_back_reason, len(warnings) > 0 AS warned FROM ometria.orders").pl()
    held = rows.filter(pl.col("held_back_reason").is_not_null()).height
    modes = con.execute("SELECT mode_applied, count(*) FROM ometria.refunds GROUP BY 1").fetchall()
    return {
        "orders": {
            "dagster/row_count": rows.height,
            "held_back": held,
            "pushable": rows.height - held,
            "held_back_by_reason": dg.MetadataValue.json(held_back_counts(rows)),
            "rows_with_warnings": rows.filter(pl.col("warned").fill_null(False)).height,
        },
        "objects": {
            "orders_from_sap": rows.filter(pl.col("sap_object") == "ORDR").height,
            "negative_orders_from_credit_memos": rows.filter(pl.col("sap_object") == "ORIN").height,
        },
        "refunds_rows": con.execute("SELECT count(*) FROM ometria.refunds").fetchall()[0][0],
        "by_mode_applied": {str(k): int(v) for k, v in modes},
    }


@dg.asset(
    key=["ometria", "products"],
    group_name=GROUP,
    kinds=KINDS,
    deps=[raw("oitm"), raw("itm1"), raw("cufd")],
    pool="duckdb",
    metadata=_definition_metadata("products"),
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
        previous = _previous_hashes(con, "products")
        write_ometria(con, "products", frame, tp.DESCRIPTIONS)
    context.log.info("ometria.products: %s rows", frame.height)
    return dg.MaterializeResult(metadata=result_metadata("products", frame, previous, {
        "mapping_file": str(settings.mapping_path), "price_list": mapping.products.price_list,
    }))


@dg.asset(
    key=["ometria", "stock"],
    group_name=GROUP,
    kinds=KINDS,
    deps=[raw("oitm"), raw("oitw"), raw("owhs"), raw("cufd")],
    pool="duckdb",
    metadata=_definition_metadata("stock"),
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
        previous = _previous_hashes(con, "stock")
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
    }, descriptions=descriptions))
