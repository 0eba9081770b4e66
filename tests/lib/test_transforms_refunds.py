"""Credit memos: ignoring them overstates lifetime value and turns serial returners into VIPs.

One small company history, checked in both credit memo modes. Customer C001:
- SO-1: 2 x A at 50 + 1 x B at 15, freight 5 (+1 VAT): DocTotal 144. Delivered (delivery 10),
  invoiced from the delivery (invoice 20).
- SO-2: 1 x C at 30: DocTotal 36, invoiced straight from the order (invoice 21).
- SO-3: cancelled (never revenue).
- credit memo 30: 1 x A returned from invoice 20 (-> delivery 10 -> SO-1), DocTotal 60.   partial
- credit memo 31: all of invoice 21 (-> SO-2), DocTotal 36.                                full
- credit memo 32: goodwill, based on nothing, DocTotal 12.                                 standalone
- credit memo 35: 1 x B from invoice 20 plus the freight refunded, DocTotal 24.            partial + freight
- credit memo 33 was cancelled by cancellation document 34: both net to zero in SAP.
SAP's net revenue for C001 = 144 + 36 - (60 + 36 + 12 + 24) = 48.00.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal as D

import polars as pl
import pytest

from sap_frames import bp, cufd, frame, line, order
from sap_ometria_assets.lib.ometria.mapping import load_mapping, validate_against_cufd
from sap_ometria_assets.lib.ometria.models import validate_payloads
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT
from sap_ometria_assets.lib.transforms.orders import OrderInputs, build_orders
from sap_ometria_assets.lib.transforms.refunds import net_value_by_customer

ZONE = "Europe/London"


@pytest.fixture(scope="module")
def default_mapping():
    return validate_against_cufd(load_mapping(PROJECT_ROOT / "data" / "mapping.yaml"), cufd())


def in_mode(mapping, mode: str):
    return mapping.model_copy(update={"credit_memos": mapping.credit_memos.model_copy(update={"mode": mode})})


def expense(entry, net, tax):
    return {"DocEntry": entry, "LineNum": 0, "ExpenseCode": 1, "LineTotal": D(str(net)), "LineTotalFC": D(0),
            "TaxSum": D(str(tax)), "TaxSumFC": D(0)}


def history(extra_orders=(), extra_lines=(), extra_memos=(), extra_memo_lines=()) -> OrderInputs:
    closed = {"DocumentStatus": "bost_Close"}
    ordr = [order(1, DocTotal=D(144), VatSum=D(24), **closed), order(2, DocTotal=D(36), VatSum=D(6), **closed),
            order(3, DocTotal=D(60), VatSum=D(10), Cancelled="tYES", CancelStatus="csYes", **closed),
            *extra_orders]
    rdr1 = [line(1, 0, "A", 2, 50, RemainingOpenQuantity=0), line(1, 1, "B", 1, 15, RemainingOpenQuantity=0),
            line(2, 0, "C", 1, 30, RemainingOpenQuantity=0), line(3, 0, "A", 1, 50), *extra_lines]
    odln = [order(10, **closed)]
    dln1 = [line(10, 0, "A", 2, 50, BaseType=17, BaseEntry=1, BaseLine=0),
            line(10, 1, "B", 1, 15, BaseType=17, BaseEntry=1, BaseLine=1)]
    oinv = [order(20, **closed), order(21, **closed)]
    inv1 = [line(20, 0, "A", 2, 50, BaseType=15, BaseEntry=10, BaseLine=0),
            line(20, 1, "B", 1, 15, BaseType=15, BaseEntry=10, BaseLine=1),
            line(21, 0, "C", 1, 30, BaseType=17, BaseEntry=2, BaseLine=0)]
    memo = {"DocDate": "2024-05-20", "DocumentStatus": "bost_Close"}
    orin = [order(30, DocTotal=D(60), VatSum=D(10), **memo), order(31, DocTotal=D(36), VatSum=D(6), **memo),
            order(32, DocTotal=D(12), VatSum=D(2), **memo), order(35, DocTotal=D(24), VatSum=D(4), **memo),
            order(33, DocTotal=D(60), VatSum=D(10), Cancelled="tYES", CancelStatus="csYes", **memo),
            order(34, DocTotal=D(60), VatSum=D(10), CancelStatus="csCancellation", _is_cancellation=True, **memo),
            *extra_memos]
    rin1 = [line(30, 0, "A", 1, 50, BaseType=13, BaseEntry=20, BaseLine=0),
            line(31, 0, "C", 1, 30, BaseType=13, BaseEntry=21, BaseLine=0),
            line(32, 0, "A", 1, 10),
            line(35, 0, "B", 1, 15, BaseType=13, BaseEntry=20, BaseLine=1),
            line(33, 0, "A", 1, 50, BaseType=13, BaseEntry=20, BaseLine=0),
            line(34, 0, "A", 1, 50, BaseType=14, BaseEntry=33, BaseLine=0),
            *extra_memo_lines]
    return OrderInputs(
        ordr=frame("ordr", ordr), rdr1=frame("rdr1", rdr1), rdr3=frame("rdr3", [expense(1, 5, 1)]),
        odln=frame("odln", odln), dln1=frame("dln1", dln1), oinv=frame("oinv", oinv), inv1=frame("inv1", inv1),
        orin=frame("orin", orin), rin1=frame("rin1", rin1), rin3=frame("rin3", [expense(35, 5, 1)]),
        ocrd=frame("ocrd", [bp("C001"), bp("C002")]),
    )


def sap_net_revenue(inputs: OrderInputs) -> dict[str, D]:
    """SAP's own figure: live orders minus counted credit memos (document currency), per customer."""
    live = inputs.ordr.filter(pl.col("CancelStatus") != "csYes")
    memos = inputs.orin.filter(~pl.col("CancelStatus").is_in(["csYes", "csCancellation"]))
    out: dict[str, D] = {}
    for df, sign in ((live, 1), (memos, -1)):
        for r in df.iter_rows(named=True):
            amount = r["DocTotal"] if r["DocCurrency"] == "GBP" else r["DocTotalFc"]
            out[r["CardCode"]] = out.get(r["CardCode"], D(0)) + sign * amount
    return {k: v.quantize(D("0.01")) for k, v in out.items()}


def by_id(df: pl.DataFrame, key: str, column: str = "id") -> dict:
    found = df.filter(pl.col(column) == key)
    assert found.height == 1, f"{key}: {found.height} rows"
    return found.row(0, named=True)


def net(orders: pl.DataFrame) -> dict[str, D]:
    return {r["customer_id"]: r["net_value"] for r in net_value_by_customer(orders).iter_rows(named=True)}


# --- negative_order (the default) ------------------------------------------------------------

def test_negative_order_mode_sends_each_credit_memo_as_a_negative_order(default_mapping):
    inputs = history()
    result = build_orders(inputs, default_mapping, zone=ZONE)
    orders = result.orders
    assert sorted(orders.filter(pl.col("sap_object") == "ORIN")["id"].to_list()) == ["CN-30", "CN-31", "CN-32", "CN-35"]
    cn35 = json.loads(by_id(orders, "CN-35")["payload"])
    assert cn35 == {
        "@type": "order", "id": "CN-35", "timestamp": "2024-05-20T14:00:00+01:00", "status": "complete",
        "is_valid": True, "currency": "GBP", "store": "www.example.co.uk", "channel": "online",
        "subtotal": -15.0, "discount": 0.0, "shipping": -5.0, "tax": -4.0, "grand_total": -24.0,
        "customer": {"id": "C001", "email": "c001@example.com", "firstname": "Jane", "lastname": "Doe"},
        "lineitems": [{"product_id": "B", "sku": "B", "quantity": -1.0, "unit_price": 15.0, "subtotal": -15.0,
                       "discount": 0.0, "tax": -3.0, "total": -18.0}],
        "properties": {"sales_channel": "Web", "original_order_id": "SO-1"},
    }
    assert by_id(orders, "CN-30")["original_order_ids"] == ["SO-1"]      # via invoice -> delivery
    assert by_id(orders, "CN-31")["original_order_ids"] == ["SO-2"]      # via invoice -> order
    standalone = json.loads(by_id(orders, "CN-32")["payload"])
    assert "original_order_id" not in standalone["properties"] and standalone["grand_total"] == -12.0
    # the originals are untouched in this mode
    assert json.loads(by_id(orders, "SO-1")["payload"])["status"] == "complete"
    assert orders["held_back_reason"].null_count() == orders.height


def test_negative_order_mode_net_value_equals_sap(default_mapping):
    inputs = history()
    orders = build_orders(inputs, default_mapping, zone=ZONE).orders
    assert net(orders) == sap_net_revenue(inputs) == {"C001": D("48.00")}


# --- refund_on_original ----------------------------------------------------------------------

def test_refund_on_original_updates_the_original_orders(default_mapping):
    result = build_orders(history(), in_mode(default_mapping, "refund_on_original"), zone=ZONE)
    orders = result.orders
    so1 = json.loads(by_id(orders, "SO-1")["payload"])
    assert (so1["status"], so1["is_valid"], so1["grand_total"]) == ("partial_refund", True, 144.0)
    assert [(li["product_id"], li.get("quantity_refunded"), li.get("refunded")) for li in so1["lineitems"]] == [
        ("A", 1.0, 60.0),          # credit memo 30
        ("B", 1.0, 24.0),          # credit memo 35: the line, plus the freight it refunded
    ]
    so2 = json.loads(by_id(orders, "SO-2")["payload"])
    assert (so2["status"], so2["is_valid"]) == ("refunded", False)  # fully credited
    assert so2["lineitems"][0]["refunded"] == 36.0
    # no negative orders for traced credit memos; the standalone one falls back, flagged
    negatives = orders.filter(pl.col("sap_object") == "ORIN")
    assert negatives["id"].to_list() == ["CN-32"]
    assert negatives["credit_memo_fallback"].to_list() == [True]
    assert by_id(orders, "SO-1")["refunded_total"] == D("84.00")


def test_refund_on_original_net_value_equals_sap(default_mapping):
    inputs = history()
    orders = build_orders(inputs, in_mode(default_mapping, "refund_on_original"), zone=ZONE).orders
    assert net(orders) == sap_net_revenue(inputs) == {"C001": D("48.00")}


def test_a_credit_memo_changes_the_original_orders_hash_in_refund_mode(default_mapping):
    m = in_mode(default_mapping, "refund_on_original")
    before = build_orders(history(), m, zone=ZONE).orders
    extra_memo = order(36, DocTotal=D(60), VatSum=D(10), DocDate="2024-06-01")
    after = build_orders(history(extra_memos=[extra_memo], extra_memo_lines=[
        line(36, 0, "A", 1, 50, BaseType=13, BaseEntry=20, BaseLine=0)]), m, zone=ZONE).orders
    assert by_id(after, "SO-1")["payload_hash"] != by_id(before, "SO-1")["payload_hash"]
    so1 = json.loads(by_id(after, "SO-1")["payload"])
    assert so1["lineitems"][0]["quantity_refunded"] == 2.0 and so1["lineitems"][0]["refunded"] == 120.0


# --- the trace table --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["negative_order", "refund_on_original"])
def test_every_credit_memo_has_one_trace_row(default_mapping, mode):
    refunds = build_orders(history(), in_mode(default_mapping, mode), zone=ZONE).refunds
    assert sorted(refunds["sap_key"].to_list()) == ["30", "31", "32", "33", "34", "35"]
    assert by_id(refunds, "33", "sap_key")["mode_applied"] == "excluded_cancelled"
    assert by_id(refunds, "34", "sap_key")["mode_applied"] == "excluded_cancellation_document"
    r30 = by_id(refunds, "30", "sap_key")
    assert (r30["linked_order_id"], r30["link_path"], r30["amount"]) == ("SO-1", "invoice>delivery>order", D("60.00"))
    assert by_id(refunds, "31", "sap_key")["link_path"] == "invoice>order"
    assert by_id(refunds, "32", "sap_key")["link_path"] == "none"
    if mode == "negative_order":
        assert by_id(refunds, "30", "sap_key")["id"] == "CN-30"
        assert set(refunds["mode_applied"].to_list()) >= {"negative_order"}
    else:
        assert (r30["id"], r30["mode_applied"]) == ("SO-1", "refund_on_original")
        assert by_id(refunds, "31", "sap_key")["is_full_refund"] is True
        assert by_id(refunds, "32", "sap_key")["mode_applied"] == "negative_order_fallback"


# --- currencies and edge cases ----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["negative_order", "refund_on_original"])
def test_net_value_per_currency_for_foreign_currency_customers(default_mapping, mode):
    eur_order = order(50, CardCode="C002", DocCurrency="EUR", DocTotal=D(200), DocTotalFc=D(100),
                      VatSum=D(40), VatSumFc=D("16.67"), DocumentStatus="bost_Close")
    eur_lines = [line(50, 0, "A", 1, D("83.33"), currency="EUR", fc=True, vat_rate=D("0.2"), RemainingOpenQuantity=0)]
    eur_order_lines = [dict(eur_lines[0], GrossTotalFC=D(100), GrossTotal=D(200))]
    memo = order(51, CardCode="C002", DocCurrency="EUR", DocTotal=D(80), DocTotalFc=D(40), VatSum=D(16),
                 VatSumFc=D("6.67"))
    memo_lines = [line(51, 0, "A", 1, D("33.33"), currency="EUR", fc=True, BaseType=17, BaseEntry=50, BaseLine=0)]
    memo_lines = [dict(memo_lines[0], GrossTotalFC=D(40), GrossTotal=D(80))]
    inputs = history(extra_orders=[eur_order], extra_lines=eur_order_lines, extra_memos=[memo],
                     extra_memo_lines=memo_lines)
    orders = build_orders(inputs, in_mode(default_mapping, mode), zone=ZONE).orders
    table = net_value_by_customer(orders)
    assert table.filter(pl.col("customer_id") == "C002").rows() == [("C002", "EUR", D("60.00"))]
    assert net(orders) == sap_net_revenue(inputs)


def test_credit_memo_against_a_cancelled_order_falls_back_to_a_negative_order(default_mapping):
    memo = order(60, DocTotal=D(60), VatSum=D(10))
    inputs = history(extra_memos=[memo], extra_memo_lines=[line(60, 0, "A", 1, 50, BaseType=17, BaseEntry=3, BaseLine=0)])
    orders = build_orders(inputs, in_mode(default_mapping, "refund_on_original"), zone=ZONE).orders
    assert by_id(orders, "CN-60")["credit_memo_fallback"] is True
    assert json.loads(by_id(orders, "SO-3")["payload"])["status"] == "cancelled"


def test_credit_memo_in_an_unmapped_currency_is_held_back_with_its_reason(default_mapping):
    memo = order(70, DocCurrency="SFR", DocTotal=D(24), DocTotalFc=D(12), VatSum=D(4), VatSumFc=D(2))
    inputs = history(extra_memos=[memo], extra_memo_lines=[line(70, 0, "A", 1, 10, currency="SFR", fc=True)])
    result = build_orders(inputs, default_mapping, zone=ZONE)
    assert by_id(result.orders, "CN-70")["held_back_reason"] == "unmapped_currency:SFR"
    assert by_id(result.refunds, "70", "sap_key")["held_back_reason"] == "unmapped_currency:SFR"


def test_all_pushable_orders_and_negative_orders_pass_the_model(default_mapping):
    for mode in ("negative_order", "refund_on_original"):
        orders = build_orders(history(), in_mode(default_mapping, mode), zone=ZONE).orders
        ok = orders.filter(pl.col("held_back_reason").is_null())
        assert validate_payloads("orders", ok["payload"]).null_count() == ok.height


# ---------------------------------------------------------------------------------------------
# Hash stability: an unchanged SAP record must never be re-sent
# ---------------------------------------------------------------------------------------------
def _records(result) -> tuple[list, list]:
    orders = sorted(result.orders.select("id", "payload", "payload_hash", "held_back_reason").rows())
    refunds = sorted(result.refunds.rows(), key=lambda r: r[3])
    return orders, refunds


def _shuffled(inputs: OrderInputs, seed: int) -> OrderInputs:
    return OrderInputs(**{
        name: None if df is None else df.sample(fraction=1.0, shuffle=True, seed=seed)
        for name, df in vars(inputs).items()
    })


@pytest.mark.parametrize("mode", ["negative_order", "refund_on_original"])
def test_the_same_sap_data_in_any_row_order_gives_the_same_payloads(default_mapping, mode):
    # Landing replaces changed rows at the end of a table, so a re-landing reorders rows without
    # changing them: nothing in the payloads may depend on row order.
    mapping = in_mode(default_mapping, mode)
    first = _records(build_orders(history(), mapping, zone=ZONE))
    assert _records(build_orders(history(), mapping, zone=ZONE)) == first
    for seed in range(4):
        assert _records(build_orders(_shuffled(history(), seed), mapping, zone=ZONE)) == first, seed


def test_a_line_landed_twice_resolves_the_same_way_in_any_order(default_mapping):
    # An invoice line key landed twice (an upstream error) must not make the trace flip between
    # runs depending on which copy comes last.
    twin = line(20, 0, "A", 2, 50, BaseType=15, BaseEntry=99, BaseLine=0)
    base = history()
    inputs = OrderInputs(**{**vars(base), "inv1": pl.concat([base.inv1, frame("inv1", [twin])])})
    first = _records(build_orders(inputs, default_mapping, zone=ZONE))
    for seed in range(4):
        assert _records(build_orders(_shuffled(inputs, seed), default_mapping, zone=ZONE)) == first, seed


# sha256 over the sorted (id, payload_hash) pairs of `history()`: pins the exact payload bytes,
# so a rewrite of the transforms for speed cannot silently change what Ometria receives.
PINNED_PAYLOADS = {
    "negative_order": "44f2786138359b566b3f470326fd710f9d096b791c0d4dbfaedabf8b3e215a2d",
    "refund_on_original": "090bead0cf45958586d07521a718f09b9899741c0a2fdcbfcf0172c4a0f3a2b8",
}


@pytest.mark.parametrize("mode", sorted(PINNED_PAYLOADS))
def test_payload_bytes_are_pinned(default_mapping, mode):
    result = build_orders(history(), in_mode(default_mapping, mode), zone=ZONE)
    pairs = sorted(result.orders.select("id", "payload_hash").rows())
    assert hashlib.sha256(json.dumps(pairs).encode()).hexdigest() == PINNED_PAYLOADS[mode]
