"""The initial generation of the company at tick 0 (`_generate_base`): reference data, items, business
partners with the planted partner cases, orders and the documents that follow them, credit memos,
cancellations, inconsistent totals and over-committed stock.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sap_ometria_assets.emulators.sap_b1.company.amounts import _totals
from sap_ometria_assets.emulators.sap_b1.company.builders import _copy_docs, _make_bps, _make_items, _new_orders
from sap_ometria_assets.emulators.sap_b1.company.constants import (
    BP_GROUPS, CHANNELS, DAY, HOUR, LOCAL_CURRENCY, NOW_S, WAREHOUSES,
)
from sap_ometria_assets.emulators.sap_b1.company.finishing import (
    _cancel_documents, _canon, _finish_doc, _finish_master, _merge_renumber, _refresh_stock,
)
from sap_ometria_assets.emulators.sap_b1.company.helpers import (
    _choice, _concat, _counts, _date_of, _mask, _rng, _seed_of, _tod, _warehouse_codes,
)
from sap_ometria_assets.emulators.sap_b1.company.planted import _plant_sync_exceptions, _sparse
from sap_ometria_assets.emulators.sap_b1.company.schema import (
    ADDRESS_COLUMNS, BP_COLUMNS, ITEM_COLUMNS, UDF_DEFS, UDF_VALUE_LABELS, _NULL_I, _NULL_S, _S,
)


def _generate_base(scale: float, seed: int):
    rng = _rng(seed, 1)
    n = _counts(scale)
    warehouses = _warehouse_codes(scale)
    planted: dict[str, list] = {}

    # -- reference data ------------------------------------------------------------------
    owhs = pl.DataFrame(
        [w for w in WAREHOUSES if w[0] in warehouses],
        schema=["WarehouseCode", "WarehouseName", "Inactive", "Nettable", "Street", "City", "ZipCode"],
        orient="row",
    ).with_columns(Country=pl.lit("GB")).sort("WarehouseCode")
    ocrg = pl.DataFrame(BP_GROUPS, schema={"Code": pl.Int32, "Name": _S, "Type": _S}, orient="row")
    cufd_rows = []
    field_ids: dict[str, int] = {}
    for table, name, typ, size, desc, vals in UDF_DEFS:
        fid = field_ids.get(table, 0)
        field_ids[table] = fid + 1
        cufd_rows.append({
            "TableName": table, "FieldID": fid, "Name": name, "Type": typ, "Size": size, "Description": desc,
            "SubType": "st_None",
            "ValidValuesMD": [{"Value": v, "Description": UDF_VALUE_LABELS.get(v, v)} for v in vals],
        })
    cufd = pl.DataFrame(cufd_rows, schema={
        "TableName": _S, "FieldID": pl.Int32, "Name": _S, "Type": _S, "Size": pl.Int32, "Description": _S,
        "SubType": _S, "ValidValuesMD": pl.List(pl.Struct({"Value": _S, "Description": _S})),
    }).sort("TableName", "FieldID")

    # -- items ---------------------------------------------------------------------------
    n_items = n["items"]
    item_t = np.sort(NOW_S - (rng.random(n_items) * 5 * 365 * DAY).astype(np.int64))
    item_t = (item_t // DAY) * DAY + _tod(rng, n_items)
    item_t = np.minimum(item_t, NOW_S - DAY)
    oitm, itm1, oitw = _make_items(rng, np.arange(1, n_items + 1), item_t, warehouses)
    # Edited items (price/name changes over time) carry a later UpdateDate.
    edited = rng.random(n_items) < 0.3
    upd = np.where(edited, item_t + (rng.random(n_items) * (NOW_S - item_t)).astype(np.int64), item_t)
    oitm = oitm.with_columns(_u=pl.Series(upd))
    perm = rng.permutation(n_items)
    no_price, no_name, inactive, frozen, not_sales, never_used = np.split(
        perm, np.cumsum([3, 3, 3, 3, 2, max(10, n_items // 20)]))[:6]
    codes = oitm["ItemCode"]
    for key, idx in (("items_without_price", no_price), ("items_without_name", no_name), ("inactive_items", inactive),
                     ("frozen_items", frozen), ("non_sales_items", not_sales), ("never_ordered_items", never_used)):
        planted[key] = codes.gather(pl.Series(np.sort(idx))).to_list()
    oitm = oitm.with_columns(
        ItemName=pl.when(_mask(n_items, no_name[:2])).then(_NULL_S)
        .when(_mask(n_items, no_name[2:])).then(pl.lit("")).otherwise(pl.col("ItemName")),
        Valid=pl.when(_mask(n_items, inactive)).then(pl.lit("tNO")).otherwise(pl.col("Valid")),
        Frozen=pl.when(_mask(n_items, frozen)).then(pl.lit("tYES")).otherwise(pl.col("Frozen")),
        SalesItem=pl.when(_mask(n_items, not_sales)).then(pl.lit("tNO")).otherwise(pl.col("SalesItem")),
        _price=pl.when(_mask(n_items, no_price)).then(0.0).otherwise(pl.col("_price")),
    )
    no_price_codes = pl.Series(planted["items_without_price"]).implode()
    itm1 = itm1.with_columns(
        Price=pl.when(pl.col("ItemCode").is_in(no_price_codes)).then(0.0).otherwise(pl.col("Price")),
        Currency=pl.when(pl.col("ItemCode").is_in(no_price_codes)).then(_NULL_S).otherwise(pl.col("Currency")),
    )
    # What shops sell: not the never-ordered, non-sales, priceless, inactive or frozen items.
    orderable = (
        oitm.filter(~pl.col("ItemCode").is_in(
            planted["never_ordered_items"] + planted["non_sales_items"] + planted["items_without_price"]
            + planted["inactive_items"] + planted["frozen_items"]))
        .select("ItemCode", pl.col("ItemName").fill_null(""), "SalesVATGroup", "_price",
                _trade=(pl.col("_price") * 0.6).round(2))
    )

    # -- business partners ---------------------------------------------------------------
    n_bp = n["bps"]
    kinds = np.zeros(n_bp, np.int8)
    r = rng.random(n_bp)
    kinds[r < 0.05] = 1
    kinds[(r >= 0.05) & (r < 0.08)] = 2
    old = rng.random(n_bp) < 0.55
    bp_t = np.where(old, NOW_S - (2 * 365 + rng.random(n_bp) * 4 * 365) * DAY,
                    NOW_S - (1 - np.sqrt(rng.random(n_bp))) * 2 * 365 * DAY).astype(np.int64)
    bp_t = np.minimum((bp_t // DAY) * DAY + _tod(rng, n_bp), NOW_S - 2 * DAY)
    order = np.argsort(bp_t, kind="stable")
    bp_t, kinds = bp_t[order], kinds[order]
    seqs = np.zeros(n_bp, np.int64)
    for k in (0, 1, 2):
        m = kinds == k
        seqs[m] = np.arange(1, m.sum() + 1)
    legacy = (kinds == 0) & (np.arange(n_bp) < n_bp * 0.05) & (rng.random(n_bp) < 0.6)
    ocrd, crd1 = _make_bps(rng, kinds, seqs, bp_t, legacy)
    counters = {"bp_c": int((kinds == 0).sum()), "bp_l": int((kinds == 1).sum()),
                "bp_s": int((kinds == 2).sum()), "items": n_items}
    # Edits after creation: a third of the partners, plus a cluster in the last two days.
    r = rng.random(n_bp)
    bp_u = np.where(r < 0.35, bp_t + (rng.random(n_bp) * (NOW_S - bp_t)).astype(np.int64), bp_t)
    bp_u = np.where(r > 0.97, NOW_S - DAY - 9 * HOUR + rng.integers(0, DAY + 8 * HOUR, n_bp), bp_u)
    ocrd = ocrd.with_columns(_u=pl.Series(np.maximum(bp_u, bp_t)))

    # Planted partner cases (customers only, disjoint).
    cust = np.flatnonzero((kinds == 0) & ~legacy)
    cust = cust[rng.permutation(len(cust))]
    sizes = {"invalid_emails": 8, "blank_emails": 6, "duplicate_emails": 9, "nameless_customers": 4,
             "marketing_blocked": 5, "frozen_bps": 4, "udf_invalid_values": 6, "marketing_conflict": 3,
             "sfr_customers": 3, "us_customers": 3, "eur_customers": 4}
    cuts = np.cumsum(list(sizes.values()))
    parts = dict(zip(sizes, np.split(cust[: cuts[-1]], cuts[:-1])))
    bad_emails = ["john.smith.example.com", "jane doe@example.co.uk", "sam.green@example.com.",
                  "\U0001F600love@example.org", "mary@@example.com", "info@example", "tom smith@example.net",
                  "peter.jones@example.co.uk."]
    fixes = {int(p): bad_emails[i % len(bad_emails)] for i, p in enumerate(parts["invalid_emails"])}
    fixes.update({int(p): ("" if i % 2 == 0 else None) for i, p in enumerate(parts["blank_emails"])})
    for g in range(3):
        shared = f"family.account{g + 1}@example.co.uk"
        variants = [shared, shared.upper().replace("@EXAMPLE.CO.UK", "@Example.co.uk"), f"  {shared} "]
        fixes.update({int(p): v for p, v in zip(parts["duplicate_emails"][g * 3:(g + 1) * 3], variants)})
    names = {int(p): (None if i % 2 == 0 else "") for i, p in enumerate(parts["nameless_customers"])}
    udf_bad = parts["udf_invalid_values"]
    ocrd = ocrd.with_columns(
        EmailAddress=pl.when(_mask(n_bp, list(fixes))).then(
            _sparse(n_bp, fixes)
        ).otherwise(pl.col("EmailAddress")),
        CardName=pl.when(_mask(n_bp, list(names))).then(pl.Series(_sparse(n_bp, names))).otherwise(pl.col("CardName")),
        BlockSendingMarketingContent=pl.when(_mask(n_bp, np.r_[parts["marketing_blocked"], parts["marketing_conflict"]]))
        .then(pl.lit("tYES")).otherwise(pl.col("BlockSendingMarketingContent")),
        U_MarketingOptIn=pl.when(_mask(n_bp, parts["marketing_conflict"])).then(pl.lit("Y"))
        .when(_mask(n_bp, udf_bad[3:4])).then(pl.lit("Yes")).otherwise(pl.col("U_MarketingOptIn")),
        Frozen=pl.when(_mask(n_bp, parts["frozen_bps"])).then(pl.lit("tYES")).otherwise(pl.col("Frozen")),
        U_AcquisitionSource=pl.when(_mask(n_bp, udf_bad[0:1])).then(pl.lit("Instagram"))
        .when(_mask(n_bp, udf_bad[1:2])).then(pl.lit("web ")).otherwise(pl.col("U_AcquisitionSource")),
        U_LoyaltyTier=pl.when(_mask(n_bp, udf_bad[2:3])).then(pl.lit("Diamond"))
        .when(_mask(n_bp, udf_bad[4:5])).then(pl.lit("gold")).otherwise(pl.col("U_LoyaltyTier")),
        U_FirstPurchaseCategory=pl.when(_mask(n_bp, udf_bad[5:6])).then(pl.lit(""))
        .otherwise(pl.col("U_FirstPurchaseCategory")),
    )
    for part, (country, city, zip_, cur) in (
        ("sfr_customers", ("CH", "Zurich", "8001", "SFR")), ("us_customers", ("US", "New York", "10001", "US$")),
        ("eur_customers", ("IE", "Dublin", "D02 X285", "EUR")),
    ):
        m = _mask(n_bp, parts[part])
        ocrd = ocrd.with_columns(
            *[pl.when(m).then(pl.lit(v)).otherwise(pl.col(c)).alias(c) for c, v in (
                ("Country", country), ("City", city), ("ZipCode", zip_), ("Currency", cur),
                ("MailCountry", country), ("MailCity", city), ("MailZipCode", zip_))],
            County=pl.when(m).then(_NULL_S).otherwise(pl.col("County")),
            # their UK numbers, written as a customer abroad gives them: with the country prefix
            *[pl.when(m & pl.col(c).str.starts_with("0")).then(pl.concat_str(pl.lit("+44 "), pl.col(c).str.slice(1)))
              .otherwise(pl.col(c)).alias(c) for c in ("Phone1", "Cellular")],
        )
    codes_bp = ocrd["CardCode"]
    for k, idx in parts.items():
        planted[k] = codes_bp.gather(pl.Series(np.sort(idx))).to_list()
    # Keep the addresses of the re-homed customers in step with their header.
    moved = ocrd.filter(pl.col("CardCode").is_in(planted["sfr_customers"] + planted["us_customers"] + planted["eur_customers"]))
    crd1 = crd1.join(moved.select(BPCode="CardCode", _c="Country", _ci="City", _z="ZipCode"), on="BPCode", how="left",
                     maintain_order="left").with_columns(
        Country=pl.coalesce("_c", "Country"), City=pl.coalesce("_ci", "City"), ZipCode=pl.coalesce("_z", "ZipCode"),
        County=pl.when(pl.col("_c").is_not_null()).then(_NULL_S).otherwise(pl.col("County")),
    ).select(ADDRESS_COLUMNS)
    planted["suppliers"] = codes_bp.filter(ocrd["CardType"] == "cSupplier").head(5).to_list()
    planted["leads"] = codes_bp.filter(ocrd["CardType"] == "cLid").head(5).to_list()
    planted["numeric_card_codes"] = codes_bp.filter(codes_bp.str.contains(r"^\d+$")).head(5).to_list()
    planted["invalid_phones"] = sorted(ocrd.filter(pl.col("_badphone") & (pl.col("CardType") == "cCustomer"))[
        "CardCode"].to_list())

    # -- orders --------------------------------------------------------------------------
    n_ord = n["orders"]
    t = (NOW_S - (1 - np.sqrt(rng.random(n_ord))) * 730 * DAY).astype(np.int64)
    cust_rows = ocrd.filter((pl.col("CardType") == "cCustomer") & (pl.col("Frozen") == "tNO")).sort("_t")
    ct = cust_rows["_t"].to_numpy()
    # Which customer: someone already registered; early customers have had time to buy more.
    k = np.maximum(np.searchsorted(ct, t, side="right"), 1)
    ci = np.minimum((rng.random(n_ord) ** 0.8 * k).astype(np.int64), k - 1)
    forced = np.flatnonzero(cust_rows["CardCode"].is_in(
        planted["sfr_customers"] + planted["us_customers"] + planted["eur_customers"]).to_numpy())
    slots = rng.choice(n_ord, size=len(forced) * 2, replace=False)
    ci[slots] = np.repeat(forced, 2)
    t[slots] = np.maximum(t[slots], ct[np.repeat(forced, 2)] + HOUR)
    channel = _choice(rng, CHANNELS, n_ord, [60, 25, 5, 10])
    trade = cust_rows["GroupCode"].to_numpy()[ci] == 102
    channel = np.where(trade, np.where(rng.random(n_ord) < 0.7, 2, 0), channel)
    t = (t // DAY) * DAY + _tod(rng, n_ord, channel == 1)
    t = np.where(t >= NOW_S - 60, t - DAY, t)
    o = np.argsort(t, kind="stable")
    t, ci, channel = t[o], ci[o], channel[o]
    cards = cust_rows.gather(pl.Series(ci)).select(
        "CardCode", pl.col("CardName").fill_null(""), DocCurrency=pl.col("Currency").replace("##", LOCAL_CURRENCY),
        GroupCode="GroupCode",
        Address=pl.concat_str(pl.col("Address"), pl.lit("\r"), pl.col("ZipCode"), pl.lit(" "), pl.col("City"), ignore_nulls=True),
    )
    # Planted: orders for leads, suppliers and card codes that are not partners at all.
    odd = _concat([
        ocrd.filter(pl.col("CardCode").is_in(planted["leads"][:3] + planted["suppliers"][:2])).select(
            "CardCode", pl.col("CardName").fill_null(""), DocCurrency=pl.lit(LOCAL_CURRENCY), GroupCode="GroupCode",
            Address="Address"),
        pl.DataFrame({"CardCode": ["C900001", "C900002", "WEBGUEST"],
                      "CardName": ["Unknown customer", "", "Web guest checkout"],
                      "DocCurrency": [LOCAL_CURRENCY] * 3, "GroupCode": [100] * 3, "Address": [None] * 3},
                     schema=cards.schema),
    ]).cast(cards.schema)
    slots = rng.choice(np.arange(n_ord // 10, n_ord), size=odd.height, replace=False)
    idx = np.arange(n_ord)
    idx[slots] = n_ord + np.arange(odd.height)
    cards = _concat([cards, odd]).gather(pl.Series(idx))
    channel[slots] = 0
    store = channel == 1
    ordr, rdr1, rdr3 = _new_orders(rng, t, cards, channel, orderable, 1, warehouses)
    del cards
    odd_entries = (slots + 1).tolist()
    planted["orders_for_leads"] = ordr.filter(pl.col("CardCode").is_in(planted["leads"]))["DocEntry"].to_list()
    planted["orders_for_suppliers"] = ordr.filter(pl.col("CardCode").is_in(planted["suppliers"]))["DocEntry"].to_list()
    planted["orders_unknown_card_code"] = ordr.filter(
        pl.col("CardCode").is_in(["C900001", "C900002", "WEBGUEST"]))["DocEntry"].to_list()

    # Planted: lines for items the company does not know (legacy codes).
    legacy_lines = rdr1.select("DocEntry", "LineNum").filter(pl.col("DocEntry") > n_ord // 5).sample(
        n=5, seed=_seed_of(rng)).sort("DocEntry")
    hit = pl.struct("DocEntry", "LineNum").is_in(legacy_lines.to_struct().implode())
    rdr1 = rdr1.with_columns(
        ItemCode=pl.when(hit).then(pl.concat_str(pl.lit("LEGACY-"), pl.col("DocEntry").cast(_S))).otherwise(pl.col("ItemCode")),
        ItemDescription=pl.when(hit).then(pl.lit("Legacy item (pre-2020 catalogue)")).otherwise(
            pl.col("ItemDescription").cast(_S)).cast(pl.Categorical),
    )
    planted["unknown_item_lines"] = [tuple(r) for r in legacy_lines.rows()]

    # Fulfilment by age: old orders are mostly shipped, recent ones open or partly shipped.
    age_d = (NOW_S - t) / DAY
    r = rng.random(n_ord)
    status = np.where(age_d < 1, np.where(r < 0.7, 0, 2),
                      np.where(age_d < 10, np.where(r < 0.25, 0, np.where(r < 0.35, 1, 2)),
                               np.where(r < 0.015, 0, np.where(r < 0.03, 1, np.where(r < 0.04, 3, 2)))))
    status = np.where(store, np.where(status == 3, 3, 2), status)  # 0 open, 1 partial, 2 full, 3 cancelled
    nl = np.bincount(rdr1["DocEntry"].to_numpy() - 1, minlength=n_ord)
    multi = np.flatnonzero((nl >= 2) & ~store & (age_d > 2))
    status[rng.choice(multi, size=min(6, len(multi)), replace=False)] = 1
    status[rng.choice(np.flatnonzero(~store & (age_d > 30)), size=5, replace=False)] = 3
    status[slots] = 0  # the odd-partner orders stay open
    # Quantities shipped per line.
    line_doc = rdr1["DocEntry"].to_numpy() - 1
    qty = rdr1["Quantity"].to_numpy()
    first = rdr1["LineNum"].to_numpy() == 0
    st_l = status[line_doc]
    deliv = np.where(st_l == 2, qty, np.where(st_l == 1, np.where(first, np.maximum(qty - 1, 1.0),
                                                                   np.floor(rng.random(len(qty)) * qty)), 0.0))
    shipped = np.bincount(line_doc, weights=deliv, minlength=n_ord)
    ordered = np.bincount(line_doc, weights=qty, minlength=n_ord)
    status = np.where((status == 1) & (shipped == 0), 0, np.where((status == 1) & (shipped >= ordered), 2, status))
    deliv = np.where(np.isin(status[line_doc], (1, 2)), deliv, 0.0)
    # When the next documents happen.
    room = (NOW_S - 120 - t).astype(float)
    lag_inv = rng.random(n_ord) * DAY
    t_del = (t + np.minimum((0.2 + rng.random(n_ord) * 2.8) * DAY, room * 0.6)).astype(np.int64)
    t_inv = np.where(store, t + 60, t_del + np.minimum(lag_inv, (NOW_S - 60 - t_del) * 0.5)).astype(np.int64)
    inv_ok = store | ((t_del + lag_inv) < NOW_S - 60)
    t_cancel = (t + np.minimum(rng.random(n_ord) * 3 * DAY, room * 0.5)).astype(np.int64)

    # Deliveries: non-store orders that shipped something (BaseType 17).
    ship = np.isin(status, (1, 2)) & ~store
    sel = np.flatnonzero(ship[line_doc] & (deliv > 0))
    pick = pl.DataFrame({"_row": sel, "Quantity": deliv[sel], "_t": t_del[line_doc[sel]], "_freight": np.ones(len(sel), bool)})
    odln, dln1, dln3 = _copy_docs(ordr, rdr1, rdr3, pick, src_table="ORDR", target_table="ODLN", first_entry=1)
    # Invoices: from deliveries (BaseType 15) and, for store sales, straight from the order (17).
    dl_order = dln1["DocEntry"].to_numpy()
    dl_src = odln["_src"].to_numpy() - 1          # order index per delivery (deliveries numbered 1..)
    src_of_line = dl_src[dl_order - 1]
    sel_d = np.flatnonzero(inv_ok[src_of_line])
    pick_d = pl.DataFrame({"_row": sel_d, "Quantity": dln1["Quantity"].to_numpy()[sel_d],
                           "_t": t_inv[src_of_line[sel_d]], "_freight": np.ones(len(sel_d), bool)})
    sel_o = np.flatnonzero(store[line_doc] & (status[line_doc] == 2))
    pick_o = pl.DataFrame({"_row": sel_o, "Quantity": qty[sel_o], "_t": t_inv[line_doc[sel_o]],
                           "_freight": np.ones(len(sel_o), bool)})
    parts_inv = [
        (*_copy_docs(odln, dln1, dln3, pick_d, src_table="ODLN", target_table="OINV", first_entry=1), 15),
        (*_copy_docs(ordr, rdr1, rdr3, pick_o, src_table="ORDR", target_table="OINV", first_entry=1), 17),
    ]
    del pick, pick_d, pick_o
    oinv, inv1, inv3 = _merge_renumber("OINV", parts_inv)
    del parts_inv

    # Orders and their lines after fulfilment and cancellation.
    cancelled = status == 3
    rdr1 = rdr1.with_columns(
        RemainingOpenQuantity=pl.Series(np.where(cancelled[line_doc], qty, qty - deliv)),
    ).with_columns(
        LineStatus=pl.when(pl.Series(cancelled[line_doc]) | (pl.col("RemainingOpenQuantity") == 0))
        .then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")),
    )
    upd = np.where(cancelled, t_cancel, np.where(np.isin(status, (1, 2)), np.where(store, t_inv, t_del), t))
    # Some open orders were amended after entry (header UpdateDate later than creation).
    amend = (status == 0) & (rng.random(n_ord) < 0.2)
    upd = np.where(amend, upd + ((NOW_S - upd) * rng.random(n_ord)).astype(np.int64), upd)
    s_c = pl.Series(cancelled)
    ordr = ordr.with_columns(
        _u=pl.Series(upd),
        DocumentStatus=pl.when(pl.Series(np.isin(status, (2, 3)))).then(pl.lit("bost_Close")).otherwise(pl.col("DocumentStatus")),
        Cancelled=pl.when(s_c).then(pl.lit("tYES")).otherwise(pl.col("Cancelled")),
        CancelStatus=pl.when(s_c).then(pl.lit("csYes")).otherwise(pl.col("CancelStatus")),
    ).with_columns(CancelDate=pl.when(s_c).then(_date_of("_u")).otherwise(pl.col("CancelDate")))
    planted["cancelled_orders"] = (np.flatnonzero(cancelled) + 1).tolist()
    planted["partially_delivered_orders"] = (np.flatnonzero(status == 1) + 1).tolist()

    # Deliveries close once invoiced.
    inv_time = oinv.filter(pl.col("_origin") == 15).select(DocEntry="_src", _ti="_t")
    odln = odln.join(inv_time, on="DocEntry", how="left", maintain_order="left").with_columns(
        DocumentStatus=pl.when(pl.col("_ti").is_not_null()).then(pl.lit("bost_Close")).otherwise(pl.col("DocumentStatus")),
        _u=pl.coalesce("_ti", "_u"),
    ).drop("_ti")
    closed_dl = (odln["DocumentStatus"] == "bost_Close").to_numpy()[dl_order - 1]
    dln1 = dln1.with_columns(
        RemainingOpenQuantity=pl.when(pl.Series(closed_dl)).then(0.0).otherwise(pl.col("RemainingOpenQuantity")),
        LineStatus=pl.when(pl.Series(closed_dl)).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")),
    )

    # Credit memos linked through invoices (full and partial) ...
    inv_pool = oinv.filter(pl.col("_t") < NOW_S - 2 * DAY).select("DocEntry", "_t", "_origin", "DocTotal")
    chosen = np.sort(rng.choice(inv_pool.height, size=min(n["credit_linked"], inv_pool.height // 3), replace=False))
    cm_src = inv_pool.gather(pl.Series(chosen))
    m = cm_src.height
    cm_t = np.minimum(cm_src["_t"].to_numpy() + ((1 + rng.random(m) * 39) * DAY).astype(np.int64),
                      NOW_S - HOUR - rng.integers(0, DAY, m))
    full = rng.random(m) < 0.4
    # Two goodwill credits larger than the order they refund (store sales: invoice = order).
    exceed_cand = np.flatnonzero(~full & (cm_src["_origin"] == 17).to_numpy() & (cm_src["DocTotal"] > 20).to_numpy())
    exceed = np.zeros(m, bool)
    exceed[exceed_cand[:2]] = True
    cm_src = cm_src.with_columns(_tc=pl.Series(cm_t), _full=pl.Series(full), _exceed=pl.Series(exceed))
    src_lines = inv1.select("DocEntry", "LineNum", "Quantity").with_row_index("_row").join(
        cm_src.select("DocEntry", "_tc", "_full", "_exceed"), on="DocEntry", maintain_order="left")
    src_lines = src_lines.with_columns(_nl=pl.len().over("DocEntry")).with_columns(
        _qty=pl.when(pl.col("_full") | pl.col("_exceed")).then(pl.col("Quantity"))
        .when(pl.col("_nl") > 1).then(pl.when(pl.col("LineNum") == 0).then(pl.col("Quantity")).otherwise(0.0))
        .when(pl.col("Quantity") > 1).then(pl.col("Quantity") - 1).otherwise(pl.col("Quantity")),
        _pf=pl.when(pl.col("_exceed")).then(3.0)
        .when(~pl.col("_full") & (pl.col("_nl") == 1) & (pl.col("Quantity") <= 1)).then(0.5).otherwise(1.0),
    ).filter(pl.col("_qty") > 0)
    pick = src_lines.select("_row", Quantity="_qty", _t="_tc", _freight="_full", _pf="_pf")
    cm_a = _copy_docs(oinv, inv1, inv3, pick, src_table="OINV", target_table="ORIN", first_entry=1)
    # ... and stand-alone ones (BaseType -1): goodwill and returns without an invoice.
    n_sa = n["credit_standalone"]
    sa_t = np.sort(NOW_S - (rng.random(n_sa) * 700 * DAY).astype(np.int64))
    sa_cards = cust_rows.filter(pl.col("_t") < NOW_S - 730 * DAY).sample(
        n=n_sa, with_replacement=True, seed=_seed_of(rng)).select(
        "CardCode", pl.col("CardName").fill_null(""), DocCurrency=pl.col("Currency").replace("##", LOCAL_CURRENCY),
        GroupCode="GroupCode", Address="Address")
    sa_h, sa_l, sa_e = _new_orders(rng, sa_t, sa_cards, np.ones(n_sa, np.int64), orderable, 1, warehouses)
    sa_l = sa_l.filter(pl.col("LineNum") < 2)
    sa_h = _totals(sa_h, sa_l, sa_e.clear()).with_columns(_src=_NULL_I)
    orin, rin1, rin3 = _merge_renumber("ORIN", [(*cm_a, 13), (sa_h, sa_l, sa_e.clear(), -1)])
    del cm_a, sa_h, sa_l, sa_e
    orin = orin.with_columns(
        DocumentStatus=pl.when(pl.col("_t") < NOW_S - 3 * DAY).then(pl.lit("bost_Close")).otherwise(pl.col("DocumentStatus")),
    )
    closed_cm = (orin["DocumentStatus"] == "bost_Close").to_numpy()[rin1["DocEntry"].to_numpy() - 1]
    rin1 = rin1.with_columns(
        RemainingOpenQuantity=pl.when(pl.Series(closed_cm)).then(0.0).otherwise(pl.col("Quantity")),
        LineStatus=pl.when(pl.Series(closed_cm)).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")),
    )
    linked = orin.filter(pl.col("_origin") == 13).join(
        cm_src.select(_src="DocEntry", _full="_full", _exceed="_exceed"), on="_src", how="left")
    planted["standalone_credit_memos"] = orin.filter(pl.col("_origin") == -1)["DocEntry"].to_list()
    planted["full_credit_memos"] = linked.filter(pl.col("_full") & ~pl.col("_exceed"))["DocEntry"].to_list()
    planted["partial_credit_memos"] = linked.filter(~pl.col("_full") & ~pl.col("_exceed"))["DocEntry"].to_list()
    planted["credit_memos_exceeding_order"] = linked.filter(pl.col("_exceed"))["DocEntry"].to_list()

    # Invoices: paid (closed) some days after issue; credited ones are closed by the credit memo.
    pay_t = oinv["_t"].to_numpy() + (rng.random(oinv.height) * 20 * DAY).astype(np.int64)
    credited = orin.filter(pl.col("_origin") == 13).group_by("_src").agg(_tc=pl.col("_t").max()).rename({"_src": "DocEntry"})
    paid = pl.col("_pay") < NOW_S
    oinv = oinv.with_columns(_pay=pl.Series(pay_t)).join(credited, on="DocEntry", how="left", maintain_order="left").with_columns(
        DocumentStatus=pl.when(paid | pl.col("_tc").is_not_null()).then(pl.lit("bost_Close")).otherwise(pl.col("DocumentStatus")),
        PaidToDate=pl.when(paid).then(pl.col("DocTotal")).otherwise(0.0),
        _u=pl.max_horizontal("_u", pl.when(paid).then(pl.col("_pay")).otherwise(pl.col("_u")), pl.col("_tc").fill_null(0)),
    ).drop("_pay", "_tc")
    closed_inv = (oinv["DocumentStatus"] == "bost_Close").to_numpy()[inv1["DocEntry"].to_numpy() - 1]
    inv1 = inv1.with_columns(
        RemainingOpenQuantity=pl.when(pl.Series(closed_inv)).then(0.0).otherwise(pl.col("Quantity")),
        LineStatus=pl.when(pl.Series(closed_inv)).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")),
    )

    # Cancellation documents: a few invoices (from deliveries, not credited) and credit memos.
    inv_c = oinv.filter((pl.col("_origin") == 15) & ~pl.col("DocEntry").is_in(credited["DocEntry"].implode())
                        & (pl.col("_t") < NOW_S - 4 * DAY))
    inv_c = inv_c.sample(n=min(max(2, round(oinv.height * 0.001)), inv_c.height), seed=_seed_of(rng)).sort("DocEntry")
    cm_c = orin.filter(pl.col("_t") < NOW_S - 3 * DAY)
    cm_c = cm_c.sample(n=min(max(3, round(orin.height * 0.01)), cm_c.height), seed=_seed_of(rng)).sort("DocEntry")
    oinv, inv1, inv3, c_inv = _cancel_documents("OINV", oinv, inv1, inv3, inv_c["DocEntry"].to_numpy(), rng)
    orin, rin1, rin3, c_cm = _cancel_documents("ORIN", orin, rin1, rin3, cm_c["DocEntry"].to_numpy(), rng)
    planted["cancelled_invoices"] = inv_c["DocEntry"].to_list()
    planted["cancellation_invoices"] = c_inv
    planted["cancelled_credit_memos"] = cm_c["DocEntry"].to_list()
    planted["cancellation_credit_memos"] = c_cm
    # Cancelling an invoice reopens the delivery it was based on.
    reopen = oinv.filter(pl.col("DocEntry").is_in(planted["cancelled_invoices"])).select(DocEntry="_src", _cu="_u")
    odln = odln.join(reopen, on="DocEntry", how="left", maintain_order="left").with_columns(
        DocumentStatus=pl.when(pl.col("_cu").is_not_null()).then(pl.lit("bost_Open")).otherwise(pl.col("DocumentStatus")),
        _u=pl.coalesce("_cu", "_u"),
    ).drop("_cu")
    reopened = pl.col("DocEntry").is_in(reopen["DocEntry"].implode())
    dln1 = dln1.with_columns(
        RemainingOpenQuantity=pl.when(reopened).then(pl.col("Quantity")).otherwise(pl.col("RemainingOpenQuantity")),
        LineStatus=pl.when(reopened).then(pl.lit("bost_Open")).otherwise(pl.col("LineStatus")),
    )

    # Planted: a few orders whose header total disagrees with its parts (manual edits, imports).
    bad = np.sort(rng.choice(np.flatnonzero(status == 2), size=4, replace=False)) + 1
    bad = bad.tolist()
    ordr = ordr.with_columns(
        DocTotal=pl.when(pl.col("DocEntry").is_in(bad[:2])).then((pl.col("DocTotal") + 10.0).round(2))
        .when(pl.col("DocEntry").is_in(bad[2:])).then((pl.col("DocTotal") - 0.5).round(2))
        .otherwise(pl.col("DocTotal"))
    )
    planted["inconsistent_order_totals"] = bad
    planted["foreign_currency_orders"] = ordr.filter(pl.col("DocCurrency") != LOCAL_CURRENCY)["DocEntry"].head(50).to_list()
    planted["sfr_orders"] = ordr.filter(pl.col("DocCurrency") == "SFR")["DocEntry"].to_list()
    planted["usd_orders"] = ordr.filter(pl.col("DocCurrency") == "US$")["DocEntry"].head(50).to_list()
    planted["rounded_orders"] = ordr.filter(pl.col("RoundingDiffAmount") != 0)["DocEntry"].head(20).to_list()
    planted["odd_partner_orders"] = sorted(odd_entries)

    ocrd, crd1, oitm, docs = _plant_sync_exceptions(
        seed, planted, ocrd, crd1, oitm, orderable,
        {"ORDR": ordr, "RDR1": rdr1, "RDR3": rdr3, "ODLN": odln, "OINV": oinv, "ORIN": orin},
        candidates=np.flatnonzero(status == 0) + 1)
    ordr, rdr1, rdr3, odln, oinv, orin = (docs[k] for k in ("ORDR", "RDR1", "RDR3", "ODLN", "OINV", "ORIN"))
    del docs

    tables = {
        "OWHS": owhs, "OCRG": ocrg, "CUFD": cufd,
        "OCRD": _finish_master(ocrd, BP_COLUMNS).sort("CardCode"),
        "CRD1": crd1.sort("BPCode", "RowNum"),
        "OITM": _finish_master(oitm, ITEM_COLUMNS).sort("ItemCode"),
        "ITM1": itm1.sort("ItemCode", "PriceList"),
        "OITW": oitw,
        "ORDR": _finish_doc(ordr), "RDR1": rdr1, "RDR3": rdr3,
        "ODLN": _finish_doc(odln), "DLN1": dln1, "DLN3": dln3,
        "OINV": _finish_doc(oinv), "INV1": inv1, "INV3": inv3,
        "ORIN": _finish_doc(orin), "RIN1": rin1, "RIN3": rin3,
    }
    del ordr, odln, oinv, orin, rdr1, dln1, inv1, rin1
    # Over-committed stock: reservations beyond what is on hand for a few items.
    over = oitw.filter((pl.col("WarehouseCode") == "01") & ~pl.col("ItemCode").is_in(planted["never_ordered_items"]))
    over = over.sample(n=min(4, over.height), seed=_seed_of(rng)).select("ItemCode", "WarehouseCode").sort("ItemCode")
    tables["_RESERVED"] = over.with_columns(Extra=pl.lit(12.0))
    tables["OITW"] = tables["OITW"].join(over.with_columns(_o=pl.lit(True)), on=["ItemCode", "WarehouseCode"],
                                         how="left", maintain_order="left").with_columns(
        InStock=pl.when(pl.col("_o")).then(3.0).otherwise(pl.col("InStock"))
    ).drop("_o")
    planted["overcommitted_stock"] = [tuple(r) for r in over.rows()]
    _refresh_stock(tables)
    _canon(tables)
    return tables, planted, counters
