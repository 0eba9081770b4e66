"""End to end on the demo SAP emulator: a business partner renamed in SAP after the first sync
reads with its old name when history is asked as SAP had it just before the edit."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import polars as pl
from faultkit import query, run_sync

from sap_ometria_assets.lib.config.settings import get_settings


def _rename(company, code: str, at: datetime, name: str):
    """The edit as SAP records it: new CardName, UpdateDate/UpdateTime in company time."""
    hit = pl.col("CardCode") == code
    ocrd = company.tables["OCRD"].with_columns(
        pl.when(hit).then(pl.lit(at.date())).otherwise(pl.col("UpdateDate")).alias("UpdateDate"),
        pl.when(hit).then(pl.lit(at.time())).otherwise(pl.col("UpdateTime")).alias("UpdateTime"),
        pl.when(hit).then(pl.lit(name)).otherwise(pl.col("CardName")).alias("CardName"),
    )
    return dataclasses.replace(company, tables={**company.tables, "OCRD": ocrd})


AS_OF = ("SELECT CardName FROM sap_history.ocrd WHERE CardCode = ? AND valid_from <= ? "
         "AND (valid_to IS NULL OR valid_to > ?)")


def test_a_bp_renamed_in_sap_after_the_first_sync_reads_its_old_name_by_sap_time(landed_env,
                                                                                company):
    env = landed_env
    code, old_name = company.tables["OCRD"].filter(pl.col("CardType") == "cCustomer").select(
        "CardCode", "CardName").row(0)
    zone = get_settings().zone
    edited_at = (datetime.now(zone) - timedelta(minutes=2)).replace(microsecond=0)
    env.sap.set_company(_rename(company, code, edited_at, "Renamed In SAP"))
    run = run_sync(("sap_raw",))
    assert run.success, run.failures
    just_before = edited_at - timedelta(seconds=1)
    assert query(env.db, AS_OF, [code, just_before, just_before]) == [(old_name,)]
    assert query(env.db, AS_OF, [code, edited_at, edited_at]) == [("Renamed In SAP",)]
    # the landing times are kept beside SAP's: the first sync's version ended at the second's
    (first_to, second_from, current), = query(
        env.db, "SELECT min(_valid_to), max(_valid_from), count(*) FILTER (_is_current) "
                "FROM sap_history.ocrd WHERE CardCode = ?", [code])
    assert first_to == second_from and current == 1
    # the other business partners were not touched: one version each
    assert query(env.db, "SELECT max(n) FROM (SELECT count(*) AS n FROM sap_history.ocrd "
                         "WHERE CardCode <> ? GROUP BY CardCode)", [code]) == [(1,)]
