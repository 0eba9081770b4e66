"""The mapping file: the documented default, overrides, and errors that name file, key and value."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from sap_frames import cufd, frame
from sap_ometria_assets.lib.ometria.mapping import MappingError, load_mapping, parse_mapping, validate_against_cufd
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT, get_settings

DEFAULT = PROJECT_ROOT / "data" / "mapping.yaml"


def _default_doc() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


def _write(tmp_path: Path, doc: dict, name: str = "mapping.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- the shipped default ----------------------------------------------------------------------

def test_default_mapping_holds_the_documented_choices():
    m = load_mapping(DEFAULT)
    assert m.contacts.card_types == ["cCustomer"]
    assert m.currencies.local == "GBP"
    assert m.currencies.map["US$"] == "USD"
    assert "SFR" not in m.currencies.map  # left out on purpose: the demo shows the exception
    assert m.credit_memos.mode == "negative_order"
    assert m.orders.id_template == "SO-{DocEntry}" and m.credit_memos.id_template == "CN-{DocEntry}"
    assert m.orders.status.cancelled.is_valid is False
    assert m.orders.status.open_partly_delivered.status == "shipped"
    assert m.products.url.template == "https://www.example.co.uk/p/{ItemCode}"
    assert (m.products.image_url.udf, m.products.image_url.base_url) == ("U_ImagePath", "https://www.example.co.uk/media/")
    assert m.stock.warehouses["WHS-WHOLESALE"].rule == "exclude"
    assert m.products.price_list == 1
    assert m.contacts.marketing_optin.send_timestamps is False
    assert m.contacts.phone_default_region == "GB"


def test_default_mapping_matches_the_demo_companys_udfs():
    resolved = validate_against_cufd(load_mapping(DEFAULT), cufd())
    tier = next(u for u in resolved.udfs.BusinessPartner if u.sap_field == "U_LoyaltyTier")
    # allowed values default to the valid values SAP declares for the UDF
    assert tier.allowed_values == ["Bronze", "Silver", "Gold", "Platinum"]


def test_sap_ometria_mapping_overrides_the_default_path(tmp_path, monkeypatch):
    doc = _default_doc()
    doc["store"] = "shop.example.de"
    path = _write(tmp_path, doc, "custom.yaml")
    monkeypatch.setenv("SAP_OMETRIA_MAPPING", str(path))
    get_settings(refresh=True)
    assert get_settings().mapping_path == path
    assert load_mapping().store == "shop.example.de"


# --- errors name the file, the key path and the bad value ------------------------------------

@pytest.mark.parametrize(
    ("change", "key", "value"),
    [
        (lambda d: d["credit_memos"].update(mode="refund_sometimes"), "credit_memos.mode", "refund_sometimes"),
        (lambda d: d["currencies"]["map"].update({"US$": "US Dollar"}), "currencies.map", "US Dollar"),
        (lambda d: d["orders"].update(id_template="SO-{DocNum}"), "orders.id_template", "SO-{DocNum}"),
        (lambda d: d["stock"]["warehouses"].update({"02": {"rule": "channel"}}), "stock.warehouses.02", "channel"),
        (lambda d: d["udfs"]["BusinessPartner"][0].update(sap_field="LoyaltyTier"),
         "udfs.BusinessPartner.0.sap_field", "LoyaltyTier"),
        (lambda d: d["contacts"].update(card_types=["cVendor"]), "contacts.card_types.0", "cVendor"),
        (lambda d: d["stock"].update(in_stock_treshold=3), "stock.in_stock_treshold", "3"),
    ],
)
def test_invalid_values_are_reported_with_file_key_and_value(tmp_path, change, key, value):
    doc = _default_doc()
    change(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    message = str(err.value)
    assert str(path) in message
    assert key in message
    assert value in message


@pytest.mark.parametrize(
    ("key", "link", "says"),
    [
        ("products.url.template", {"template": "shop.example.com/p/{ItemCode}"}, "http:// or https://"),
        ("products.url.template", {"template": "https://shop.example.com/p/static"}, "placeholder"),
        ("products.url.template", {"template": "{U_Url}"}, "host name"),
        ("products.url.template", {"template": "https://shop.example.com/p/{ItemCode!r}"}, "plain item field"),
        ("products.url.template", {"template": "https://shop.example.com/p/{ItemCode"}, "not a valid template"),
        ("products.image_url.template", {"template": "https://cdn.example.com/my images/{ItemCode}.jpg"},
         "percent-encoded"),
        ("products.image_url.base_url", {"udf": "U_Imagen1", "base_url": "images/"}, "absolute http(s) URL"),
        ("products.image_url", {"base_url": "https://cdn.example.com/"}, "`template`, a `udf`"),
        ("products.image_url", {"template": "https://cdn.example.com/{ItemCode}.jpg",
                                "base_url": "https://cdn.example.com/"}, "needs a `udf`"),
    ],
)
def test_a_bad_product_link_is_refused_at_start_naming_the_key(tmp_path, key, link, says):
    doc = _default_doc()
    doc["products"][key.split(".")[1]] = link
    path = _write(tmp_path, doc)
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    message = str(err.value)
    assert str(path) in message and f"{key}:" in message and says in message


def test_product_link_udfs_are_checked_against_sap():
    doc = _default_doc()
    doc["products"]["image_url"] = {"udf": "U_Imagen1"}
    doc["products"]["url"] = {"template": "https://shop.example.com/{U_WebSlug}/{ItemCode}"}
    with pytest.raises(MappingError) as err:
        validate_against_cufd(parse_mapping(doc, source="mine.yaml"), cufd())
    message = str(err.value)
    assert "products.image_url.udf: 'U_Imagen1'" in message
    assert "products.url.template: 'U_WebSlug'" in message


def test_credit_memo_and_order_ids_must_differ():
    doc = _default_doc()
    doc["credit_memos"]["id_template"] = doc["orders"]["id_template"]
    with pytest.raises(MappingError, match="would overwrite each other"):
        parse_mapping(doc, source="x.yaml")


def test_broken_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("store: shop\ncurrencies:\n  local: GBP\n  map: {GBP: GBP\n")
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    assert str(path) in str(err.value) and "line" in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(MappingError, match="mapping file not found"):
        load_mapping(tmp_path / "nope.yaml")


# --- a mapped UDF that SAP does not have is an error at start ---------------------------------

def test_mapped_udf_missing_in_sap_is_an_error_naming_key_and_field():
    doc = _default_doc()
    doc["udfs"]["BusinessPartner"].append(
        {"sap_field": "U_ShoeSize", "ometria_property": "shoe_size", "type": "string"}
    )
    mapping = parse_mapping(doc, source="mine.yaml")
    with pytest.raises(MappingError) as err:
        validate_against_cufd(mapping, cufd())
    message = str(err.value)
    assert "mine.yaml" in message
    assert "udfs.BusinessPartner.4.sap_field" in message
    assert "U_ShoeSize" in message and "OCRD" in message


def test_every_problem_is_listed_at_once():
    doc = _default_doc()
    doc["products"]["title_udf"] = "U_NoSuchTitle"
    doc["orders"]["channel"]["udf"] = "U_NoSuchChannel"
    with pytest.raises(MappingError) as err:
        validate_against_cufd(parse_mapping(doc), cufd())
    assert "U_NoSuchTitle" in str(err.value) and "U_NoSuchChannel" in str(err.value)


def test_type_and_allowed_values_are_checked_against_sap():
    doc = _default_doc()
    doc["udfs"]["BusinessPartner"][0] = {
        "sap_field": "U_LoyaltyTier", "ometria_property": "tier", "type": "string",
        "allowed_values": ["Gold", "Diamond"],
    }
    doc["udfs"]["BusinessPartner"][1] = {
        "sap_field": "U_AcquisitionSource", "ometria_property": "acquired", "type": "date",
    }
    with pytest.raises(MappingError) as err:
        validate_against_cufd(parse_mapping(doc), cufd())
    message = str(err.value)
    assert "Diamond" in message
    assert "U_AcquisitionSource" in message and "db_Alpha" in message


def test_udf_on_orders_must_also_exist_on_credit_memos():
    sap = cufd().filter(~((pl.col("TableName") == "ORIN") & (pl.col("Name") == "PromoCode")))
    with pytest.raises(MappingError, match="ORIN"):
        validate_against_cufd(load_mapping(DEFAULT), sap)


def test_valid_values_json_from_duckdb_as_text():
    # sap_raw.cufd stores ValidValuesMD as JSON text; a list of {Value, Description}
    sap = frame("cufd", [{"TableName": "OCRD", "FieldID": 0, "Name": "LoyaltyTier", "Type": "db_Alpha",
                          "ValidValuesMD": json.dumps([{"Value": "Gold", "Description": "Gold"}])}])
    doc = {"store": "s", "currencies": {"local": "GBP"},
           "udfs": {"BusinessPartner": [{"sap_field": "U_LoyaltyTier", "ometria_property": "tier"}]},
           "contacts": {"marketing_optin": {"send": False}, "segments": {"rules": []}},
           "orders": {"channel": {}}, "products": {}}
    resolved = validate_against_cufd(parse_mapping(doc), sap)
    assert resolved.udfs.BusinessPartner[0].allowed_values == ["Gold"]
