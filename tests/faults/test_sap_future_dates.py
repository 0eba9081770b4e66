"""A record dated in the future lands, is listed, and does not stop later changes landing."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, time, timedelta

import polars as pl
from faultkit import assert_nothing_lost, query, run_sync

from sap_ometria_assets.lib.landing.plan import future_limit
from sap_ometria_assets.lib.config.settings import get_settings


def _edit(company, code: str, day: date, at: time, name: str):
    ocrd = company.tables["OCRD"].with_columns(
        pl.when(pl.col("CardCode") == code).then(pl.lit(day)).otherwise(pl.col("UpdateDate"))
        .alias("UpdateDate"),
        pl.when(pl.col("CardCode") == code).then(pl.lit(at)).otherwise(pl.col("UpdateTime"))
        .alias("UpdateTime"),
        pl.when(pl.col("CardCode") == code).then(pl.lit(name)).otherwise(pl.col("CardName"))
        .alias("CardName"),
    )
    return dataclasses.replace(company, tables={**company.tables, "OCRD": ocrd})


def test_a_business_partner_dated_2099_is_listed_and_later_edits_still_land(landed_env, company):
    env = landed_env
    customers = company.tables["OCRD"].filter(pl.col("CardType") == "cCustomer")["CardCode"]
    future, later = customers[0], customers[1]
    typo = _edit(company, future, date(2099, 1, 1), time(9, 0), "Dated In The Future")
    env.sap.set_company(typo)
    run = run_sync()
    assert run.success, run.failures
    assert query(env.db, "SELECT CardName FROM sap_raw.ocrd WHERE CardCode = ?", [future]) == [
        ("Dated In The Future",)]                                    # landed all the same
    (wm_date,), = query(env.db, "SELECT update_date FROM sap_meta.watermarks WHERE entity = 'ocrd'")
    limit = future_limit(get_settings(), datetime.now().astimezone())
    assert wm_date <= limit.date()                                   # watermark not moved to 2099
    listed = query(env.db, "SELECT record_key, severity, owner FROM ops.sync_exceptions "
                           "WHERE rule = 'future_update_date' AND resolved_at IS NULL")
    assert listed == [(future, "WARN", "ops")]
    # A later, ordinary edit (today) still lands.
    now = datetime.now(get_settings().zone)
    edited = _edit(typo, later, now.date(), (now - timedelta(minutes=1)).time().replace(
        microsecond=0), "Edited Today")
    env.sap.set_company(edited)
    run = run_sync()
    assert run.success, run.failures
    assert query(env.db, "SELECT CardName FROM sap_raw.ocrd WHERE CardCode = ?", [later]) == [
        ("Edited Today",)]
    assert_nothing_lost(env.db, env.ometria, edited)
