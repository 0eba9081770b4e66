"""Orders through their whole life: cancellations and edits must reach Ometria as whole orders."""

from __future__ import annotations

import json
from decimal import Decimal as D

import polars as pl
import pytest

from sap_frames import bp, cufd, frame, line, order
from sap_ometria_assets.lib.ometria.mapping import load_mapping, validate_against_cufd
from sap_ometria_assets.lib.ometria.models import validate_payloads
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT
from sap_ometria_assets.lib.transforms.orders import OrderInputs, build_orders

ZONE = "Europe/London"


@pytest.fixture(scope="module")
def mapping():
    return validate_against_cufd(load_mapping(PROJECT_ROOT / "data" / "mapping.yaml"), cufd())


def freight(entry: int, net, tax, fc: bool = False) -> dict:
    net, tax = D(str(net)), D(str(tax))
    return {"DocEntry": entry, "LineNum": 0, "ExpenseCode": 1,
            "LineTotal": net * (2 if fc else 1), "LineTotalFC": net if fc else 0,
            "TaxSum": tax * (2 if fc else 1), "TaxSumFC": tax if fc else 0}


def build(mapping, headers, lines, expenses=(), odln=(), dln1=(), ocrd=None):
    result = build_orders(OrderInputs(
        ordr=frame("ordr", headers), rdr1=frame("rdr1", lines), rdr3=frame("rdr3", list(expenses)),
        odln=frame("odln", list(odln)), dln1=frame("dln1", list(dln1)),
        ocrd=frame("ocrd", ocrd if ocrd is not None else [bp("C001")]),
    ), mapping, zone=ZONE)
    return result.orders


def row(df: pl.DataFrame, order_id: str) -> dict:
    found = df.filter(pl.col("id") == order_id)
    assert found.height == 1, f"{order_id}: {found.height} rows"
    return found.row(0, named=True)


def payload(df: pl.DataFrame, order_id: str) -> dict:
    return json.loads(row(df, order_id)["payload"])


# Order 1: 2 T-shirts at 20.00 with a 10% line discount, a mug at 8.50, 10% header discount,
# 4.95 freight; VAT 20%.  Lines net 36.00 + 8.50 = 44.50; header discount 4.45;
# VAT (40.05 x 20%) 8.01 + freight VAT 0.99 = 9.00; DocTotal 40.05 + 4.95 + 9.00 = 54.00.
ORDER_1 = order(1, DocNum=5001, DocTotal=D("54.00"), VatSum=D("9.00"), DiscountPercent=10,
                TotalDiscount=D("4.45"), U_PromoCode="SPRING10")
LINES_1 = [line(1, 0, "TSHIRT", 2, 20, discount_pct=10), line(1, 1, "MUG", 1, D("8.50"))]


def test_an_order_becomes_the_expected_ometria_order(mapping):
    out = build(mapping, [ORDER_1], LINES_1, [freight(1, "4.95", "0.99")])
    expected = {
        "@type": "order", "id": "SO-1", "timestamp": "2024-05-01T14:00:00+01:00",
        "status": "pending", "is_valid": True, "currency": "GBP", "store": "www.example.co.uk",
        "channel": "online", "subtotal": 48.5, "discount": -8.45, "shipping": 4.95, "tax": 9.0,
        "grand_total": 54.0, "coupon_code": "SPRING10",
        "customer": {"id": "C001", "email": "c001@example.com", "firstname": "Jane", "lastname": "Doe"},
        "lineitems": [
            {"product_id": "TSHIRT", "sku": "TSHIRT", "quantity": 2.0, "unit_price": 20.0, "subtotal": 40.0,
             "discount": -4.0, "tax": 7.2, "total": 43.2},
            {"product_id": "MUG", "sku": "MUG", "quantity": 1.0, "unit_price": 8.5, "subtotal": 8.5,
             "discount": 0.0, "tax": 1.7, "total": 10.2},
        ],
        "properties": {"sales_channel": "Web"},
    }
    r = row(out, "SO-1")
    assert r["payload"] == json.dumps(expected, separators=(",", ":"))
    assert r["held_back_reason"] is None
    assert (r["sap_object"], r["sap_key"], r["doc_num"]) == ("ORDR", "1", 5001)
    assert r["grand_total"] == D("54.00") and r["discount"] == D("-8.45")
    # the parts add up to SAP's DocTotal to the penny
    assert r["subtotal"] + r["discount"] + r["shipping"] + r["tax"] == r["grand_total"]


def test_id_comes_from_docentry_never_from_docnum(mapping):
    renumbered = dict(ORDER_1, DocNum=9999)
    assert row(build(mapping, [renumbered], LINES_1), "SO-1")["doc_num"] == 9999


# --- cancellations and edits reach Ometria as whole updated orders -----------------------------

def test_a_cancelled_order_is_resent_whole_as_cancelled_and_invalid(mapping):
    before = row(build(mapping, [ORDER_1], LINES_1, [freight(1, "4.95", "0.99")]), "SO-1")
    cancelled = dict(ORDER_1, Cancelled="tYES", CancelStatus="csYes", DocumentStatus="bost_Close",
                     UpdateDate="2024-05-02")
    after = row(build(mapping, [cancelled], LINES_1, [freight(1, "4.95", "0.99")]), "SO-1")
    p = json.loads(after["payload"])
    assert (p["status"], p["is_valid"]) == ("cancelled", False)
    assert len(p["lineitems"]) == 2 and p["grand_total"] == 54.0   # the whole order, not a stub
    assert after["payload_hash"] != before["payload_hash"]
    assert after["held_back_reason"] is None


def test_an_edited_line_resends_the_whole_order(mapping):
    before = build(mapping, [ORDER_1], LINES_1, [freight(1, "4.95", "0.99")])
    # the customer drops the mug and takes 3 T-shirts: lines replaced as a set, totals re-computed
    edited_lines = [line(1, 0, "TSHIRT", 3, 20, discount_pct=10)]  # net 54.00, disc 5.40
    edited = dict(ORDER_1, DocTotal=D("63.27"), VatSum=D("10.71"), TotalDiscount=D("5.40"))
    after = build(mapping, [edited], edited_lines, [freight(1, "4.95", "0.99")])
    p = payload(after, "SO-1")
    assert [(li["product_id"], li["quantity"]) for li in p["lineitems"]] == [("TSHIRT", 3.0)]
    assert p["grand_total"] == 63.27 and p["subtotal"] == 60.0
    assert round(p["subtotal"] + p["discount"] + p["shipping"] + p["tax"], 2) == p["grand_total"]
    assert row(after, "SO-1")["payload_hash"] != row(before, "SO-1")["payload_hash"]


def test_cancellation_documents_never_become_orders(mapping):
    doc = order(7, DocTotal=D("12"), VatSum=D("2"), CancelStatus="csCancellation", _is_cancellation=True)
    out = build(mapping, [ORDER_1, doc], LINES_1 + [line(7, 0, "MUG", 1, 10)])
    assert out["id"].to_list() == ["SO-1"]


# --- delivery state and status --------------------------------------------------------------

def _delivery(entry: int, order_entry: int, order_line: int, qty, **kw) -> tuple[dict, dict]:
    head = order(entry, DocumentStatus="bost_Close", **kw)
    return head, line(entry, 0, "TSHIRT", qty, 20, BaseType=17, BaseEntry=order_entry, BaseLine=order_line)


def test_delivery_state_drives_the_status(mapping):
    h10, l10 = _delivery(10, 1, 0, 2)
    partly = build(mapping, [ORDER_1], LINES_1, odln=[h10], dln1=[l10])
    assert row(partly, "SO-1")["sap_state"] == "open_partly_delivered"
    assert payload(partly, "SO-1")["status"] == "shipped"

    h11, l11 = _delivery(11, 1, 1, 1)
    closed = dict(ORDER_1, DocumentStatus="bost_Close")
    done = build(mapping, [closed], LINES_1, odln=[h10, h11], dln1=[l10, dict(l11, ItemCode="MUG")])
    assert row(done, "SO-1")["sap_state"] == "closed_delivered"
    assert (payload(done, "SO-1")["status"], payload(done, "SO-1")["is_valid"]) == ("complete", True)


def test_a_cancelled_delivery_does_not_count(mapping):
    h10, l10 = _delivery(10, 1, 0, 2, Cancelled="tYES", CancelStatus="csYes")
    out = build(mapping, [ORDER_1], LINES_1, odln=[h10], dln1=[l10])
    assert row(out, "SO-1")["sap_state"] == "open_undelivered"


def test_remaining_open_quantity_counts_invoiced_without_delivery(mapping):
    lines = [dict(LINES_1[0], RemainingOpenQuantity=D(0)), LINES_1[1]]
    assert row(build(mapping, [ORDER_1], lines), "SO-1")["sap_state"] == "open_partly_delivered"


def test_partly_delivered_status_is_configurable(mapping):
    statuses = mapping.orders.status.model_copy(update={
        "open_partly_delivered": mapping.orders.status.open_partly_delivered.model_copy(update={"status": "processing"})})
    m = mapping.model_copy(update={"orders": mapping.orders.model_copy(update={"status": statuses})})
    h10, l10 = _delivery(10, 1, 0, 1)
    assert payload(build(m, [ORDER_1], LINES_1, odln=[h10], dln1=[l10]), "SO-1")["status"] == "processing"


# --- time zone --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("date", "time", "expected"),
    [
        ("2024-01-15", "09:00:00", "2024-01-15T09:00:00+00:00"),   # GMT
        ("2024-07-15", "09:00:00", "2024-07-15T09:00:00+01:00"),   # BST
        ("2024-03-31", "01:30:00", "2024-03-31T02:30:00+01:00"),   # spring gap: the clock jumps
        ("2024-10-27", "01:30:00", "2024-10-27T01:30:00+01:00"),   # autumn repeat: the first one
        ("2024-07-15", None, "2024-07-15T00:00:00+01:00"),         # no time: midnight
    ],
)
def test_timestamp_has_the_company_time_zone_offset(mapping, date, time, expected):
    out = build(mapping, [dict(ORDER_1, DocDate=date, DocTime=time)], LINES_1)
    assert payload(out, "SO-1")["timestamp"] == expected


# --- currencies -------------------------------------------------------------------------------

def test_foreign_currency_orders_use_the_fc_fields(mapping):
    eur = order(2, DocCurrency="EUR", DocTotal=D("240.00"), DocTotalFc=D("120.00"),
                VatSum=D("40.00"), VatSumFc=D("20.00"))
    out = build(mapping, [eur], [line(2, 0, "TSHIRT", 2, 50, currency="EUR", fc=True)])
    r = row(out, "SO-2")
    p = json.loads(r["payload"])
    assert (p["currency"], p["grand_total"], p["tax"], p["subtotal"]) == ("EUR", 120.0, 20.0, 100.0)
    assert p["lineitems"][0]["total"] == 120.0
    assert r["grand_total_local"] == D("240.00")


def test_sap_currency_codes_map_to_iso_and_unmapped_ones_are_held_back(mapping):
    usd = order(3, DocCurrency="US$", DocTotal=D("24"), DocTotalFc=D("12"), VatSum=D("4"), VatSumFc=D("2"))
    sfr = order(4, DocCurrency="SFR", DocTotal=D("24"), DocTotalFc=D("12"), VatSum=D("4"), VatSumFc=D("2"))
    out = build(mapping, [usd, sfr], [line(3, 0, "MUG", 1, 10, currency="US$", fc=True),
                                      line(4, 0, "MUG", 1, 10, currency="SFR", fc=True)])
    assert payload(out, "SO-3")["currency"] == "USD"
    held = row(out, "SO-4")
    assert held["held_back_reason"] == "unmapped_currency:SFR"
    assert held["payload"] is not None  # kept, with its SAP source, for the exceptions report


# --- UDFs, customer link, bad data ----------------------------------------------------------

def test_order_udfs_arrive_as_properties_and_fields(mapping):
    out = build(mapping, [dict(ORDER_1, U_SalesChannel="Marketplace", U_PromoCode="VIP5")], LINES_1)
    p = payload(out, "SO-1")
    assert p["properties"] == {"sales_channel": "Marketplace"}
    assert (p["channel"], p["coupon_code"]) == ("marketplace", "VIP5")


def test_customer_object_links_to_the_contact(mapping):
    out = build(mapping, [ORDER_1], LINES_1, ocrd=[bp("C001", CardName="Dr Ann Lee", EmailAddress="ANN@Example.com")])
    assert payload(out, "SO-1")["customer"] == {"id": "C001", "email": "ann@example.com",
                                               "firstname": "Ann", "lastname": "Lee"}
    unknown = build(mapping, [dict(ORDER_1, CardCode="C404")], LINES_1)
    assert payload(unknown, "SO-1")["customer"] == {"id": "C404"}


@pytest.mark.parametrize(
    ("header", "lines", "reason"),
    [
        ({}, [], "no_lines"),
        ({"DocDate": None}, LINES_1, "missing_doc_date"),
        ({"DocTotal": None}, LINES_1, "invalid_amount"),
        ({}, [line(1, 0, "TSHIRT", -1, 20)], "negative_quantity"),
        ({}, [line(1, 0, "TSHIRT", 1, 20), line(1, 0, "MUG", 1, 5)], "duplicate_line"),
    ],
)
def test_bad_orders_keep_their_row_with_a_reason(mapping, header, lines, reason):
    out = build(mapping, [dict(ORDER_1, **header)], lines)
    assert reason in row(out, "SO-1")["held_back_reason"]


def test_every_pushable_order_passes_the_model(mapping):
    headers = [dict(ORDER_1, DocEntry=i, DocNum=i) for i in range(1, 30)]
    lines = [dict(li, DocEntry=i) for i in range(1, 30) for li in LINES_1]
    out = build(mapping, headers, lines)
    assert out.height == 29 and out["held_back_reason"].null_count() == 29
    assert validate_payloads("orders", out["payload"]).null_count() == 29


def test_a_quantity_zero_line_with_an_amount_invents_no_discount(mapping):
    """issue 11: a 0-quantity line priced 5.00 came out with a 5.00 'discount'."""
    charge = line(1, 2, "MUG", 0, D("8.50"), LineTotal=D("5.00"), TaxTotal=D("1.00"),
                  GrossTotal=D("6.00"))
    head = order(1, DocNum=5001, DocTotal=D("60.00"), VatSum=D("10.00"), DiscountPercent=10,
                 TotalDiscount=D("4.45"))
    out = build(mapping, [head], [*LINES_1, charge], [freight(1, "4.95", "0.99")])
    p = payload(out, "SO-1")
    zero = next(li for li in p["lineitems"] if li.get("quantity") == 0)
    assert zero.get("discount", 0) == 0
    assert zero["subtotal"] == 5.0
    assert row(out, "SO-1")["held_back_reason"] is None
