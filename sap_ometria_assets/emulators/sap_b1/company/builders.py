"""Builders shared by the initial generation and the ticks: business partners (with their fictional
yet valid phone numbers and addresses), items with prices and stock, new sales orders with their
lines and freight, and copying documents along the chain (order -> delivery -> invoice -> credit
memo).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sap_ometria_assets.emulators.sap_b1.company.amounts import _reprice, _totals
from sap_ometria_assets.emulators.sap_b1.company.constants import (
    ADJECTIVES, BRANDS, CHANNELS, COLOURS, COMPANY_SUFFIX, COMPANY_WORDS, COUNTRY_P, CURRENCIES, DAY, DOC_LABEL,
    DOC_NUM_BASE, EPOCH_DAYS, EXPENSE_DTYPES, E_CUR, E_STATUS, E_TAX, FIRST, FOREIGN, FREIGHT_NET, GROSS_PRICES,
    HEADER_DTYPES, LAST, LINE_DTYPES, LOCAL_CURRENCY, MAIL_DOMAINS, OBJECT_CODE, PRODUCTS, SEASONS, STREETS,
    UK_CITIES,
)
from sap_ometria_assets.emulators.sap_b1.company.helpers import (
    _choice, _concat, _date_of, _doc_rate, _pick, _rng, _time_of,
)
from sap_ometria_assets.emulators.sap_b1.company.phones import _fictional_phone, _invalid_phone
from sap_ometria_assets.emulators.sap_b1.company.schema import (
    ADDRESS_COLUMNS, BP_COLUMNS, EXPENSE_COLUMNS, HEADER_COLUMNS, ITEM_COLUMNS, ITEM_WHS_COLUMNS, LINE_COLUMNS,
    _NULL_D, _NULL_I, _NULL_S, _S,
)


# ---------------------------------------------------------------------------------------------
# Builders shared by the initial generation and the ticks
# ---------------------------------------------------------------------------------------------


def _make_bps(rng: np.random.Generator, kinds: np.ndarray, seqs: np.ndarray, create_s: np.ndarray,
              legacy: np.ndarray | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Business partners (kind 0 customer, 1 lead, 2 supplier) and their addresses."""
    n = len(kinds)
    customer, supplier = kinds == 0, kinds == 2
    group = np.where(supplier, 200, 100)
    r = rng.random(n)
    group = np.where(customer & (r < 0.06), 102, group)
    group = np.where(customer & (r >= 0.06) & (r < 0.11), 101, group)
    group = np.where(customer & (r >= 0.11) & (r < 0.13), 103, group)
    company = supplier | (group == 102)
    countries = list(COUNTRY_P)
    country_i = _choice(rng, countries, n, list(COUNTRY_P.values()))
    country_i = np.where(supplier & (rng.random(n) < 0.5), 0, country_i)
    country = _pick(countries, country_i)
    first_i = rng.integers(0, len(FIRST), n)
    last_i = rng.integers(0, len(LAST), n)
    city_i = rng.integers(0, len(UK_CITIES), n)
    street_i = rng.integers(0, len(STREETS), n)
    word_i = rng.integers(0, len(COMPANY_WORDS), n)
    suffix_i = rng.integers(0, len(COMPANY_SUFFIX), n)
    dom_i = rng.integers(0, len(MAIL_DOMAINS), n)
    sep_i = rng.integers(0, 3, n)
    house = rng.integers(1, 240, n)
    all_cur = country.replace_strict({c: FOREIGN[c][2] if c in FOREIGN else LOCAL_CURRENCY for c in countries})
    currency = pl.select(pl.when(pl.Series((group == 102) & (rng.random(n) < 0.3))).then(pl.lit("##"))
                         .otherwise(all_cur)).to_series()
    blocked = rng.random(n) < 0.08
    # UDFs: customers only (suppliers and leads have them empty), None = not filled in.
    src_i = np.where(customer, _choice(rng, range(6), n, [45, 25, 10, 8, 4, 8]), 5)
    tier_i = np.where(customer, _choice(rng, range(5), n, [50, 25, 10, 3, 12]), 4)
    optin_i = np.where(supplier, 2, np.where(blocked, 1, _choice(rng, range(3), n, [62, 28, 10])))
    cat_i = np.where(customer, _choice(rng, range(5), n, [40, 15, 15, 12, 18]), 4)
    dob = np.where(customer & (rng.random(n) < 0.55), rng.integers(-7300, 13000, n), -10**6)
    mobile_fmt = rng.integers(0, 3, n)

    df = pl.DataFrame({
        "_kind": kinds, "_seq": seqs, "_t": create_s, "_first": _pick(FIRST, first_i), "_last": _pick(LAST, last_i),
        "_city": _pick([c[0] for c in UK_CITIES], city_i), "_county": _pick([c[1] for c in UK_CITIES], city_i),
        "_pc": _pick([c[2] for c in UK_CITIES], city_i), "_street": _pick(STREETS, street_i), "_house": house,
        "_word": _pick(COMPANY_WORDS, word_i), "_suffix": _pick(COMPANY_SUFFIX, suffix_i),
        "_dom": _pick(MAIL_DOMAINS, dom_i), "_sep": _pick([".", "_", ""], sep_i),
        "_company": company, "Country": country, "GroupCode": group.astype(np.int32),
        "Currency": currency,
        "_blocked": blocked, "_legacy": legacy if legacy is not None else np.zeros(n, bool),
        "U_AcquisitionSource": _pick(["Web", "Store", "Marketplace", "Referral", "Event", None], src_i),
        "U_FirstPurchaseCategory": _pick(["Apparel", "Footwear", "Accessories", "Home", None], cat_i),
        "U_LoyaltyTier": _pick(["Bronze", "Silver", "Gold", "Platinum", None], tier_i),
        "U_MarketingOptIn": _pick(["Y", "N", None], optin_i),
        "_dob": dob, "_mob": mobile_fmt, "_p1": rng.integers(0, 1000, n), "_p2": rng.integers(0, 1000, n),
        "_hasphone": rng.random(n) < 0.55, "_hasmobile": rng.random(n) < 0.8,
        "_pz1": rng.integers(1, 10, n), "_pz2": rng.integers(1, 10, n),
        "_pz3": _pick(list("ABDEFGHJLNPQRSTUWXYZ"), rng.integers(0, 20, n)),
        "_pz4": _pick(list("ABDEFGHJLNPQRSTUWXYZ"), rng.integers(0, 20, n)),
    })
    kind = pl.col("_kind")
    # Phones are fictional but valid (see _fictional_phone). A third of the mobiles are Ofcom's
    # drama mobiles (07700 900xxx), which libphonenumber rejects: those partners also have a
    # landline, so the sync falls back to it. About 1 % hold only an unusable number.
    has_mobile = pl.col("_hasmobile") & ~pl.col("_company")
    mobile_drama = has_mobile & (pl.col("_mob") == 2)
    bad_phone = has_mobile & (pl.col("_p2") < 12)
    foreign_city = pl.col("Country").replace_strict({k: v[0] for k, v in FOREIGN.items()}, default=None)
    foreign_zip = pl.col("Country").replace_strict({k: v[1] for k, v in FOREIGN.items()}, default=None)
    is_gb = pl.col("Country") == "GB"
    df = df.with_columns(
        CardCode=pl.when(pl.col("_legacy")).then((200_000 + pl.col("_seq")).cast(_S))
        .when(kind == 0).then(pl.lit("C") + pl.col("_seq").cast(_S).str.zfill(6))
        .when(kind == 1).then(pl.lit("L") + pl.col("_seq").cast(_S).str.zfill(6))
        .otherwise(pl.lit("V") + pl.col("_seq").cast(_S).str.zfill(5)),
        CardName=pl.when(pl.col("_company"))
        .then(pl.concat_str(pl.col("_word"), pl.lit(" "), pl.col("_last"), pl.lit(" "), pl.col("_suffix")))
        .otherwise(pl.concat_str(pl.col("_first"), pl.lit(" "), pl.col("_last"))),
        CardType=pl.when(kind == 0).then(pl.lit("cCustomer")).when(kind == 1).then(pl.lit("cLid")).otherwise(pl.lit("cSupplier")),
        CompanyPrivate=pl.when(pl.col("_company")).then(pl.lit("cCompany")).otherwise(pl.lit("cPrivate")),
        Address=pl.concat_str(pl.col("_house").cast(_S), pl.lit(" "), pl.col("_street")),
        City=pl.when(is_gb).then(pl.col("_city")).otherwise(foreign_city),
        County=pl.when(is_gb).then(pl.col("_county")).otherwise(_NULL_S),
        ZipCode=pl.when(is_gb).then(pl.concat_str(
            pl.col("_pc"), pl.lit(" "), pl.col("_pz2").cast(_S), pl.col("_pz3"), pl.col("_pz4")
        )).otherwise(foreign_zip),
        EmailAddress=pl.when(pl.col("_company"))
        .then(pl.concat_str(pl.lit("accounts"), pl.col("_seq").cast(_S), pl.lit("@"),
                            pl.col("_word").str.to_lowercase(), pl.lit(".example.com")))
        .otherwise(pl.concat_str(pl.col("_first"), pl.col("_sep"), pl.col("_last").str.replace("'", ""),
                                 pl.col("_seq").cast(_S), pl.lit("@"), pl.col("_dom")).str.to_lowercase()),
        Phone1=pl.when((pl.col("_hasphone") | pl.col("_company") | mobile_drama) & ~bad_phone)
        .then(_fictional_phone("_p1")).otherwise(_NULL_S),
        Cellular=pl.when(bad_phone).then(_invalid_phone("_p2"))
        .when(mobile_drama).then(pl.concat_str(pl.when(is_gb).then(pl.lit("07700 900")).otherwise(pl.lit("+44 7700 900")),
                                               pl.col("_p2").cast(_S).str.zfill(3)))
        .when(has_mobile & (pl.col("_mob") == 1) & is_gb).then(_fictional_phone("_p2", international=True))
        .when(has_mobile).then(_fictional_phone("_p2"))
        .otherwise(_NULL_S),
        _badphone=bad_phone,
        Phone2=_NULL_S,
        PriceListNum=pl.when(pl.col("GroupCode") == 102).then(2).otherwise(1).cast(pl.Int32),
        Valid=pl.lit("tYES"),
        Frozen=pl.lit("tNO"),
        BlockSendingMarketingContent=pl.when(pl.col("_blocked")).then(pl.lit("tYES")).otherwise(pl.lit("tNO")),
        CurrentAccountBalance=pl.lit(0.0),
        Series=pl.when(kind == 0).then(1).when(kind == 1).then(2).otherwise(3).cast(pl.Int32),
        CreateDate=_date_of("_t"),
        CreateTime=_time_of("_t"),
        UpdateDate=_date_of("_t"),
        UpdateTime=_time_of("_t"),
        U_DateOfBirth=pl.when(pl.col("_dob") > -10**6).then(pl.col("_dob").cast(pl.Int32).cast(pl.Date)).otherwise(_NULL_D),
    )
    has_addr = (kind != 1) | (pl.col("_seq") % 3 == 0)
    df = df.with_columns(
        MailAddress=pl.when(has_addr).then(pl.col("Address")).otherwise(_NULL_S),
        MailZipCode=pl.when(has_addr).then(pl.col("ZipCode")).otherwise(_NULL_S),
        MailCity=pl.when(has_addr).then(pl.col("City")).otherwise(_NULL_S),
        MailCountry=pl.when(has_addr).then(pl.col("Country")).otherwise(_NULL_S),
        BilltoDefault=pl.when(has_addr).then(pl.lit("Default")).otherwise(_NULL_S),
        ShipToDefault=pl.when(has_addr).then(pl.lit("Default")).otherwise(_NULL_S),
        _has_addr=has_addr,
        _extra_ship=(pl.col("_seq") % 7 == 3) & (kind == 0),
    )
    addr_cols = ["BPCode", "Street", "StreetNo", "City", "ZipCode", "County", "Country"]
    base = df.filter(pl.col("_has_addr")).select(
        BPCode=pl.col("CardCode"), Street=pl.col("_street"), StreetNo=pl.col("_house").cast(_S),
        City=pl.col("City"), ZipCode=pl.col("ZipCode"), County=pl.col("County"), Country=pl.col("Country"),
        _extra=pl.col("_extra_ship"),
    )
    bill = base.select(addr_cols).with_columns(
        AddressName=pl.lit("Default"), AddressType=pl.lit("bo_BillTo"), RowNum=pl.lit(0, pl.Int32))
    ship = base.select(addr_cols).with_columns(
        AddressName=pl.lit("Default"), AddressType=pl.lit("bo_ShipTo"), RowNum=pl.lit(1, pl.Int32))
    work = base.filter(pl.col("_extra")).select(addr_cols).with_columns(
        AddressName=pl.lit("Work"), AddressType=pl.lit("bo_ShipTo"), RowNum=pl.lit(2, pl.Int32),
        Street=pl.lit("1 Canada Square"), StreetNo=_NULL_S, City=pl.lit("London"), ZipCode=pl.lit("E14 5AB"),
        County=pl.lit("Greater London"), Country=pl.lit("GB"),
    )
    crd1 = _concat([bill, ship, work]).select(ADDRESS_COLUMNS).sort("BPCode", "RowNum")
    ocrd = df.select(BP_COLUMNS + ["_t", "_badphone"])
    return ocrd, crd1


def _make_items(rng: np.random.Generator, seqs: np.ndarray, create_s: np.ndarray, warehouses: list[str]
                ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    n = len(seqs)
    groups = np.array(list(PRODUCTS))[_choice(rng, PRODUCTS, n, [45, 15, 20, 15, 5])]
    prod_name = np.empty(n, dtype=object)
    for g, (_, names) in PRODUCTS.items():
        m = groups == g
        prod_name[m] = np.array(names, dtype=object)[rng.integers(0, len(names), m.sum())]
    gift = groups == 105
    gross = GROSS_PRICES[rng.integers(0, len(GROSS_PRICES), n)]
    gross = np.where(gift, np.array([10.0, 25.0, 50.0])[rng.integers(0, 3, n)], gross)
    zero_rated = gift | (rng.random(n) < 0.05)
    net = np.where(zero_rated, gross, np.round(gross / 1.2, 2))
    ean = rng.random(n) < 0.10
    df = pl.DataFrame({
        "_seq": seqs, "_t": create_s, "_group": groups.astype(np.int32), "_prod": pl.Series(prod_name.tolist(), dtype=_S),
        "_adj": _pick(ADJECTIVES, rng.integers(0, len(ADJECTIVES), n)), "_col": _pick(COLOURS, rng.integers(0, len(COLOURS), n)),
        "_brand": _pick(BRANDS, rng.integers(0, len(BRANDS), n)), "_season": _pick(SEASONS, rng.integers(0, len(SEASONS), n)),
        "_ean": ean, "_gift": gift, "_price": net, "_zero": zero_rated, "_hasbar": rng.random(n) < 0.8,
    })
    df = df.with_columns(
        ItemCode=pl.when(pl.col("_ean")).then(pl.lit("506") + (pl.col("_seq") * 7919 % 10_000_000_000).cast(_S).str.zfill(10))
        .otherwise(pl.lit("SKU-") + pl.col("_seq").cast(_S).str.zfill(5)),
        ItemName=pl.when(pl.col("_gift"))
        .then(pl.concat_str(pl.col("_brand"), pl.lit(" Gift Card £"), pl.col("_price").cast(pl.Int32).cast(_S)))
        .otherwise(pl.concat_str(pl.col("_adj"), pl.lit(" "), pl.col("_prod"), pl.lit(" - "), pl.col("_col"))),
        ItemsGroupCode=pl.col("_group"),
        BarCode=pl.when(pl.col("_hasbar"))
        .then(pl.lit("50") + (pl.col("_seq") * 104_729 % 100_000_000_000).cast(_S).str.zfill(11)).otherwise(_NULL_S),
        SalesVATGroup=pl.when(pl.col("_zero")).then(pl.lit("O0")).otherwise(pl.lit("O1")),
        PurchaseItem=pl.when(pl.col("_gift")).then(pl.lit("tNO")).otherwise(pl.lit("tYES")),
        SalesItem=pl.lit("tYES"),
        InventoryItem=pl.when(pl.col("_gift")).then(pl.lit("tNO")).otherwise(pl.lit("tYES")),
        Valid=pl.lit("tYES"),
        Frozen=pl.lit("tNO"),
        QuantityOnStock=pl.lit(0.0), QuantityOrderedFromVendors=pl.lit(0.0), QuantityOrderedByCustomers=pl.lit(0.0),
        CreateDate=_date_of("_t"), CreateTime=_time_of("_t"), UpdateDate=_date_of("_t"), UpdateTime=_time_of("_t"),
        U_Brand=pl.col("_brand"),
        U_Colour=pl.when(pl.col("_gift")).then(_NULL_S).otherwise(pl.col("_col")),
        U_Season=pl.when(pl.col("_gift")).then(pl.lit("Core")).otherwise(pl.col("_season")),
    ).with_columns(
        U_WebTitle=pl.concat_str(pl.col("U_Brand"), pl.lit(" "), pl.col("ItemName"),
                                 pl.lit(" | Free UK delivery over £50 | Season "), pl.col("U_Season")),
        # the web shop's image path, relative to its media folder; gift cards have no photo
        U_ImagePath=pl.when(pl.col("_gift")).then(_NULL_S)
        .otherwise(pl.lit("catalog/product/") + pl.col("ItemCode").str.to_lowercase() + pl.lit(".jpg")),
    )
    oitm = df.select(ITEM_COLUMNS + ["_t", "_price"])
    itm1 = _concat([
        df.select("ItemCode", PriceList=pl.lit(1, pl.Int32), Price=pl.col("_price"), Currency=pl.lit(LOCAL_CURRENCY)),
        df.select("ItemCode", PriceList=pl.lit(2, pl.Int32), Price=(pl.col("_price") * 0.6).round(2),
                  Currency=pl.lit(LOCAL_CURRENCY)),
    ]).sort("ItemCode", "PriceList")
    # Stock per warehouse: one row per item and warehouse, as the Service Layer returns them.
    w = len(warehouses)
    codes = np.repeat(np.arange(n), w)
    whs = np.tile(np.array(warehouses, dtype=object), n)
    cap = {"01": 400, "02": 30, "03": 30, "WHS-WHOLESALE": 1500, "04": 8, "05": 25}
    maxq = np.array([cap[x] for x in warehouses])[np.tile(np.arange(w), n)]
    instock = np.floor(rng.random(n * w) ** 2 * maxq)
    instock = np.where(rng.random(n * w) < 0.12, 0.0, instock)
    instock = np.where(np.repeat(gift, w), 0.0, instock)
    ordered = np.where((whs == "01") & (rng.random(n * w) < 0.15), rng.integers(20, 200, n * w), 0).astype(float)
    oitw = pl.DataFrame({
        "ItemCode": df["ItemCode"].gather(pl.Series(codes)), "WarehouseCode": pl.Series(whs.tolist(), dtype=_S),
        "InStock": instock, "Committed": np.zeros(n * w), "Ordered": ordered,
    }).with_columns(Locked=pl.lit("tNO")).select(ITEM_WHS_COLUMNS).sort("ItemCode", "WarehouseCode")
    return oitm, itm1, oitw


def _new_orders(rng: np.random.Generator, t: np.ndarray, cards: pl.DataFrame, channel: np.ndarray,
                orderable: pl.DataFrame, first_entry: int, warehouses: list[str]
                ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Open sales orders placed at instants `t` (sorted) by `cards`.

    `cards`: CardCode, CardName, DocCurrency, GroupCode, Address per order; `channel`: index into
    CHANNELS; `orderable`: ItemCode, ItemName, SalesVATGroup, _price (list 1), _trade (list 2).
    """
    n = len(t)
    entries = first_entry + np.arange(n)
    cur = cards["DocCurrency"].cast(E_CUR).to_physical().to_numpy().astype(np.int64)
    rate = _doc_rate(cur, t)
    group = cards["GroupCode"].to_numpy()
    trade = group == 102
    store = channel == 1
    nlines = np.where(trade, 2 + rng.poisson(3.0, n), 1 + np.minimum(rng.poisson(2.0, n), 9))
    L = int(nlines.sum())
    order_of_line = np.repeat(np.arange(n), nlines)
    starts = np.cumsum(nlines) - nlines
    line_num = np.arange(L) - np.repeat(starts, nlines)
    m = orderable.height
    pop = np.empty(m)
    pop[_rng(7, m).permutation(m)] = 1.0 / (np.arange(m) + 8.0)  # fixed popularity ranking
    item_i = rng.choice(m, size=L, p=pop / pop.sum())
    trade_l = trade[order_of_line]
    qty = np.array([1.0, 2.0, 3.0, 4.0])[_choice(rng, range(4), L, [72, 18, 7, 3])]
    qty = np.where(trade_l, np.array([6.0, 12.0, 24.0, 48.0])[rng.integers(0, 4, L)], qty)
    disc = np.where(rng.random(L) < 0.08, np.array([10.0, 15.0, 20.0, 25.0])[rng.integers(0, 4, L)], 0.0)
    whs_names = ["01"] + [w for w in warehouses if w in ("02", "03", "05")] + ["WHS-WHOLESALE"]
    n_store = len(whs_names) - 2
    whs_i = np.where(trade, len(whs_names) - 1, np.where(store, 1 + rng.integers(0, n_store, n), 0))
    lrate = rate[order_of_line]
    fc_line = cur[order_of_line] != 0
    items = orderable.with_columns(pl.col("ItemName").cast(pl.Categorical), pl.col("SalesVATGroup").cast(E_TAX)).gather(
        pl.Series(item_i))
    price_gbp = np.where(trade_l, items["_trade"].to_numpy(), items["_price"].to_numpy())
    unit = np.where(fc_line, np.round(price_gbp / lrate, 2), price_gbp)
    due_days = np.where(store, 0, np.where(trade, 7, 3))
    day = t // DAY
    lines = pl.DataFrame({
        "DocEntry": entries[order_of_line].astype(np.int32), "LineNum": line_num.astype(np.int32),
        "ItemCode": items["ItemCode"], "ItemDescription": items["ItemName"], "Quantity": qty,
        "ShipDate": pl.Series((day + due_days)[order_of_line] + EPOCH_DAYS).cast(pl.Int32).cast(pl.Date),
        "Currency": _pick(CURRENCIES, cur[order_of_line], E_CUR), "Rate": np.where(fc_line, lrate, 0.0),
        "DiscountPercent": disc, "WarehouseCode": _pick(whs_names, whs_i[order_of_line], LINE_DTYPES["WarehouseCode"]),
        "TaxCode": items["SalesVATGroup"], "UnitPrice": unit,
    }).with_columns(
        LineStatus=pl.lit("bost_Open", E_STATUS), RemainingOpenQuantity=pl.col("Quantity"),
        BaseType=pl.lit(-1, pl.Int32), BaseEntry=_NULL_I, BaseLine=_NULL_I,
    )
    lines = _reprice(lines).select(LINE_COLUMNS).cast(LINE_DTYPES)
    freight = (~store) & (~trade) & (rng.random(n) < 0.55)
    fr = np.flatnonzero(freight)
    fr_fc = cur[fr] != 0
    fr_doc = FREIGHT_NET[cur[fr]]
    fr_local = np.where(fr_fc, np.round(fr_doc * rate[fr], 2), fr_doc)
    exp = pl.DataFrame({
        "DocEntry": entries[fr].astype(np.int32), "LineNum": np.zeros(len(fr), np.int32),
        "ExpenseCode": np.ones(len(fr), np.int32), "LineTotal": fr_local,
        "LineTotalFC": np.where(fr_fc, fr_doc, 0.0), "TaxSum": np.round(fr_local * 0.2, 2),
        "TaxSumFC": np.where(fr_fc, np.round(fr_doc * 0.2, 2), 0.0),
    }).with_columns(TaxCode=pl.lit("O1")).select(EXPENSE_COLUMNS).cast(EXPENSE_DTYPES)
    disc_h = np.where(group == 101, 10.0, np.where(group == 103, 20.0, np.where(rng.random(n) < 0.03, 5.0, 0.0)))
    promo_i = _choice(rng, range(6), n, [85, 5, 3, 3, 3, 1])
    hdr = pl.DataFrame({
        "DocEntry": entries.astype(np.int32), "_t": t, "_u": t,
        "CardCode": cards["CardCode"], "CardName": cards["CardName"], "Address": cards["Address"],
        "DocCurrency": _pick(CURRENCIES, cur), "DocRate": rate, "DiscountPercent": disc_h,
        "_ch": channel, "_due": due_days, "Rounding": np.where(store, "tYES", "tNO"),
        "U_SalesChannel": _pick(CHANNELS, channel),
        "U_PromoCode": _pick([None, "WELCOME10", "SUMMER25", "BLACKFRIDAY", "FREESHIP", ""], promo_i),
    }).with_columns(
        DocNum=(pl.col("DocEntry") + DOC_NUM_BASE["ORDR"]).cast(pl.Int32),
        DocDate=_date_of("_t"), DocTime=_time_of("_t"), CreationDate=_date_of("_t"),
        DocDueDate=_date_of(pl.col("_t") + pl.col("_due") * DAY),
        NumAtCard=pl.when(pl.col("_ch") == 0).then(pl.lit("WEB-") + (pl.col("_t") % 9_000_000 + 1_000_000).cast(_S))
        .when(pl.col("_ch") == 3).then(pl.lit("AMZ-") + (pl.col("_t") % 9_000_000 + 2_000_000).cast(_S))
        .otherwise(_NULL_S),
        PaidToDate=pl.lit(0.0), Comments=_NULL_S, DocumentStatus=pl.lit("bost_Open"), Cancelled=pl.lit("tNO"),
        CancelStatus=pl.lit("csNo"), CancelDate=_NULL_D, ShipToCode=pl.lit("Default"), PayToCode=pl.lit("Default"),
        UpdateDate=_date_of("_u"), UpdateTime=_time_of("_u"),
    )
    hdr = _totals(hdr, lines, exp)
    return hdr.select(HEADER_COLUMNS + ["_t", "_u"]).cast(HEADER_DTYPES), lines, exp


def _line_numbers(doc_entries: pl.Series) -> np.ndarray:
    """0..k-1 within each run of equal DocEntry (the frame is grouped by document)."""
    de = doc_entries.to_numpy()
    idx = np.arange(len(de))
    if len(de) == 0:
        return idx.astype(np.int32)
    start = np.r_[True, de[1:] != de[:-1]]
    return (idx - np.maximum.accumulate(np.where(start, idx, 0))).astype(np.int32)


def _copy_docs(src_hdr: pl.DataFrame, src_lines: pl.DataFrame, src_exp: pl.DataFrame, pick: pl.DataFrame,
               *, src_table: str, target_table: str, first_entry: int, base_type: int | None = None
               ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """SAP's copy-to: one new `target_table` document per source document in `pick`.

    `pick` rows (in source line order): `_row` (position of the source line in `src_lines`),
    `Quantity`, `_t` (instant of the new document), `_freight` (copy the source's freight) and
    optionally `_pf` (price factor). New documents are numbered by time from `first_entry`; their
    lines link back with BaseType/BaseEntry/BaseLine; headers copy partner, currency, rate,
    discount and UDFs from the source.
    """
    out_cols = HEADER_COLUMNS + ["_t", "_u", "_src"]
    if pick.height == 0:
        empty = src_hdr.clear().select(HEADER_COLUMNS).with_columns(
            _t=pl.lit(0, pl.Int64), _u=pl.lit(0, pl.Int64), _src=_NULL_I)
        return empty.select(out_cols), src_lines.clear(), src_exp.clear()
    srcl = src_lines.gather(pick["_row"])
    factor = pick["_pf"] if "_pf" in pick.columns else pl.lit(1.0)
    base = pl.DataFrame({"_src": srcl["DocEntry"], "_t": pick["_t"], "_freight": pick["_freight"]})
    docs = (
        base.group_by("_src", maintain_order=True).first()
        .sort("_t", "_src")
        .with_columns(DocEntry=(pl.int_range(pl.len()) + first_entry).cast(pl.Int32))
    )
    new_entry = base.select("_src").join(docs.select("_src", "DocEntry"), on="_src", how="left",
                                         maintain_order="left")["DocEntry"]
    lines = (
        srcl.with_columns(
            BaseType=pl.lit(base_type if base_type is not None else OBJECT_CODE[src_table], pl.Int32),
            BaseEntry=pl.col("DocEntry"), BaseLine=pl.col("LineNum"),
            DocEntry=new_entry, Quantity=pick["Quantity"], RemainingOpenQuantity=pick["Quantity"],
            LineStatus=pl.lit("bost_Open"), UnitPrice=(pl.col("UnitPrice") * factor).round(2),
        )
        .sort("DocEntry", maintain_order=True)
    )
    lines = _reprice(lines.with_columns(LineNum=pl.Series(_line_numbers(lines["DocEntry"])))).select(LINE_COLUMNS)
    exp = (
        docs.filter(pl.col("_freight")).select("_src", "DocEntry")
        .join(src_exp.rename({"DocEntry": "_src"}), on="_src").select(EXPENSE_COLUMNS).sort("DocEntry", "LineNum")
    )
    src_cols = [c for c in src_hdr.columns if not c.startswith("_")]
    hdr = docs.join(src_hdr.select(src_cols).rename({"DocEntry": "_src", "DocNum": "_srcnum"}), on="_src",
                    how="left", maintain_order="left")
    hdr = hdr.with_columns(
        _u=pl.col("_t"),
        DocNum=(pl.col("DocEntry") + DOC_NUM_BASE[target_table]).cast(pl.Int32),
        DocDate=_date_of("_t"), DocTime=_time_of("_t"), CreationDate=_date_of("_t"),
        DocDueDate=_date_of("_t"), UpdateDate=_date_of("_t"), UpdateTime=_time_of("_t"),
        Comments=pl.concat_str(pl.lit(f"Based On {DOC_LABEL[src_table]} "), pl.col("_srcnum").cast(_S), pl.lit(".")),
        DocumentStatus=pl.lit("bost_Open"), Cancelled=pl.lit("tNO"), CancelStatus=pl.lit("csNo"), CancelDate=_NULL_D,
        PaidToDate=pl.lit(0.0),
    )
    hdr = _totals(hdr, lines, exp)
    return hdr.select(out_cols).cast(HEADER_DTYPES), lines.cast(LINE_DTYPES), exp.cast(EXPENSE_DTYPES)
