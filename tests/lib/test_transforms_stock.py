"""Stock: the right warehouses count, ring-fenced ones never do."""

from __future__ import annotations

import json
from decimal import Decimal as D

import polars as pl
import pytest

from sap_frames import cufd, frame
from sap_ometria_assets.lib.ometria.mapping import load_mapping, validate_against_cufd
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT
from sap_ometria_assets.lib.transforms.stock import build_stock


@pytest.fixture(scope="module")
def mapping():
    return validate_against_cufd(load_mapping(PROJECT_ROOT / "data" / "mapping.yaml"), cufd())


ITEMS = [
    {"ItemCode": "TS-001", "ItemName": "T-shirt", "SalesItem": "tYES", "InventoryItem": "tYES", "Frozen": "tNO"},
    {"ItemCode": "MUG", "ItemName": "Mug", "SalesItem": "tYES", "InventoryItem": "tYES", "Frozen": "tNO"},
    {"ItemCode": "GIFTCARD", "ItemName": "Gift card", "SalesItem": "tYES", "InventoryItem": "tNO", "Frozen": "tNO"},
]
WAREHOUSES = [
    {"WarehouseCode": code, "WarehouseName": name, "Inactive": inactive}
    for code, name, inactive in [("01", "Main DC", "tNO"), ("02", "London Store", "tNO"),
                                 ("03", "Manchester Store", "tNO"), ("05", "Edinburgh Store", "tYES"),
                                 ("WHS-WHOLESALE", "Wholesale", "tNO")]
]


def stock_row(item, whs, in_stock, committed, locked="tNO"):
    return {"ItemCode": item, "WarehouseCode": whs, "InStock": D(str(in_stock)), "Committed": D(str(committed)),
            "Ordered": D(0), "Locked": locked}


def build(mapping, rows, items=ITEMS, warehouses=WAREHOUSES):
    return build_stock(frame("oitm", items), frame("oitw", rows), frame("owhs", warehouses), mapping)


def row(df, key):
    found = df.filter(pl.col("sap_key") == key)
    assert found.height == 1
    return found.row(0, named=True)


def test_available_sums_included_warehouses_and_excludes_ring_fenced(mapping):
    result = build(mapping, [
        stock_row("TS-001", "01", 10, 4),              # counts: 6
        stock_row("TS-001", "WHS-WHOLESALE", 500, 0),  # ring-fenced: never
        stock_row("TS-001", "02", 3, 1),               # london_store channel: 2
        stock_row("TS-001", "03", 7, 0),               # manchester_store channel: 7
        stock_row("TS-001", "05", 9, 0),               # inactive warehouse: never
    ])
    r = row(result.stock, "TS-001")
    assert r["available_qty"] == D(6)
    assert (r["available_qty_london_store"], r["available_qty_manchester_store"], r["available_qty_edinburgh_store"]) \
        == (D(2), D(7), D(0))
    assert r["warehouses_counted"] == ["01"]
    assert r["payload"] == '{"@type":"product","id":"TS-001","is_in_stock":true,"@merge":true}'
    assert r["held_back_reason"] is None


def test_wholesale_stock_alone_is_out_of_stock_for_ometria(mapping):
    r = row(build(mapping, [stock_row("MUG", "WHS-WHOLESALE", 1000, 0), stock_row("MUG", "01", 2, 2)]).stock, "MUG")
    assert r["available_qty"] == D(0) and r["is_in_stock"] is False
    assert json.loads(r["payload"]) == {"@type": "product", "id": "MUG", "is_in_stock": False, "@merge": True}


def test_locked_rows_do_not_count(mapping):
    r = row(build(mapping, [stock_row("MUG", "01", 5, 0, locked="tYES")]).stock, "MUG")
    assert r["is_in_stock"] is False


def test_channel_warehouses_can_also_count_in_available(mapping):
    warehouses = dict(mapping.stock.warehouses)
    warehouses["02"] = warehouses["02"].model_copy(update={"count_in_available": True})
    m = mapping.model_copy(update={"stock": mapping.stock.model_copy(update={"warehouses": warehouses})})
    r = row(build(m, [stock_row("MUG", "01", 1, 0), stock_row("MUG", "02", 4, 0)]).stock, "MUG")
    assert r["available_qty"] == D(5) and r["warehouses_counted"] == ["01", "02"]


def test_threshold_decides_the_flag(mapping):
    m = mapping.model_copy(update={"stock": mapping.stock.model_copy(update={"in_stock_threshold": 3})})
    out = build(m, [stock_row("TS-001", "01", 3, 0), stock_row("MUG", "01", 4, 0)]).stock
    assert row(out, "TS-001")["is_in_stock"] is False and row(out, "MUG")["is_in_stock"] is True


def test_unlisted_warehouses_follow_the_default_rule_and_are_reported(mapping):
    result = build(mapping, [stock_row("MUG", "99", 8, 0)],
                   warehouses=WAREHOUSES + [{"WarehouseCode": "99", "WarehouseName": "Pop-up", "Inactive": "tNO"}])
    assert row(result.stock, "MUG")["available_qty"] == D(0)   # default_rule: exclude
    assert result.stats["unmapped_warehouses"] == ["99"]
    included = mapping.model_copy(update={"stock": mapping.stock.model_copy(update={"default_rule": "include"})})
    assert row(build(included, [stock_row("MUG", "99", 8, 0)]).stock, "MUG")["available_qty"] == D(8)


def test_every_item_has_one_row_non_inventory_items_are_held_back(mapping):
    out = build(mapping, [stock_row("TS-001", "01", 1, 0)]).stock
    assert sorted(out["sap_key"].to_list()) == ["GIFTCARD", "MUG", "TS-001"]
    assert row(out, "MUG")["is_in_stock"] is False                 # no stock rows at all: 0
    assert row(out, "GIFTCARD")["held_back_reason"] == "stock_not_managed"


def test_stock_move_changes_the_hash_only_when_the_flag_flips(mapping):
    base = row(build(mapping, [stock_row("MUG", "01", 5, 0)]).stock, "MUG")
    fewer = row(build(mapping, [stock_row("MUG", "01", 3, 0)]).stock, "MUG")
    sold_out = row(build(mapping, [stock_row("MUG", "01", 3, 3)]).stock, "MUG")
    assert fewer["payload_hash"] == base["payload_hash"]     # still in stock: nothing to push
    assert sold_out["payload_hash"] != base["payload_hash"]
