"""The generated demo company: deterministic, shaped like SAP B1, and holding the hard cases."""

from __future__ import annotations

import datetime as dt
import re

import phonenumbers
import polars as pl
import pytest

from sap_ometria_assets.emulators.sap_b1.company import BASE_NOW, Company, generate_company
from sap_ometria_assets.lib.sap import tables as sap_tables

SCALE = 0.1


@pytest.fixture(scope="module")
def company() -> Company:
    return generate_company(SCALE, seed=42)


@pytest.fixture(scope="module")
def later(company) -> Company:
    return company.advance(3)


def _lines(company: Company, entity_set: str) -> pl.DataFrame:
    # Every line carries its DocEntry, as the Service Layer sends it.
    return company.frame(entity_set).select("DocumentLines").explode("DocumentLines").drop_nulls().unnest("DocumentLines")


# -- determinism, sizes, contract ----------------------------------------------------------------

def test_same_arguments_give_the_same_company_and_another_seed_another():
    a, b, c = generate_company(0.05, seed=7), generate_company(0.05, seed=7), generate_company(0.05, seed=8)
    assert a.tables.keys() == b.tables.keys()
    for name in a.tables:
        assert a.tables[name].equals(b.tables[name]), name
    assert not a.tables["OCRD"].equals(c.tables["OCRD"])


def test_advancing_tick_by_tick_equals_generating_at_that_tick(company):
    stepwise = company.advance(1).advance(1)
    direct = generate_company(SCALE, seed=42, ticks=2)
    for name in direct.tables:
        assert stepwise.tables[name].equals(direct.tables[name]), name
    assert direct.now == BASE_NOW + dt.timedelta(hours=2)


def test_sizes_follow_the_scale(company):
    s = company.summary()
    assert s["BusinessPartners"] == 200 and s["Orders"] == 1000
    big = company.tables["RDR1"].filter(pl.col("DocEntry").is_in(company.planted["oversized_orders"])).height
    assert 2.5 <= (s["Orders.lines"] - big) / (s["Orders"] - 1) <= 3.5  # the pre-order's 460 lines aside
    assert s["BusinessPartners.leads"] > 0 and s["BusinessPartners.suppliers"] > 0
    assert s["Warehouses"] == 4 and s["ItemWarehouseInfoCollection"] == 4 * s["Items"]
    assert 0 < s["DeliveryNotes"] < s["Orders"] and 0 < s["Invoices"] <= s["Orders"]
    assert s["CreditNotes"] >= 0.05 * s["Orders"]
    assert s["BusinessPartnerGroups"] == 5 and s["UserFieldsMD"] == 18


def _contract_frames(company: Company):
    """(registry table, frame with its rows) for every landed table, parents and children."""
    for table in sap_tables.SAP_TABLES:
        frame = company.frame(table.entity_set)
        if table.table == "oitw":
            frame = frame.select("ItemWarehouseInfoCollection").explode("ItemWarehouseInfoCollection").unnest(
                "ItemWarehouseInfoCollection")
        yield table.table, table.columns, frame
        for child in table.children:
            rows = frame.select(child.collection).explode(child.collection).drop_nulls().unnest(child.collection)
            yield child.table, child.columns, rows


_TYPE_OK = {
    sap_tables.AMOUNT: lambda d: d == pl.Float64,
    sap_tables.INT: lambda d: d.is_integer(),
    sap_tables.TEXT: lambda d: d == pl.String or isinstance(d, (pl.Enum, pl.Categorical)),
    sap_tables.DATE: lambda d: d == pl.Date,
    "JSON": lambda d: isinstance(d, pl.List),
}


def test_every_contract_column_is_served_with_a_matching_type(company):
    seen = set()
    for table, columns, frame in _contract_frames(company):
        seen.add(table)
        for name, ddb_type in columns.items():
            if table == "itm1" and name == "ItemCode":
                continue  # ItemPrices rows carry no ItemCode in the Service Layer; landing adds the parent key
            assert name in frame.columns, f"{table}.{name} missing"
            dtype = frame.schema[name]
            if name in ("UpdateTime", "CreateTime", "DocTime"):
                assert dtype == pl.Time, (table, name, dtype)
            else:
                assert _TYPE_OK[ddb_type](dtype), (table, name, dtype)
    assert seen == set(sap_tables.all_table_names())
    prices = company.frame("Items")["ItemPrices"].explode().struct.unnest()
    assert "ItemCode" not in prices.columns  # as in the real Items sample


def test_declared_udfs_exist_on_their_entities(company):
    cufd = company.frame("UserFieldsMD")
    assert not cufd["Name"].str.starts_with("U_").any()
    owners = {"OCRD": "BusinessPartners", "ORDR": "Orders", "ODLN": "DeliveryNotes", "OINV": "Invoices",
              "ORIN": "CreditNotes", "OITM": "Items"}
    for row in cufd.iter_rows(named=True):
        assert f"U_{row['Name']}" in company.frame(owners[row["TableName"]]).columns
        assert row["Type"] in {"db_Alpha", "db_Memo", "db_Numeric", "db_Date", "db_Float"}
    tier = cufd.filter((pl.col("TableName") == "OCRD") & (pl.col("Name") == "LoyaltyTier")).row(0, named=True)
    assert [v["Value"] for v in tier["ValidValuesMD"]] == ["Bronze", "Silver", "Gold", "Platinum"]
    assert cufd.filter(pl.col("Name") == "DateOfBirth")["Type"].to_list() == ["db_Date"]


# -- business partners ---------------------------------------------------------------------------

def test_business_partner_edge_cases(company):
    bp = company.frame("BusinessPartners")
    emails = bp["EmailAddress"]
    invalid = bp.filter(pl.col("CardCode").is_in(company.planted["invalid_emails"]))["EmailAddress"].to_list()
    assert any("@" not in e for e in invalid)
    assert any(" " in e.strip() for e in invalid)
    assert any(e.endswith(".") for e in invalid)
    assert any(not e.isascii() for e in invalid)
    assert (emails == "").any() and emails.is_null().any()
    normalised = bp.filter(pl.col("CardType") == "cCustomer").select(
        "CardCode", key=pl.col("EmailAddress").str.strip_chars().str.to_lowercase(), raw=pl.col("EmailAddress"))
    dupes = normalised.filter(pl.col("key").is_not_null() & (pl.col("key") != "")).group_by("key").agg(
        pl.col("CardCode").n_unique().alias("n"), pl.col("raw").n_unique().alias("spellings")).filter(pl.col("n") > 1)
    assert dupes.height >= 3 and (dupes["spellings"] > 1).any()
    customers = bp.filter(pl.col("CardType") == "cCustomer")
    assert customers["CardName"].is_null().any() and (customers["CardName"] == "").any()
    assert {"cCustomer", "cSupplier", "cLid"} <= set(bp["CardType"].to_list())
    assert (bp["BlockSendingMarketingContent"] == "tYES").sum() >= 5
    assert (bp["Frozen"] == "tYES").sum() >= 4
    assert bp["CardCode"].str.contains(r"^\d+$").any()  # numeric-looking keys are strings
    assert bp["U_DateOfBirth"].dtype == pl.Date and bp["U_DateOfBirth"].is_not_null().any()
    addr = bp.select("CardCode", "BPAddresses").explode("BPAddresses").unnest("BPAddresses").drop_nulls("BPCode")
    assert (addr["BPCode"] == addr["CardCode"]).all()
    assert set(addr["AddressType"].unique()) == {"bo_BillTo", "bo_ShipTo"}


def test_some_udf_values_fall_outside_their_declared_valid_values(company):
    bp = company.frame("BusinessPartners")
    cufd = company.frame("UserFieldsMD").filter(pl.col("TableName") == "OCRD")
    outside = 0
    for row in cufd.iter_rows(named=True):
        valid = {v["Value"] for v in row["ValidValuesMD"]}
        if valid:
            values = bp[f"U_{row['Name']}"].drop_nulls()
            outside += int((~values.is_in(list(valid))).sum())
    assert outside >= 4
    orders = company.frame("Orders")
    assert orders["U_SalesChannel"].is_in(["Web", "Store", "Phone", "Marketplace"]).all()
    assert orders["U_PromoCode"].is_null().any() and orders["U_PromoCode"].is_not_null().any()


# -- documents -----------------------------------------------------------------------------------

def test_order_edge_cases(company):
    orders = company.frame("Orders")
    bp = company.frame("BusinessPartners").select("CardCode", "CardType")
    cancelled = orders.filter(pl.col("Cancelled") == "tYES")
    assert cancelled.height >= 5
    assert (cancelled["CancelStatus"] == "csYes").all() and (cancelled["DocumentStatus"] == "bost_Close").all()
    typed = orders.join(bp, on="CardCode", how="left")
    assert (typed["CardType"] == "cLid").any() and (typed["CardType"] == "cSupplier").any()
    assert typed["CardType"].is_null().any()  # card codes that are no business partner
    lines = _lines(company, "Orders")
    items = set(company.frame("Items")["ItemCode"].to_list())
    assert (~lines["ItemCode"].is_in(list(items))).sum() >= 5
    partial = lines.filter(pl.col("RemainingOpenQuantity") > 0).join(
        orders.filter(pl.col("CancelStatus") == "csNo").select("DocEntry"), on="DocEntry")
    delivered = _lines(company, "DeliveryNotes").filter(pl.col("BaseType") == 17)["BaseEntry"].unique()
    assert partial.filter(pl.col("DocEntry").is_in(delivered.implode())).height >= 3
    assert lines["LineNum"].min() == 0 and lines["DocEntry"].is_not_null().all()
    assert orders.select(pl.col("DocumentAdditionalExpenses").list.len() > 0).to_series().any()


def test_foreign_currency_documents_fill_fc_amounts_and_convert_at_doc_rate(company):
    orders = company.frame("Orders")
    assert {"GBP", "EUR", "US$", "SFR"} <= set(orders["DocCurrency"].cast(pl.String).to_list())
    planted_wrong = company.planted["inconsistent_order_totals"]
    fc = orders.filter((pl.col("DocCurrency") != "GBP") & ~pl.col("DocEntry").is_in(planted_wrong))
    local = orders.filter(pl.col("DocCurrency") == "GBP")
    assert (local["DocTotalFc"] == 0).all() and (local["DocRate"] == 1).all()
    assert (fc["DocTotalFc"] > 0).any()
    # Local amounts are the foreign ones at DocRate (line by line, so within rounding).
    drift = (fc["DocTotalFc"] * fc["DocRate"] - fc["DocTotal"]).abs()
    tolerance = 0.03 * (fc["DocumentLines"].list.len() + 2)
    assert (drift <= tolerance).all()
    lines = _lines(company, "Orders").join(fc.select("DocEntry", "DocRate"), on="DocEntry")
    assert ((lines["RowTotalFC"] * lines["DocRate"] - lines["LineTotal"]).abs() <= 0.006).all()


def _total_gap(frame: pl.DataFrame, fc: bool = False) -> pl.Series:
    lt, suffix = ("RowTotalFC", "Fc") if fc else ("LineTotal", "")
    exp_col = "LineTotalFC" if fc else "LineTotal"
    parts = frame.select(
        "DocEntry",
        lines=pl.col("DocumentLines").list.eval(pl.element().struct.field(lt)).list.sum(),
        freight=pl.col("DocumentAdditionalExpenses").list.eval(pl.element().struct.field(exp_col)).list.sum(),
        disc=pl.col("TotalDiscountFC" if fc else "TotalDiscount"),
        vat=pl.col(f"VatSum{suffix}"), rnd=pl.col(f"RoundingDiffAmount{'FC' if fc else ''}"),
        total=pl.col(f"DocTotal{suffix}"),
    )
    return parts.select(
        "DocEntry", gap=(pl.col("lines") - pl.col("disc") + pl.col("vat") + pl.col("freight") + pl.col("rnd")
                         - pl.col("total")).abs())


def test_totals_add_up_except_the_planted_inconsistent_orders(company):
    gaps = _total_gap(company.frame("Orders"))
    wrong = set(gaps.filter(pl.col("gap") > 0.005)["DocEntry"].to_list())
    assert wrong == set(company.planted["inconsistent_order_totals"]) and len(wrong) >= 3
    fc_orders = company.frame("Orders").filter(pl.col("DocCurrency") != "GBP")
    assert (_total_gap(fc_orders, fc=True)["gap"] <= 0.005).all()
    for es in ("DeliveryNotes", "Invoices", "CreditNotes"):
        assert (_total_gap(company.frame(es))["gap"] <= 0.005).all(), es
    assert (company.frame("Orders")["RoundingDiffAmount"] != 0).any()
    amounts = _lines(company, "Orders")["LineTotal"]
    assert ((amounts * 100).round(6) % 1 == 0).all()  # two-decimal amounts


def test_invoices_and_credit_memos_link_back_line_by_line(company):
    inv = _lines(company, "Invoices")
    dln = _lines(company, "DeliveryNotes").select(BaseEntry="DocEntry", BaseLine="LineNum", _q="Quantity")
    ordl = _lines(company, "Orders").select(BaseEntry="DocEntry", BaseLine="LineNum", _q="Quantity")
    assert set(inv["BaseType"].unique()) == {13, 15, 17}  # 13: cancellation documents
    from_dln = inv.filter(pl.col("BaseType") == 15)
    assert from_dln.join(dln, on=["BaseEntry", "BaseLine"], how="anti").height == 0
    assert from_dln.join(dln, on=["BaseEntry", "BaseLine"]).filter(pl.col("Quantity") != pl.col("_q")).height == 0
    assert inv.filter(pl.col("BaseType") == 17).join(ordl, on=["BaseEntry", "BaseLine"], how="anti").height == 0
    cm = _lines(company, "CreditNotes")
    assert set(cm["BaseType"].unique()) == {-1, 13, 14}
    invl = inv.select(BaseEntry="DocEntry", BaseLine="LineNum", _q="Quantity")
    linked = cm.filter(pl.col("BaseType") == 13)
    assert linked.join(invl, on=["BaseEntry", "BaseLine"], how="anti").height == 0
    standalone = cm.filter(pl.col("BaseType") == -1)
    assert standalone["BaseEntry"].is_null().all() and standalone.height > 0
    full = set(company.planted["full_credit_memos"])
    partial = set(company.planted["partial_credit_memos"])
    assert full and partial
    cm_docs = company.frame("CreditNotes").select("DocEntry", "DocTotal")
    inv_docs = company.frame("Invoices").select(BaseEntry="DocEntry", inv_total="DocTotal")
    per_cm = linked.group_by("DocEntry").agg(pl.col("BaseEntry").first()).join(cm_docs, on="DocEntry").join(
        inv_docs, on="BaseEntry")
    assert (per_cm.filter(pl.col("DocEntry").is_in(list(full)))["DocTotal"]
            == per_cm.filter(pl.col("DocEntry").is_in(list(full)))["inv_total"]).all()
    assert (per_cm.filter(pl.col("DocEntry").is_in(list(partial))).select(pl.col("DocTotal") < pl.col("inv_total"))
            .to_series().all())


def test_a_credit_memo_exceeds_the_order_it_refunds(company):
    exceeding = company.planted["credit_memos_exceeding_order"]
    assert exceeding
    cm = _lines(company, "CreditNotes").filter(pl.col("DocEntry").is_in(exceeding))
    inv = _lines(company, "Invoices").select(BaseEntry="DocEntry", order="BaseEntry", _t="BaseType")
    chain = cm.select("DocEntry", "BaseEntry").unique().join(inv.unique(), on="BaseEntry").filter(pl.col("_t") == 17)
    totals = chain.join(company.frame("CreditNotes").select("DocEntry", cm_total="DocTotal"), on="DocEntry").join(
        company.frame("Orders").select(order="DocEntry", order_total="DocTotal"), on="order")
    assert totals.height >= 1 and (totals["cm_total"] > totals["order_total"]).all()


def test_cancellation_documents_copy_a_cancelled_original(company):
    for es, code in (("Invoices", 13), ("CreditNotes", 14)):
        docs = company.frame(es)
        cancels = docs.filter(pl.col("CancelStatus") == "csCancellation")
        assert cancels.height >= 2, es
        lines = _lines(company, es).filter(pl.col("DocEntry").is_in(cancels["DocEntry"].implode()))
        assert (lines["BaseType"] == code).all()
        originals = docs.filter(pl.col("DocEntry").is_in(lines["BaseEntry"].unique().implode()))
        assert originals.height == cancels.height
        assert (originals["Cancelled"] == "tYES").all() and (originals["CancelStatus"] == "csYes").all()
        assert (originals["DocumentStatus"] == "bost_Close").all()
        assert sorted(originals["DocTotal"].to_list()) == sorted(cancels["DocTotal"].to_list())


def test_dates_times_and_clock(company):
    orders = company.frame("Orders")
    assert orders["UpdateDate"].max() <= BASE_NOW.date()
    assert orders["DocDate"].min() >= (BASE_NOW - dt.timedelta(days=740)).date()
    assert (orders["UpdateDate"] >= orders["CreationDate"]).all()
    bp = company.frame("BusinessPartners")
    on_boundary_day = bp.filter(pl.col("UpdateDate") == dt.date(2026, 10, 31))
    assert (on_boundary_day["UpdateTime"] < dt.time(10, 15)).any()
    assert (on_boundary_day["UpdateTime"] >= dt.time(10, 15)).any()


# -- items and stock -----------------------------------------------------------------------------

def test_items_prices_and_stock_edge_cases(company):
    items = company.frame("Items")
    p = company.planted
    no_price = items.filter(pl.col("ItemCode").is_in(p["items_without_price"]))
    for prices in no_price["ItemPrices"].to_list():
        retail = next(x for x in prices if x["PriceList"] == 1)
        assert retail["Price"] == 0.0 and retail["Currency"] is None
    names = items.filter(pl.col("ItemCode").is_in(p["items_without_name"]))["ItemName"]
    assert names.is_null().any() and (names == "").any()
    assert (items["Valid"] == "tNO").sum() >= 3 and (items["Frozen"] == "tYES").sum() >= 3
    stock = items.select("ItemCode", "QuantityOnStock", "ItemWarehouseInfoCollection").explode(
        "ItemWarehouseInfoCollection").unnest("ItemWarehouseInfoCollection", separator=".")
    assert set(stock["ItemWarehouseInfoCollection.WarehouseCode"].unique()) == {"01", "02", "03", "WHS-WHOLESALE"}
    assert (stock["ItemWarehouseInfoCollection.Committed"] > stock["ItemWarehouseInfoCollection.InStock"]).sum() >= 3
    sums = stock.group_by("ItemCode").agg(pl.col("ItemWarehouseInfoCollection.InStock").sum(), pl.col("QuantityOnStock").first())
    assert (sums["ItemWarehouseInfoCollection.InStock"] == sums["QuantityOnStock"]).all()
    whs = company.frame("Warehouses")
    assert whs.filter(pl.col("WarehouseCode") == "WHS-WHOLESALE")["Nettable"].to_list() == ["tNO"]


def test_committed_stock_matches_open_order_lines(company):
    lines = _lines(company, "Orders").join(
        company.frame("Orders").filter((pl.col("DocumentStatus") == "bost_Open") & (pl.col("CancelStatus") == "csNo"))
        .select("DocEntry"), on="DocEntry")
    open_qty = lines.filter(pl.col("LineStatus") == "bost_Open").group_by(
        "ItemCode", pl.col("WarehouseCode").cast(pl.String)).agg(pl.col("RemainingOpenQuantity").sum())
    stock = company.tables["OITW"].join(open_qty, on=["ItemCode", "WarehouseCode"], how="left").with_columns(
        pl.col("RemainingOpenQuantity").fill_null(0.0))
    reserved = set(company.planted["overcommitted_stock"])
    plain = stock.filter(~pl.struct("ItemCode", "WarehouseCode").map_elements(
        lambda r: (r["ItemCode"], r["WarehouseCode"]) in reserved, return_dtype=pl.Boolean))
    assert (plain["Committed"] == plain["RemainingOpenQuantity"]).all()
    assert (plain["Committed"] > 0).any()


# -- what only shows on the way into Ometria -----------------------------------------------------

def _valid(number: str | None, region: str) -> bool:
    try:
        return number is not None and phonenumbers.is_valid_number(phonenumbers.parse(number, region))
    except phonenumbers.NumberParseException:
        return False


def test_phone_numbers_are_fictional_yet_valid_except_a_planted_few(company):
    bp = company.tables["OCRD"].select("CardCode", "CardType", "Country", "Cellular", "Phone1").to_dicts()
    bad = set(company.planted["invalid_phones"])
    assert 1 <= len(bad) <= 0.03 * len(bp)
    for row in bp:
        usable = [n for n in (row["Cellular"], row["Phone1"]) if _valid(n, row["Country"])]
        if row["CardCode"] in bad:
            assert row["Cellular"] and not usable, row
            continue
        if row["Cellular"] or row["Phone1"]:
            assert usable, row  # a drama mobile comes with a landline to fall back on
        for n in usable:  # reserved for fiction: nobody real is ever rung
            digits = phonenumbers.format_number(phonenumbers.parse(n, row["Country"]), phonenumbers.PhoneNumberFormat.E164)
            assert re.match(r"^\+44(2079460|11[3467]4960|1[2-6]14960|1914980|2920180|2890180)\d{3}$"
                            r"|^\+33199000\d{3}$|^\+121255501\d{2}$", digits), digits
    mobiles = [r["Cellular"] for r in bp if r["Cellular"]]
    assert any(m.startswith("07700 900") for m in mobiles) and any(_valid(m, "GB") for m in mobiles)


@pytest.mark.parametrize("scale", [0.02, SCALE])
def test_records_ometria_cannot_take_are_planted_at_every_scale(scale, company):
    c = company if scale == SCALE else generate_company(scale, seed=42)
    p = c.planted
    # Customers keyed by their email address: the key is consistent everywhere SAP holds it.
    keyed = p["email_card_codes"]
    assert len(keyed) == 2 and all("@" in k for k in keyed)
    bp = c.tables["OCRD"].filter(pl.col("CardCode").is_in(keyed))
    assert bp.height == 2 and (bp["EmailAddress"].str.to_lowercase() == bp["CardCode"]).all()
    assert set(c.tables["CRD1"].filter(pl.col("BPCode").is_in(keyed))["BPCode"]) == set(keyed)
    orders = c.tables["ORDR"].filter(pl.col("CardCode").is_in(keyed))
    assert 2 <= orders.height <= 6
    assert not c.tables["ORDR"]["CardCode"].str.contains("@").any() or set(
        c.tables["ORDR"].filter(pl.col("CardCode").str.contains("@"))["CardCode"]) <= set(keyed)
    # A trade pre-order over Ometria's 60 KB: many lines, open, from the wholesale warehouse.
    (entry,) = p["oversized_orders"]
    head = c.tables["ORDR"].filter(pl.col("DocEntry") == entry).row(0, named=True)
    lines = c.tables["RDR1"].filter(pl.col("DocEntry") == entry)
    assert lines.height == 460 and lines["LineNum"].to_list() == list(range(460))
    assert (lines["WarehouseCode"].cast(pl.String) == "WHS-WHOLESALE").all()
    assert (lines["LineStatus"].cast(pl.String) == "bost_Open").all()
    assert head["DocumentStatus"] == "bost_Open" and head["CancelStatus"] == "csNo"
    trader = c.tables["OCRD"].filter(pl.col("CardCode") == head["CardCode"]).row(0, named=True)
    assert trader["GroupCode"] == 102 and trader["CardType"] == "cCustomer"
    assert not c.tables["DLN1"].filter((pl.col("BaseType") == 17) & (pl.col("BaseEntry") == entry)).height
    gap = _total_gap(c.frame("Orders").filter(pl.col("DocEntry") == entry))["gap"][0]
    assert gap <= 0.005
    # An item whose web title (memo UDF, 64000 characters) holds a pasted product page.
    (item,) = p["oversized_items"]
    title = c.tables["OITM"].filter(pl.col("ItemCode") == item)["U_WebTitle"][0]
    assert 30_000 < len(title) <= 64_000 and title.startswith("<div")
    assert not c.tables["RDR1"]["ItemCode"].is_in([item]).any()


def test_ticks_leave_the_planted_cases_alone(company, later):
    p = company.planted
    keyed = p["email_card_codes"] + p["invalid_phones"]
    cols = ["CardCode", "EmailAddress", "Cellular", "Phone1", "UpdateDate", "UpdateTime"]
    assert later.tables["OCRD"].filter(pl.col("CardCode").is_in(keyed)).select(cols).sort("CardCode").equals(
        company.tables["OCRD"].filter(pl.col("CardCode").is_in(keyed)).select(cols).sort("CardCode"))
    big = pl.col("DocEntry").is_in(p["oversized_orders"])
    assert later.tables["ORDR"].filter(big).equals(company.tables["ORDR"].filter(big))
    assert later.tables["RDR1"].filter(big).height == 460
    item = pl.col("ItemCode").is_in(p["oversized_items"])
    assert later.tables["OITM"].filter(item).select("ItemCode", "U_WebTitle").equals(
        company.tables["OITM"].filter(item).select("ItemCode", "U_WebTitle"))


# -- the clock ---------------------------------------------------------------------------------------

def _stamp(frame: pl.DataFrame) -> pl.Expr:
    return pl.col("UpdateDate").cast(pl.Datetime) + pl.col("UpdateTime").cast(pl.Duration)


def test_ticks_add_edit_and_delete_with_later_update_stamps(company, later):
    start = BASE_NOW
    end = BASE_NOW + dt.timedelta(hours=3)
    old_bp, new_bp = company.frame("BusinessPartners"), later.frame("BusinessPartners")
    added = new_bp.join(old_bp, on="CardCode", how="anti")
    deleted = old_bp.join(new_bp, on="CardCode", how="anti")
    assert added.height >= 3 and deleted.height == 3  # one partner deleted outright per hour
    both = new_bp.join(old_bp, on="CardCode", suffix="_old")
    compare = [c for c in old_bp.columns if c not in ("CardCode", "BPAddresses")]
    changed = both.filter(pl.any_horizontal([pl.col(c).ne_missing(pl.col(f"{c}_old")) for c in compare]))
    assert changed.height >= 6
    stamps = changed.select(_stamp(changed)).to_series()
    assert ((stamps >= start) & (stamps < end)).all(), "every edited partner carries the time of its edit"
    unchanged = both.filter(~pl.any_horizontal([pl.col(c).ne_missing(pl.col(f"{c}_old")) for c in compare]))
    assert (unchanged.select(_stamp(unchanged)).to_series() < start).all()
    # Some changes share a minute; some share the day with later times (incremental boundaries).
    minutes = changed.select(pl.col("UpdateTime").dt.strftime("%H:%M")).to_series()
    assert minutes.is_duplicated().any()
    # Items: one deleted per hour; stock moves do not bump UpdateDate.
    old_items, new_items = company.frame("Items"), later.frame("Items")
    gone = old_items.join(new_items, on="ItemCode", how="anti")["ItemCode"]
    assert 1 <= gone.len() <= 3  # one unused item per hour (some were created during these hours)
    for es in ("Orders", "CreditNotes"):
        assert not _lines(later, es)["ItemCode"].is_in(gone.implode()).any()  # only unused data is deleted
    assert not later.frame("Orders")["CardCode"].is_in(deleted["CardCode"].implode()).any()
    moved = new_items.join(old_items, on="ItemCode", suffix="_old").filter(
        (pl.col("QuantityOnStock") != pl.col("QuantityOnStock_old")) & (pl.col("UpdateDate") == pl.col("UpdateDate_old"))
        & (pl.col("UpdateTime") == pl.col("UpdateTime_old")))
    assert moved.height > 0


def test_ticks_edit_order_lines_and_move_documents_on(company, later):
    old, new = company.frame("Orders"), later.frame("Orders")
    both = new.join(old, on="DocEntry", suffix="_old")
    relined = both.filter(pl.col("DocumentLines").ne_missing(pl.col("DocumentLines_old")))
    edited = relined.filter(pl.col("DocumentStatus") == "bost_Open")
    assert edited.height >= 1
    assert (edited.select(_stamp(edited)).to_series() >= BASE_NOW).all()
    changed = both.filter(pl.any_horizontal([pl.col(c).ne_missing(pl.col(f"{c}_old"))
                                             for c in old.columns if c != "DocEntry"]))
    assert (changed.select(_stamp(changed)).to_series() >= BASE_NOW).all()
    assert new.height > old.height
    fresh = new.filter(pl.col("DocEntry") > old["DocEntry"].max())
    assert (fresh["CreationDate"] == BASE_NOW.date()).all()
    shop = fresh.filter(pl.col("U_SalesChannel") == "Store")
    assert shop.height and (shop["DocumentStatus"] == "bost_Close").all()  # shop sales are invoiced on the spot
    invoiced = _lines(later, "Invoices").filter(pl.col("BaseType") == 17)["BaseEntry"]
    assert shop["DocEntry"].is_in(invoiced.implode()).all()
    for es in ("DeliveryNotes", "Invoices", "CreditNotes"):
        assert later.frame(es).height > company.frame(es).height, es
    assert (later.frame("CreditNotes")["CancelStatus"] == "csCancellation").sum() > (
        company.frame("CreditNotes")["CancelStatus"] == "csCancellation").sum()


def test_change_fraction_changes_that_share_in_one_tick():
    base = generate_company(0.05, seed=3)
    bumped = base.advance(1, change_fraction=0.1)
    since = BASE_NOW.date()
    for es, n in (("BusinessPartners", base.tables["OCRD"].height), ("Orders", base.tables["ORDR"].height),
                  ("Items", base.tables["OITM"].height)):
        touched = bumped.header(es).filter(pl.col("UpdateDate") >= since).height
        assert touched >= 0.1 * n, es
