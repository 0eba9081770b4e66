"""Clock ticks: one hour of business applied to the tables (`_apply_tick`): new and edited partners,
new orders, line edits, cancellations, deliveries, invoices, credit memos, the occasional
cancellation document, stock moves, item edits, and one partner and one item deleted outright;
derived only from (seed, tick).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sap_ometria_assets.emulators.sap_b1.company.amounts import _reprice, _totals
from sap_ometria_assets.emulators.sap_b1.company.builders import _copy_docs, _make_bps, _make_items, _new_orders
from sap_ometria_assets.emulators.sap_b1.company.constants import (
    CHANNELS, E_TAX, HEADER_DTYPES, HOUR, LAST, LOCAL_CURRENCY, NOW_S,
)
from sap_ometria_assets.emulators.sap_b1.company.finishing import (
    _PROTECTED_BPS, _PROTECTED_ITEMS, _PROTECTED_ORDERS, _cancel_documents, _canon, _refresh_stock,
    _replace_children, _replace_rows,
)
from sap_ometria_assets.emulators.sap_b1.company.helpers import _choice, _concat, _date_of, _pick, _rng, _time_of
from sap_ometria_assets.emulators.sap_b1.company.schema import (
    BP_COLUMNS, HEADER_COLUMNS, ITEM_COLUMNS, LINE_COLUMNS, _S,
)


# ---------------------------------------------------------------------------------------------
# Ticks: one hour of business
# ---------------------------------------------------------------------------------------------

def _stamp(df: pl.DataFrame, secs: np.ndarray) -> pl.DataFrame:
    return df.with_columns(_u=pl.Series(np.asarray(secs, dtype=np.int64))).with_columns(
        UpdateDate=_date_of("_u"), UpdateTime=_time_of("_u")
    ).drop("_u")


def _stamp_from(hdr: pl.DataFrame, targets: pl.DataFrame) -> pl.DataFrame:
    """Base documents take the time of the document copied from them as their update stamp."""
    when = targets.group_by("_src").agg(_u=pl.col("_t").max()).rename({"_src": "DocEntry"})
    return hdr.join(when.with_columns(pl.col("DocEntry").cast(pl.Int32)), on="DocEntry").with_columns(
        UpdateDate=_date_of("_u"), UpdateTime=_time_of("_u")
    ).drop("_u")


def _tick_times(rng: np.random.Generator, start: int, k: int) -> np.ndarray:
    """k change instants inside the hour; the first two share a minute (incremental boundaries)."""
    if k <= 0:
        return np.zeros(0, np.int64)
    secs = np.sort(start + rng.integers(0, HOUR, k))
    if k >= 2:
        s0 = int(secs[0])
        secs[1] = s0 + int(rng.integers(0, 60 - s0 % 60))
        secs = np.sort(secs)
    return secs.astype(np.int64)


def _ids(values) -> pl.Expr:
    return pl.Series(list(values), dtype=pl.Int32).implode()


def _orderable(tables: dict[str, pl.DataFrame], planted: dict[str, list]) -> pl.DataFrame:
    return tables["OITM"].filter(
        (pl.col("SalesItem") == "tYES") & (pl.col("Valid") == "tYES") & (pl.col("Frozen") == "tNO")
        & ~pl.col("ItemCode").is_in(planted.get("never_ordered_items", []))
    ).join(
        tables["ITM1"].filter(pl.col("PriceList") == 1).select("ItemCode", _price="Price"), on="ItemCode", how="left"
    ).filter(pl.col("_price") > 0).select(
        "ItemCode", pl.col("ItemName").fill_null(""), "SalesVATGroup", "_price", _trade=(pl.col("_price") * 0.6).round(2))


def _apply_tick(tables: dict[str, pl.DataFrame], counters: dict[str, int], planted: dict[str, list],
                scale: float, seed: int, tick: int, change_fraction: float | None) -> None:
    """One hour of business (tick `tick`), applied in place to `tables`; deterministic from (seed, tick)."""
    rng = _rng(seed, 1000 + tick)
    start = NOW_S + (tick - 1) * HOUR
    mult = max(1.0, scale)
    protected_bps = [c for k in _PROTECTED_BPS for c in planted.get(k, [])]
    protected_items = [c for k in _PROTECTED_ITEMS for c in planted.get(k, [])]
    protected_orders = [d for k in _PROTECTED_ORDERS for d in planted.get(k, [])]
    n_bp, n_ord, n_items = tables["OCRD"].height, tables["ORDR"].height, tables["OITM"].height
    if change_fraction:
        k_edit_bp, k_edit_ord, k_edit_item = (max(1, round(x * change_fraction)) for x in (n_bp, n_ord, n_items))
    else:
        k_edit_bp, k_edit_ord, k_edit_item = round(4 * mult), round(2 * mult), max(1, round(mult))
    warehouses = tables["OWHS"]["WarehouseCode"].to_list()

    # 1. New partners (mostly customers, some leads) and a new catalogue item.
    k_new = max(1, round(2 * mult))
    kinds = np.where(rng.random(k_new) < 0.8, 0, 1).astype(np.int8)
    seqs = np.zeros(k_new, np.int64)
    for kind, name in ((0, "bp_c"), (1, "bp_l")):
        m = kinds == kind
        seqs[m] = counters[name] + 1 + np.arange(m.sum())
        counters[name] += int(m.sum())
    bp_new, crd_new = _make_bps(rng, kinds, seqs, _tick_times(rng, start, k_new))
    tables["OCRD"] = _concat([tables["OCRD"], bp_new.select(BP_COLUMNS)]).sort("CardCode")
    tables["CRD1"] = _concat([tables["CRD1"], crd_new])
    k_item = max(1, round(0.5 * mult))
    item_seq = counters["items"] + 1 + np.arange(k_item)
    counters["items"] += k_item
    it_new, ip_new, iw_new = _make_items(rng, item_seq, _tick_times(rng, start, k_item), warehouses)
    tables["OITM"] = _concat([tables["OITM"], it_new.select(ITEM_COLUMNS)]).sort("ItemCode")
    tables["ITM1"] = _concat([tables["ITM1"], ip_new])
    tables["OITW"] = _concat([tables["OITW"], iw_new])

    # 2. Edited partners: email (sometimes to an invalid one or another's), name, phone, tier, marketing block.
    ocrd = tables["OCRD"]
    pool = ocrd.filter(~pl.col("CardCode").is_in(protected_bps + bp_new["CardCode"].to_list()))
    k = min(k_edit_bp, pool.height)
    if k:
        sel = pool.gather(pl.Series(np.sort(rng.choice(pool.height, size=k, replace=False))))
        sel = sel.with_columns(
            _w=pl.Series(rng.integers(0, 5, k)), _v=pl.Series(rng.random(k)),
            _donor=ocrd["EmailAddress"].gather(pl.Series(rng.integers(0, ocrd.height, k))),
            _last=_pick(LAST, rng.integers(0, len(LAST), k)), _n=pl.Series(rng.integers(1, 999, k)),
            _p=pl.Series(rng.integers(0, 1000, k)),
        )
        first = pl.col("CardName").fill_null("").str.split(" ").list.first().fill_null("")
        tiers = ["Bronze", "Silver", "Gold", "Platinum"]
        block = pl.col("BlockSendingMarketingContent") == "tYES"
        sel = sel.with_columns(
            EmailAddress=pl.when(pl.col("_w") == 0).then(
                pl.when(pl.col("_v") < 0.1).then(pl.concat_str(first.str.to_lowercase(), pl.lit(" at example.com")))
                .when(pl.col("_v") < 0.2).then(pl.col("_donor").str.to_uppercase())
                .otherwise(pl.concat_str(first.str.to_lowercase(), pl.lit("."),
                                         pl.col("_last").str.to_lowercase().str.replace("'", ""),
                                         pl.col("_n").cast(_S), pl.lit("@example.net")))
            ).otherwise(pl.col("EmailAddress")),
            CardName=pl.when((pl.col("_w") == 1) & (pl.col("CompanyPrivate") == "cPrivate"))
            .then(pl.concat_str(first, pl.lit(" "), pl.col("_last"))).otherwise(pl.col("CardName")),
            Cellular=pl.when(pl.col("_w") == 2).then(pl.concat_str(pl.lit("+44 20 7946 0"), pl.col("_p").cast(_S).str.zfill(3)))
            .otherwise(pl.col("Cellular")),
            U_LoyaltyTier=pl.when(pl.col("_w") == 3).then(
                pl.col("U_LoyaltyTier").replace_strict(dict(zip(tiers, tiers[1:] + ["Platinum"])), default="Bronze")
            ).otherwise(pl.col("U_LoyaltyTier")),
            BlockSendingMarketingContent=pl.when(pl.col("_w") == 4)
            .then(pl.when(block).then(pl.lit("tNO")).otherwise(pl.lit("tYES")))
            .otherwise(pl.col("BlockSendingMarketingContent")),
            U_MarketingOptIn=pl.when(pl.col("_w") == 4).then(pl.when(block).then(pl.lit("Y")).otherwise(pl.lit("N")))
            .otherwise(pl.col("U_MarketingOptIn")),
        )
        tables["OCRD"] = _replace_rows(ocrd, _stamp(sel.select(BP_COLUMNS), _tick_times(rng, start, k)), ["CardCode"])

    # 3. New orders.
    ocrd = tables["OCRD"]
    orderable = _orderable(tables, planted)
    k_new_o = max(2, round(5 * mult))
    custs = ocrd.filter((pl.col("CardType") == "cCustomer") & (pl.col("Frozen") == "tNO"))
    cards = custs.gather(pl.Series(rng.integers(0, custs.height, k_new_o))).select(
        "CardCode", pl.col("CardName").fill_null(""), DocCurrency=pl.col("Currency").replace("##", LOCAL_CURRENCY),
        GroupCode="GroupCode",
        Address=pl.concat_str(pl.col("Address"), pl.lit("\r"), pl.col("ZipCode"), pl.lit(" "), pl.col("City"), ignore_nulls=True),
    )
    channel = _choice(rng, CHANNELS, k_new_o, [60, 25, 5, 10])
    h, ln, ex = _new_orders(rng, _tick_times(rng, start, k_new_o), cards, channel, orderable,
                            int(tables["ORDR"]["DocEntry"].max()) + 1, warehouses)
    # A shop sale is invoiced on the spot (BaseType 17), closing its order.
    store = h.filter(pl.col("U_SalesChannel") == "Store").select("DocEntry", _t=pl.col("_t") + 60)
    if store.height:
        pick = ln.select("DocEntry", "Quantity").with_row_index("_row").join(store, on="DocEntry").select(
            "_row", "Quantity", "_t", _freight=pl.lit(True))
        i_h, i_l, i_e = _copy_docs(h, ln, ex, pick, src_table="ORDR", target_table="OINV",
                                   first_entry=int(tables["OINV"]["DocEntry"].max()) + 1)
        tables["OINV"] = _concat([tables["OINV"], i_h.select(HEADER_COLUMNS)])
        tables["INV1"] = _concat([tables["INV1"], i_l])
        tables["INV3"] = _concat([tables["INV3"], i_e])
        sold = pl.col("DocEntry").is_in(store["DocEntry"].implode())
        ln = ln.with_columns(RemainingOpenQuantity=pl.when(sold).then(0.0).otherwise(pl.col("RemainingOpenQuantity")),
                             LineStatus=pl.when(sold).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")))
        h = h.join(store.rename({"_t": "_sold"}), on="DocEntry", how="left", maintain_order="left").with_columns(
            DocumentStatus=pl.when(pl.col("_sold").is_not_null()).then(pl.lit("bost_Close")).otherwise(pl.col("DocumentStatus")),
            UpdateDate=pl.when(pl.col("_sold").is_not_null()).then(_date_of("_sold")).otherwise(pl.col("UpdateDate")),
            UpdateTime=pl.when(pl.col("_sold").is_not_null()).then(_time_of("_sold")).otherwise(pl.col("UpdateTime")),
        )
    tables["ORDR"] = _concat([tables["ORDR"], h.select(HEADER_COLUMNS).cast(HEADER_DTYPES)])
    tables["RDR1"] = _concat([tables["RDR1"], ln])
    tables["RDR3"] = _concat([tables["RDR3"], ex])
    fresh = h["DocEntry"].to_list()

    # Open orders nothing has been copied from yet: these can be edited or cancelled.
    ordr, rdr1 = tables["ORDR"], tables["RDR1"]
    open_ids = ordr.filter((pl.col("DocumentStatus") == "bost_Open") & (pl.col("CancelStatus") == "csNo")
                           & ~pl.col("DocEntry").is_in(_ids(protected_orders + fresh)))["DocEntry"]
    untouched = (
        rdr1.filter(pl.col("DocEntry").is_in(open_ids.implode()))
        .group_by("DocEntry").agg(_ok=(pl.col("RemainingOpenQuantity") == pl.col("Quantity")).all(), _nl=pl.len(),
                                  _maxl=pl.col("LineNum").max())
        .filter(pl.col("_ok")).sort("DocEntry")
    )

    # 4. Line edits on open orders: a quantity changes, the last line goes, or a line is added.
    k = min(k_edit_ord, untouched.height)
    edited: list[int] = []
    if k:
        sel = untouched.gather(pl.Series(np.sort(rng.choice(untouched.height, size=k, replace=False))))
        edited = sel["DocEntry"].to_list()
        op = sel.with_columns(_op=pl.Series(rng.integers(0, 3, k))).with_columns(
            _op=pl.when((pl.col("_op") == 1) & (pl.col("_nl") < 2)).then(0).otherwise(pl.col("_op")))
        old = rdr1.filter(pl.col("DocEntry").is_in(_ids(edited))).join(op, on="DocEntry", maintain_order="left")
        first_line = pl.col("LineNum") == pl.col("LineNum").min().over("DocEntry")
        changed = old.filter(~((pl.col("_op") == 1) & (pl.col("LineNum") == pl.col("_maxl")))).with_columns(
            Quantity=pl.when((pl.col("_op") == 0) & first_line).then(pl.col("Quantity") + 1).otherwise(pl.col("Quantity")),
        ).with_columns(RemainingOpenQuantity=pl.col("Quantity"))
        proto = old.filter(first_line & (pl.col("_op") == 2))
        if proto.height:
            items = orderable.gather(pl.Series(rng.integers(0, orderable.height, proto.height)))
            fc = pl.col("Currency") != LOCAL_CURRENCY
            add = proto.with_columns(
                LineNum=(pl.col("_maxl") + 1).cast(pl.Int32), ItemCode=items["ItemCode"],
                ItemDescription=items["ItemName"].cast(pl.Categorical), TaxCode=items["SalesVATGroup"].cast(E_TAX),
                Quantity=pl.lit(1.0), RemainingOpenQuantity=pl.lit(1.0), DiscountPercent=pl.lit(0.0),
                UnitPrice=pl.when(fc).then((items["_price"] / pl.col("Rate")).round(2)).otherwise(items["_price"]),
            )
            changed = _concat([changed, add]).sort("DocEntry", "LineNum")
        changed = _reprice(changed.select(LINE_COLUMNS))
        tables["RDR1"] = _replace_children(rdr1, edited, changed)
        hdr = _totals(ordr.filter(pl.col("DocEntry").is_in(_ids(edited))), tables["RDR1"], tables["RDR3"], subset=True)
        tables["ORDR"] = _replace_rows(ordr, _stamp(hdr, _tick_times(rng, start, k)), ["DocEntry"])

    # Benchmarks' change_fraction reaches closed orders too: header-only edits (a promo code fix).
    if change_fraction:
        rest = k_edit_ord - len(edited)
        pool = tables["ORDR"].filter(~pl.col("DocEntry").is_in(_ids(protected_orders + fresh + edited)))
        if rest > 0 and pool.height:
            sel = pool.gather(pl.Series(np.sort(rng.choice(pool.height, size=min(rest, pool.height), replace=False))))
            sel = sel.with_columns(U_PromoCode=pl.lit(f"FIX{tick}"))
            tables["ORDR"] = _replace_rows(tables["ORDR"], _stamp(sel, _tick_times(rng, start, sel.height)), ["DocEntry"])

    # 5. Every other hour an open order is cancelled.
    pool = untouched.filter(~pl.col("DocEntry").is_in(_ids(edited)))
    k = min(max(1, round(0.5 * mult)) if tick % 2 == 0 else 0, pool.height)
    if k:
        ids = pool["DocEntry"].gather(pl.Series(np.sort(rng.choice(pool.height, size=k, replace=False)))).to_list()
        secs = _tick_times(rng, start, k)
        hdr = tables["ORDR"].filter(pl.col("DocEntry").is_in(_ids(ids))).sort("DocEntry").with_columns(
            Cancelled=pl.lit("tYES"), CancelStatus=pl.lit("csYes"), DocumentStatus=pl.lit("bost_Close"),
            _cu=pl.Series(secs),
        ).with_columns(CancelDate=_date_of("_cu")).drop("_cu")
        tables["ORDR"] = _replace_rows(tables["ORDR"], _stamp(hdr, secs), ["DocEntry"])
        tables["RDR1"] = tables["RDR1"].with_columns(
            LineStatus=pl.when(pl.col("DocEntry").is_in(_ids(ids))).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")))

    # 6. Deliveries of recent open orders (everything still open on them).
    ordr, rdr1 = tables["ORDR"], tables["RDR1"]
    open_ord = ordr.filter((pl.col("DocumentStatus") == "bost_Open") & (pl.col("CancelStatus") == "csNo")
                           & (pl.col("U_SalesChannel") != "Store")
                           & ~pl.col("DocEntry").is_in(_ids(protected_orders + fresh + edited)))
    k = min(max(1, round(3 * mult)), open_ord.height)
    if k:
        recent = open_ord.tail(k * 5)
        ids = recent["DocEntry"].gather(pl.Series(np.sort(rng.choice(recent.height, size=k, replace=False)))).to_list()
        when = pl.DataFrame({"DocEntry": pl.Series(ids, dtype=pl.Int32), "_t": _tick_times(rng, start, k)})
        shipped_before = tables["DLN1"].filter((pl.col("BaseType") == 17) & pl.col("BaseEntry").is_in(_ids(ids)))[
            "BaseEntry"].unique().implode()
        pick = (
            rdr1.select("DocEntry", "RemainingOpenQuantity").with_row_index("_row")
            .filter(pl.col("DocEntry").is_in(_ids(ids)) & (pl.col("RemainingOpenQuantity") > 0))
            .join(when, on="DocEntry", maintain_order="left")
            .select("_row", Quantity="RemainingOpenQuantity", _t="_t",
                    _freight=~pl.col("DocEntry").is_in(shipped_before))  # freight goes with the first delivery
        )
        d_h, d_l, d_e = _copy_docs(ordr, rdr1, tables["RDR3"], pick, src_table="ORDR", target_table="ODLN",
                                   first_entry=int(tables["ODLN"]["DocEntry"].max()) + 1)
        tables["ODLN"] = _concat([tables["ODLN"], d_h.select(HEADER_COLUMNS)])
        tables["DLN1"] = _concat([tables["DLN1"], d_l])
        tables["DLN3"] = _concat([tables["DLN3"], d_e])
        in_ids = pl.col("DocEntry").is_in(_ids(ids))
        tables["RDR1"] = rdr1.with_columns(
            RemainingOpenQuantity=pl.when(in_ids).then(0.0).otherwise(pl.col("RemainingOpenQuantity")),
            LineStatus=pl.when(in_ids).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")),
        )
        hdr = ordr.filter(in_ids).with_columns(DocumentStatus=pl.lit("bost_Close"))
        tables["ORDR"] = _replace_rows(ordr, _stamp_from(hdr, d_h), ["DocEntry"])
        moved = d_l.group_by("ItemCode", pl.col("WarehouseCode").cast(_S)).agg(_q=pl.col("Quantity").sum())
        tables["OITW"] = tables["OITW"].join(
            moved, on=["ItemCode", "WarehouseCode"], how="left", maintain_order="left").with_columns(
            InStock=pl.max_horizontal(pl.col("InStock") - pl.col("_q").fill_null(0.0), pl.lit(0.0))).drop("_q")

    # 7. Invoices for the oldest open deliveries.
    odln = tables["ODLN"]
    open_dl = odln.filter((pl.col("DocumentStatus") == "bost_Open") & (pl.col("CancelStatus") == "csNo"))
    k = min(max(1, round(3 * mult)), open_dl.height)
    if k:
        ids = open_dl["DocEntry"].head(k).to_list()
        when = pl.DataFrame({"DocEntry": pl.Series(ids, dtype=pl.Int32), "_t": _tick_times(rng, start, k)})
        pick = (
            tables["DLN1"].select("DocEntry", "Quantity").with_row_index("_row")
            .filter(pl.col("DocEntry").is_in(_ids(ids))).join(when, on="DocEntry", maintain_order="left")
            .select("_row", "Quantity", "_t", _freight=pl.lit(True))
        )
        i_h, i_l, i_e = _copy_docs(odln, tables["DLN1"], tables["DLN3"], pick, src_table="ODLN", target_table="OINV",
                                   first_entry=int(tables["OINV"]["DocEntry"].max()) + 1)
        tables["OINV"] = _concat([tables["OINV"], i_h.select(HEADER_COLUMNS)])
        tables["INV1"] = _concat([tables["INV1"], i_l])
        tables["INV3"] = _concat([tables["INV3"], i_e])
        in_ids = pl.col("DocEntry").is_in(_ids(ids))
        tables["DLN1"] = tables["DLN1"].with_columns(
            RemainingOpenQuantity=pl.when(in_ids).then(0.0).otherwise(pl.col("RemainingOpenQuantity")),
            LineStatus=pl.when(in_ids).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")),
        )
        hdr = odln.filter(in_ids).with_columns(DocumentStatus=pl.lit("bost_Close"))
        tables["ODLN"] = _replace_rows(odln, _stamp_from(hdr, i_h), ["DocEntry"])

    # 8. Credit memos against recent invoices (full, or the first line only).
    oinv = tables["OINV"]
    credited = tables["RIN1"].filter(pl.col("BaseType") == 13)["BaseEntry"].unique().implode()
    cand = oinv.filter((pl.col("CancelStatus") == "csNo") & ~pl.col("DocEntry").is_in(credited)).tail(200)
    k = min(max(1, round(mult)), cand.height)
    if k:
        ids = cand["DocEntry"].gather(pl.Series(np.sort(rng.choice(cand.height, size=k, replace=False)))).to_list()
        when = pl.DataFrame({"DocEntry": pl.Series(ids, dtype=pl.Int32), "_t": _tick_times(rng, start, k),
                             "_full": rng.random(k) < 0.5})
        pick = (
            tables["INV1"].select("DocEntry", "LineNum", "Quantity").with_row_index("_row")
            .filter(pl.col("DocEntry").is_in(_ids(ids))).join(when, on="DocEntry", maintain_order="left")
            .filter(pl.col("_full") | (pl.col("LineNum") == 0))
            .select("_row", "Quantity", "_t", _freight="_full")
        )
        c_h, c_l, c_e = _copy_docs(oinv, tables["INV1"], tables["INV3"], pick, src_table="OINV", target_table="ORIN",
                                   first_entry=int(tables["ORIN"]["DocEntry"].max()) + 1)
        tables["ORIN"] = _concat([tables["ORIN"], c_h.select(HEADER_COLUMNS)])
        tables["RIN1"] = _concat([tables["RIN1"], c_l])
        tables["RIN3"] = _concat([tables["RIN3"], c_e])
        hdr = oinv.filter(pl.col("DocEntry").is_in(_ids(ids))).with_columns(DocumentStatus=pl.lit("bost_Close"))
        tables["OINV"] = _replace_rows(oinv, _stamp_from(hdr, c_h), ["DocEntry"])

    # 9. Every third hour a credit memo is cancelled (cancellation document in ORIN).
    if tick % 3 == 0:
        cand = tables["ORIN"].filter(pl.col("CancelStatus") == "csNo").tail(50)
        if cand.height:
            target = int(cand["DocEntry"][int(rng.integers(0, cand.height))])
            h = tables["ORIN"].with_columns(_u=pl.lit(0, pl.Int64))
            h, ln, ex, _ = _cancel_documents("ORIN", h, tables["RIN1"], tables["RIN3"], np.array([target]), rng,
                                             at=_tick_times(rng, start, 1))
            tables["ORIN"] = h.with_columns(
                UpdateDate=pl.when(pl.col("_u") > 0).then(_date_of("_u")).otherwise(pl.col("UpdateDate")),
                UpdateTime=pl.when(pl.col("_u") > 0).then(_time_of("_u")).otherwise(pl.col("UpdateTime")),
            ).select(HEADER_COLUMNS)
            tables["RIN1"], tables["RIN3"] = ln, ex

    # 10. Stock moves (goods receipts: OITM.UpdateDate does not change) and item edits (it does).
    oitw = tables["OITW"]
    k = min(max(2, round(5 * mult)), oitw.height)
    bump = np.zeros(oitw.height)
    bump[np.sort(rng.choice(oitw.height, size=k, replace=False))] = rng.integers(5, 60, k)
    tables["OITW"] = oitw.with_columns(InStock=pl.col("InStock") + pl.Series(bump))
    oitm = tables["OITM"]
    pool = oitm.filter(~pl.col("ItemCode").is_in(protected_items))
    k = min(k_edit_item, pool.height)
    if k:
        sel = pool.gather(pl.Series(np.sort(rng.choice(pool.height, size=k, replace=False))))
        factor = pl.Series(np.array([0.8, 0.9, 1.1, 1.2])[rng.integers(0, 4, k)])
        sel = sel.with_columns(
            U_Season=pl.when(pl.Series(rng.random(k) < 0.3)).then(pl.lit("AW26")).otherwise(pl.col("U_Season")))
        tables["OITM"] = _replace_rows(oitm, _stamp(sel, _tick_times(rng, start, k)), ["ItemCode"])
        prices = tables["ITM1"].join(pl.DataFrame({"ItemCode": sel["ItemCode"], "_f": factor}), on="ItemCode").filter(
            pl.col("PriceList") == 1).with_columns(Price=(pl.col("Price") * pl.col("_f")).round(2)).drop("_f")
        tables["ITM1"] = _replace_rows(tables["ITM1"], prices, ["ItemCode", "PriceList"])

    # 11. One unused partner and one unused item are deleted outright (no trace left in SAP).
    # Candidates are sampled, then checked against the documents (SAP refuses to delete used data).
    # (most partners of a small company have bought something: look at enough of them)
    pool = tables["OCRD"].filter(~pl.col("CardCode").is_in(protected_bps))
    cand = pool["CardCode"].gather(pl.Series(np.sort(rng.choice(pool.height, size=min(200, pool.height), replace=False))))
    used = pl.concat([tables[t].filter(pl.col("CardCode").is_in(cand.implode()))["CardCode"] for t in ("ORDR", "ORIN")])
    cand = cand.filter(~cand.is_in(used.implode()))
    if cand.len():
        gone = cand[0]
        tables["OCRD"] = tables["OCRD"].filter(pl.col("CardCode") != gone)
        tables["CRD1"] = tables["CRD1"].filter(pl.col("BPCode") != gone)
    pool = tables["OITM"].filter(~pl.col("ItemCode").is_in(protected_items))
    cand = pool["ItemCode"].gather(pl.Series(np.sort(rng.choice(pool.height, size=min(40, pool.height), replace=False))))
    used = pl.concat([tables[t].filter(pl.col("ItemCode").is_in(cand.implode()))["ItemCode"] for t in ("RDR1", "RIN1")])
    cand = cand.filter(~cand.is_in(used.implode()))
    if cand.len():
        gone = cand[0]
        for name in ("OITM", "ITM1", "OITW", "_RESERVED"):
            tables[name] = tables[name].filter(pl.col("ItemCode") != gone)

    _refresh_stock(tables)
    _canon(tables)
