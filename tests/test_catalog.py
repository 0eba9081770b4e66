"""Every column documented in the catalog (issue 14, part 4), checked on the loaded Definitions
and on what a landing reports: what the Dagster UI shows is `dagster/column_schema`, a
TableSchema whose TableColumns carry a description."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from sap_ometria_assets.defs.resources import SapB1Resource, WarehouseResource
from sap_ometria_assets.defs.sap_raw.assets import sap_raw_assets
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.push.ledger import DDL, ensure_push_tables
from sap_ometria_assets.lib.quality.drift import PAYLOAD_VERSIONS_DDL
from sap_ometria_assets.lib.recon.columns import CUSTOMER_NET_REVENUE
from sap_ometria_assets.lib.recon.snapshot import SNAPSHOT_DDL
from sap_ometria_assets.lib.sap.descriptions import column_description, sql_column
from sap_ometria_assets.lib.sap.tables import all_table_names, contract_columns
from sap_ometria_assets.lib.sync_exceptions.register import EXCEPTIONS_DDL
from sap_ometria_assets.lib.warehouse.sql import ddl_columns
from tests.fakes.service_layer import with_contract_nulls

ROOT = Path(__file__).resolve().parents[1]
METADATA_XML = Path("/work/shared/samples/service_layer_v1_metadata_real.xml")
# Groups whose every asset keeps one table of ours and so must declare its columns.
TABLE_GROUPS = {"sap_raw", "ometria", "ometria_push", "ops", "recon"}


@pytest.fixture(scope="module")
def graph():
    from sap_ometria_assets.definitions import defs as build

    return build().resolve_asset_graph()


def _schema(graph, key: dg.AssetKey) -> dg.TableSchema | None:
    return graph.get(key).metadata.get("dagster/column_schema")


def test_no_asset_without_a_description(graph):
    missing = [k.to_user_string() for k in graph.get_all_asset_keys()
               if not (graph.get(k).description or "").strip()]
    assert missing == []


def test_every_table_asset_declares_described_columns(graph):
    undeclared, undescribed = [], []
    for key in graph.get_all_asset_keys():
        schema = _schema(graph, key)
        if schema is None:
            # every asset of these groups is a warehouse table, except the health report page
            if graph.get(key).group_name in TABLE_GROUPS and "html" not in graph.get(key).kinds:
                undeclared.append(key.to_user_string())
            continue
        assert isinstance(schema, dg.TableSchema)
        undescribed += [f"{key.to_user_string()}.{c.name}" for c in schema.columns
                        if not (c.description or "").strip()]
    assert undeclared == [] and undescribed == []


def test_every_sap_raw_contract_column_is_described_with_its_sql_column(graph):
    missing = []
    for table in all_table_names():
        declared = {c.name: c for c in _schema(graph, dg.AssetKey(["sap_raw", table])).columns}
        for column, type_ in contract_columns(table).items():
            col = declared.get(column)
            if col is None or col.type != type_ or not col.description:
                missing.append(f"{table}.{column}")
            elif (sql := sql_column(table, column)) and sql not in col.description:
                missing.append(f"{table}.{column}: no {sql}")
            elif col.description.startswith("SAP property"):  # a contract column says more
                missing.append(f"{table}.{column}: generic")
    assert missing == []
    ocrd = {c.name: c.description for c in _schema(graph, dg.AssetKey(["sap_raw", "ocrd"])).columns}
    assert ocrd["EmailAddress"] == "Customer's email address (OCRD.E_Mail)"
    rdr1 = {c.name: c.description for c in _schema(graph, dg.AssetKey(["sap_raw", "rdr1"])).columns}
    assert "RDR1.ItemCode" in rdr1["ItemCode"]


def test_standard_properties_and_udfs_are_described_from_sap():
    # other standard properties: SAP's SQL column, and the codes of an enum
    assert column_description("ocrd", "Notes") == "SAP property Notes (OCRD.Notes)"
    assert column_description("oitm", "ItemType").startswith(
        "SAP property ItemType (OITM.ItemType), one of itFixedAssets (F), itItems (I)")
    assert column_description("ordr", "DocTotal").endswith("(ORDR.DocTotal)")
    assert column_description("orin", "DocTotal").endswith("(ORIN.DocTotal)")
    assert column_description("ocrd", "U_Tier", {"U_Tier": "Loyalty tier"}) == \
        "User-defined field: Loyalty tier (OCRD.U_Tier)"
    assert "sap_raw.cufd.Description" in column_description("ocrd", "U_Tier")


def test_landing_reports_every_landed_column_described_udfs_from_userfieldsmd(
        make_fake_sl, monkeypatch):
    company = {
        "UserFieldsMD": [{"TableName": "OCRD", "FieldID": 0, "Name": "LoyaltyTier",
                          "Type": "db_Alpha", "SubType": "st_None", "Size": 10,
                          "Description": "Loyalty tier"}],
        "BusinessPartners": [with_contract_nulls("ocrd", {
            "CardCode": "C001", "CardName": "Ann Lee", "CardType": "cCustomer",
            "EmailAddress": "ann@example.co.uk", "Notes": "VIP", "U_LoyaltyTier": "Gold",
            "UpdateDate": "2024-03-01T00:00:00Z", "UpdateTime": "09:00:00", "BPAddresses": []})],
    }
    fake = make_fake_sl(company)
    wanted = [a for a in sap_raw_assets if a.node_def.name in ("sap_raw__cufd", "sap_raw__ocrd")]
    with fake.serve() as url:
        monkeypatch.setenv("SAP_B1_SERVICE_LAYER_URL", url)
        monkeypatch.setenv("SAP_B1_PASSWORD", fake.password)
        get_settings(refresh=True)
        result = dg.materialize(wanted, resources={"sap_b1": SapB1Resource(),
                                                   "warehouse": WarehouseResource()},
                                instance=dg.DagsterInstance.ephemeral())
    assert result.success
    [event] = [e for e in result.asset_materializations_for_node("sap_raw__ocrd")
               if e.asset_key == dg.AssetKey(["sap_raw", "ocrd"])]
    schema = event.metadata["dagster/column_schema"].value
    assert isinstance(schema, dg.TableSchema)
    described = {c.name: c.description for c in schema.columns}
    assert {"U_LoyaltyTier", "Notes", "EmailAddress", "_landed_at"} <= set(described)
    assert all(described.values()), described
    assert described["U_LoyaltyTier"] == "User-defined field: Loyalty tier (OCRD.U_LoyaltyTier)"
    assert described["Notes"] == "SAP property Notes (OCRD.Notes)"
    assert described["EmailAddress"] == "Customer's email address (OCRD.E_Mail)"


def test_ddl_descriptions_cover_every_column_the_ddl_creates():
    con = duckdb.connect()
    ensure_push_tables(con)
    for schema in ("ops", "recon"):
        con.execute(f"CREATE SCHEMA {schema}")
    for ddl in (EXCEPTIONS_DDL, PAYLOAD_VERSIONS_DDL, SNAPSHOT_DDL):
        con.execute(ddl)
    for ddl in (DDL, EXCEPTIONS_DDL, PAYLOAD_VERSIONS_DDL, SNAPSHOT_DDL):
        for table, columns in ddl_columns(ddl).items():
            created = con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema || '.' "
                "|| table_name = ? ORDER BY ordinal_position", [table]).fetchall()
            assert list(columns) == [c for (c,) in created], table
            assert all(d for _, d in columns.values()), table


def _ticked(text: str) -> list[str]:
    return re.findall(r"`(\w+)`", text)


def test_docs_contracts_name_the_same_columns_as_the_catalog():
    docs = (ROOT / "docs" / "contracts.md").read_text()

    def row(name: str) -> list[str]:
        line = next(ln for ln in docs.splitlines() if ln.startswith(f"| `{name}` |"))
        return _ticked(line.split("|")[2])

    def listed(name: str) -> list[str]:
        return _ticked(docs.split(f"**`{name}`** (", 1)[1].split(")", 1)[0])

    push = ddl_columns(DDL)
    for table in ("ledger", "requests", "sent_records", "errors", "error_fetches"):
        assert row(table) == list(push[f"ometria_push.{table}"]), table
    section = docs.split("**`ops.sync_exceptions`**", 1)[1].split("**`ops.exception_history`**")[0]
    documented = [c for ln in section.splitlines() if ln.startswith("| `")
                  for c in _ticked(ln.split("|")[1])]
    ops = ddl_columns(EXCEPTIONS_DDL)
    assert documented == list(ops["ops.sync_exceptions"])
    assert listed("ops.exception_history") == list(ops["ops.exception_history"])
    recon = {**ddl_columns(SNAPSHOT_DDL), **ddl_columns(PAYLOAD_VERSIONS_DDL)}
    for table in ("recon.ometria_snapshot", "recon.snapshot_runs", "recon.payload_versions"):
        assert listed(table) == list(recon[table]), table
    assert row("customer_net_revenue") == list(CUSTOMER_NET_REVENUE)


@pytest.mark.skipif(not METADATA_XML.exists(), reason="SAP's $metadata sample is not on this machine")
def test_committed_property_table_is_what_the_generator_makes_from_sap_metadata():
    path = ROOT / "tests" / "fixtures" / "sap" / "extract_properties.py"
    spec = importlib.util.spec_from_file_location("extract_properties", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = json.loads(module.OUT.read_text())
    assert module.extract(METADATA_XML) == committed
