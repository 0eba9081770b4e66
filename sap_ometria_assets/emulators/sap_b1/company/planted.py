"""Planted cases: the awkward records every sync exception rule needs examples of (oversized orders
and titles, pasted descriptions, the other exception examples), planted at every scale.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl

from sap_ometria_assets.emulators.sap_b1.company.amounts import _reprice, _totals
from sap_ometria_assets.emulators.sap_b1.company.constants import LINE_DTYPES, LOCAL_CURRENCY
from sap_ometria_assets.emulators.sap_b1.company.finishing import (
    _PROTECTED_BPS, _PROTECTED_ITEMS, _replace_children, _replace_rows,
)
from sap_ometria_assets.emulators.sap_b1.company.helpers import _rng
from sap_ometria_assets.emulators.sap_b1.company.schema import LINE_COLUMNS, _NULL_I, _NULL_S, _S


OVERSIZED_ORDER_LINES = 460      # > 60 KB as an Ometria order even with the shortest item codes
OVERSIZED_TITLE_CHARS = 33_000   # sent twice (product and listing title): > 60 KB


def _pasted_description(name: str) -> str:
    """The kind of text that ends up in a web-title memo UDF when someone pastes the whole product
    page from the web shop's editor: HTML, a size guide, delivery and returns."""
    head = (f'<div class="pdp"><h1>{name}</h1><p class="lead">Designed in our Leicester studio and made to '
            "last: read the care guide below before the first wash.</p><h2>Size guide</h2>"
            '<table class="size-guide"><tr><th>Size</th><th>Chest (cm)</th><th>Waist (cm)</th>'
            "<th>Hip (cm)</th><th>Length (cm)</th></tr>")
    rows, i = [], 0
    tail = ("</table><h2>Delivery &amp; returns</h2><p>Free UK delivery over &pound;50. Returns within 28 "
            "days of delivery: see www.example.co.uk/returns.</p></div>")
    while len(head) + sum(map(len, rows)) + len(tail) < OVERSIZED_TITLE_CHARS:
        rows.append(f'<tr data-row="{i}"><td>UK {4 + 2 * (i % 14)} ({"Petite" if i % 3 == 0 else "Regular"})</td>'
                    f"<td>{78 + i % 40}</td><td>{60 + i % 35}</td><td>{86 + i % 38}</td><td>{60 + i % 25}</td></tr>")
        i += 1
    return head + "".join(rows) + tail


def _plant_sync_exceptions(seed: int, planted: dict[str, list], ocrd: pl.DataFrame, crd1: pl.DataFrame,
                           oitm: pl.DataFrame, orderable: pl.DataFrame, docs: dict[str, pl.DataFrame],
                           candidates: np.ndarray):
    """The cases whose exception only shows on the way into Ometria (own random stream, so the
    rest of the company is as it was without them):

    - `email_card_codes`: two web customers whose CardCode is their email address (an old shop
      connector keyed partners that way). Ometria ids must not carry personal data, so the
      contact and every order of theirs are held back (`held_back_other`).
    - `oversized_orders`: a trade customer's season pre-order of OVERSIZED_ORDER_LINES lines
      (open, staggered ship dates, from the wholesale warehouse): over Ometria's 60 KB a record.
    - `oversized_items`: an item whose web-title memo UDF holds a pasted product page: its
      product is over 60 KB, so Ometria never gets it (nor its stock flag).
    """
    rng = _rng(seed, 2)
    protected = {c for k in _PROTECTED_BPS for c in planted.get(k, [])}
    ordr = docs["ORDR"]

    # Partners keyed by their email address (occasional buyers, never refunded: a handful of
    # orders held back).
    counts = ordr.group_by("CardCode").len()
    buyers = counts.filter((pl.col("len") <= 3) & ~pl.col("CardCode").is_in(docs["ORIN"]["CardCode"].implode()))[
        "CardCode"].implode()
    cand = ocrd.filter(
        (pl.col("CardType") == "cCustomer") & (pl.col("GroupCode") == 100) & (pl.col("Country") == "GB")
        & (pl.col("CompanyPrivate") == "cPrivate") & pl.col("CardCode").str.starts_with("C")
        & ~pl.col("CardCode").is_in(list(protected)) & pl.col("CardCode").is_in(buyers)
        & pl.col("EmailAddress").is_not_null() & (pl.col("EmailAddress").str.len_chars() <= 50)
    ).sort("CardCode")
    pick = cand.gather(pl.Series(np.sort(rng.choice(cand.height, size=min(2, cand.height), replace=False))))
    rename = dict(zip(pick["CardCode"].to_list(), pick["EmailAddress"].str.to_lowercase().to_list(), strict=True))
    if rename:
        ocrd = ocrd.with_columns(pl.col("CardCode").replace(rename))
        crd1 = crd1.with_columns(pl.col("BPCode").replace(rename))
        for name in ("ORDR", "ODLN", "OINV", "ORIN"):
            docs[name] = docs[name].with_columns(pl.col("CardCode").replace(rename))
    planted["email_card_codes"] = sorted(rename.values())

    # A pre-order too large for Ometria: the latest open order (nothing copied from it yet) is
    # re-entered as a trade customer's season pre-order.
    ordr, rdr1, rdr3 = docs["ORDR"], docs["RDR1"], docs["RDR3"]
    taken = {d for k in ("odd_partner_orders", "inconsistent_order_totals") for d in planted.get(k, [])}
    taken |= {int(d) for d, _ in planted.get("unknown_item_lines", [])}
    open_ids = [int(d) for d in candidates if int(d) not in taken]
    target = ordr.filter(pl.col("DocEntry").is_in(open_ids) & (pl.col("U_SalesChannel") != "Store")).tail(1)
    traders = ocrd.filter(
        (pl.col("CardType") == "cCustomer") & (pl.col("GroupCode") == 102) & (pl.col("Frozen") == "tNO")
        & pl.col("Currency").is_in(["##", LOCAL_CURRENCY]) & ~pl.col("CardCode").is_in(list(protected))
    ).sort("CardCode")
    planted["oversized_orders"] = []
    if target.height and traders.height and orderable.height:
        entry = int(target["DocEntry"][0])
        buyer = traders.row(int(rng.integers(0, traders.height)), named=True)
        n, m = OVERSIZED_ORDER_LINES, orderable.height
        items = orderable.sort("ItemCode").gather(pl.Series(np.arange(n) % m))
        day = int((target["DocDate"][0] - dt.date(1970, 1, 1)).days)
        lines = pl.DataFrame({
            "DocEntry": np.full(n, entry, np.int32), "LineNum": np.arange(n, dtype=np.int32),
            "ItemCode": items["ItemCode"], "ItemDescription": items["ItemName"],
            "Quantity": np.full(n, 6.0),
            "ShipDate": pl.Series(day + 30 + 7 * (np.arange(n) // m)).cast(pl.Int32).cast(pl.Date),
            "Currency": pl.Series([LOCAL_CURRENCY] * n), "Rate": np.zeros(n), "DiscountPercent": np.zeros(n),
            "WarehouseCode": pl.Series(["WHS-WHOLESALE"] * n), "TaxCode": items["SalesVATGroup"],
            "UnitPrice": items["_trade"],
        }).with_columns(
            LineStatus=pl.lit("bost_Open"), RemainingOpenQuantity=pl.col("Quantity"),
            BaseType=pl.lit(-1, pl.Int32), BaseEntry=_NULL_I, BaseLine=_NULL_I,
        )
        lines = _reprice(lines).select(LINE_COLUMNS).cast(LINE_DTYPES)
        address = "\r".join(x for x in (buyer["Address"], " ".join(
            y for y in (buyer["ZipCode"], buyer["City"]) if y)) if x)
        hdr = target.with_columns(
            CardCode=pl.lit(buyer["CardCode"]), CardName=pl.lit(buyer["CardName"]), Address=pl.lit(address),
            DocCurrency=pl.lit(LOCAL_CURRENCY), DocRate=pl.lit(1.0), DiscountPercent=pl.lit(0.0),
            Rounding=pl.lit("tNO"), U_SalesChannel=pl.lit("Phone"), U_PromoCode=_NULL_S,
            NumAtCard=pl.lit(f"PO-AW27-{entry}"), Comments=pl.lit("AW27 season pre-order, staggered delivery"),
            DocDueDate=pl.lit(dt.date(1970, 1, 1) + dt.timedelta(days=day + 30)),
        ).cast(ordr.schema)
        hdr = _totals(hdr, lines, rdr3.clear()).select(ordr.columns).cast(ordr.schema)
        docs["ORDR"] = _replace_rows(ordr, hdr, ["DocEntry"])
        docs["RDR1"] = _replace_children(rdr1, [entry], lines)
        docs["RDR3"] = rdr3.filter(pl.col("DocEntry") != entry)
        planted["oversized_orders"] = [entry]

    # An item whose web title is a whole pasted product page; nobody orders it (yet).
    spare = [c for c in planted.get("never_ordered_items", []) if c not in {
        x for k in _PROTECTED_ITEMS for x in planted.get(k, [])}]
    planted["oversized_items"] = spare[:1]
    if spare:
        code = spare[0]
        name = oitm.filter(pl.col("ItemCode") == code)["ItemName"][0] or code
        oitm = oitm.with_columns(U_WebTitle=pl.when(pl.col("ItemCode") == code)
                                 .then(pl.lit(_pasted_description(name))).otherwise(pl.col("U_WebTitle")))
    return ocrd, crd1, oitm, docs


def _sparse(n: int, values: dict[int, Any]) -> pl.Series:
    """A string column that is null everywhere except at the given positions."""
    pos = np.fromiter(values, dtype=np.int64, count=len(values))
    out = pl.repeat(None, n, dtype=_S, eager=True)
    return out.scatter(pos, pl.Series(list(values.values()), dtype=_S)) if len(pos) else out
