"""Bad input from SAP that no transform should ever see silently changed. (The transforms' own
property tests, with unicode, emoji, 70 KB strings, nulls everywhere, NaN/inf amounts, negative
quantities, year 1 and 9999 dates and duplicate keys, are in tests/lib/test_transforms_properties.py.)"""

from __future__ import annotations

import duckdb
import pytest
from faultkit import SAP_PASSWORD

from sap_ometria_assets.emulators.sap_b1.server import SapB1Emulator
from sap_ometria_assets.lib.landing import land_table
from sap_ometria_assets.lib.sap_client import SapB1Client
from sap_ometria_assets.lib.sap_tables import TABLES_BY_NAME
from sap_ometria_assets.lib.settings import get_settings


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
