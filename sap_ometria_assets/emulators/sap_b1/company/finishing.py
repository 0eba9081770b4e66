"""Finishing the tables, shared by the initial generation and the ticks: merging and renumbering
document parts, cancellation documents, the final column order and dtypes of documents and master
data (`_canon`), and stock refreshed from the open documents.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sap_ometria_assets.emulators.sap_b1.company.builders import _copy_docs
from sap_ometria_assets.emulators.sap_b1.company.constants import (
    DAY, DOC_NUM_BASE, DOC_TABLES, EXPENSE_DTYPES, HEADER_DTYPES, LINE_DTYPES, NOW_S, OBJECT_CODE,
)
from sap_ometria_assets.emulators.sap_b1.company.helpers import _concat, _date_of, _time_of
from sap_ometria_assets.emulators.sap_b1.company.schema import (
    EXPENSE_COLUMNS, HEADER_COLUMNS, ITEM_COLUMNS, ITEM_WHS_COLUMNS, LINE_COLUMNS, _S,
)


def _merge_renumber(table: str, parts):
    """Documents from several sources in one table, numbered by time (as SAP numbers them)."""
    hdrs, lines, exps, offset = [], [], [], 0
    for hdr, ln, ex, origin in parts:
        hdrs.append(hdr.with_columns(_tmp=pl.col("DocEntry").cast(pl.Int64) + offset, _origin=pl.lit(origin, pl.Int32)))
        lines.append(ln.with_columns(_tmp=pl.col("DocEntry").cast(pl.Int64) + offset))
        exps.append(ex.with_columns(_tmp=pl.col("DocEntry").cast(pl.Int64) + offset))
        offset += int(hdr["DocEntry"].max() or 0) + 1
    h = _concat(hdrs).sort("_t", "_tmp").with_columns(DocEntry=(pl.int_range(pl.len()) + 1).cast(pl.Int32))
    h = h.with_columns(DocNum=(pl.col("DocEntry") + DOC_NUM_BASE[table]).cast(pl.Int32))
    remap = np.zeros(offset + 1, np.int32)
    remap[h["_tmp"].to_numpy()] = h["DocEntry"].to_numpy()

    # Child rows keep their place: they only need to stay contiguous per document.
    def renumber(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(DocEntry=pl.Series(remap[df["_tmp"].to_numpy()])).drop("_tmp")

    return h.drop("_tmp"), renumber(_concat(lines)).select(LINE_COLUMNS), renumber(_concat(exps)).select(EXPENSE_COLUMNS)


def _cancel_documents(table: str, hdr: pl.DataFrame, lines: pl.DataFrame, exp: pl.DataFrame, entries: np.ndarray,
                      rng: np.random.Generator, at: np.ndarray | None = None):
    """Cancel documents SAP's way: the original closes as cancelled (csYes) and a cancellation
    document (csCancellation) copying it is added to the same table, its lines based on the original."""
    if len(entries) == 0:
        return hdr, lines, exp, []
    entries = np.sort(np.asarray(entries, dtype=np.int64))
    ids = pl.Series(entries.astype(np.int32)).implode()
    orig = hdr.filter(pl.col("DocEntry").is_in(ids)).sort("DocEntry")
    if at is None:
        room = np.maximum(NOW_S - 60 - orig["_u"].to_numpy(), 60)
        at = orig["_u"].to_numpy() + (rng.random(orig.height) * np.minimum(room, 2 * DAY)).astype(np.int64)
    at = np.asarray(at, dtype=np.int64)
    when = pl.DataFrame({"DocEntry": orig["DocEntry"], "_cu": at})
    src = lines.select("DocEntry", "Quantity").with_row_index("_row").join(when, on="DocEntry", maintain_order="left")
    pick = src.select("_row", "Quantity", _t="_cu", _freight=pl.lit(True))
    c_h, c_l, c_e = _copy_docs(hdr, lines, exp, pick, src_table=table, target_table=table,
                               first_entry=int(hdr["DocEntry"].max()) + 1)
    c_h = c_h.with_columns(
        DocumentStatus=pl.lit("bost_Close"), CancelStatus=pl.lit("csCancellation"), Cancelled=pl.lit("tNO"),
        Comments=pl.concat_str(pl.lit("Cancellation of "), pl.col("Comments")), PaidToDate=pl.lit(0.0),
    )
    if "_origin" in hdr.columns:
        c_h = c_h.with_columns(_origin=pl.lit(OBJECT_CODE[table], pl.Int32))
    c_l = c_l.with_columns(RemainingOpenQuantity=pl.lit(0.0), LineStatus=pl.lit("bost_Close"))
    hit = pl.col("_cu").is_not_null()
    hdr = hdr.join(when, on="DocEntry", how="left", maintain_order="left").with_columns(
        Cancelled=pl.when(hit).then(pl.lit("tYES")).otherwise(pl.col("Cancelled")),
        CancelStatus=pl.when(hit).then(pl.lit("csYes")).otherwise(pl.col("CancelStatus")),
        DocumentStatus=pl.when(hit).then(pl.lit("bost_Close")).otherwise(pl.col("DocumentStatus")),
        CancelDate=pl.when(hit).then(_date_of("_cu")).otherwise(pl.col("CancelDate")),
        _u=pl.coalesce("_cu", "_u"),
    ).drop("_cu")
    in_orig = pl.col("DocEntry").is_in(ids)
    lines = lines.with_columns(
        LineStatus=pl.when(in_orig).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")),
        RemainingOpenQuantity=pl.when(in_orig).then(0.0).otherwise(pl.col("RemainingOpenQuantity")),
    )
    cols = hdr.columns
    c_h = c_h.with_columns([pl.lit(None).alias(c) for c in cols if c not in c_h.columns]).select(cols)
    # New DocEntries are above every existing one: appending keeps the tables in key order.
    return (_concat([hdr, c_h.cast(hdr.schema)]), _concat([lines, c_l.cast(lines.schema)]),
            _concat([exp, c_e.cast(exp.schema)]), c_h["DocEntry"].to_list())


def _finish_doc(hdr: pl.DataFrame) -> pl.DataFrame:
    return hdr.with_columns(UpdateDate=_date_of("_u"), UpdateTime=_time_of("_u")).select(HEADER_COLUMNS)


def _finish_master(df: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    if "_u" in df.columns:
        df = df.with_columns(UpdateDate=_date_of("_u"), UpdateTime=_time_of("_u"))
    return df.select(columns)


def _canon(tables: dict[str, pl.DataFrame]) -> None:
    """Store the big document tables with their compact dtypes (no-op when already so)."""
    for names in DOC_TABLES.values():
        for name, dtypes in zip(names, (HEADER_DTYPES, LINE_DTYPES, EXPENSE_DTYPES)):
            schema = tables[name].schema
            todo = {c: d for c, d in dtypes.items() if schema[c] != d}
            if todo:
                tables[name] = tables[name].cast(todo)


def _refresh_stock(tables: dict[str, pl.DataFrame]) -> None:
    """Committed = open quantities of open sales orders (+ reservations); item totals = sum of warehouses."""
    open_docs = tables["ORDR"].filter((pl.col("DocumentStatus") == "bost_Open") & (pl.col("CancelStatus") == "csNo"))
    committed = (
        tables["RDR1"].filter((pl.col("LineStatus") == "bost_Open") & pl.col("DocEntry").is_in(open_docs["DocEntry"].implode()))
        .group_by(pl.col("ItemCode"), pl.col("WarehouseCode").cast(_S)).agg(_c=pl.col("RemainingOpenQuantity").sum())
    )
    reserved = tables["_RESERVED"].rename({"Extra": "_r"})
    oitw = (
        tables["OITW"].drop("Committed")
        .join(committed, on=["ItemCode", "WarehouseCode"], how="left", maintain_order="left")
        .join(reserved, on=["ItemCode", "WarehouseCode"], how="left", maintain_order="left")
        .with_columns(Committed=(pl.col("_c").fill_null(0.0) + pl.col("_r").fill_null(0.0)))
        .select(ITEM_WHS_COLUMNS)
    )
    tables["OITW"] = oitw
    sums = oitw.group_by("ItemCode").agg(_on=pl.col("InStock").sum(), _co=pl.col("Committed").sum(),
                                         _or=pl.col("Ordered").sum())
    tables["OITM"] = (
        tables["OITM"].join(sums, on="ItemCode", how="left", maintain_order="left")
        .with_columns(
            QuantityOnStock=pl.col("_on").fill_null(0.0),
            QuantityOrderedByCustomers=pl.col("_co").fill_null(0.0),
            QuantityOrderedFromVendors=pl.col("_or").fill_null(0.0),
        ).select(ITEM_COLUMNS)
    )


def _replace_rows(df: pl.DataFrame, new: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """Rows of `df` replaced in place (same position) by the rows of `new` with the same key."""
    if new.height == 0:
        return df
    new = new.select(df.columns).cast(df.schema)
    pos = df.select(key).with_row_index("_i").join(new.select(key).with_row_index("_j"), on=key, how="inner").sort("_j")
    old, upd = df.gather(pos["_i"]), new.gather(pos["_j"])
    idx = np.arange(df.height, dtype=np.int64)
    idx[pos["_i"].to_numpy()] = df.height + np.arange(pos.height)
    # Only the columns that changed are rebuilt; the others stay shared with `df`.
    cols = [pl.concat([df[c], upd[c]]).gather(pl.Series(idx)).alias(c)
            for c in df.columns if not old[c].equals(upd[c], null_equal=True)]
    return df.with_columns(cols) if cols else df


def _replace_children(df: pl.DataFrame, parents, new: pl.DataFrame) -> pl.DataFrame:
    """All child rows of `parents` replaced by `new` (appended: children stay contiguous per parent)."""
    kept = df.filter(~pl.col("DocEntry").is_in(pl.Series(list(parents), dtype=pl.Int32).implode()))
    return _concat([kept, new.select(df.columns).cast(df.schema)])


_PROTECTED_BPS = ("invalid_emails", "blank_emails", "duplicate_emails", "nameless_customers", "marketing_blocked",
                  "frozen_bps", "udf_invalid_values", "marketing_conflict", "sfr_customers", "us_customers",
                  "eur_customers", "suppliers", "leads", "numeric_card_codes", "invalid_phones",
                  "email_card_codes")
_PROTECTED_ITEMS = ("items_without_price", "items_without_name", "inactive_items", "frozen_items", "non_sales_items",
                    "oversized_items")
_PROTECTED_ORDERS = ("inconsistent_order_totals", "odd_partner_orders", "oversized_orders")
