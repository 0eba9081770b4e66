"""A contract column SAP stops serving blocks only what needs it.

- An optional contract column (UserFieldsMD.SubType: nothing downstream needs it) missing is a
  WARN naming it; every table lands and contacts, orders and products are pushed.
- An essential column of one table missing (Orders without DocTotal) fails that table's
  blocking contract check: in the production path (land_sap_job, then the push sensor, then
  push_ometria_job) the orders feed is held back and contacts and products are pushed.
"""

from __future__ import annotations

import dagster as dg
from faultkit import _defs, assert_nothing_lost, query, run_sync

from sap_ometria_assets.defs.automation import sensors


def test_userfieldsmd_without_subtype_warns_and_everything_syncs(landed_env):
    env = landed_env
    company = env.sap.advance(1)
    env.sap.faults.schema_change("UserFieldsMD", drop=["SubType"])

    run = run_sync()

    assert run.success, run.failures
    check = run.checks()["cufd/contract"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "SubType" in check.description and "nothing is blocked" in check.description
    assert "SubType" in check.metadata["optional_columns_missing"].value
    assert check.metadata["missing_columns"].value == {}
    for feed in ("contacts", "orders", "products"):
        assert f"ometria_push__{feed}" in run.succeeded, feed
    # the column is kept, NULL, so every reader sees NULL rather than an error
    assert query(env.db, 'SELECT count(*) FROM sap_raw.cufd WHERE "SubType" IS NOT NULL') == [(0,)]
    assert_nothing_lost(env.db, env.ometria, company)


def test_an_essential_column_missing_holds_back_only_that_tables_dependents(landed_env):
    env = landed_env
    company = env.sap.advance(1)
    env.sap.faults.schema_change("Orders", drop=["DocTotal"])
    defs = _defs()
    instance = dg.DagsterInstance.ephemeral()

    landing = defs.resolve_job_def("land_sap_job").execute_in_process(
        instance=instance, raise_on_error=False)

    assert not landing.success  # the ORDR contract check failed, and only it
    failed = {f"{e.asset_key.path[-1]}/{e.check_name}"
              for e in landing.get_asset_check_evaluations() if not e.passed
              and e.severity == dg.AssetCheckSeverity.ERROR}
    assert failed == {"ordr/contract"}
    context = dg.build_run_status_sensor_context(
        sensor_name="push_after_blocked_landing", dagster_instance=instance,
        dagster_run=landing.dagster_run, dagster_event=landing.get_run_failure_event(),
        repository_def=defs.get_repository_def())
    request = sensors.push_after_blocked_landing(context)
    assert isinstance(request, dg.RunRequest), request
    assert set(request.tags[sensors.HELD_BACK_TAG].split(",")) == {
        "ometria/orders", "ometria/refunds", "ometria_push/orders"}
    push = defs.resolve_job_def("push_ometria_job").execute_in_process(
        instance=instance, asset_selection=request.asset_selection, tags=request.tags,
        raise_on_error=False)

    assert push.success
    assert env.ometria.records("order") == {}  # nothing sent from the broken extract
    assert env.ometria.records("contact") and env.ometria.records("product")
    assert_nothing_lost(env.db, env.ometria, feeds=("contacts", "products"))

    env.sap.faults.clear()
    rerun = run_sync()
    assert rerun.success, rerun.failures
    assert_nothing_lost(env.db, env.ometria, company)
