"""The `sap_raw` Dagster assets: inventory, a full landing run over HTTP, re-runs, run config,
and (when the demo emulator is built) end to end against it."""

from __future__ import annotations

from decimal import Decimal

import dagster as dg
import duckdb
import pytest
from tests.fakes.service_layer import company_with_contract_nulls

from sap_ometria_assets.defs.sap_raw.assets import sap_raw_assets
from sap_ometria_assets.defs.resources import SapB1Resource
from sap_ometria_assets.lib.sap.tables import SAP_TABLES, all_table_names
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.defs.resources import WarehouseResource


def _key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["sap_raw", table])


def test_one_multi_asset_per_registry_entry_with_descriptions_kinds_and_deps():
    assert len(sap_raw_assets) == len(SAP_TABLES)
    by_key = {key: a for a in sap_raw_assets for key in a.keys}
    assert set(by_key) == {_key(t) for t in all_table_names()}
    for spec in SAP_TABLES:
        asset = by_key[_key(spec.table)]
        assert set(asset.keys) == {_key(spec.table), *(_key(c.table) for c in spec.children)}
        assert not asset.can_subset
        assert asset.op.pool == "duckdb"
        assert asset.required_resource_keys >= {"sap_b1", "warehouse"}
        for k in asset.keys:
            s = asset.specs_by_key[k]
            assert s.group_name == "sap_raw"
            assert s.kinds == {"sap", "duckdb"}
        assert asset.specs_by_key[_key(spec.table)].description.startswith(f"{spec.sap_object}: ")
        udfs = spec.table != "cufd" and (spec.udf_table or any(c.udf_table for c in spec.children))
        deps = {d.asset_key for d in asset.specs_by_key[_key(spec.table)].deps}
        assert (_key("cufd") in deps) == bool(udfs), spec.table
    assert by_key[_key("ocrd")].specs_by_key[_key("ocrd")].description.startswith(
        "OCRD: Business Partners")


def _company(items: list[dict]) -> dict[str, list[dict]]:
    def doc(entry: int, status: str = "csNo", total: str = "120.50") -> dict:
        return {
            "DocEntry": entry, "DocNum": 100 + entry, "DocDate": "2024-03-01T00:00:00Z",
            "CardCode": "C001", "DocCurrency": "GBP", "DocTotal": Decimal(total),
            "CancelStatus": status, "Cancelled": "tNO", "DocumentStatus": "bost_Open",
            "UpdateDate": "2024-03-01T00:00:00Z", "UpdateTime": f"10:{entry:02d}:00",
            "U_SalesChannel": "Web",
            "DocumentLines": [{"DocEntry": entry, "LineNum": 0, "ItemCode": "9990020012002",
                               "Quantity": Decimal("2.0"), "LineTotal": Decimal(total)}],
            "DocumentAdditionalExpenses": [{"DocEntry": entry, "LineNum": 0, "ExpenseCode": 1,
                                            "LineTotal": Decimal("4.95")}],
        }

    return {
        "UserFieldsMD": [{"TableName": "OCRD", "FieldID": 0, "Name": "LoyaltyTier",
                          "Type": "db_Alpha", "SubType": "st_None", "Size": 10,
                          "ValidValuesMD": [{"Value": "Gold", "Description": "Gold"}]}],
        "BusinessPartnerGroups": [{"Code": 100, "Name": "Retail", "Type": "bbpgt_CustomerGroup"},
                                  {"Code": 200, "Name": "Suppliers", "Type": "bbpgt_VendorGroup"}],
        "BusinessPartners": [
            {"CardCode": f"C00{i}", "CardName": f"Customer {i}", "CardType": "cCustomer",
             "GroupCode": 100, "EmailAddress": f"c{i}@example.co.uk", "U_LoyaltyTier": "Gold",
             "UpdateDate": "2024-03-01T00:00:00Z", "UpdateTime": "09:00:00",
             "BPAddresses": [{"AddressName": "Home", "AddressType": "bo_ShipTo",
                              "BPCode": f"C00{i}", "City": "Leeds"}]}
            for i in range(1, 6)
        ],
        "Orders": [doc(i) for i in range(1, 8)],
        "DeliveryNotes": [doc(1)],
        "Invoices": [doc(1), doc(2)],
        "CreditNotes": [doc(1, total="-10.00"), doc(2, status="csCancellation")],
        "Items": items,
        "Warehouses": [{"WarehouseCode": "01", "WarehouseName": "Main DC", "Inactive": "tNO"}],
    }


@pytest.fixture
def served_company(make_fake_sl, monkeypatch, real_items):
    # every other property null, as a real Service Layer serves them (the contract checks run)
    fake = make_fake_sl(company_with_contract_nulls(_company(real_items)), default_page_size=3)
    with fake.serve() as url:
        monkeypatch.setenv("SAP_B1_SERVICE_LAYER_URL", url)
        monkeypatch.setenv("SAP_B1_PASSWORD", fake.password)
        monkeypatch.setenv("SAP_B1_PAGE_SIZE", "3")
        get_settings(refresh=True)
        yield fake


def _run(run_config: dict | None = None,
         instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    # An ephemeral (in-memory) instance: a sqlite event log would triple the run time.
    return dg.materialize(
        sap_raw_assets,
        resources={"sap_b1": SapB1Resource(), "warehouse": WarehouseResource()},
        run_config=run_config or {}, instance=instance or dg.DagsterInstance.ephemeral(),
    )


def _metadata(result: dg.ExecuteInProcessResult, table: str) -> dict:
    node = f"sap_raw__{next(s.table for s in SAP_TABLES if table in (s.table, *(c.table for c in s.children)))}"
    events = [e for e in result.asset_materializations_for_node(node)
              if e.asset_key == _key(table)]
    assert len(events) == 1
    return {k: v.value for k, v in events[0].metadata.items()}


def test_landing_run_over_http_fills_every_table_then_a_rerun_changes_nothing(served_company,
                                                                             monkeypatch):
    instance = dg.DagsterInstance.ephemeral()
    result = _run(instance=instance)
    assert result.success
    assert served_company.logins == 1 and served_company.logouts == 1  # one session per run
    md = _metadata(result, "ordr")
    assert md["rows_landed"] == 7 and md["rows_changed"] == 7 and md["dagster/row_count"] == 7
    assert md["pages"] == 3 and md["requests"] == 3 and md["read"] == "full"
    assert md["watermark_before"] == "none" and md["watermark_after"] == "2024-03-01 10:07:00"
    schema = {c.name: c.type for c in md["dagster/column_schema"].columns}
    assert schema["DocTotal"] == "DECIMAL(19,6)" and schema["_is_cancellation"] == "BOOLEAN"
    assert _metadata(result, "rdr3")["dagster/row_count"] == 7
    assert _metadata(result, "itm1")["dagster/row_count"] == 50
    assert _metadata(result, "oitw")["dagster/row_count"] == 50
    with duckdb.connect(str(get_settings().duckdb_path), read_only=True) as con:
        counts = {t: con.execute(f"SELECT count(*) FROM sap_raw.{t}").fetchone()[0]
                  for t in all_table_names()}
        assert all(n > 0 for n in counts.values()), counts
        assert con.execute("SELECT DocEntry FROM sap_raw.orin WHERE _is_cancellation").fetchall() \
            == [(2,)]

    # Neither the password nor a session id reaches the run's events, logs or metadata.
    sessions = {r.cookie.split("B1SESSION=")[1].split(";")[0] for r in served_company.requests
                if "B1SESSION=" in r.cookie}
    assert sessions
    log = "\n".join(f"{e.user_message} {e.dagster_event}" for e in instance.all_logs(result.run_id))
    assert "Logged in to SAP B1 Service Layer" in log and "rows_changed" in log
    for secret in (served_company.password, *sessions):
        assert secret not in log

    # Second run: nothing new lands; the deletion scan (run config) marks a BP deleted in SAP.
    served_company.entities["BusinessPartners"].pop(0)
    # a tiny company: one BP is more than the default 5% a scan may delete without approval
    monkeypatch.setenv("SAP_B1_DELETION_MAX_SHARE", "1")
    get_settings(refresh=True)
    again = _run({"ops": {"sap_raw__ocrd": {"config": {"deletion_scan": True}}}})
    assert again.success
    for table in all_table_names():
        assert _metadata(again, table)["rows_changed"] == 0, table
    assert _metadata(again, "ordr")["read"] == "incremental"
    assert _metadata(again, "ocrd")["keys_marked_deleted"] == 1
    assert _metadata(again, "crd1")["keys_marked_deleted"] == 1
    assert _metadata(again, "oitm")["keys_marked_deleted"] == 0  # no scan asked for items
    assert served_company.logins == 2 and served_company.logouts == 2


def test_a_landing_failure_fails_the_step_with_the_sap_message(served_company):
    served_company.fail_next = [400]
    result = dg.materialize(
        [a for a in sap_raw_assets if _key("owhs") in a.keys],
        resources={"sap_b1": SapB1Resource(), "warehouse": WarehouseResource()},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "HTTP 400" in failure.event_specific_data.error.to_string()
    assert served_company.password not in str(failure.event_specific_data.error.to_string())
