"""The historical backfill: a month of orders and credit memos landed by DocDate, pushed through
the ledger (only that month, with the contacts and products it needs), resumable, watermarks
untouched."""

import logging
import os
from datetime import date, datetime

import dagster as dg
import duckdb
import pytest
from pydantic import SecretStr

from sap_ometria_assets.defs.backfill import assets as bf
from sap_ometria_assets.lib.warehouse import db as warehouse
from sap_ometria_assets.lib.landing.land import land_table
from sap_ometria_assets.defs.resources import OmetriaResource
from sap_ometria_assets.lib.automation.partitions import monthly_docdate_partitions, window_for_partition
from sap_ometria_assets.lib.sap.client import SapB1Client
from sap_ometria_assets.defs.resources import SapB1Resource
from sap_ometria_assets.lib.sap.tables import SAP_TABLES, TABLES_BY_NAME
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.defs.resources import WarehouseResource
from tests.fakes.service_layer import FAKE_PASSWORD

# --------------------------------------------------------------------------------------------
# Partitions
# --------------------------------------------------------------------------------------------


def test_month_windows_are_half_open_and_cross_the_year():
    dec = window_for_partition("2024-12-01")
    assert (dec.start, dec.end) == (date(2024, 12, 1), date(2025, 1, 1))
    assert dec.odata_filter() == "DocDate ge '2024-12-01' and DocDate lt '2025-01-01'"
    with pytest.raises(ValueError):
        window_for_partition("2024-12-15")


def test_partitions_start_at_the_configured_month_and_stop_before_the_current_one():
    parts = monthly_docdate_partitions(date(2024, 3, 17), "Europe/London")
    keys = parts.get_partition_keys(current_time=datetime(2024, 7, 9, 12))
    assert keys == ["2024-03-01", "2024-04-01", "2024-05-01", "2024-06-01"]
    assert parts.timezone == "Europe/London"


# --------------------------------------------------------------------------------------------
# Landing a window
# --------------------------------------------------------------------------------------------


def _order(entry, doc_date, update_date):
    return {
        "DocEntry": entry, "DocNum": entry, "DocDate": f"{doc_date}T00:00:00Z", "CardCode": "C1",
        "DocTotal": 10.5, "UpdateDate": f"{update_date}T00:00:00Z", "UpdateTime": "10:00:00",
        "DocumentLines": [{"LineNum": 0, "ItemCode": "A", "Quantity": 1}],
        "DocumentAdditionalExpenses": [],
    }


def test_window_landing_reads_only_the_month_and_keeps_the_watermark(make_fake_sl, tmp_path):
    fake = make_fake_sl({"Orders": [
        _order(1, "2024-01-15", "2024-01-15"),
        _order(2, "2024-02-03", "2026-05-01"),   # old order edited recently
        _order(3, "2024-02-29", "2024-03-01"),
        _order(4, "2024-03-01", "2024-03-01"),
    ]})
    client = SapB1Client(fake.base_url, fake.company, fake.username, SecretStr(FAKE_PASSWORD),
                         transport=fake.transport())
    settings = get_settings()
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        bf.land_window(con, client, "ordr", window_for_partition("2024-02-01"), settings=settings)
        assert con.execute('SELECT "DocEntry" FROM sap_raw.ordr ORDER BY 1').fetchall() == [(2,), (3,)]
        assert con.execute('SELECT "DocEntry" FROM sap_raw.rdr1 ORDER BY 1').fetchall() == [(2,), (3,)]
        # No regular landing yet: the window read must not invent a watermark (the first
        # regular landing would then skip everything older than 2026-05-01).
        assert con.execute("SELECT count(*) FROM sap_meta.watermarks WHERE entity = 'ordr'").fetchall() == [(0,)]

        land_table(con, client, TABLES_BY_NAME["ordr"], settings=settings)
        before = con.execute("SELECT * FROM sap_meta.watermarks WHERE entity = 'ordr'").fetchall()
        fake.entities["Orders"][0]["DocTotal"] = 99.0
        fake.entities["Orders"][0]["UpdateDate"] = "2026-06-01T00:00:00Z"
        result = bf.land_window(con, client, "ordr", window_for_partition("2024-01-01"), settings=settings)
        assert result.rows_changed == 1
        assert con.execute('SELECT "DocTotal" FROM sap_raw.ordr WHERE "DocEntry" = 1').fetchall()[0][0] == 99
        assert con.execute("SELECT * FROM sap_meta.watermarks WHERE entity = 'ordr'").fetchall() == before
    with pytest.raises(ValueError, match="not a document"):
        with warehouse.connect(tmp_path / "w.duckdb") as con:
            bf.land_window(con, client, "ocrd", window_for_partition("2024-01-01"), settings=settings)


# --------------------------------------------------------------------------------------------
# A month end to end on the demo company (tiny scale)
# --------------------------------------------------------------------------------------------

MONTH = "2025-06-01"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("backfill_demo")


@pytest.fixture(autouse=True)
def _demo_env(request, monkeypatch):
    if "demo" not in request.fixturenames:
        yield
        return
    base = request.getfixturevalue("demo_dir")
    for name, value in {
        "SAP_OMETRIA_DUCKDB_PATH": str(base / "warehouse.duckdb"),
        "SAP_OMETRIA_DEMO_DIR": str(base / "demo"),
        "SAP_OMETRIA_OUTBOX_DIR": str(base / "outbox"),
        "SAP_OMETRIA_DEMO_SCALE": "0.02",
        "SAP_OMETRIA_BACKFILL_RATE_LIMIT_PER_S": "50",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings(refresh=True)
    yield


@pytest.fixture(scope="module")
def demo(demo_dir):
    """The demo company landed and transformed (nothing pushed yet), as before a go-live."""
    from sap_ometria_assets.defs.ometria import assets as om

    saved = dict(os.environ)
    os.environ.update({
        "SAP_OMETRIA_DUCKDB_PATH": str(demo_dir / "warehouse.duckdb"),
        "SAP_OMETRIA_DEMO_DIR": str(demo_dir / "demo"),
        "SAP_OMETRIA_OUTBOX_DIR": str(demo_dir / "outbox"),
        "SAP_OMETRIA_DEMO_SCALE": "0.02",
    })
    settings = get_settings(refresh=True)
    sap = SapB1Resource()
    try:
        with sap.client() as client, warehouse.connect(settings.duckdb_path) as con:
            for spec in SAP_TABLES:
                land_table(con, client, spec, settings=settings)
        sap.close()
        result = dg.materialize(
            [om.ometria_contacts, om.ometria_products, om.ometria_orders_and_refunds],
            resources={"warehouse": WarehouseResource()},
        )
        assert result.success
        yield {"month_orders": _month_orders(settings.duckdb_path)}
    finally:
        from sap_ometria_assets.emulators.ometria.embedded import stop_embedded_ometria
        from sap_ometria_assets.emulators.sap_b1.embedded import stop_embedded_sap

        stop_embedded_sap()
        stop_embedded_ometria()
        os.environ.clear()
        os.environ.update(saved)
        get_settings(refresh=True)


def _month_orders(path) -> set[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {r[0] for r in con.execute(
            "SELECT id FROM ometria.orders WHERE sap_object = 'ORDR' AND held_back_reason IS NULL AND "
            "sap_key IN (SELECT CAST(\"DocEntry\" AS VARCHAR) FROM sap_raw.ordr WHERE \"DocDate\" >= DATE "
            f"'{MONTH}' AND \"DocDate\" < DATE '{MONTH}' + INTERVAL 1 MONTH)").fetchall()}
    finally:
        con.close()


def _ledger(path) -> dict[str, set[str]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute("SELECT feed, id FROM ometria_push.ledger").fetchall()
    finally:
        con.close()
    out: dict[str, set[str]] = {}
    for feed, rid in rows:
        out.setdefault(feed, set()).add(rid)
    return out


def _backfill(month: str = MONTH, keys=None):
    return dg.materialize(
        [bf.backfill_documents],
        partition_key=month,
        selection=keys,
        resources={"warehouse": WarehouseResource(), "sap_b1": SapB1Resource(),
                   "ometria": OmetriaResource()},
        raise_on_error=False,
    )


def _in_month(alias: str = "") -> str:
    col = f'{alias}"DocDate"'
    return f"{col} >= DATE '{MONTH}' AND {col} < DATE '{MONTH}' + INTERVAL 1 MONTH"


def test_a_month_pushes_that_month_and_what_it_needs_then_nothing_twice(demo):
    settings = get_settings()
    assert demo["month_orders"], "the demo month has orders"
    con = duckdb.connect(str(settings.duckdb_path), read_only=True)
    watermarks = con.execute("SELECT * FROM sap_meta.watermarks ORDER BY 1").fetchall()
    # Expected, from SAP's side: the month's orders and credit memos, the Ometria orders that
    # carry those credit memos, and the customers of both that Ometria can take.
    expected_orders = demo["month_orders"] | {r[0] for r in con.execute(
        "SELECT r.id FROM ometria.refunds r JOIN sap_raw.orin m ON r.sap_key = CAST(m.\"DocEntry\" AS VARCHAR) "
        f"JOIN ometria.orders o ON o.id = r.id AND o.held_back_reason IS NULL WHERE {_in_month('m.')}").fetchall()}
    expected_contacts = {r[0] for r in con.execute(
        "SELECT c.sap_key FROM ometria.contacts c WHERE c.held_back_reason IS NULL AND c.sap_key IN ("
        f"SELECT \"CardCode\" FROM sap_raw.ordr WHERE {_in_month()} UNION "
        f"SELECT \"CardCode\" FROM sap_raw.orin WHERE {_in_month()})").fetchall()}
    total_orders = con.execute("SELECT count(*) FROM ometria.orders").fetchall()[0][0]
    con.close()

    first = _backfill()
    assert first.success
    ledger = _ledger(settings.duckdb_path)
    assert ledger["orders"] == expected_orders and len(expected_orders) < total_orders
    assert ledger["contacts"] == expected_contacts
    con = duckdb.connect(str(settings.duckdb_path), read_only=True)
    assert con.execute("SELECT * FROM sap_meta.watermarks ORDER BY 1").fetchall() == watermarks
    con.close()

    # What Ometria holds is what the ledger says was acknowledged.
    from sap_ometria_assets.emulators.ometria.embedded import ensure_embedded_ometria

    held = {rid for (_, rid) in ensure_embedded_ometria(settings).emulator.records("order")}
    assert held == ledger["orders"]

    metadata = {e.event_specific_data.materialization.asset_key.to_user_string():
                e.event_specific_data.materialization.metadata
                for e in first.get_asset_materialization_events()}
    assert metadata["backfill/orders"]["records_sent_by_feed"].value["orders"] == len(demo["month_orders"])

    again = _backfill()  # resumable and idempotent: a re-run sends nothing acknowledged
    sent = {e.event_specific_data.materialization.asset_key.to_user_string():
            e.event_specific_data.materialization.metadata["records_sent"].value
            for e in again.get_asset_materialization_events()
            if e.event_specific_data.materialization.asset_key.path[0] == "backfill"}
    assert sent == {"backfill/orders": 0, "backfill/credit_memos": 0}


def test_slices_release_the_warehouse_and_send_each_record_once(demo):
    settings = get_settings()
    window = window_for_partition("2025-03-01")
    where = bf.push_predicates(bf.ORDERS, window)["orders"]
    opened = []

    def connect():
        opened.append(1)
        return warehouse.connect(settings.duckdb_path, wait_s=5)

    with connect() as con:
        expected = con.execute(f"SELECT count(*) FROM ometria.orders WHERE {where} AND held_back_reason IS NULL").fetchall()[0][0]
    assert expected >= 3
    opened.clear()
    results = bf.push_in_slices(connect, None, "orders", where, dry_run=True, run_id="slice-test",
                                logger=logging.getLogger("test"), slice_records=2, pause_s=0)
    assert len(results) >= 2 and len(opened) == len(results) + 1  # one short hold per slice
    assert sum(r.records_sent for r in results) == expected


def test_an_unpartitioned_run_does_nothing(demo):
    result = dg.materialize(
        [bf.backfill_documents],
        resources={"warehouse": WarehouseResource(), "sap_b1": SapB1Resource(),
                   "ometria": OmetriaResource()},
    )
    assert result.success
    assert result.get_asset_materialization_events() == []
