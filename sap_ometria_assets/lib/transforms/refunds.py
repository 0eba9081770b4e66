"""A/R credit memos (ORIN/RIN1): tracing to the original order, the two Ometria refund modes,
the `ometria.refunds` trace table, and the net-value check.

Tracing: a credit memo line points at its source with BaseType/BaseEntry/BaseLine. The usual
chain is credit memo (14) -> invoice line (13) -> delivery line (15) -> order line (17); an
invoice can also be copied straight from the order (13 -> 17). Lines based on returns (16) or
nothing (-1) cannot be traced, since returns are not landed.

Which credit memos count: cancellation documents (CancelStatus csCancellation) and the originals
they cancel (csYes) net to zero in SAP, so neither touches Ometria; both keep a row in
`ometria.refunds` saying so.

Modes (mapping `credit_memos.mode`):
- `negative_order`: every counted credit memo is its own Ometria order with negative values,
  the customer of the credit memo, and `properties.original_order_id`.
- `refund_on_original`: a credit memo whose every line traces to a valid order in the same
  currency is applied to that order: `refunded` (credit memo line gross; freight, header discount
  and rounding of the credit memo go to its largest line so the amounts add up to its DocTotal)
  and `quantity_refunded` on the order lines, status `partial_refund`, or `refunded` with
  is_valid false when the credits equal the order's grand total. Any other credit memo falls back
  to a negative order, flagged (`credit_memo_fallback`, mode_applied `negative_order_fallback`).

Either way: per customer, sum over valid orders of (grand_total - refunded) = SAP's
orders minus credit memos, to the penny (`net_value_by_customer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from sap_ometria_assets.lib.ometria.mapping import Mapping
from sap_ometria_assets.lib.transforms.documents import HEADER_REQUIRED, document_flags, prepare_documents
from sap_ometria_assets.lib.transforms.frames import dedupe_latest
from sap_ometria_assets.lib.transforms.values import DEC, id_from_template, money_out, text

REFUND_COLUMNS: dict[str, str] = {
    "record_type": "Always 'refund' (a trace row; refunds are not a push feed).",
    "id": "Ometria order id carrying this credit memo: its own negative order (CN-...) or the "
    "original order it was applied to; NULL when the credit memo is excluded.",
    "sap_object": "Always ORIN.",
    "sap_key": "Credit memo DocEntry.",
    "doc_num": "Credit memo DocNum (as users see it).",
    "customer_id": "CardCode of the credit memo.",
    "refund_timestamp": "DocDate + DocTime of the credit memo in the company time zone.",
    "currency": "ISO 4217 currency of the credit memo.",
    "sap_currency": "SAP DocCurrency code.",
    "amount": "Amount credited (DocTotal / DocTotalFc, document currency, positive).",
    "amount_local": "Amount credited in local currency (DocTotal).",
    "linked_order_ids": "Ometria ids of the orders the credit memo lines trace back to.",
    "linked_order_id": "The first of linked_order_ids (NULL for a stand-alone credit memo).",
    "link_path": "How the lines were traced, e.g. 'invoice>delivery>order'; 'none' when they were not.",
    "mode_applied": "negative_order | refund_on_original | negative_order_fallback | "
    "excluded_cancellation_document | excluded_cancelled.",
    "is_full_refund": "refund_on_original: the order's credits equal its grand total (sent as refunded).",
    "held_back_reason": "Why the credit memo itself could not be sent (e.g. unmapped currency); "
    "NULL when fine or excluded.",
}

DESCRIPTIONS: dict[str, str] = REFUND_COLUMNS


@dataclass
class CreditMemos:
    headers: pl.DataFrame   # every ORIN row (deduped), with classification flags
    docs: pl.DataFrame      # prepared counted credit memos (not cancelled, not cancellations)
    lines: pl.DataFrame     # their prepared lines


@dataclass
class Applied:
    negative_docs: pl.DataFrame
    line_refunds: pl.DataFrame
    order_refunds: pl.DataFrame
    per_cm: pl.DataFrame
    stats: dict = field(default_factory=dict)


def prepare_credit_memos(inputs, mapping: Mapping, zone: str) -> CreditMemos:
    if inputs.orin is None or inputs.orin.height == 0:
        empty_h = pl.DataFrame(schema={"_entry": pl.Int64, "_is_cancellation_doc": pl.Boolean,
                                       "_is_cancelled": pl.Boolean})
        docs, lines = prepare_documents(
            _empty_header(), None, None, "orin", mapping, zone
        )
        return CreditMemos(empty_h, docs, lines)
    headers, _ = dedupe_latest(document_flags(inputs.orin), ["DocEntry"])
    headers = headers.with_columns(pl.col("DocEntry").cast(pl.Int64, strict=False).alias("_entry"))
    docs, lines = prepare_documents(inputs.orin, inputs.rin1, inputs.rin3, "orin", mapping, zone)
    docs = docs.filter(~pl.col("_is_cancelled"))
    lines = lines.join(docs.select("_entry"), on="_entry", how="semi")
    return CreditMemos(headers, docs, lines)


def _empty_header() -> pl.DataFrame:
    schema = {c: pl.String for c in HEADER_REQUIRED}
    schema.update({"DocEntry": pl.Int64, "DocDate": pl.Date, "DocTotal": DEC, "DocTotalFc": DEC,
                   "VatSum": DEC, "VatSumFc": DEC})
    return pl.DataFrame(schema=schema)


_HOP_SCHEMA = {"_t": pl.Int64, "_e": pl.Int64, "_l": pl.Int64, "_nt": pl.Int64, "_ne": pl.Int64,
               "_nl": pl.Int64, "_hop": pl.String}


def _hops(df: pl.DataFrame | None, object_type: int, name: str) -> pl.DataFrame:
    if df is None or df.height == 0 or not {"DocEntry", "LineNum", "BaseType", "BaseEntry", "BaseLine"} <= set(df.columns):
        return pl.DataFrame(schema=_HOP_SCHEMA)
    return df.select(
        pl.lit(object_type, pl.Int64).alias("_t"),
        pl.col("DocEntry").cast(pl.Int64, strict=False).alias("_e"),
        pl.col("LineNum").cast(pl.Int64, strict=False).alias("_l"),
        pl.col("BaseType").cast(pl.Int64, strict=False).alias("_nt"),
        pl.col("BaseEntry").cast(pl.Int64, strict=False).alias("_ne"),
        pl.col("BaseLine").cast(pl.Int64, strict=False).alias("_nl"),
        pl.lit(name).alias("_hop"),
    )


def resolve_links(cm: CreditMemos, inputs, order_lines: pl.DataFrame) -> pl.DataFrame:
    """Per counted credit memo line: the order line it credits (or nulls) and the path taken."""
    hops = pl.concat([_hops(inputs.inv1, 13, "invoice"), _hops(inputs.dln1, 15, "delivery")])
    cur = cm.lines.select(
        "_entry", "_line",
        pl.col("_base_type").alias("_t"), pl.col("_base_entry").alias("_e"), pl.col("_base_line").alias("_l"),
        pl.lit("").alias("_path"),
    )
    for _ in range(3):  # invoice -> delivery -> order is the longest chain
        # only the hop rows the frontier points at (invoice and delivery lines are millions,
        # the credit memo lines that reach them a few thousand); a line key landed twice (an
        # upstream error) resolves the same way whatever order the rows come in
        step = (
            hops.join(cur.select("_t", "_e", "_l").unique(), on=["_t", "_e", "_l"], how="semi")
            .sort(list(_HOP_SCHEMA), nulls_last=True)
            .unique(["_t", "_e", "_l"], keep="first", maintain_order=True)
        )
        cur = cur.join(step, on=["_t", "_e", "_l"], how="left").select(
            "_entry", "_line",
            pl.coalesce("_nt", "_t").alias("_t"),
            pl.when(pl.col("_hop").is_not_null()).then(pl.col("_ne")).otherwise(pl.col("_e")).alias("_e"),
            pl.when(pl.col("_hop").is_not_null()).then(pl.col("_nl")).otherwise(pl.col("_l")).alias("_l"),
            pl.when(pl.col("_hop").is_not_null()).then(pl.col("_path") + pl.col("_hop") + ">")
            .otherwise(pl.col("_path")).alias("_path"),
        )
    known = (
        order_lines.select(pl.col("_entry").alias("_e"), pl.col("_line").alias("_l"))
        .join(cur.select("_e", "_l").unique(), on=["_e", "_l"], how="semi")
        .unique()
        .with_columns(pl.lit(True).alias("_known"))
    )
    cur = cur.join(known, on=["_e", "_l"], how="left")
    resolved = (pl.col("_t") == 17) & pl.col("_known").fill_null(False)
    return cur.select(
        "_entry", "_line",
        pl.when(resolved).then(pl.col("_e")).alias("_order_entry"),
        pl.when(resolved).then(pl.col("_l")).alias("_order_line"),
        pl.when(resolved).then(pl.col("_path") + "order").alias("_path"),
    )


def apply_mode(cm: CreditMemos, links: pl.DataFrame, order_docs: pl.DataFrame, mapping: Mapping) -> Applied:
    """Decide per credit memo how it reaches Ometria and compute what each mode needs."""
    order_template = mapping.orders.id_template
    per_cm = links.group_by("_entry").agg(
        pl.len().alias("_n_lines"),
        pl.col("_order_entry").is_not_null().sum().alias("_n_resolved"),
        pl.col("_order_entry").drop_nulls().unique().sort().alias("_order_entries"),
        pl.col("_path").drop_nulls().unique().sort().str.join(", ").alias("_link_path"),
    )
    # validity of the link: the order is valid before refunds, same currency, not held back
    orders = order_docs.select(
        pl.col("_entry").alias("_order_entry"), pl.col("is_valid").alias("_o_valid"),
        pl.col("_currency").alias("_o_currency"),
    )
    cm_ccy = cm.docs.select("_entry", pl.col("_currency").alias("_cm_currency"))
    link_ok = (
        links.drop_nulls("_order_entry").join(orders, on="_order_entry", how="left").join(cm_ccy, on="_entry", how="left")
        .group_by("_entry").agg(
            (pl.col("_o_valid").fill_null(False) & (pl.col("_o_currency") == pl.col("_cm_currency")).fill_null(False))
            .all().alias("_links_ok")
        )
    )
    docs = (
        cm.docs.join(per_cm, on="_entry", how="left").join(link_ok, on="_entry", how="left")
        .with_columns(
            pl.col("_n_lines").fill_null(0),
            pl.col("_n_resolved").fill_null(0),
            pl.col("_order_entries").fill_null(pl.lit([], pl.List(pl.Int64))),
        )
        .with_columns(
            pl.col("_order_entries").list.eval(id_from_template(order_template, pl.element())).alias("_original_ids"),
        )
    )
    traceable = (
        (pl.col("_n_lines") > 0) & (pl.col("_n_resolved") == pl.col("_n_lines"))
        & pl.col("_links_ok").fill_null(False) & pl.col("_doc_reason").is_null()
    )
    refund_mode = mapping.credit_memos.mode == "refund_on_original"
    docs = docs.with_columns(
        (traceable & pl.lit(refund_mode)).alias("_on_original"),
    ).with_columns(
        pl.when(pl.col("_on_original")).then(pl.lit("refund_on_original"))
        .when(pl.lit(refund_mode)).then(pl.lit("negative_order_fallback"))
        .otherwise(pl.lit("negative_order")).alias("_mode_applied"),
        (pl.lit(refund_mode) & ~pl.col("_on_original")).alias("_fallback"),
        pl.when(pl.col("_original_ids").list.len() > 0).then(pl.col("_original_ids").list.join(","))
        .alias("_prop_original_order_id"),
    )

    negative = docs.filter(~pl.col("_on_original"))
    applied = docs.filter(pl.col("_on_original")).select("_entry", "_grand_c")
    # allocation: credit memo line gross, plus the credit memo's freight, header discount and
    # rounding (DocTotal - sum of line gross) on its largest line
    alloc = (
        links.join(applied, on="_entry", how="inner")
        .join(cm.lines.select("_entry", "_line", "_gross_c", "_qty"), on=["_entry", "_line"], how="left")
        .with_columns(
            (pl.col("_grand_c") - pl.col("_gross_c").sum().over("_entry")).alias("_residual"),
            pl.struct(pl.col("_gross_c").neg(), "_line").rank("ordinal").over("_entry").alias("_rank"),
        )
        .with_columns(
            (pl.col("_gross_c") + pl.when(pl.col("_rank") == 1).then(pl.col("_residual")).otherwise(0)).alias("_refunded_c")
        )
    )
    line_refunds = alloc.group_by(
        pl.col("_order_entry").alias("_entry"), pl.col("_order_line").alias("_line")
    ).agg(pl.col("_qty").sum().alias("_qty_refunded"), pl.col("_refunded_c").sum().alias("_refunded_c"))
    order_refunds = line_refunds.group_by("_entry").agg(pl.col("_refunded_c").sum().alias("_refunded_total_c"))
    fully = (
        order_refunds.join(order_docs.select("_entry", "_grand_c"), on="_entry", how="inner")
        .filter(pl.col("_refunded_total_c") == pl.col("_grand_c"))
        .select(pl.col("_entry").alias("_order_entry"), pl.lit(True).alias("_full"))
    )
    is_full = (
        docs.filter(pl.col("_on_original")).select("_entry", pl.col("_order_entries").alias("_order_entry"))
        .explode("_order_entry").join(fully, on="_order_entry", how="left")
        .group_by("_entry").agg(pl.col("_full").fill_null(False).all().alias("_is_full"))
    )

    stats = {
        "credit_memos_counted": docs.height,
        "credit_memos_on_original": applied.height,
        "credit_memos_negative_orders": negative.height,
        "credit_memos_fallback": int(negative.select(pl.col("_fallback").sum()).item() or 0) if negative.height else 0,
    }
    per_cm_out = docs.select("_entry", "_mode_applied", "_original_ids", "_link_path", "_on_original").join(
        is_full, on="_entry", how="left"
    )
    return Applied(negative, line_refunds, order_refunds, per_cm_out, stats)


def build_refunds_table(cm: CreditMemos, applied: Applied, mapping: Mapping) -> pl.DataFrame:
    """One row per ORIN document: what happened to it on the way to Ometria."""
    h = cm.headers
    if h.height == 0:
        return pl.DataFrame(schema=_REFUND_SCHEMA)
    docs = cm.docs.select(
        "_entry", "_ts", "_currency", "_grand_c", "_grand_local_c", "_doc_reason",
    )
    per = applied.per_cm
    df = h.join(docs, on="_entry", how="left").join(per, on="_entry", how="left")
    mode = (
        pl.when(pl.col("_is_cancellation_doc")).then(pl.lit("excluded_cancellation_document"))
        .when(pl.col("_is_cancelled")).then(pl.lit("excluded_cancelled"))
        .otherwise(pl.col("_mode_applied"))
    )
    excluded = pl.col("_is_cancellation_doc") | pl.col("_is_cancelled")
    target = (
        pl.when(excluded).then(None)
        .when(pl.col("_on_original").fill_null(False))
        .then(pl.col("_original_ids").list.first())
        .otherwise(id_from_template(mapping.credit_memos.id_template, pl.col("_entry")))
    )
    out = df.with_columns(
        pl.lit("refund").alias("record_type"),
        target.alias("id"),
        pl.lit("ORIN").alias("sap_object"),
        pl.col("_entry").cast(pl.String).alias("sap_key"),
        pl.col("DocNum").cast(pl.Int64, strict=False).alias("doc_num"),
        text("CardCode").alias("customer_id"),
        pl.col("_ts").alias("refund_timestamp"),
        pl.col("_currency").alias("currency"),
        pl.col("DocCurrency").cast(pl.String).alias("sap_currency"),
        money_out(pl.col("_grand_c")).alias("amount"),
        money_out(pl.col("_grand_local_c")).alias("amount_local"),
        pl.col("_original_ids").alias("linked_order_ids"),
        pl.col("_original_ids").list.first().alias("linked_order_id"),
        pl.when(excluded).then(None).otherwise(
            pl.when(pl.col("_link_path").str.len_chars() > 0).then(pl.col("_link_path")).otherwise(pl.lit("none"))
        ).alias("link_path"),
        mode.alias("mode_applied"),
        pl.when(excluded).then(None).otherwise(pl.col("_doc_reason")).alias("held_back_reason"),
        pl.col("_is_full").fill_null(False).alias("is_full_refund"),
    )
    return out.select(list(_REFUND_SCHEMA)).cast(_REFUND_SCHEMA)  # type: ignore[arg-type]


_REFUND_SCHEMA: dict[str, pl.DataType] = {
    "record_type": pl.String, "id": pl.String, "sap_object": pl.String, "sap_key": pl.String,
    "doc_num": pl.Int64, "customer_id": pl.String,
    "refund_timestamp": pl.Datetime("us", "UTC"), "currency": pl.String, "sap_currency": pl.String,
    "amount": pl.Decimal(18, 2), "amount_local": pl.Decimal(18, 2),
    "linked_order_ids": pl.List(pl.String), "linked_order_id": pl.String, "link_path": pl.String,
    "mode_applied": pl.String, "is_full_refund": pl.Boolean, "held_back_reason": pl.String,
}


# ---------------------------------------------------------------------------------------------
# Net value
# ---------------------------------------------------------------------------------------------

_NET_SCHEMA = pl.Struct({
    "is_valid": pl.Boolean,
    "currency": pl.String,
    "grand_total": pl.Float64,
    "customer": pl.Struct({"id": pl.String}),
    "lineitems": pl.List(pl.Struct({"refunded": pl.Float64})),
})


def net_value_by_customer(orders: pl.DataFrame, include_held_back: bool = False) -> pl.DataFrame:
    """What Ometria will count per customer: sum over valid orders of grand_total - refunded.

    Read from the payloads themselves (what is actually sent), per customer and currency, as
    Decimal(18,2). Held-back rows are left out unless asked (Ometria never receives them).
    """
    df = orders if include_held_back else orders.filter(pl.col("held_back_reason").is_null())
    if df.height == 0:
        return pl.DataFrame(schema={"customer_id": pl.String, "currency": pl.String, "net_value": pl.Decimal(18, 2)})
    p = df.select(pl.col("payload").str.json_decode(_NET_SCHEMA).alias("p")).unnest("p")
    cents = (pl.col("grand_total") * 100).round(0).cast(pl.Int64)
    refunded = (
        pl.col("lineitems").list.eval((pl.element().struct.field("refunded") * 100).round(0).cast(pl.Int64)).list.sum()
    ).fill_null(0)
    return (
        p.filter(pl.col("is_valid"))
        .select(
            pl.col("customer").struct.field("id").alias("customer_id"),
            "currency",
            (cents - refunded).alias("_net_c"),
        )
        .group_by("customer_id", "currency")
        .agg(pl.col("_net_c").sum())
        .select("customer_id", "currency", money_out(pl.col("_net_c")).alias("net_value"))
        .sort("customer_id", "currency", nulls_last=True)
    )
