"""When an incremental build may add to the previous one, and when it must be full."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from sap_ometria_assets.lib.transforms import build_state as bs

T0 = datetime(2026, 11, 1, 9, tzinfo=UTC)


@pytest.fixture
def con():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA sap_raw; CREATE SCHEMA ometria")
    con.execute("CREATE TABLE sap_raw.ocrd AS SELECT 'C1' AS \"CardCode\", TIMESTAMPTZ '2026-11-01 08:00:00+00' AS _landed_at")
    con.execute("CREATE TABLE ometria.contacts (sap_key VARCHAR)")
    yield con
    con.close()


def _plan(con, hours, now, print_="p1"):
    return bs.plan_base(con, "contacts", print_, outputs=("contacts",), required=("ocrd",), sources=("ocrd",),
                        optional=("ocrg",), full_pass_hours=hours, now=now).full_reason


def test_the_periodic_full_pass_follows_the_last_full_build_not_the_last_build(con):
    assert _plan(con, 24, T0) == "no previous build"
    high_water = bs.landed_high_water(con, ("ocrd", "ocrg"))
    bs.record_build(con, "contacts", high_water=high_water, fingerprint="p1", mode="full", now=T0)
    assert _plan(con, 24, T0 + timedelta(hours=23)) is None
    bs.record_build(con, "contacts", high_water=high_water, fingerprint="p1", mode="incremental",
                    now=T0 + timedelta(hours=23))
    assert bs.read_state(con, "contacts").full_built_at == T0
    assert _plan(con, 24, T0 + timedelta(hours=24)) == "periodic full pass (every 24 h)"
    assert _plan(con, 0, T0 + timedelta(days=30)) is None  # 0: no periodic pass
    assert _plan(con, 24, T0 + timedelta(hours=1), print_="p2") == "mapping, time zone or transform version changed"


def test_a_source_without_landed_at_or_a_missing_output_means_a_full_build(con):
    bs.record_build(con, "contacts", high_water=T0, fingerprint="p1", mode="full", now=T0)
    con.execute("CREATE TABLE sap_raw.ocrg (\"Code\" INTEGER)")
    assert _plan(con, None, T0) == "sap_raw.ocrg has no _landed_at"
    con.execute("DROP TABLE sap_raw.ocrg; DROP TABLE ometria.contacts")
    assert _plan(con, None, T0) == "ometria.contacts does not exist"
