"""SAP marketing documents (sales orders ORDR/RDR1/RDR3, A/R credit memos ORIN/RIN1/RIN3) ->
prepared headers and lines, the common ground of the orders and the credit memo transforms.

Headers get their amounts in cents of the document currency (the `...Fc` fields when it is not
the local currency), their time in the company zone, the cancellation flags, and the reasons a
document cannot be sent; lines get quantity, net, gross, subtotal (quantity x unit price before
line discount), discount and tax in cents. Cancellation documents are dropped here: they are never
orders. The columns the documents must have are `HEADER_REQUIRED`, `LINE_REQUIRED` and
`EXPENSE_REQUIRED`.
"""

from __future__ import annotations

import polars as pl

from sap_ometria_assets.lib.ometria.mapping import Mapping
from sap_ometria_assets.lib.transforms.frames import dedupe_latest, require_columns, with_optional
from sap_ometria_assets.lib.transforms.localtime import with_local_time
from sap_ometria_assets.lib.transforms.values import (
    DEC,
    cents,
    currency_iso,
    currency_reason,
    decimal,
    implausible_doc_date,
    join_reasons,
    text,
    yes,
)

HEADER_REQUIRED = ("DocEntry", "DocDate", "CardCode", "DocCurrency", "DocTotal", "DocTotalFc",
                   "VatSum", "VatSumFc", "DocumentStatus")
LINE_REQUIRED = ("DocEntry", "LineNum", "ItemCode", "Quantity", "UnitPrice", "LineTotal",
                 "RowTotalFC", "GrossTotal", "GrossTotalFC")
EXPENSE_REQUIRED = ("DocEntry", "LineTotal", "LineTotalFC")


def document_flags(df: pl.DataFrame) -> pl.DataFrame:
    df = with_optional(df, {"_is_cancellation": pl.Boolean, "CancelStatus": pl.String,
                            "Cancelled": pl.String, "DocTime": pl.String, "DocNum": pl.Int64,
                            "CardName": pl.String, "_landed_at": pl.Datetime("us", "UTC")})
    cancel_status = pl.col("CancelStatus").cast(pl.String)
    return df.with_columns(
        (pl.col("_is_cancellation").fill_null(False) | (cancel_status == "csCancellation").fill_null(False))
        .alias("_is_cancellation_doc"),
        (yes("Cancelled") | (cancel_status == "csYes").fill_null(False)).alias("_is_cancelled"),
    )


HEADER_OPTIONAL = ("DocNum", "DocTime", "CardName", "Cancelled", "CancelStatus", "_landed_at")
LINE_OPTIONAL: dict[str, pl.DataType] = {
    "Currency": pl.String, "RemainingOpenQuantity": DEC, "LineStatus": pl.String, "TaxTotal": DEC,
    "BaseType": pl.Int64, "BaseEntry": pl.Int64, "BaseLine": pl.Int64,
}


def prepare_documents(
    header: pl.DataFrame,
    lines: pl.DataFrame | None,
    expenses: pl.DataFrame | None,
    table: str,
    mapping: Mapping,
    zone: str,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Headers with amounts in cents (document currency) and their prepared lines.

    Cancellation documents are removed here: they are never orders.
    """
    line_table, expense_table = f"{table[1:]}1", f"{table[1:]}3"
    require_columns(header, table, HEADER_REQUIRED)
    # Only the columns used from here on: joins gather every column they carry.
    udfs = [m.sap_field for m in mapping.udfs.Order]
    if mapping.orders.channel.udf:
        udfs.append(mapping.orders.channel.udf)
    keep = [*HEADER_REQUIRED, *HEADER_OPTIONAL, *udfs, "_is_cancellation_doc", "_is_cancelled"]
    h = document_flags(header)
    h = h.select([c for c in dict.fromkeys(keep) if c in h.columns]).filter(~pl.col("_is_cancellation_doc"))
    h, dup = dedupe_latest(h, ["DocEntry"])
    iso = currency_iso(pl.col("DocCurrency"), mapping)
    h = with_local_time(h, "DocDate", "DocTime", zone, "_ts")
    h = h.with_columns(
        pl.col("DocEntry").cast(pl.Int64, strict=False).alias("_entry"),
        iso.alias("_currency"),
        currency_reason(pl.col("DocCurrency"), iso).alias("_currency_reason"),
        dup.alias("_dup_reason"),
    ).with_columns(
        (pl.col("_currency") == mapping.currencies.local).fill_null(True).alias("_is_local"),
    )
    s = h.schema
    h = h.with_columns(
        cents(pl.when(pl.col("_is_local")).then(decimal("DocTotal", s["DocTotal"]))
              .otherwise(decimal("DocTotalFc", s["DocTotalFc"])), DEC).alias("_grand_c"),
        cents(pl.when(pl.col("_is_local")).then(decimal("VatSum", s["VatSum"]))
              .otherwise(decimal("VatSumFc", s["VatSumFc"])), DEC).alias("_tax_c"),
        cents("DocTotal", s["DocTotal"]).alias("_grand_local_c"),
    )

    # lines
    ln = lines if lines is not None and lines.height else None
    if ln is None:
        ln = pl.DataFrame(schema={"DocEntry": pl.Int64, "LineNum": pl.Int64, "ItemCode": pl.String,
                                  "Quantity": DEC, "UnitPrice": DEC, "LineTotal": DEC, "RowTotalFC": DEC,
                                  "GrossTotal": DEC, "GrossTotalFC": DEC})
    require_columns(ln, line_table, LINE_REQUIRED)
    ln = with_optional(ln, LINE_OPTIONAL).select([*LINE_REQUIRED, *LINE_OPTIONAL])
    ln = ln.with_columns(pl.col("DocEntry").cast(pl.Int64, strict=False).alias("_entry")).join(
        h.select("_entry", "_is_local", "DocCurrency"), on="_entry", how="inner"
    )
    ls = ln.schema
    same_ccy = pl.col("Currency").is_null() | (pl.col("Currency").cast(pl.String) == pl.col("DocCurrency").cast(pl.String))
    qty = decimal("Quantity", ls["Quantity"])
    # choose the currency's column first, then convert once (when/then evaluates both branches)
    net_c = cents(pl.when(pl.col("_is_local")).then(decimal("LineTotal", ls["LineTotal"]))
                  .otherwise(decimal("RowTotalFC", ls["RowTotalFC"])), DEC)
    gross_raw = pl.when(pl.col("_is_local")).then(
        pl.coalesce(decimal("GrossTotal", ls["GrossTotal"]),
                    decimal("LineTotal", ls["LineTotal"]) + decimal("TaxTotal", ls["TaxTotal"]))
    ).otherwise(decimal("GrossTotalFC", ls["GrossTotalFC"]))
    gross_c = cents(gross_raw, DEC)
    unit = decimal("UnitPrice", ls["UnitPrice"])
    ln = ln.with_columns(
        pl.col("LineNum").cast(pl.Int64, strict=False).alias("_line"),
        text("ItemCode").alias("_item"),
        qty.alias("_qty"),
        net_c.alias("_net_c"),
        gross_c.alias("_gross_c"),
        same_ccy.fill_null(True).alias("_same_ccy"),
        unit.alias("_unit"),
        (pl.col("Quantity").is_not_null() & qty.is_null()).alias("_bad_qty"),
        pl.col("BaseType").cast(pl.Int64, strict=False).alias("_base_type"),
        pl.col("BaseEntry").cast(pl.Int64, strict=False).alias("_base_entry"),
        pl.col("BaseLine").cast(pl.Int64, strict=False).alias("_base_line"),
    )
    # Unit price x quantity is the pre-discount subtotal, unless the line is priced in another
    # currency than the document (then LineTotal is the only amount in document currency).
    unit_sub_c = cents(pl.col("_unit") * pl.col("_qty"), DEC)
    # A quantity-0 line (a charge or a note line with an amount) has no unit x quantity to
    # discount from: its subtotal is its net amount, so no discount is invented.
    ln = ln.with_columns(
        pl.when(pl.col("_same_ccy") & pl.col("_unit").is_not_null() & (pl.col("_qty") != 0))
        .then(unit_sub_c).otherwise(pl.col("_net_c"))
        .alias("_subtotal_c"),
        pl.when(pl.col("_same_ccy") & pl.col("_unit").is_not_null()).then(cents(pl.col("_unit"), DEC))
        .otherwise(pl.when(pl.col("_qty") != 0).then(cents(pl.col("_net_c").cast(DEC) / 100 / pl.col("_qty"), DEC)))
        .alias("_unit_c"),
    ).with_columns(
        (pl.col("_net_c") - pl.col("_subtotal_c")).alias("_discount_c"),
        (pl.col("_gross_c") - pl.col("_net_c")).alias("_tax_line_c"),
        (pl.col("_qty").is_null() | pl.col("_net_c").is_null() | pl.col("_gross_c").is_null()
         | pl.col("_subtotal_c").is_null() | pl.col("_unit_c").is_null()).alias("_bad_amount"),
    )

    # freight
    ex = expenses if expenses is not None and expenses.height else None
    if ex is not None:
        require_columns(ex, expense_table, EXPENSE_REQUIRED)
        ex = ex.with_columns(pl.col("DocEntry").cast(pl.Int64, strict=False).alias("_entry")).join(
            h.select("_entry", "_is_local"), on="_entry", how="inner"
        )
        es = ex.schema
        ship = (
            ex.with_columns(
                pl.when(pl.col("_is_local")).then(cents("LineTotal", es["LineTotal"]))
                .otherwise(cents("LineTotalFC", es["LineTotalFC"])).alias("_c"),
                (pl.col("LineTotal").is_not_null() | pl.col("LineTotalFC").is_not_null()).alias("_present"),
            )
            .group_by("_entry")
            .agg(pl.col("_c").sum().alias("_shipping_c"),
                 (pl.col("_c").is_null() & pl.col("_present")).any().alias("_bad_shipping"))
        )
    else:
        ship = pl.DataFrame(schema={"_entry": pl.Int64, "_shipping_c": pl.Int64, "_bad_shipping": pl.Boolean})

    per_doc = ln.group_by("_entry").agg(
        pl.col("_subtotal_c").sum().alias("_subtotal_c"),
        pl.len().alias("_n_lines"),
        pl.col("_bad_amount").any().alias("_bad_lines"),
        pl.col("_bad_qty").any().alias("_bad_qty_any"),
        (pl.col("_qty") < 0).any().alias("_neg_qty"),
        pl.col("_line").is_duplicated().any().alias("_dup_lines"),
    )
    h = h.join(per_doc, on="_entry", how="left").join(ship, on="_entry", how="left").with_columns(
        pl.col("_n_lines").fill_null(0),
        pl.col("_shipping_c").fill_null(0),
        pl.col("_subtotal_c").fill_null(0),
    ).with_columns(
        (pl.col("_grand_c") - pl.col("_subtotal_c") - pl.col("_shipping_c") - pl.col("_tax_c")).alias("_discount_c"),
        join_reasons(
            pl.col("_dup_reason"),
            pl.when(pl.col("_entry").is_null()).then(pl.lit("missing_sap_key")),
            pl.col("_currency_reason"),
            pl.when(pl.col("_ts").is_null()).then(pl.lit("missing_doc_date")),
            implausible_doc_date(pl.col("DocDate")),
            pl.when(pl.col("_grand_c").is_null() | pl.col("_tax_c").is_null()
                    | pl.col("_bad_lines").fill_null(False) | pl.col("_bad_shipping").fill_null(False)
                    | pl.col("_bad_qty_any").fill_null(False))
            .then(pl.lit("invalid_amount")),
            pl.when(pl.col("_n_lines") == 0).then(pl.lit("no_lines")),
            pl.when(pl.col("_neg_qty").fill_null(False)).then(pl.lit("negative_quantity")),
            pl.when(pl.col("_dup_lines").fill_null(False)).then(pl.lit("duplicate_line")),
        ).alias("_doc_reason"),
    )
    return h, ln

