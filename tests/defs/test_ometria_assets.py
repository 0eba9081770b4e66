"""The Ometria-ready assets: read sap_raw through the warehouse resource, write ometria.*, report
counts, stay stable across unchanged runs, and document every column."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "lib"))

from sap_frames import bp, cufd, frame, line, ocrg, order  # noqa: E402

from sap_ometria_assets.defs.ometria import assets as A  # noqa: E402
from sap_ometria_assets.defs.ometria import metadata as M  # noqa: E402
from sap_ometria_assets.defs.resources import WarehouseResource  # noqa: E402
from sap_ometria_assets.lib.transforms import orders_build  # noqa: E402
from sap_ometria_assets.lib.warehouse.db import connect, write_table  # noqa: E402

ASSETS = [A.ometria_contacts, A.ometria_orders_and_refunds, A.ometria_products, A.ometria_stock]
KEYS = {dg.AssetKey(["ometria", t]) for t in ("contacts", "orders", "refunds", "products", "stock")}


def sap_raw_tables() -> dict[str, pl.DataFrame]:
    return {
        "cufd": cufd(),
        "ocrg": ocrg(),
        "ocrd": frame("ocrd", [bp("C001", GroupCode=101), bp("C002", EmailAddress="not an email"),
                               bp("S001", CardType="cSupplier", GroupCode=200)]),
        "ordr": frame("ordr", [order(1, DocTotal=D("120"), VatSum=D("20")),
                               order(2, DocCurrency="SFR", DocTotal=D("24"), DocTotalFc=D("12"), VatSum=D("4"),
                                     VatSumFc=D("2"))]),
        "rdr1": frame("rdr1", [line(1, 0, "A", 2, 50), line(2, 0, "A", 1, 10, currency="SFR", fc=True)]),
        "rdr3": frame("rdr3", []), "odln": frame("odln", []), "dln1": frame("dln1", []),
        "oinv": frame("oinv", []), "inv1": frame("inv1", []),
        "orin": frame("orin", [order(30, DocTotal=D("60"), VatSum=D("10"))]),
        "rin1": frame("rin1", [line(30, 0, "A", 1, 50, BaseType=17, BaseEntry=1, BaseLine=0)]),
        "rin3": frame("rin3", []),
        "oitm": frame("oitm", [{"ItemCode": "A", "ItemName": "Thing", "SalesItem": "tYES", "InventoryItem": "tYES",
                                "Frozen": "tNO", "U_Brand": "Acme"}]),
        "itm1": frame("itm1", [{"ItemCode": "A", "PriceList": 1, "Price": D("50"), "Currency": "GBP"}]),
        "oitw": frame("oitw", [{"ItemCode": "A", "WarehouseCode": "01", "InStock": D(5), "Committed": D(1)},
                               {"ItemCode": "A", "WarehouseCode": "WHS-WHOLESALE", "InStock": D(99), "Committed": D(0)}]),
        "owhs": frame("owhs", [{"WarehouseCode": "01", "WarehouseName": "Main DC", "Inactive": "tNO"},
                               {"WarehouseCode": "WHS-WHOLESALE", "WarehouseName": "Wholesale", "Inactive": "tNO"}]),
    }


def land(path: Path, tables: dict[str, pl.DataFrame]) -> None:
    """Replace sap_raw tables as landing would: the rows it writes carry the landing time."""
    now = datetime.now(UTC)
    with connect(path) as con:
        for name, df in tables.items():
            if "_landed_at" in df.columns:
                df = df.with_columns(pl.lit(now, pl.Datetime("us", "UTC")).alias("_landed_at"))
            write_table(con, "sap_raw", name, df)


def run(path: Path, instance) -> dict[str, dict]:
    upstream = [dg.AssetSpec(k) for a in ASSETS for deps in a.asset_deps.values() for k in deps]
    result = dg.materialize(
        [*ASSETS, *{s.key: s for s in upstream}.values()],
        selection=dg.AssetSelection.groups("ometria"),
        resources={"warehouse": WarehouseResource(duckdb_path=str(path))},
        instance=instance,
        raise_on_error=False,
    )
    if not result.success:
        failures = [e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure]
        raise AssertionError(failures)
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return out


@pytest.fixture
def warehouse_path(tmp_path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    land(path, sap_raw_tables())
    return path


def test_assets_fill_the_ometria_tables_and_report_counts(warehouse_path):
    with dg.instance_for_test() as instance:
        first = run(warehouse_path, instance)
        assert set(first) == {k.to_user_string() for k in KEYS}
        contacts = first["ometria/contacts"]
        assert (contacts["dagster/row_count"], contacts["held_back"], contacts["pushable"]) == (2, 1, 1)
        assert contacts["held_back_by_reason"] == {"invalid_email": 1}
        orders = first["ometria/orders"]
        assert orders["dagster/row_count"] == 3  # SO-1, SO-2 (SFR, held back), CN-30
        assert orders["held_back_by_reason"] == {"unmapped_currency:SFR": 1}
        assert orders["negative_orders_from_credit_memos"] == 1
        assert first["ometria/refunds"]["by_mode_applied"] == {"negative_order": 1}
        assert first["ometria/stock"]["in_stock"] == 1
        assert first["ometria/products"]["payloads_new"] == 1

        # a second run without SAP changes leaves every payload_hash unchanged
        second = run(warehouse_path, instance)
        for key in ("ometria/contacts", "ometria/orders", "ometria/products", "ometria/stock"):
            md = second[key]
            assert md["payloads_changed"] == 0 and md["payloads_new"] == 0, key
            assert md["payloads_unchanged"] == md["dagster/row_count"], key
        assert first["ometria/contacts"]["phones_validated_this_run"] >= 0
        assert second["ometria/contacts"]["phones_validated_this_run"] == 0  # cached from run 1

        # a BP edited in SAP: exactly that contact changes
        tables = sap_raw_tables()
        tables["ocrd"] = frame("ocrd", [bp("C001", GroupCode=101, EmailAddress="jane@new.example"),
                                        bp("C002", EmailAddress="not an email"),
                                        bp("S001", CardType="cSupplier", GroupCode=200)])
        land(warehouse_path, {"ocrd": tables["ocrd"]})
        third = run(warehouse_path, instance)
        assert third["ometria/contacts"]["payloads_changed"] == 1
        assert third["ometria/contacts"]["payloads_unchanged"] == 1
        # ...and C001's three orders carry the new email in their customer object, so they are re-sent
        assert third["ometria/orders"]["payloads_changed"] == 3

    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        rows = con.execute("SELECT id, sap_object, sap_key, held_back_reason FROM ometria.orders ORDER BY id").fetchall()
        assert rows == [("CN-30", "ORIN", "30", None), ("SO-1", "ORDR", "1", None),
                        ("SO-2", "ORDR", "2", "unmapped_currency:SFR")]
        comment = con.execute("SELECT comment FROM duckdb_columns() WHERE schema_name = 'ometria' "
                              "AND table_name = 'stock' AND column_name = 'available_qty'").fetchall()
        assert "InStock - Committed" in comment[0][0]
        # the static column types documented on the assets are the ones the tables get
        for table, types in M.COLUMN_TYPES.items():
            actual = dict(con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'ometria' AND table_name = ?", [table]).fetchall())
            for column, declared in types.items():
                got = actual[column].replace("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ")
                assert got.replace(" ", "").replace('"', "").upper() == declared.replace(" ", "").upper(), \
                    (table, column, actual[column])


def test_a_mapped_udf_sap_lacks_fails_the_run_with_a_clear_message(warehouse_path):
    land(warehouse_path, {"cufd": cufd().filter(pl.col("Name") != "LoyaltyTier")})
    with dg.instance_for_test() as instance:
        with pytest.raises(AssertionError) as err:
            run(warehouse_path, instance)
    assert "U_LoyaltyTier" in str(err.value) and "udfs.BusinessPartner.0.sap_field" in str(err.value)


def test_missing_landed_table_names_the_asset_to_run(tmp_path):
    path = tmp_path / "empty.duckdb"
    land(path, {"cufd": cufd()})
    with dg.instance_for_test() as instance:
        with pytest.raises(AssertionError, match="sap_raw.ocrd does not exist"):
            run(path, instance)


def test_asset_definitions_for_the_ui():
    defs = dg.Definitions(assets=ASSETS, resources={"warehouse": WarehouseResource()})
    graph = defs.resolve_asset_graph()
    for key in KEYS:
        node = graph.get(key)
        assert node.group_name == "ometria"
        assert {"polars", "duckdb"} <= set(node.kinds)
        assert all(dep.path[0] == "sap_raw" for dep in node.parent_keys)
        schema = node.metadata["dagster/column_schema"]
        assert schema.columns and all(c.description for c in schema.columns), key
        lineage = node.metadata["dagster/column_lineage"]
        for deps in lineage.deps_by_column.values():
            assert all(d.asset_key in node.parent_keys for d in deps), key
        assert node.pools == {"duckdb"} if hasattr(node, "pools") else True
    orders = graph.get(dg.AssetKey(["ometria", "orders"]))
    assert {dg.AssetKey(["sap_raw", t]) for t in ("ordr", "rdr1", "dln1", "orin", "rin1", "inv1")} <= orders.parent_keys
    assert "whole" in (orders.description or "")


def _materialize_orders(path: Path, instance, full_rebuild: bool = False) -> dict:
    a = A.ometria_orders_and_refunds
    upstream = [dg.AssetSpec(k) for deps in a.asset_deps.values() for k in deps]
    result = dg.materialize(
        [a, *{s.key: s for s in upstream}.values()], selection=dg.AssetSelection.assets(*a.keys),
        resources={"warehouse": WarehouseResource(duckdb_path=str(path))}, instance=instance,
        run_config={"ops": {a.op.name: {"config": {"full_rebuild": full_rebuild}}}},
    )
    return {e.event_specific_data.materialization.asset_key.to_user_string():
            {k: v.value for k, v in e.event_specific_data.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}


def _land_changed(path: Path, table: str, key: str, rows: list[dict]) -> None:
    """Replace the rows of the given keys (children: of the given parents) as landing does."""
    df = frame(table, rows).with_columns(pl.lit(datetime.now(UTC), pl.Datetime("us", "UTC")).alias("_landed_at"))
    with connect(path) as con:
        con.register("_changed", df)
        con.execute(f'DELETE FROM sap_raw.{table} WHERE "{key}" IN (SELECT "{key}" FROM _changed)')
        con.execute(f"INSERT INTO sap_raw.{table} BY NAME SELECT * FROM _changed")
        con.unregister("_changed")


def _tables(path: Path) -> dict[str, list]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {t: sorted(map(str, con.execute(f"SELECT * FROM ometria.{t}").fetchall()))
                for t in ("orders", "refunds")}


def test_an_incremental_build_rebuilds_only_what_changed_and_equals_a_full_rebuild(warehouse_path, tmp_path):
    with dg.instance_for_test() as instance:
        first = _materialize_orders(warehouse_path, instance)["ometria/orders"]
        assert first["build_mode"] == "full" and first["full_rebuild_reason"] == "no previous build"
        nothing = _materialize_orders(warehouse_path, instance)["ometria/orders"]
        assert (nothing["build_mode"], nothing["orders_rebuilt"], nothing["credit_memos_rebuilt"]) == ("incremental", 0, 0)
        assert nothing["payloads_unchanged"] == nothing["dagster/row_count"] == 3

        # SAP changes: order 1 is cancelled; a new order 3 with a credit memo 31 against it
        _land_changed(warehouse_path, "ordr", "DocEntry", [
            order(1, DocTotal=D("120"), VatSum=D("20"), Cancelled="tYES", CancelStatus="csYes"),
            order(3, card="C002", DocTotal=D("60"), VatSum=D("10")),
        ])
        _land_changed(warehouse_path, "rdr1", "DocEntry", [line(3, 0, "A", 1, 50)])
        _land_changed(warehouse_path, "orin", "DocEntry", [order(31, card="C002", DocTotal=D("60"), VatSum=D("10"))])
        _land_changed(warehouse_path, "rin1", "DocEntry", [line(31, 0, "A", 1, 50, BaseType=17, BaseEntry=3, BaseLine=0)])
        incremental = _materialize_orders(warehouse_path, instance)
        orders = incremental["ometria/orders"]
        # order 1 and credit memo 30 (linked to it), order 3 and credit memo 31; order 2 untouched
        assert orders["build_mode"] == "incremental"
        assert (orders["orders_rebuilt"], orders["credit_memos_rebuilt"]) == (2, 2)
        assert (orders["payloads_new"], orders["payloads_changed"]) == (2, 1)
        assert orders["dagster/row_count"] == 5 and orders["payloads_unchanged"] == 2
        assert incremental["ometria/refunds"]["dagster/row_count"] == 2
        after_incremental = _tables(warehouse_path)

        full = _materialize_orders(warehouse_path, instance, full_rebuild=True)["ometria/orders"]
        assert full["build_mode"] == "full" and full["full_rebuild_reason"] == "full rebuild requested"
        assert _tables(warehouse_path) == after_incremental

    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        status = dict(con.execute("SELECT id, status FROM ometria.orders WHERE sap_object = 'ORDR'").fetchall())
    assert status == {"SO-1": "cancelled", "SO-2": "pending", "SO-3": "pending"}


def test_a_full_build_in_slices_equals_a_build_in_one_go(warehouse_path, tmp_path, monkeypatch):
    # large companies are rebuilt in slices of orders; here one order per slice, with a credit
    # memo (CN-30) linked to an order of another slice
    from sap_ometria_assets.lib.transforms import incremental

    with dg.instance_for_test() as instance:
        one_go = _materialize_orders(warehouse_path, instance, full_rebuild=True)
        expected = _tables(warehouse_path)
        monkeypatch.setattr(incremental, "FULL_BUILD_SLICE", 1)
        sliced = _materialize_orders(warehouse_path, instance, full_rebuild=True)
        assert _tables(warehouse_path) == expected
    for key in ("dagster/row_count", "held_back", "held_back_by_reason", "negative_orders_from_credit_memos",
                "credit_memos_counted", "credit_memos_negative_orders"):
        assert sliced["ometria/orders"][key] == one_go["ometria/orders"][key], key
    assert sliced["ometria/orders"]["payloads_unchanged"] == 3
    with dg.instance_for_test() as instance:  # and it is the base of the next, incremental build
        assert _materialize_orders(warehouse_path, instance)["ometria/orders"]["build_mode"] == "incremental"


def test_a_full_build_that_fails_half_way_is_followed_by_a_full_build(warehouse_path, monkeypatch):
    from sap_ometria_assets.lib.transforms import incremental

    with dg.instance_for_test() as instance:
        _materialize_orders(warehouse_path, instance)
        monkeypatch.setattr(incremental, "FULL_BUILD_SLICE", 1)
        calls = {"n": 0}
        real = orders_build.upsert_rebuilt

        def failing(con, result):
            calls["n"] += 1
            raise RuntimeError("disk full")

        monkeypatch.setattr(orders_build, "upsert_rebuilt", failing)
        with pytest.raises(Exception, match="disk full"):
            _materialize_orders(warehouse_path, instance, full_rebuild=True)
        assert calls["n"] == 1  # slice 1 of 3 was written, then the run failed
        monkeypatch.setattr(orders_build, "upsert_rebuilt", real)
        after = _materialize_orders(warehouse_path, instance)["ometria/orders"]
        assert after["build_mode"] == "full" and after["full_rebuild_reason"] == "no previous build"
        assert after["dagster/row_count"] == 3
