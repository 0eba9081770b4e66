"""Products from Items: price list, title, active flags and UDF attributes."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal as D

import polars as pl
import pytest

from sap_frames import cufd, frame
from sap_ometria_assets.lib.ometria.links import ProductLink
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
                                  U_WebTitle="Organic T-shirt", U_ImagePath="catalog/product/ts-001.jpg")],
                   [price("TS-001", "19.99"), price("TS-001", "9.50", price_list=2)])
    expected = {
        "@type": "product", "id": "TS-001", "sku": "TS-001", "title": "Organic T-shirt", "price": 19.99,
        "currency": "GBP", "is_active": True,
        "url": "https://www.example.co.uk/p/TS-001",
        "image_url": "https://www.example.co.uk/media/catalog/product/ts-001.jpg",
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


# --- url and image_url ---------------------------------------------------------------------------

def _with_links(mapping, **links):
    return mapping.model_copy(update={"products": mapping.products.model_copy(
        update={k: ProductLink(**v) for k, v in links.items()})})


def _linked(mapping, items: list[dict], image: dict[str, str | None], **links) -> pl.DataFrame:
    """Products of `items`, whose image UDF `U_Imagen1` holds `image[code]` (recorded SAP name)."""
    oitm = frame("oitm", items).with_columns(
        pl.Series("U_Imagen1", [image.get(i["ItemCode"]) for i in items], dtype=pl.String))
    return build_products(oitm, frame("itm1", [price(i["ItemCode"], 10) for i in items]),
                          _with_links(mapping, **links))


def test_url_from_a_template_on_the_item_code_is_percent_encoded(mapping):
    out = _linked(mapping, [item("TS-001"), item("A/B 7")], {},
                  url={"template": "https://shop.example.com/p/{ItemCode}?src=ometria"})
    assert json.loads(row(out, "TS-001")["payload"])["url"] == "https://shop.example.com/p/TS-001?src=ometria"
    assert row(out, "A/B 7")["url"] == "https://shop.example.com/p/A%2FB%207?src=ometria"
    assert validate_payloads("products", out["payload"]).null_count() == 2


def test_image_from_a_udf_absolute_or_relative_to_the_base_url(mapping):
    out = _linked(
        mapping, [item("ABS"), item("REL"), item("SLASH"), item("NONE")],
        {"ABS": "https://cdn.example.com/x/abs.jpg", "REL": "items/rel 1.jpg", "SLASH": "/slash.png"},
        image_url={"udf": "U_Imagen1", "base_url": "https://img.example.com/media/"})
    assert row(out, "ABS")["image_url"] == "https://cdn.example.com/x/abs.jpg"
    assert row(out, "REL")["image_url"] == "https://img.example.com/media/items/rel%201.jpg"
    assert row(out, "SLASH")["image_url"] == "https://img.example.com/media/slash.png"
    none = row(out, "NONE")
    assert none["image_url"] is None and "image_url" not in json.loads(none["payload"])
    assert none["warnings"] == [] and none["held_back_reason"] is None  # empty is no warning: the rule counts it


def test_udf_first_then_the_template(mapping):
    out = _linked(mapping, [item("SET"), item("EMPTY")], {"SET": "https://cdn.example.com/set.jpg", "EMPTY": " "},
                  image_url={"udf": "U_Imagen1", "template": "https://cdn.example.com/p/{ItemCode}.jpg"})
    assert row(out, "SET")["image_url"] == "https://cdn.example.com/set.jpg"
    assert row(out, "EMPTY")["image_url"] == "https://cdn.example.com/p/EMPTY.jpg"


def test_an_invalid_link_is_left_out_with_a_warning_and_the_product_still_sent(mapping):
    out = _linked(mapping, [item("WIN"), item("REL"), item("OK")],
                  {"WIN": r"C:\Imagenes\win.jpg", "REL": "rel.jpg", "OK": "https://cdn.example.com/ok.jpg"},
                  image_url={"udf": "U_Imagen1"}, url={"template": "https://shop.example.com/p/{ItemCode}"})
    win, rel = row(out, "WIN"), row(out, "REL")
    for r, bad in ((win, r"C:\Imagenes\win.jpg"), (rel, "rel.jpg")):
        payload = json.loads(r["payload"])
        assert r["held_back_reason"] is None and "image_url" not in payload
        assert payload["url"].startswith("https://shop.example.com/p/")  # the other link stays
        assert r["warnings"] == [f"image_url left out: not an absolute http(s) URL: {bad}"]
    assert row(out, "OK")["image_url"] == "https://cdn.example.com/ok.jpg"
    assert validate_payloads("products", out["payload"]).null_count() == 3


def test_without_links_in_the_mapping_the_payload_has_none(mapping):
    bare = mapping.model_copy(update={"products": mapping.products.model_copy(
        update={"url": None, "image_url": None})})
    r = row(products(bare, [item("X")], [price("X", 10)]), "X")
    assert "url" not in r["payload"] and r["image_url"] is None


def test_recorded_real_items_image_udf_becomes_image_url(mapping, real_items):
    """The production Items page (tests/fixtures/sap/): U_Imagen1 (empty in all five as recorded,
    so one is given a relative path as SAP's attachment UDFs hold) becomes image_url."""
    items = [dict(i) for i in real_items]
    items[0]["U_Imagen1"] = "9990020012002.jpg"
    oitm = pl.DataFrame([{k: (str(v) if v is not None else None) for k, v in i.items()
                          if not isinstance(v, (list, dict))} for i in items],
                        infer_schema_length=None).with_columns(pl.lit(None, pl.Datetime("us", "UTC")).alias("_landed_at"))
    real = _with_links(mapping, image_url={"udf": "U_Imagen1", "base_url": "https://cdn.example.com/img/"},
                       url={"template": "https://shop.example.com/p/{ItemCode}"})
    real = real.model_copy(update={"products": real.products.model_copy(update={"title_udf": None, "attributes": []})})
    out = build_products(oitm, None, real)
    assert out.height == 5 and out["held_back_reason"].null_count() == 5  # every product still sent
    assert row(out, "9990020012002")["image_url"] == "https://cdn.example.com/img/9990020012002.jpg"
    assert out["image_url"].null_count() == 4
    assert row(out, "9990050011002")["url"] == "https://shop.example.com/p/9990050011002"
