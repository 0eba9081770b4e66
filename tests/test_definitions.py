"""The code location loads, validates, and holds the inventory the other layers rely on:
asset keys per group, jobs, schedules and sensors."""

from __future__ import annotations

import dagster as dg
import pytest

from sap_ometria_assets.lib.sap.tables import all_table_names

OMETRIA = {"contacts", "orders", "refunds", "products", "stock"}
PUSH = {"contacts", "products", "orders", "stock", "errors"}
JOBS = {
    "sync_stock_job",
    "land_sap_job",
    "push_ometria_job",
    "nightly_deletion_scan_job",
    "reconcile_job",
    "backfill_documents_job",
    "full_sync_job",
}
SCHEDULES = {
    "sync_stock_job_schedule",
    "land_sap_job_schedule",
    "nightly_deletion_scan_job_schedule",
    "reconcile_job_schedule",
}
SENSORS = {
    "push_after_landing",
    "push_after_blocked_landing",
    "sap_change_sensor",
    "alert_on_run_failure",
    "alert_on_failed_checks",
    "flush_alert_queue",
}


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from sap_ometria_assets.definitions import defs as build

    return build()


@pytest.fixture(scope="module")
def keys_by_group(defs) -> dict[str, set[str]]:
    graph = defs.resolve_asset_graph()
    groups: dict[str, set[str]] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        groups.setdefault(node.group_name, set()).add("/".join(key.path))
    return groups


def test_definitions_validate(defs):
    dg.Definitions.validate_loadable(defs)


def test_asset_inventory_by_group(keys_by_group):
    assert keys_by_group["sap_raw"] == {f"sap_raw/{t}" for t in all_table_names()}
    assert keys_by_group["ometria"] == {f"ometria/{n}" for n in OMETRIA}
    assert keys_by_group["ometria_push"] == {f"ometria_push/{n}" for n in PUSH}
    assert keys_by_group.get("ops"), "no exceptions assets (group ops)"
    assert keys_by_group.get("recon"), "no reconciliation assets (group recon)"
    assert keys_by_group["backfill"] == {"backfill/orders", "backfill/credit_memos"}
    assert keys_by_group["snapshots"] == {"snapshots/published"}
    assert set(keys_by_group) == {"sap_raw", "ometria", "ometria_push", "ops", "recon", "backfill", "snapshots"}


def test_jobs_schedules_sensors(defs):
    repo = defs.get_repository_def()
    assert JOBS <= {j.name for j in repo.get_all_jobs()}
    assert {s.name for s in repo.schedule_defs} == SCHEDULES
    assert SENSORS <= {s.name for s in repo.sensor_defs}
    for name in JOBS:
        job = defs.resolve_job_def(name)
        assert job.asset_layer.selected_asset_keys, f"{name} selects no asset"


def test_full_sync_job_is_everything_but_the_backfill(defs, keys_by_group):
    selected = {"/".join(k.path) for k in defs.resolve_job_def("full_sync_job").asset_layer.selected_asset_keys}
    expected = set().union(*(keys for group, keys in keys_by_group.items() if group != "backfill"))
    assert selected == expected


def test_push_job_never_lands(defs):
    """The push starts from what was landed; it must not start its own SAP extract."""
    selected = {"/".join(k.path) for k in defs.resolve_job_def("push_ometria_job").asset_layer.selected_asset_keys}
    assert not {k for k in selected if k.startswith("sap_raw/")}
    assert {"ometria_push/contacts", "ometria_push/orders", "ometria_push/products"} <= selected
    assert "ometria_push/stock" not in selected  # stock has its own 15-minute job


def test_blocking_contract_checks_guard_the_landing(defs):
    """Every landed table has a blocking check, so a broken extract stops the push in-run."""
    graph = defs.resolve_asset_graph()
    guarded = set()
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        if spec.blocking and check_key.asset_key.path[0] == "sap_raw":
            guarded.add(check_key.asset_key.path[1])
    assert guarded == set(all_table_names())


def test_deletion_scan_job_turns_the_scan_on(defs):
    job = defs.resolve_job_def("nightly_deletion_scan_job")
    selected = {"/".join(k.path) for k in job.asset_layer.selected_asset_keys}
    assert selected == {"sap_raw/ocrd", "sap_raw/crd1", "sap_raw/oitm", "sap_raw/itm1",
                        "snapshots/published"}
    from sap_ometria_assets.defs.automation.jobs import deletion_scan_run_config

    config = deletion_scan_run_config()["ops"]
    assert config and all(v == {"config": {"deletion_scan": True}} for v in config.values())
    landing_nodes = {node.name for node in job.graph.node_defs}
    assert set(config) <= landing_nodes


def test_operations_guide_covers_every_rule_check_and_automation(defs):
    """docs/operations.md is the handover guide: nothing that can fire may be missing from it."""
    from sap_ometria_assets.lib.sync_exceptions.catalogue import RULES
    from sap_ometria_assets.lib.config.settings import PROJECT_ROOT

    guide = (PROJECT_ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    graph = defs.resolve_asset_graph()
    repo = defs.get_repository_def()
    names = (
        {f"`{r.id}`" for r in RULES}
        | {f"`{k.name}`" for k in graph.asset_check_keys}
        | {f"`{name}`" for name in JOBS | SENSORS}
        | {f"`{s.job_name}`" for s in repo.schedule_defs}
    )
    missing = sorted(n for n in names if n not in guide)
    assert not missing, f"docs/operations.md does not explain {missing}"


def test_every_writing_job_ends_with_the_publish_of_a_snapshot(defs):
    """People read the published snapshot: every job that writes the warehouse publishes last."""
    graph = defs.resolve_asset_graph()
    published = dg.AssetKey(["snapshots", "published"])
    upstream = graph.get(published).parent_keys
    assert upstream == graph.get_all_asset_keys() - {published}  # after everything, skipped on failure
    for name in ("sync_stock_job", "land_sap_job", "push_ometria_job", "nightly_deletion_scan_job",
                 "reconcile_job", "full_sync_job", "backfill_documents_job"):
        assert published in defs.resolve_job_def(name).asset_layer.selected_asset_keys, name
