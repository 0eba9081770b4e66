"""Property tests: whatever SAP holds, the transforms never crash, never drop a record, and never
let an invalid payload through. Bad records keep their row with a `held_back_reason`.

Generated data: unicode and emoji, very long strings, nulls everywhere, NaN/inf amounts (float
columns), negative quantities, dates from year 1 to 9999, nonsense clock times, duplicate keys,
PII in keys.
"""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sap_frames import cufd, frame, ocrg
from sap_ometria_assets.lib.ometria.mapping import load_mapping, validate_against_cufd
from sap_ometria_assets.lib.ometria.models import validate_payloads
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT
from sap_ometria_assets.lib.transforms.contacts import build_contacts
from sap_ometria_assets.lib.transforms.orders import OrderInputs, build_orders
from sap_ometria_assets.lib.transforms.products import build_products
from sap_ometria_assets.lib.transforms.stock import build_stock

MAPPING = validate_against_cufd(load_mapping(PROJECT_ROOT / "data" / "mapping.yaml"), cufd())
REFUND_MAPPING = MAPPING.model_copy(update={"credit_memos": MAPPING.credit_memos.model_copy(
    update={"mode": "refund_on_original"})})
# Derandomized: CI runs the same examples every time (a new random seed per run made a clean
# clone find, and then spend minutes shrinking, a case no earlier run had seen). The explain
# phase is off: its line tracer made shrinking through polars take minutes.
SETTINGS = settings(max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "25")), deadline=None,
                    derandomize=os.environ.get("HYPOTHESIS_RANDOM") is None, database=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LONG = "Ω" * 70_000  # alone pushes a record over Ometria's 60 KB
texts = st.one_of(st.none(), st.text(max_size=30), st.sampled_from(["", "  ", "😀🎉", "x\ny\u0000z", LONG, "a\"b\\c"]))
keys = st.sampled_from(["C1", "C2", "C3", None, "C@4", " C5 ", "😀"])
dates = st.one_of(st.none(), st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)),
                  st.sampled_from([dt.date(2024, 3, 31), dt.date(2024, 10, 27)]))
times = st.sampled_from([None, "00:00:00", "01:30:00", "23:59:59", "25:61:00", "garbage", "12:00"])
decimals = st.one_of(st.none(), st.decimals(min_value=-10**9, max_value=10**9, places=6, allow_nan=False))
floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64))
yesno = st.sampled_from(["tYES", "tNO", None, "maybe"])


def _with_float_amounts(df: pl.DataFrame, values: list[float | None], columns: list[str]) -> pl.DataFrame:
    """Replace Decimal amount columns by Float64 ones carrying NaN/inf (a landing bug upstream)."""
    n = df.height
    return df.with_columns(pl.Series(c, [values[(i + j) % len(values)] if values else None for i in range(n)],
                                     dtype=pl.Float64) for j, c in enumerate(columns))


def _assert_pushable_rows_are_valid(df: pl.DataFrame, feed: str) -> None:
    ok = df.filter(pl.col("held_back_reason").is_null())
    assert validate_payloads(feed, ok["payload"]).null_count() == ok.height
    assert df["payload_hash"].null_count() == 0 and df["payload"].null_count() == 0


@SETTINGS
@given(st.lists(st.fixed_dictionaries({
    "CardCode": keys, "CardName": texts, "CardType": st.sampled_from(["cCustomer", "cLid", None, "x"]),
    "GroupCode": st.one_of(st.none(), st.integers(-5, 500)), "EmailAddress": texts, "Phone1": texts,
    "Cellular": texts, "Country": texts, "BlockSendingMarketingContent": yesno, "CreateDate": dates,
    "CreateTime": times, "UpdateDate": dates, "UpdateTime": times, "U_LoyaltyTier": texts,
    "U_MarketingOptIn": texts, "U_DateOfBirth": dates, "U_AcquisitionSource": texts,
}), max_size=8))
def test_contacts_never_crash_and_never_drop_a_customer(rows):
    out = build_contacts(frame("ocrd", rows), ocrg(), MAPPING, collection="sap_b1", zone="Europe/London")
    customers = {r["CardCode"] for r in rows if r["CardType"] == "cCustomer"}
    assert sorted(out["sap_key"].to_list(), key=str) == sorted(customers, key=str)
    _assert_pushable_rows_are_valid(out, "contacts")
    long_rows = out.filter(pl.col("payload_bytes") > 60_000)
    assert long_rows["held_back_reason"].null_count() == 0


def _documents(draw_rows, lines_rows):
    return frame("ordr", draw_rows), frame("rdr1", lines_rows)


doc_rows = st.fixed_dictionaries({
    "DocEntry": st.sampled_from([1, 2, 3, None]), "DocNum": st.integers(0, 9), "DocDate": dates, "DocTime": times,
    "CardCode": keys, "CardName": texts, "DocCurrency": st.sampled_from(["GBP", "EUR", "US$", "SFR", None, "😀"]),
    "DocTotal": decimals, "DocTotalFc": decimals, "VatSum": decimals, "VatSumFc": decimals,
    "DocumentStatus": st.sampled_from(["bost_Open", "bost_Close", None, "x"]),
    "Cancelled": yesno, "CancelStatus": st.sampled_from(["csNo", "csYes", "csCancellation", None]),
    "U_SalesChannel": texts, "U_PromoCode": texts,
})
line_rows = st.fixed_dictionaries({
    "DocEntry": st.sampled_from([1, 2, 3, None]), "LineNum": st.sampled_from([0, 1, 1, None]),
    "ItemCode": keys, "Quantity": decimals, "RemainingOpenQuantity": decimals, "UnitPrice": decimals,
    "LineTotal": decimals, "RowTotalFC": decimals, "GrossTotal": decimals, "GrossTotalFC": decimals,
    "TaxTotal": decimals, "Currency": st.sampled_from(["GBP", "EUR", None]),
    "BaseType": st.sampled_from([-1, 13, 15, 17, None]), "BaseEntry": st.sampled_from([1, 2, 3, None]),
    "BaseLine": st.sampled_from([0, 1, None]),
})


@SETTINGS
@given(
    headers=st.lists(doc_rows, max_size=5), lines=st.lists(line_rows, max_size=8),
    memos=st.lists(doc_rows, max_size=3), memo_lines=st.lists(line_rows, max_size=4),
    nan_amounts=st.lists(floats, max_size=4), use_floats=st.booleans(), refund_mode=st.booleans(),
)
def test_orders_never_crash_and_keep_one_row_per_order(headers, lines, memos, memo_lines, nan_amounts,
                                                     use_floats, refund_mode):
    ordr, rdr1 = frame("ordr", headers), frame("rdr1", lines)
    if use_floats:
        ordr = _with_float_amounts(ordr, nan_amounts, ["DocTotal", "VatSum", "DocTotalFc"])
        rdr1 = _with_float_amounts(rdr1, nan_amounts, ["LineTotal", "GrossTotal", "Quantity"])
    inputs = OrderInputs(
        ordr=ordr, rdr1=rdr1, orin=frame("orin", memos), rin1=frame("rin1", memo_lines),
        inv1=frame("inv1", [dict(r, DocEntry=r["DocEntry"]) for r in lines[:2]]),
        dln1=frame("dln1", lines[2:4]), ocrd=frame("ocrd", [{"CardCode": "C1", "CardName": "Jo Bloggs"}]),
    )
    result = build_orders(inputs, REFUND_MAPPING if refund_mode else MAPPING, zone="Europe/London")
    orders = result.orders
    live = {h["DocEntry"] for h in headers if h["CancelStatus"] != "csCancellation"}
    assert sorted(orders.filter(pl.col("sap_object") == "ORDR")["sap_key"].to_list(), key=str) == \
        sorted({None if e is None else str(e) for e in live}, key=str)
    assert result.refunds.height == len({m["DocEntry"] for m in memos})
    _assert_pushable_rows_are_valid(orders, "orders")
    # NaN / inf never reach a payload as numbers (strict JSON refuses them; the text "NaN" in a
    # promo code UDF is a legitimate string)
    for payload in orders["payload"].drop_nulls().to_list():
        orjson.loads(payload)


@SETTINGS
@given(
    items=st.lists(st.fixed_dictionaries({
        "ItemCode": keys, "ItemName": texts, "SalesItem": yesno, "InventoryItem": yesno, "Frozen": yesno,
        "U_Brand": texts, "U_Colour": texts, "U_Season": texts, "U_WebTitle": texts,
    }), max_size=6),
    prices=st.lists(st.fixed_dictionaries({
        "ItemCode": keys, "PriceList": st.sampled_from([1, 2, None]), "Price": decimals,
        "Currency": st.sampled_from(["GBP", "SFR", None, "EUR"]),
    }), max_size=6),
    stock=st.lists(st.fixed_dictionaries({
        "ItemCode": keys, "WarehouseCode": st.sampled_from(["01", "02", "WHS-WHOLESALE", "99", None]),
        "InStock": decimals, "Committed": decimals, "Locked": yesno,
    }), max_size=8),
    nan_amounts=st.lists(floats, max_size=3), use_floats=st.booleans(),
)
def test_products_and_stock_never_crash_and_keep_one_row_per_item(items, prices, stock, nan_amounts, use_floats):
    oitm, itm1, oitw = frame("oitm", items), frame("itm1", prices), frame("oitw", stock)
    if use_floats:
        itm1 = _with_float_amounts(itm1, nan_amounts, ["Price"])
        oitw = _with_float_amounts(oitw, nan_amounts, ["InStock", "Committed"])
    owhs = frame("owhs", [{"WarehouseCode": "01", "Inactive": "tNO"}, {"WarehouseCode": "02", "Inactive": None}])
    codes = sorted({i["ItemCode"] for i in items}, key=str)
    products = build_products(oitm, itm1, MAPPING)
    assert sorted(products["sap_key"].to_list(), key=str) == codes
    _assert_pushable_rows_are_valid(products, "products")
    result = build_stock(oitm, oitw, owhs, MAPPING)
    assert sorted(result.stock["sap_key"].to_list(), key=str) == codes
    _assert_pushable_rows_are_valid(result.stock, "stock")


def test_far_past_and_future_dates_give_valid_or_held_back_orders():
    headers = [
        {"DocEntry": 1, "DocDate": dt.date(1, 1, 1), "DocTime": "00:00:00", "CardCode": "C1", "DocCurrency": "GBP",
         "DocTotal": Decimal(12), "VatSum": Decimal(2), "DocTotalFc": 0, "VatSumFc": 0, "DocumentStatus": "bost_Open"},
        {"DocEntry": 2, "DocDate": dt.date(9999, 12, 31), "DocTime": "23:30:00", "CardCode": "C1",
         "DocCurrency": "GBP", "DocTotal": Decimal(12), "VatSum": Decimal(2), "DocTotalFc": 0, "VatSumFc": 0,
         "DocumentStatus": "bost_Open"},
    ]
    lines = [{"DocEntry": e, "LineNum": 0, "ItemCode": "A", "Quantity": 1, "UnitPrice": 10, "LineTotal": 10,
              "GrossTotal": 12, "RowTotalFC": 0, "GrossTotalFC": 0} for e in (1, 2)]
    orders = build_orders(OrderInputs(frame("ordr", headers), frame("rdr1", lines)), MAPPING,
                          zone="Europe/London").orders
    assert orders.height == 2
    _assert_pushable_rows_are_valid(orders, "orders")


@pytest.mark.parametrize("zone", ["Europe/London", "America/New_York", "Asia/Kolkata"])
def test_offsets_follow_the_company_zone(zone):
    headers = [{"DocEntry": 1, "DocDate": dt.date(2024, 7, 1), "DocTime": "12:00:00", "CardCode": "C1",
                "DocCurrency": "GBP", "DocTotal": Decimal(12), "VatSum": Decimal(2), "DocTotalFc": 0,
                "VatSumFc": 0, "DocumentStatus": "bost_Open"}]
    lines = [{"DocEntry": 1, "LineNum": 0, "ItemCode": "A", "Quantity": 1, "UnitPrice": 10, "LineTotal": 10,
              "GrossTotal": 12, "RowTotalFC": 0, "GrossTotalFC": 0}]
    payload = build_orders(OrderInputs(frame("ordr", headers), frame("rdr1", lines)), MAPPING, zone=zone).orders
    offset = {"Europe/London": "+01:00", "America/New_York": "-04:00", "Asia/Kolkata": "+05:30"}[zone]
    assert f'"timestamp":"2024-07-01T12:00:00{offset}"' in payload["payload"][0]
