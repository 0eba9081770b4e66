"""Bad input from SAP that no transform should ever see silently changed. (The transforms' own
property tests, with unicode, emoji, 70 KB strings, nulls everywhere, NaN/inf amounts, negative
quantities, year 1 and 9999 dates and duplicate keys, are in tests/lib/test_transforms_properties.py.)"""

from __future__ import annotations

import duckdb
import pytest
from faultkit import SAP_PASSWORD

from sap_ometria_assets.emulators.sap_b1.server import SapB1Emulator
from sap_ometria_assets.lib.landing.land import land_table
from sap_ometria_assets.lib.sap.client import SapB1Client
from sap_ometria_assets.lib.sap.tables import TABLES_BY_NAME
from sap_ometria_assets.lib.config.settings import get_settings


def test_a_boolean_in_an_amount_column_is_rejected_not_read_as_one(company, tmp_path):
    with SapB1Emulator(company, password=SAP_PASSWORD) as emu:
        emu.faults.schema_change("Orders", retype={"DocTotal": "bool"})
        client = SapB1Client(emu.url, "SBODEMOGB", "manager", SAP_PASSWORD, page_size=500)
        con = duckdb.connect(str(tmp_path / "w.duckdb"))
        try:
            land_table(con, client, TABLES_BY_NAME["ordr"], settings=get_settings())
            totals = {r[0] for r in con.execute('SELECT DISTINCT "DocTotal" FROM sap_raw.ordr').fetchall()}
            rejected = con.execute("SELECT count(*) FROM sap_meta.rejected_values "
                                   "WHERE column_name = 'DocTotal'").fetchall()[0][0]
        finally:
            con.close()
            client.close()
    assert totals == {None}  # true is not £1.00
    assert rejected == company.header("Orders").height


def test_a_business_partner_with_a_null_card_code_is_listed_not_lost(company, tmp_path):
    import dataclasses

    import polars as pl

    ocrd = company.tables["OCRD"]
    victim = ocrd["CardCode"][3]
    broken = dataclasses.replace(company, tables={**company.tables, "OCRD": ocrd.with_columns(
        pl.when(pl.col("CardCode") == victim).then(None).otherwise(pl.col("CardCode"))
        .alias("CardCode"))})
    with SapB1Emulator(broken, password=SAP_PASSWORD) as emu:
        client = SapB1Client(emu.url, "SBODEMOGB", "manager", SAP_PASSWORD, page_size=500)
        con = duckdb.connect(str(tmp_path / "w.duckdb"))
        try:
            land_table(con, client, TABLES_BY_NAME["ocrd"], settings=get_settings())
            landed = con.execute("SELECT count(*) FROM sap_raw.ocrd").fetchall()[0][0]
            listed = con.execute("SELECT record_key, column_name FROM sap_meta.rejected_values "
                                 "WHERE table_name = 'ocrd'").fetchall()
            land_table(con, client, TABLES_BY_NAME["ocrd"], settings=get_settings())  # again
            relisted = con.execute("SELECT count(*) FROM sap_meta.rejected_values "
                                   "WHERE table_name = 'ocrd'").fetchall()[0][0]
        finally:
            con.close()
            client.close()
    assert landed == ocrd.height - 1
    assert len(listed) == 1 and listed[0][1] == "CardCode"
    assert listed[0][0].startswith("(null key) record ")
    assert relisted == 1  # listed once, not once per read
