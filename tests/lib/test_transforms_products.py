"""Products from Items: price list, title, active flags and UDF attributes."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal as D

import polars as pl
import pytest

from sap_frames import cufd, frame
from sap_ometria_assets.lib.ometria.mapping import load_mapping, validate_against_cufd
from sap_ometria_assets.lib.ometria.models import validate_payloads
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT
from sap_ometria_assets.lib.transforms.products import build_products


@pytest.fixture(scope="module")
def mapping():
    return validate_against_cufd(load_mapping(PROJECT_ROOT / "data" / "mapping.yaml"), cufd())


def item(code: str, **kw) -> dict:
    row = {"ItemCode": code, "ItemName": "Organic cotton T-shirt", "ItemsGroupCode": 100, "SalesItem": "tYES",
           "InventoryItem": "tYES", "Valid": "tYES", "Frozen": "tNO", "UpdateDate": "2024-04-01"}
    row.update(kw)
    return row


def price(code: str, amount, price_list: int = 1, currency: str | None = "GBP") -> dict:
    return {"ItemCode": code, "PriceList": price_list, "Price": None if amount is None else D(str(amount)),
            "Currency": currency}


def products(mapping, items, prices):
    return build_products(frame("oitm", items), frame("itm1", prices), mapping)


def row(df: pl.DataFrame, key: str) -> dict:
    found = df.filter(pl.col("sap_key") == key)
    assert found.height == 1
    return found.row(0, named=True)


def test_an_item_becomes_the_expected_product(mapping):
    out = products(mapping, [item("TS-001", U_Brand="Acme & Co", U_Colour="Navy Blue", U_Season=None,
                                  U_WebTitle="Organic T-shirt")],
                   [price("TS-001", "19.99"), price("TS-001", "9.50", price_list=2)])
    expected = {
        "@type": "product", "id": "TS-001", "sku": "TS-001", "title": "Organic T-shirt", "price": 19.99,
        "currency": "GBP", "is_active": True,
        "attributes": [{"type": "brand", "id": "acme-co", "label": "Acme & Co"},
                       {"type": "colour", "id": "navy-blue", "label": "Navy Blue"}],
        "listings": [{"store": "www.example.co.uk", "title": "Organic T-shirt", "price": 19.99, "currency": "GBP",
                      "is_active": True}],
        "@merge": True,
    }
    r = row(out, "TS-001")
    assert r["payload"] == json.dumps(expected, separators=(",", ":"))
    assert "is_in_stock" not in r["payload"]  # the stock feed owns it
    assert (r["price"], r["price_list"], r["held_back_reason"]) == (D("19.99"), 1, None)


def test_title_falls_back_to_item_name(mapping):
    r = row(products(mapping, [item("TS-002", U_WebTitle="  ")], [price("TS-002", 5)]), "TS-002")
    assert json.loads(r["payload"])["title"] == "Organic cotton T-shirt"


@pytest.mark.parametrize(
    ("changes", "active"),
    [
        ({}, True),
        ({"Frozen": "tYES"}, False),
        ({"SalesItem": "tNO"}, False),
        ({"_deleted_at": dt.datetime(2024, 7, 1, tzinfo=dt.UTC)}, False),
    ],
)
def test_is_active_from_sap_flags(mapping, changes, active):
    r = row(products(mapping, [item("X", **changes)], [price("X", 5)]), "X")
    p = json.loads(r["payload"])
    assert p["is_active"] is active and p["listings"][0]["is_active"] is active
    assert r["held_back_reason"] is None  # deactivations must reach Ometria


def test_price_comes_from_the_configured_price_list(mapping):
    m = mapping.model_copy(update={"products": mapping.products.model_copy(update={"price_list": 2})})
    r = row(products(m, [item("X")], [price("X", 20), price("X", 12, price_list=2)]), "X")
    assert json.loads(r["payload"])["price"] == 12.0


def test_missing_or_zero_price_is_not_sent_over_a_web_price(mapping):
    out = products(mapping, [item("NOPRICE"), item("ZERO")], [price("ZERO", 0, currency=None)])
    for key in ("NOPRICE", "ZERO"):
        r = row(out, key)
        p = json.loads(r["payload"])
        assert "price" not in p and "price" not in p["listings"][0]
        assert r["held_back_reason"] is None and r["warnings"] == ["no price in price list 1"]


def test_unmapped_price_currency_is_held_back(mapping):
    r = row(products(mapping, [item("X")], [price("X", 10, currency="SFR")]), "X")
    assert r["held_back_reason"] == "unmapped_currency:SFR"


def test_an_item_edit_changes_the_hash_only_when_the_payload_changes(mapping):
    base = row(products(mapping, [item("X", U_Brand="Acme")], [price("X", 10)]), "X")
    same = row(products(mapping, [item("X", U_Brand="Acme", UpdateDate="2024-05-01")], [price("X", 10)]), "X")
    rebrand = row(products(mapping, [item("X", U_Brand="Zenith")], [price("X", 10)]), "X")
    assert same["payload_hash"] == base["payload_hash"]
    assert rebrand["payload_hash"] != base["payload_hash"]


def test_every_item_has_one_row_and_pushable_ones_pass_the_model(mapping):
    items = [item(f"I{i:03d}", SalesItem=["tYES", "tNO"][i % 2], U_Colour=["Red", None][i % 3 == 0]) for i in range(25)]
    out = products(mapping, items, [price(f"I{i:03d}", i + 1) for i in range(25)])
    assert sorted(out["sap_key"].to_list()) == [f"I{i:03d}" for i in range(25)]
    ok = out.filter(pl.col("held_back_reason").is_null())
    assert ok.height == 25 and validate_payloads("products", ok["payload"]).null_count() == 25
