"""What the Dagster UI shows about the ometria.* tables: column types and descriptions, column
lineage back to the landed SAP tables, and the metadata each materialisation reports (rows,
held back by reason, new/changed/unchanged payloads). `table_schema` and `described_table` are
the one way every layer builds its `dagster/column_schema`.
"""

from collections.abc import Iterable

import dagster as dg
import duckdb
import polars as pl

from sap_ometria_assets.lib.transforms import contacts as tc
from sap_ometria_assets.lib.transforms import orders as to
from sap_ometria_assets.lib.transforms import products as tp
from sap_ometria_assets.lib.transforms import refunds as tr
from sap_ometria_assets.lib.transforms import stock as ts


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


def described_table(table: str, columns: dict[str, tuple[str, str]]) -> dict:
    """Catalog metadata of one of our own tables (`schema.table`) from its columns' (type,
    description) pairs, as `lib.warehouse.sql.ddl_columns` reads them from the table's DDL."""
    schema = table_schema(table, descriptions={c: d for c, (_, d) in columns.items()},
                          types={c: t for c, (t, _) in columns.items()})
    return {"dagster/table_name": table, "dagster/column_schema": schema}


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


def definition_metadata(table: str) -> dict:
    return {
        "dagster/column_schema": table_schema(table),
        "dagster/column_lineage": LINEAGE[table],
        "dagster/table_name": f"ometria.{table}",
    }


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


def table_summary(con: duckdb.DuckDBPyConnection) -> dict:
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
