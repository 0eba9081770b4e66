"""The checks as Dagster runs them: a broken SAP extract blocks everything downstream, a new UDF
only warns, exception thresholds give WARN or ERROR, and reconciliation fails on a real
difference."""

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from checks_fixtures import T0, create_sap_table, world_file  # noqa: E402

from sap_ometria_assets.defs.ometria.checks import evaluate_asset_exceptions, ometria_exception_checks  # noqa: E402
from sap_ometria_assets.defs.ops import checks as ops_checks  # noqa: E402
from sap_ometria_assets.defs.recon import checks as recon_checks  # noqa: E402
from sap_ometria_assets.defs.ops.assets import ops_sync_exceptions  # noqa: E402
from sap_ometria_assets.defs.recon.assets import ometria_snapshot, recon_views  # noqa: E402
from sap_ometria_assets.defs.sap_raw.checks import (  # noqa: E402
    landing_check_results,
    landing_check_specs,
    volume_result,
)
from sap_ometria_assets.defs.sap_raw.assets import sap_raw_assets  # noqa: E402
from sap_ometria_assets.lib.quality.checks_config import ChecksConfig  # noqa: E402
from sap_ometria_assets.lib.quality.drift import Band, VolumeResult  # noqa: E402
from sap_ometria_assets.lib.sync_exceptions.catalogue import RULES_BY_ID  # noqa: E402
from sap_ometria_assets.lib.sync_exceptions.register import evaluate_exceptions  # noqa: E402
from sap_ometria_assets.defs.resources import OmetriaResource, OmetriaTarget  # noqa: E402
from sap_ometria_assets.lib.sap.tables import all_table_names, contract_columns  # noqa: E402
from sap_ometria_assets.defs.resources import WarehouseResource  # noqa: E402


def evaluations(result) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def materialized(result) -> set[str]:
    return {e.event_specific_data.materialization.asset_key.to_user_string()
            for e in result.get_asset_materialization_events()}


def test_every_landed_table_has_a_blocking_contract_check_and_a_drift_check():
    # both are declared and evaluated by the step that lands the table
    def blocking(name):
        return {s.asset_key.path[-1]: s.blocking for a in sap_raw_assets for s in a.check_specs
                if s.name == name}

    assert blocking("contract") == {t: True for t in all_table_names()}
    assert blocking("schema_drift") == {t: False for t in all_table_names()}


# ---------------------------------------------------------------------------------------------
# Contract: a removed column blocks downstream, a new UDF only warns
# ---------------------------------------------------------------------------------------------
class Extract(dg.Config):
    drop: list[str] = []
    add_udf: str | None = None


def _landing_like(db: str):
    """A stand-in for the ocrd landing: writes the table, the extract's columns and, for a new
    property, the schema change, as lib/landing/land.py does, then evaluates its checks as the
    landing step does."""

    @dg.asset(key=["sap_raw", "ocrd"], group_name="sap_raw", check_specs=landing_check_specs(["ocrd"]))
    def ocrd(config: Extract):
        now = datetime.now(timezone.utc)
        con = duckdb.connect(db)
        try:
            con.execute("CREATE SCHEMA IF NOT EXISTS sap_meta")
            con.execute("CREATE TABLE IF NOT EXISTS sap_meta.extract_columns (table_name VARCHAR, "
                        "column_name VARCHAR, column_type VARCHAR, seen_at TIMESTAMPTZ)")
            con.execute("CREATE TABLE IF NOT EXISTS sap_meta.schema_changes (table_name VARCHAR, "
                        "column_name VARCHAR, change VARCHAR, old_type VARCHAR, new_type VARCHAR, "
                        "seen_at TIMESTAMPTZ)")
            exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE "
                                 "table_schema = 'sap_raw' AND table_name = 'ocrd'").fetchall()[0][0]
            if not exists:
                create_sap_table(con, "ocrd")
            cols = {c: t for c, t in contract_columns("ocrd").items() if c not in config.drop}
            if config.add_udf:
                cols[config.add_udf] = "VARCHAR"
                con.execute(f'ALTER TABLE sap_raw.ocrd ADD COLUMN IF NOT EXISTS "{config.add_udf}" VARCHAR')
                con.execute("INSERT INTO sap_meta.schema_changes VALUES ('ocrd', ?, 'added', NULL, "
                            "'VARCHAR', ?)", [config.add_udf, now])
            con.execute("DELETE FROM sap_meta.extract_columns WHERE table_name = 'ocrd'")
            con.executemany("INSERT INTO sap_meta.extract_columns VALUES ('ocrd', ?, ?, ?)",
                            [[c, t, now] for c, t in cols.items()])
            yield dg.MaterializeResult()
            yield from landing_check_results(con, ["ocrd"])  # as the real landing step does
        finally:
            con.close()

    return ocrd


@dg.asset(key=["ometria", "contacts"], deps=[dg.AssetKey(["sap_raw", "ocrd"])], group_name="ometria")
def downstream_contacts() -> None:
    """Stands for everything downstream of the landing (transform, push)."""


def test_removed_column_blocks_downstream_and_new_udf_only_warns(tmp_path):
    db = str(tmp_path / "w.duckdb")
    duckdb.connect(db).close()
    assets = [_landing_like(db), downstream_contacts]
    resources = {"warehouse": WarehouseResource(duckdb_path=db)}

    def run(**extract):
        return dg.materialize(assets, resources=resources, instance=instance, raise_on_error=False,
                              run_config={"ops": {"sap_raw__ocrd": {"config": extract}}})

    with dg.instance_for_test() as instance:
        added = run(add_udf="U_NewTier")
        ev = evaluations(added)
        assert added.success
        assert ev["sap_raw/ocrd", "contract"].passed
        drift = ev["sap_raw/ocrd", "schema_drift"]
        assert not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
        assert drift.metadata["new_columns"].value == {"U_NewTier": "VARCHAR"}
        assert "U_NewTier" in drift.description
        assert "ometria/contacts" in materialized(added)  # a new UDF never stops the sync

        broken = run(drop=["EmailAddress"], add_udf="U_NewTier")
        ev = evaluations(broken)
        contract = ev["sap_raw/ocrd", "contract"]
        assert not contract.passed and contract.severity == dg.AssetCheckSeverity.ERROR
        assert contract.blocking
        assert "EmailAddress" in contract.metadata["missing_columns"].value
        assert "ometria/contacts" not in materialized(broken)  # nothing built from a broken extract
        assert "sap_raw/ocrd" in materialized(broken)  # what SAP sent is landed and kept
        assert not broken.success


# ---------------------------------------------------------------------------------------------
# Exceptions summarised on the Ometria assets: thresholds
# ---------------------------------------------------------------------------------------------
def _config(**rules):
    return ChecksConfig.model_validate({"thresholds": {"contacts": {
        "default": {"warn_count": 1}, "rules": rules}}})


@pytest.mark.parametrize(("missing", "expected"), [
    ([], None),
    (["C003"], dg.AssetCheckSeverity.WARN),
    (["C002", "C003"], dg.AssetCheckSeverity.ERROR),
])
def test_exception_thresholds_warn_then_error(tmp_path, missing, expected):
    con = duckdb.connect(world_file(tmp_path))
    for card in missing:
        con.execute("UPDATE sap_raw.ocrd SET EmailAddress = NULL WHERE CardCode = ?", [card])
    config = _config(contact_missing_email={"warn_count": 1, "error_count": 2})
    evaluate_exceptions(con, T0, config)
    result = evaluate_asset_exceptions(con, "contacts", config)
    if expected is None:
        assert result.passed
        assert result.metadata["open_exceptions"].value == 0
    else:
        assert not result.passed and result.severity == expected
        assert result.metadata["open/contact_missing_email"].value == len(missing)
        assert "contact_missing_email" in result.metadata["counts_by_rule"].value
        assert "contact_missing_email" in result.description


def test_rates_and_the_top_ten_by_impact(tmp_path):
    con = duckdb.connect(world_file(tmp_path))
    con.execute("UPDATE sap_raw.ocrd SET EmailAddress = 'x@' WHERE CardCode IN ('C001', 'C003')")
    config = _config(contact_invalid_email={"warn_rate": 0.1, "error_rate": 0.9})
    evaluate_exceptions(con, T0, config)
    result = evaluate_asset_exceptions(con, "contacts", config)
    assert result.severity == dg.AssetCheckSeverity.WARN  # 2 of 3 contacts: 67 %, under 90 %
    top = result.metadata["top_10_by_impact"].value
    # C001 (net 30.00) and C003 (21.60), biggest impact first, with the fix hint
    assert top.index("C001") < top.index("C003") and "30.00" in top
    assert "Correct the email" in top
    # other assets do not see contact exceptions
    assert evaluate_asset_exceptions(con, "orders", config).passed


# ---------------------------------------------------------------------------------------------
# The ops and recon assets end to end, with a fake Ometria read-back
# ---------------------------------------------------------------------------------------------
class FakeOmetria(OmetriaResource):
    """Ometria as read back: the records in `snapshot_json`."""

    snapshot_json: str = "[]"

    @contextmanager
    def open_client(self) -> Iterator:
        records = json.loads(self.snapshot_json)

        class Client:
            def iter_contacts(self, collection):
                return iter([r for t, r in records if t == "contact"])

            def iter_orders(self):
                return iter([r for t, r in records if t == "order"])

            def iter_products(self):
                return iter([r for t, r in records if t == "product"])

        yield Client()

    def target(self) -> OmetriaTarget:
        return OmetriaTarget(url="http://fake", dry_run=False, embedded=True, collection="sap_b1")


@dg.asset(key=["ometria", "contacts"])
def stub_contacts() -> None: ...


@dg.asset(key=["ometria", "orders"])
def stub_orders() -> None: ...


def _snapshot_records(db: str, drop: tuple[str, ...] = ()) -> str:
    con = duckdb.connect(db)
    try:
        rows = con.execute(
            "SELECT record_type, payload FROM ometria.contacts UNION ALL "
            "SELECT record_type, payload FROM ometria.orders UNION ALL "
            "SELECT record_type, payload FROM ometria.products").fetchall()
    finally:
        con.close()
    return json.dumps([[t, json.loads(p)] for t, p in rows if json.loads(p)["id"] not in drop])


def test_ops_and_recon_assets_with_their_checks(tmp_path):
    db = world_file(tmp_path)
    con = duckdb.connect(db)
    con.execute("UPDATE sap_raw.ocrd SET EmailAddress = 'bob@@example' WHERE CardCode = 'C002'")
    con.close()
    recon_asset_checks = [recon_checks.customer_net_revenue_agrees, recon_checks.orders_by_day_agrees,
                          recon_checks.nothing_missing_in_ometria, recon_checks.nothing_extra_in_ometria,
                          recon_checks.no_stale_records]
    assets = [ops_sync_exceptions, ometria_snapshot, recon_views, stub_contacts, stub_orders,
              *ometria_exception_checks[:2], *recon_asset_checks]

    def run(snapshot_json, selection=None):
        resources = {"warehouse": WarehouseResource(duckdb_path=db),
                     "ometria": FakeOmetria(snapshot_json=snapshot_json)}
        return dg.materialize(assets, resources=resources, instance=instance, raise_on_error=False,
                              selection=selection)

    with dg.instance_for_test() as instance:
        good = run(_snapshot_records(db))
        assert good.success
        assert {"ops/sync_exceptions", "ops/exception_history", "recon/ometria_snapshot",
                "recon/views"} <= materialized(good)
        ev = evaluations(good)
        assert ev["ops/sync_exceptions", "all_rules_evaluated"].passed
        contacts = ev["ometria/contacts", "sync_exceptions"]
        assert not contacts.passed and "contact_invalid_email" in contacts.metadata["counts_by_rule"].value
        assert ev["ometria/orders", "sync_exceptions"].passed
        for name in ("customer_net_revenue_agrees", "orders_by_day_agrees", "nothing_missing_in_ometria",
                     "nothing_extra_in_ometria", "no_stale_records"):
            assert ev["recon/views", name].passed, (name, ev["recon/views", name].description)

        # Ometria lost an order: read back and reconcile again
        lost = run(_snapshot_records(db, drop=("SO-4",)),
                   selection=dg.AssetSelection.assets(["recon", "ometria_snapshot"], ["recon", "views"]))
        ev = evaluations(lost)
        net = ev["recon/views", "customer_net_revenue_agrees"]
        assert not net.passed and net.severity == dg.AssetCheckSeverity.ERROR
        assert "C003" in net.metadata["largest_differences"].value
        missing = ev["recon/views", "nothing_missing_in_ometria"]
        assert not missing.passed and missing.metadata["by_reason"].value == {
            "acknowledged but not in Ometria": 1}
        assert not ev["recon/views", "orders_by_day_agrees"].passed


# ---------------------------------------------------------------------------------------------
# Volume and trend results
# ---------------------------------------------------------------------------------------------
def test_volume_outside_band_is_a_warning_with_the_band_in_metadata():
    band = Band(value=2, mean=10, low=6, high=14)
    result = volume_result(VolumeResult(day=T0.date(), cutoff="12:00:00", history_days=28,
                                        enough_history=True, orders=band,
                                        revenue=Band(value=100, mean=500, low=300, high=700)))
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["orders_expected_low"].value == 6
    assert "orders" in result.description and "revenue" in result.description


def test_rising_trend_warns(tmp_path):
    con = duckdb.connect(world_file(tmp_path))
    now = datetime.now(timezone.utc)
    rules = (RULES_BY_ID["contact_invalid_email"],)
    for day, card in enumerate(["C001", "C002", "C003"]):
        evaluate_exceptions(con, now - timedelta(days=3 - day), ChecksConfig(), rules=rules)
        con.execute("UPDATE sap_raw.ocrd SET EmailAddress = 'bad@' WHERE CardCode = ?", [card])
    evaluate_exceptions(con, now, ChecksConfig(), rules=rules)
    result = ops_checks.trend_result(con, now)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert "contact_invalid_email" in result.metadata["rising_rules"].value
