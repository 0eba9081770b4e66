"""Contacts built incrementally (only the business partners SAP changed) equal a full rebuild.

The demo company runs for a few hours: partners are edited and created, three are deleted in
SAP (found by the key scan, opted out a run later with `on_deleted: opt_out`), one comes back,
and a BP group is renamed. After each sync the contacts are built incrementally; at the end a
full rebuild of the same warehouse, at the same run start, must give the same table row for row.
"""

from __future__ import annotations

import dataclasses

import dagster as dg
import duckdb
import polars as pl
import yaml
from faultkit import LAND_AND_TRANSFORM, Run, _job, query, run_sync

from sap_ometria_assets.defs.automation.jobs import deletion_scan_run_config
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT, get_settings
from sap_ometria_assets.lib.transforms import build_state as bs
from sap_ometria_assets.lib.transforms import contacts_build as cb
from sap_ometria_assets.lib.transforms.tables import load_run_mapping


def _sync(scan: bool = False) -> Run:
    instance = dg.DagsterInstance.ephemeral()
    job = _job(LAND_AND_TRANSFORM, ())
    run = Run(job.execute_in_process(run_config=deletion_scan_run_config() if scan else None,
                                     instance=instance, raise_on_error=False), instance)
    assert run.success, run.failures
    return run


def _contacts(con) -> list[tuple]:
    return con.execute("SELECT * FROM ometria.contacts ORDER BY sap_key, payload_hash").fetchall()


def test_incremental_contacts_equal_a_full_rebuild_after_several_hours(landed_env, monkeypatch, tmp_path):
    env = landed_env
    mapping = yaml.safe_load((PROJECT_ROOT / "data" / "mapping.yaml").read_text())
    mapping["contacts"]["on_deleted"] = "opt_out"
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    monkeypatch.setenv("SAP_OMETRIA_MAPPING", str(tmp_path / "mapping.yaml"))
    get_settings(refresh=True)
    assert _sync().metadata("ometria/contacts")["full_rebuild_reason"] == (
        "mapping, time zone or transform version changed")

    # an hour of business, and three customers deleted in SAP (the nightly key scan finds them)
    company = env.sap.advance(1)
    ocrd = company.tables["OCRD"]
    gone = ocrd.filter(pl.col("CardType") == "cCustomer")["CardCode"].to_list()[5:8]
    env.sap.set_company(dataclasses.replace(company, tables={
        **company.tables, "OCRD": ocrd.filter(~pl.col("CardCode").is_in(gone))}))
    first = _sync(scan=True).metadata("ometria/contacts")
    assert first["build_mode"] == "incremental" and 0 < first["contacts_rebuilt"] < first["dagster/row_count"]
    marked = {k for (k,) in query(env.db, "SELECT CardCode FROM sap_raw.ocrd WHERE _deleted_at IS NOT NULL")}
    assert set(gone) <= marked  # (the hour also deletes a partner of its own)

    # another hour: the deletions are a run old (opt-outs due); one customer comes back
    company = env.sap.advance(1)
    back = pl.concat([company.tables["OCRD"], ocrd.filter(pl.col("CardCode") == gone[0])]).sort("CardCode")
    env.sap.set_company(dataclasses.replace(company, tables={**company.tables, "OCRD": back}))
    assert _sync(scan=True).metadata("ometria/contacts")["build_mode"] == "incremental"

    # one more hour, in which a BP group is renamed
    company = env.sap.advance(1)
    ocrg = company.tables["OCRG"]
    renamed = ocrg.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.col("Name") + " (renamed)")
                                .otherwise(pl.col("Name")).alias("Name"))
    env.sap.set_company(dataclasses.replace(company, tables={**company.tables, "OCRG": renamed}))
    last = _sync().metadata("ometria/contacts")
    assert last["build_mode"] == "incremental"

    with duckdb.connect(str(env.db)) as con:
        held = dict(con.execute("SELECT sap_key, held_back_reason IS NULL AND payload NOT LIKE '%store_ids%' "
                                "FROM ometria.contacts WHERE is_deleted").fetchall())
        assert held.keys() >= set(gone[1:]) and gone[0] not in held
        assert all(held[k] for k in gone[1:])  # minimal opt-outs, sent
        assert con.execute("SELECT count(*) FROM ometria.contacts WHERE group_name LIKE '% (renamed)'").fetchall()[0][0]
        incremental = _contacts(con)
        cached = set(con.execute("SELECT raw, region FROM ometria._phone_lookup").fetchall())
        settings = get_settings()
        state = bs.read_state(con, "contacts")
        full = cb.build_contacts_table(con, load_run_mapping(con), zone=settings.sap_ometria_timezone,
                                       collection=settings.ometria_collection,
                                       run_started_at=state.run_started_at, full_rebuild=True)
        assert full.full and full.base.full_reason == "full rebuild requested"
        assert _contacts(con) == incremental
        # the incremental builds kept the phone cache whole: the full build validated no number anew
        assert set(con.execute("SELECT raw, region FROM ometria._phone_lookup").fetchall()) <= cached
        assert bs.read_state(con, "contacts").mode == "full"
