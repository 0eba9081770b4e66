"""Contacts built incrementally (only the business partners SAP changed) equal a full rebuild.

The demo company runs for a few hours: partners are edited and created, three are deleted in
SAP (found by the key scan, opted out a run later with `on_deleted: opt_out`), one comes back,
and a BP group is renamed. After each sync the contacts are built incrementally, and a full
rebuild of a copy of the same warehouse, at the same run start, gives the same table row for row.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import yaml
from faultkit import Run, _defs, query

from sap_ometria_assets.defs.automation.jobs import deletion_scan_run_config
from sap_ometria_assets.defs.sap_raw.checks import landing_checks
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT, get_settings
from sap_ometria_assets.lib.transforms import build_state as bs
from sap_ometria_assets.lib.transforms import contacts_build as cb
from sap_ometria_assets.lib.transforms.tables import load_run_mapping


def _sync(scan: bool = False) -> dict:
    """Land the business partners (with the key scan when `scan`), build the contacts; their metadata."""
    keys = [dg.AssetKey(["sap_raw", t]) for t in ("cufd", "ocrg", "ocrd")] + [dg.AssetKey(["ometria", "contacts"])]
    # the landing's own checks are part of its steps; the separate check steps are left out
    selection = (dg.AssetSelection.assets(*keys).required_multi_asset_neighbors().without_checks()
                 | landing_checks(("cufd", "ocrg", "ocrd", "crd1")))
    job = dg.Definitions.merge(_defs(), dg.Definitions(jobs=[dg.define_asset_job("contacts_sync", selection)]))
    job = job.resolve_job_def("contacts_sync")
    ops = {n.name for n in job.nodes}
    config = {"ops": {k: v for k, v in deletion_scan_run_config()["ops"].items() if k in ops}} if scan else None
    instance = dg.DagsterInstance.ephemeral()
    run = Run(job.execute_in_process(run_config=config, instance=instance, raise_on_error=False), instance)
    assert run.success, run.failures
    return run.metadata("ometria/contacts")


def _contacts(con) -> list[tuple]:
    return con.execute("SELECT * FROM ometria.contacts ORDER BY sap_key, payload_hash").fetchall()


def _assert_equals_a_full_rebuild(db: Path, tmp: Path) -> None:
    """A full rebuild of a copy of the warehouse, at the last build's run start, gives the same
    table row for row (every column, payload and hash included); the incremental builds kept
    the phone cache whole (the full build validates no number anew)."""
    copy = tmp / "full.duckdb"
    shutil.copy(db, copy)
    with duckdb.connect(str(copy)) as con:
        incremental = _contacts(con)
        cached = set(con.execute("SELECT raw, region FROM ometria._phone_lookup").fetchall())
        settings = get_settings()
        full = cb.build_contacts_table(con, load_run_mapping(con), zone=settings.sap_ometria_timezone,
                                       collection=settings.ometria_collection,
                                       run_started_at=bs.read_state(con, "contacts").run_started_at,
                                       full_rebuild=True)
        assert full.full and full.base.full_reason == "full rebuild requested"
        assert _contacts(con) == incremental
        assert set(con.execute("SELECT raw, region FROM ometria._phone_lookup").fetchall()) <= cached
    copy.unlink()


def test_incremental_contacts_equal_a_full_rebuild_after_several_hours(landed_env, monkeypatch, tmp_path):
    env = landed_env
    mapping = yaml.safe_load((PROJECT_ROOT / "data" / "mapping.yaml").read_text())
    mapping["contacts"]["on_deleted"] = "opt_out"
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    monkeypatch.setenv("SAP_OMETRIA_MAPPING", str(tmp_path / "mapping.yaml"))
    get_settings(refresh=True)
    assert _sync()["full_rebuild_reason"] == "mapping, time zone or transform version changed"

    # an hour of business, and three customers deleted in SAP (the nightly key scan finds them)
    company = env.sap.advance(1)
    ocrd = company.tables["OCRD"]
    gone = ocrd.filter(pl.col("CardType") == "cCustomer")["CardCode"].to_list()[5:8]
    env.sap.set_company(dataclasses.replace(company, tables={
        **company.tables, "OCRD": ocrd.filter(~pl.col("CardCode").is_in(gone))}))
    first = _sync(scan=True)
    assert first["build_mode"] == "incremental" and 0 < first["contacts_rebuilt"] < first["dagster/row_count"]
    marked = {k for (k,) in query(env.db, "SELECT CardCode FROM sap_raw.ocrd WHERE _deleted_at IS NOT NULL")}
    assert set(gone) <= marked  # (the hour also deletes a partner of its own)
    _assert_equals_a_full_rebuild(env.db, tmp_path)

    # another hour: the deletions are a run old (opt-outs due); one customer comes back
    company = env.sap.advance(1)
    back = pl.concat([company.tables["OCRD"], ocrd.filter(pl.col("CardCode") == gone[0])]).sort("CardCode")
    env.sap.set_company(dataclasses.replace(company, tables={**company.tables, "OCRD": back}))
    assert _sync(scan=True)["build_mode"] == "incremental"
    opted_out = dict(query(env.db, "SELECT sap_key, held_back_reason IS NULL AND payload NOT LIKE '%store_ids%' "
                                   "FROM ometria.contacts WHERE is_deleted"))
    assert gone[0] not in opted_out and all(opted_out[k] for k in gone[1:])  # minimal opt-outs, sent
    _assert_equals_a_full_rebuild(env.db, tmp_path)

    # one more hour, in which a BP group is renamed
    company = env.sap.advance(1)
    renamed = company.tables["OCRG"].with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.col("Name") + " (renamed)").otherwise(pl.col("Name")).alias("Name"))
    env.sap.set_company(dataclasses.replace(company, tables={**company.tables, "OCRG": renamed}))
    assert _sync()["build_mode"] == "incremental"
    assert query(env.db, "SELECT count(*) > 0 FROM ometria.contacts WHERE group_name LIKE '% (renamed)'") == [(True,)]
    _assert_equals_a_full_rebuild(env.db, tmp_path)
