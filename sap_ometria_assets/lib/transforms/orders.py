"""Sales orders (ORDR/RDR1/RDR3) and A/R credit memos (ORIN/RIN1/RIN3) -> Ometria orders.

Every order is rebuilt whole on every run (Ometria wants whole orders): an edited line, a
cancellation, a delivery or a credit memo changes the payload, hence its hash, hence it is
re-sent. Cancellation documents never become orders.

Totals, in the document currency (the `...Fc` fields when it is not the local currency):
- line `subtotal` = quantity x UnitPrice (price before line discount), `discount` = LineTotal -
  subtotal (<= 0), `tax` = GrossTotal - LineTotal, `total` = GrossTotal;
- order `subtotal` = sum of line subtotals, `shipping` = freight (DocumentAdditionalExpenses, net),
  `tax` = VatSum, `grand_total` = DocTotal, and `discount` = grand_total - subtotal - shipping - tax
  (line and header discounts plus SAP's rounding, <= 0), so that
  subtotal + discount + shipping + tax = grand_total exactly, and grand_total is SAP's to the penny.
Signs: discounts are negative (Magento's convention, which Ometria's importer reads); credit memos
sent as negative orders carry negative quantities and amounts (unit prices stay positive).

Status: cancelled -> `cancelled`; otherwise open/closed x undelivered/partly/fully delivered, each
mapped to an Ometria status and is_valid in the mapping. "Delivered" per line = max(quantity on
non-cancelled DLN1 lines based on it, Quantity - RemainingOpenQuantity).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from sap_ometria_assets.lib.ometria.mapping import Mapping
from sap_ometria_assets.lib.transforms import refunds as rf
from sap_ometria_assets.lib.transforms.documents import (
    EXPENSE_REQUIRED,
    HEADER_OPTIONAL,
    HEADER_REQUIRED,
    LINE_OPTIONAL,
    LINE_REQUIRED,
    document_flags,
    prepare_documents,
)
from sap_ometria_assets.lib.transforms.frames import require_columns
from sap_ometria_assets.lib.transforms.payloads import COMMON_DESCRIPTIONS, finalize
from sap_ometria_assets.lib.transforms.people import email_columns, name_columns, person_name
from sap_ometria_assets.lib.transforms.udfs import udf_fields
from sap_ometria_assets.lib.transforms.values import (
    DEC,
    decimal,
    id_from_template,
    money,
    money_out,
    text,
    warnings_list,
)


BUSINESS_COLUMNS: dict[str, str] = {
    "doc_num": "SAP document number (DocNum) as users see it; not part of the id (it can be re-used).",
    "customer_id": "SAP CardCode of the customer: Ometria customer.id, the contact's customer_id.",
    "order_timestamp": "DocDate + DocTime in the company time zone (Ometria `timestamp`).",
    "sap_state": "SAP state behind the status: open/closed x undelivered/partly_delivered/delivered, "
    "cancelled, or credit_memo.",
    "status": "Ometria status (pending, shipped, complete, cancelled, partial_refund, refunded...).",
    "is_valid": "Ometria is_valid: false removes the order from revenue (cancelled, fully refunded).",
    "currency": "ISO 4217 currency of the amounts (SAP DocCurrency through the mapping).",
    "sap_currency": "SAP DocCurrency code as SAP holds it (e.g. US$).",
    "subtotal": "Sum of line quantity x unit price before discounts, excl. tax and shipping (document currency, signed as sent).",
    "discount": "Line and header discounts plus SAP rounding, as a negative amount (document currency).",
    "shipping": "Freight from DocumentAdditionalExpenses, net of tax (document currency).",
    "tax": "SAP VatSum / VatSumFc (document currency).",
    "grand_total": "SAP DocTotal / DocTotalFc: equals subtotal + discount + shipping + tax (document currency, "
    "negative for credit memos sent as negative orders).",
    "grand_total_local": "SAP DocTotal in the company's local currency (signed like grand_total).",
    "refunded_total": "Amount credited by credit memos applied to this order (refund_on_original mode), "
    "document currency; 0 otherwise.",
    "line_count": "Number of line items sent.",
    "channel": "Ometria channel (from the sales-channel UDF through the mapping).",
    "store": "Ometria store id.",
    "original_order_ids": "For a credit memo sent as a negative order: the Ometria ids of the orders "
    "it credits (traced credit memo line -> invoice line -> delivery/order line).",
    "credit_memo_fallback": "True for a credit memo sent as a negative order in refund_on_original "
    "mode because it could not be traced to a valid order.",
}

DESCRIPTIONS: dict[str, str] = {**COMMON_DESCRIPTIONS, **BUSINESS_COLUMNS}


@dataclass
class OrderInputs:
    """The landed SAP tables the orders transform reads (frames shaped like sap_raw)."""

    ordr: pl.DataFrame
    rdr1: pl.DataFrame
    rdr3: pl.DataFrame | None = None
    odln: pl.DataFrame | None = None
    dln1: pl.DataFrame | None = None
    oinv: pl.DataFrame | None = None
    inv1: pl.DataFrame | None = None
    orin: pl.DataFrame | None = None
    rin1: pl.DataFrame | None = None
    rin3: pl.DataFrame | None = None
    ocrd: pl.DataFrame | None = None


@dataclass
class OrdersResult:
    orders: pl.DataFrame
    refunds: pl.DataFrame
    stats: dict = field(default_factory=dict)


def input_columns(mapping: Mapping) -> dict[str, list[str]]:
    """The sap_raw columns `build_orders` reads, per table (readers project on these: the landed
    document tables hold ~45 columns of which a dozen matter, and reading all of them costs more
    than the whole transform). Columns a table lacks are simply not selected."""
    udfs = [m.sap_field for m in mapping.udfs.Order]
    if mapping.orders.channel.udf:
        udfs.append(mapping.orders.channel.udf)
    flags = ["_is_cancellation", "CancelStatus", "Cancelled"]
    header = list(dict.fromkeys([*HEADER_REQUIRED, *HEADER_OPTIONAL, *udfs, *flags]))
    lines = list(dict.fromkeys([*LINE_REQUIRED, *LINE_OPTIONAL]))
    expenses = list(EXPENSE_REQUIRED)
    base = ["DocEntry", "LineNum", "Quantity", "BaseType", "BaseEntry", "BaseLine"]
    return {
        "ordr": header, "rdr1": lines, "rdr3": expenses,
        "orin": header, "rin1": lines, "rin3": expenses,
        "odln": ["DocEntry", *flags], "dln1": base,
        "inv1": base, "ocrd": ["CardCode", "CardName", "CardType", "EmailAddress", "CompanyPrivate", "ContactPerson"],
    }



# ---------------------------------------------------------------------------------------------
# Delivery state and status
# ---------------------------------------------------------------------------------------------

def delivered_quantities(odln: pl.DataFrame | None, dln1: pl.DataFrame | None) -> pl.DataFrame:
    """Quantity delivered per order line (BaseType 17) on deliveries that are not cancelled."""
    schema = {"_entry": pl.Int64, "_line": pl.Int64, "_delivered": DEC}
    if dln1 is None or dln1.height == 0:
        return pl.DataFrame(schema=schema)
    require_columns(dln1, "dln1", ["DocEntry", "Quantity", "BaseType", "BaseEntry", "BaseLine"])
    d = dln1.with_columns(pl.col("DocEntry").cast(pl.Int64, strict=False).alias("_dln"))
    if odln is not None and odln.height:
        dead = (
            document_flags(odln)
            .filter(pl.col("_is_cancellation_doc") | pl.col("_is_cancelled"))
            .select(pl.col("DocEntry").cast(pl.Int64, strict=False).alias("_dln"))
        )
        d = d.join(dead, on="_dln", how="anti")
    return (
        d.filter(pl.col("BaseType").cast(pl.Int64, strict=False) == 17)
        .group_by(
            pl.col("BaseEntry").cast(pl.Int64, strict=False).alias("_entry"),
            pl.col("BaseLine").cast(pl.Int64, strict=False).alias("_line"),
        )
        .agg(decimal("Quantity", dln1.schema["Quantity"]).sum().alias("_delivered"))
    )


def _delivery_state(lines: pl.DataFrame, delivered: pl.DataFrame) -> pl.DataFrame:
    ls = lines.schema
    open_qty = decimal("RemainingOpenQuantity", ls["RemainingOpenQuantity"])
    l = lines.join(delivered, on=["_entry", "_line"], how="left").with_columns(
        pl.max_horizontal(
            pl.col("_delivered").fill_null(0),
            pl.when(open_qty.is_not_null()).then(pl.col("_qty") - open_qty).otherwise(0),
        ).alias("_fulfilled")
    ).with_columns(
        ((pl.col("_qty") <= 0) | (pl.col("_fulfilled") >= pl.col("_qty"))).fill_null(True).alias("_line_done"),
        (pl.col("_fulfilled") > 0).fill_null(False).alias("_line_started"),
    )
    return l.group_by("_entry").agg(
        pl.col("_line_done").all().alias("_all_done"),
        pl.col("_line_started").any().alias("_any_started"),
    ).select(
        "_entry",
        pl.when(pl.col("_all_done") & pl.col("_any_started")).then(pl.lit("delivered"))
        .when(pl.col("_any_started")).then(pl.lit("partly_delivered"))
        .otherwise(pl.lit("undelivered")).alias("_delivery"),
    )


def _status_columns(mapping: Mapping) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    is_open = (pl.col("DocumentStatus").cast(pl.String) == "bost_Open").fill_null(False)
    state = (
        pl.when(pl.col("_is_cancelled")).then(pl.lit("cancelled"))
        .otherwise(pl.concat_str([pl.when(is_open).then(pl.lit("open")).otherwise(pl.lit("closed")),
                                  pl.lit("_"), pl.col("_delivery").fill_null("undelivered")]))
    )
    rules = mapping.orders.status
    names = list(type(rules).model_fields)
    status = state.replace_strict(names, [getattr(rules, n).status for n in names], return_dtype=pl.String)
    valid = state.replace_strict(names, [getattr(rules, n).is_valid for n in names], return_dtype=pl.Boolean)
    return state, status, valid


# ---------------------------------------------------------------------------------------------
# Customers, properties, payloads
# ---------------------------------------------------------------------------------------------

def customer_identities(ocrd: pl.DataFrame | None, mapping: Mapping) -> pl.DataFrame:
    """CardCode -> email/firstname/lastname as sent on contacts (for the order's customer object).

    Only business partners the mapping sends as contacts (`contacts.card_types`, customers by
    default) carry their email and names: in Ometria a customer id with an email creates a
    profile, so an order of a lead or supplier would otherwise put a person the mapping keeps
    out of Ometria into it. Their orders name the customer by id alone (no personal data);
    `order_unknown_customer` lists them."""
    schema = {"_card": pl.String, "_c_email": pl.String, "_c_first": pl.String, "_c_last": pl.String}
    if ocrd is None or ocrd.height == 0:
        return pl.DataFrame(schema=schema)
    require_columns(ocrd, "ocrd", ["CardCode", "CardName", "EmailAddress", "CardType"])
    email, _ = email_columns(pl.col("EmailAddress"), mapping.contacts.lowercase_email)
    names = name_columns(person_name(ocrd))
    is_contact = pl.col("CardType").cast(pl.String).is_in(list(mapping.contacts.card_types))

    def only_contacts(expr: pl.Expr) -> pl.Expr:
        return pl.when(is_contact).then(expr).otherwise(pl.lit(None, pl.String))

    # lazy: the email and name expressions share sub-expressions (the normalised address, the
    # split words) that the eager engine would evaluate once per use
    return (
        ocrd.lazy().select(text("CardCode").alias("_card"), only_contacts(email).alias("_c_email"),
                           only_contacts(names["firstname"]).alias("_c_first"),
                           only_contacts(names["lastname"]).alias("_c_last"))
        .collect()
        .drop_nulls("_card")
        # two BPs whose codes differ only by blanks: the same pick whatever order rows come in
        .sort(["_card", "_c_email", "_c_first", "_c_last"], nulls_last=True)
        .unique("_card", keep="first", maintain_order=True)
    )


def _channel(df: pl.DataFrame, mapping: Mapping) -> pl.Expr:
    ch = mapping.orders.channel
    default = pl.lit(ch.default, pl.String)
    if not ch.udf:
        return default
    if ch.udf not in df.columns:
        return default
    v = text(ch.udf)
    if ch.value_map:
        v = v.replace_strict(list(ch.value_map), list(ch.value_map.values()), default=v, return_dtype=pl.String)
    return pl.coalesce(v, default)


def _line_items(lines: pl.DataFrame, sign: int, refunds: pl.DataFrame | None) -> pl.DataFrame:
    """`_entry` -> list of line-item structs (ordered by LineNum), only lines with an ItemCode."""
    l = lines.filter(pl.col("_item").is_not_null())
    refund_fields = []
    if refunds is not None:
        l = l.join(refunds, on=["_entry", "_line"], how="left")
        refund_fields = [
            pl.col("_qty_refunded").cast(pl.Float64).alias("quantity_refunded"),
            money(pl.col("_refunded_c")).alias("refunded"),
        ]
    item = pl.struct(
        pl.col("_item").alias("product_id"),
        pl.col("_item").alias("sku"),
        (pl.col("_qty") * sign).cast(pl.Float64).alias("quantity"),
        money(pl.col("_unit_c")).alias("unit_price"),
        money(pl.col("_subtotal_c") * sign).alias("subtotal"),
        money(pl.col("_discount_c") * sign).alias("discount"),
        money(pl.col("_tax_line_c") * sign).alias("tax"),
        money(pl.col("_gross_c") * sign).alias("total"),
        *refund_fields,
    )
    return l.sort("_entry", "_line").group_by("_entry", maintain_order=True).agg(
        item.alias("_lineitems"), pl.len().alias("line_count")
    )


def _orders_frame(
    docs: pl.DataFrame,
    lines: pl.DataFrame,
    mapping: Mapping,
    customers: pl.DataFrame,
    *,
    sap_object: str,
    template: str,
    sign: int,
    refunds: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Prepared documents -> (order rows with typed columns, payload frame row-aligned with them)."""
    props, fields, udf_warns = udf_fields(docs, mapping.udfs.Order, sap_object.lower())
    items = _line_items(lines, sign, refunds)
    df = (
        docs.join(items, on="_entry", how="left")
        .with_columns(text("CardCode").alias("_card"))
        .join(customers, on="_card", how="left")
    )
    df = df.with_columns(
        id_from_template(template, pl.col("_entry")).alias("_id"),
        pl.col("line_count").fill_null(0).cast(pl.Int32),
        _channel(df, mapping).alias("channel"),
        pl.col("_c_first").alias("_first"),
        pl.col("_c_last").alias("_last"),
        *(v.alias(f"_field_{k}") for k, v in fields.items()),
        *(v.alias(f"_prop_{k}") for k, v in props.items()),
    )
    customer = pl.when(pl.col("_card").is_not_null()).then(
        pl.struct(
            pl.col("_card").alias("id"),
            pl.col("_c_email").alias("email"),
            pl.col("_first").alias("firstname"),
            pl.col("_last").alias("lastname"),
        )
    )
    prop_names = list(props)
    if "_prop_original_order_id" in df.columns:
        prop_names.append("original_order_id")
    payload = [
        pl.lit("order").alias("@type"),
        pl.col("_id").alias("id"),
        pl.col("_ts_iso").alias("timestamp"),
        pl.col("status"),
        pl.col("is_valid"),
        pl.col("_currency").alias("currency"),
        pl.lit(mapping.store).alias("store"),
        pl.col("channel"),
        money(pl.col("_subtotal_c") * sign).alias("subtotal"),
        money(pl.col("_discount_c") * sign).alias("discount"),
        money(pl.col("_shipping_c") * sign).alias("shipping"),
        money(pl.col("_tax_c") * sign).alias("tax"),
        money(pl.col("_grand_c") * sign).alias("grand_total"),
        *(pl.col(f"_field_{k}").alias(k) for k in fields),
        customer.alias("customer"),
        pl.col("_lineitems").alias("lineitems"),
    ]
    if prop_names:
        payload.append(pl.struct(*(pl.col(f"_prop_{k}").alias(k) for k in prop_names)).alias("properties"))
    rows = df.with_columns(
        pl.lit("order").alias("record_type"),
        pl.col("_id").alias("id"),
        pl.lit(sap_object).alias("sap_object"),
        pl.col("_entry").cast(pl.String).alias("sap_key"),
        pl.col("DocNum").cast(pl.Int64, strict=False).alias("doc_num"),
        pl.col("_card").alias("customer_id"),
        pl.col("_ts").alias("order_timestamp"),
        pl.col("_currency").alias("currency"),
        pl.col("DocCurrency").cast(pl.String).alias("sap_currency"),
        money_out(pl.col("_subtotal_c") * sign).alias("subtotal"),
        money_out(pl.col("_discount_c") * sign).alias("discount"),
        money_out(pl.col("_shipping_c") * sign).alias("shipping"),
        money_out(pl.col("_tax_c") * sign).alias("tax"),
        money_out(pl.col("_grand_c") * sign).alias("grand_total"),
        money_out(pl.col("_grand_local_c") * sign).alias("grand_total_local"),
        pl.lit(mapping.store).alias("store"),
        warnings_list(*udf_warns).alias("warnings"),
    )
    return rows, df.select(payload)


def build_orders(inputs: OrderInputs, mapping: Mapping, *, zone: str) -> OrdersResult:
    """Ometria orders (ORDR, plus ORIN per the credit memo mode) and the refunds trace."""
    customers = customer_identities(inputs.ocrd, mapping)
    docs, lines = prepare_documents(inputs.ordr, inputs.rdr1, inputs.rdr3, "ordr", mapping, zone)
    delivery = _delivery_state(lines, delivered_quantities(inputs.odln, inputs.dln1))
    state, status, valid = _status_columns(mapping)
    docs = docs.join(delivery, on="_entry", how="left").with_columns(
        state.alias("sap_state"), status.alias("status"), valid.alias("is_valid")
    )

    # credit memos
    cm = rf.prepare_credit_memos(inputs, mapping, zone)
    links = rf.resolve_links(cm, inputs, lines)
    applied = rf.apply_mode(cm, links, docs, mapping)

    line_refunds = applied.line_refunds  # (_entry, _line, _qty_refunded, _refunded_c) on ORDR lines
    docs = docs.join(applied.order_refunds, on="_entry", how="left").with_columns(
        pl.col("_refunded_total_c").fill_null(0)
    )
    if mapping.credit_memos.mode == "refund_on_original":
        full = pl.col("_refunded_total_c") == pl.col("_grand_c")
        has = pl.col("_refunded_total_c") != 0
        docs = docs.with_columns(
            pl.when(has & full).then(pl.lit("refunded")).when(has).then(pl.lit("partial_refund"))
            .otherwise(pl.col("status")).alias("status"),
            pl.when(has & full).then(pl.lit(False)).otherwise(pl.col("is_valid")).alias("is_valid"),
        )

    refund_mode = mapping.credit_memos.mode == "refund_on_original"
    orders, payload = _orders_frame(docs, lines, mapping, customers, sap_object="ORDR",
                                    template=mapping.orders.id_template, sign=1,
                                    refunds=line_refunds if refund_mode and line_refunds.height else None)
    orders = orders.with_columns(
        money_out(pl.col("_refunded_total_c")).alias("refunded_total"),
        pl.lit(None, pl.List(pl.String)).alias("original_order_ids"),
        pl.lit(False).alias("credit_memo_fallback"),
        pl.col("_doc_reason").alias("_reason"),
        pl.concat_list(
            pl.col("warnings"),
            pl.when(pl.col("_refunded_total_c") * pl.col("_grand_c").sign() > pl.col("_grand_c").abs())
            .then(pl.lit(["credited_more_than_order_total"])).otherwise(pl.lit([], pl.List(pl.String))),
        ).alias("warnings"),
    )

    cols = list(BUSINESS_COLUMNS)
    frames = [finalize(orders, payload, "orders", cols)]
    neg_docs = applied.negative_docs
    if neg_docs.height:
        neg_lines = cm.lines.join(neg_docs.select("_entry"), on="_entry", how="semi")
        neg, neg_payload = _orders_frame(
            neg_docs.with_columns(
                pl.lit(mapping.credit_memos.negative_order_status).alias("status"),
                pl.lit(True).alias("is_valid"),
                pl.lit("credit_memo").alias("sap_state"),
            ),
            neg_lines, mapping, customers, sap_object="ORIN",
            template=mapping.credit_memos.id_template, sign=-1,
        )
        neg = neg.with_columns(
            money_out(pl.lit(0, pl.Int64)).alias("refunded_total"),
            pl.col("_original_ids").alias("original_order_ids"),
            pl.col("_fallback").alias("credit_memo_fallback"),
            pl.col("_doc_reason").alias("_reason"),
        )
        frames.append(finalize(neg, neg_payload, "orders", cols))
    result = pl.concat(frames, how="vertical_relaxed")
    refunds_table = rf.build_refunds_table(cm, applied, mapping)
    return OrdersResult(orders=result, refunds=refunds_table, stats=applied.stats)
