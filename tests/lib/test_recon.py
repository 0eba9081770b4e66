"""Reconciliation views: agree to the penny on a consistent world, list every difference on an
inconsistent one, and say when a difference is explained by a listed exception."""

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from checks_fixtures import (
    CONFIG,
    FACTS,
    T0,
    order,
    payload_row,
    set_payload,
    snapshot_from_ometria_tables,
    world,
)

from sap_ometria_assets.lib.quality.drift import track_pending_changes
from sap_ometria_assets.lib.sync_exceptions.register import evaluate_exceptions
from sap_ometria_assets.lib.recon.build import create_recon_views
from sap_ometria_assets.lib.recon.columns import CUSTOMER_NET_REVENUE
from sap_ometria_assets.lib.recon.snapshot import read_back_records, snapshot_available, write_snapshot

D = Decimal


@pytest.fixture
def con(tmp_path):
    c = world(tmp_path)
    yield c
    c.close()


def refresh(con, facts=FACTS, now=T0):
    evaluate_exceptions(con, now, CONFIG, facts)
    return create_recon_views(con, facts, CONFIG)


def rows(con, sql):
    frame = con.sql(sql).pl()
    return frame.to_dicts()


def by_customer(con):
    return {(r["card_code"], r["currency"]): r for r in rows(con, "FROM recon.customer_net_revenue")}


def test_consistent_world_agrees_to_the_penny(con):
    views = refresh(con)
    assert views.skipped == {}
    c = by_customer(con)
    assert set(c) == {("C001", "GBP"), ("C002", "EUR"), ("C003", "GBP")}
    # C001: order 54.00 - credit memo 24.00 (cancelled order 3 excluded) = 30.00
    assert (c["C001", "GBP"]["sap_orders"], c["C001", "GBP"]["sap_credit_memos"]) == (D("54.00"), D("24.00"))
    for key, expected in {("C001", "GBP"): D("30.00"), ("C002", "EUR"): D("12.00"),
                          ("C003", "GBP"): D("21.60")}.items():
        row = c[key]
        assert row["sap_net"] == row["sent_net"] == row["ometria_net"] == expected
        assert row["status"] == "agrees"
    assert c["C002", "EUR"]["sap_net_local"] == D("10.20")  # the same order in GBP
    days = rows(con, "FROM recon.orders_by_day")
    assert [(str(r["day"]), r["sap_orders"], r["sent_orders"], r["ometria_orders"], r["status"])
            for r in days] == [("2024-03-01", 1, 1, 1, "agrees"), ("2024-03-02", 1, 1, 1, "agrees"),
                               ("2024-03-03", 1, 1, 1, "agrees")]
    for view in ("missing_in_ometria", "extra_in_ometria", "stale_records"):
        assert rows(con, f"FROM recon.{view}") == []


def test_every_view_is_documented(con):
    views = refresh(con)
    comments = dict(con.execute(
        "SELECT table_name, comment FROM duckdb_tables() WHERE schema_name = 'recon'").fetchall())
    for name in views.created:
        assert comments[name] and len(comments[name]) > 60, name


def test_docs_contracts_list_each_recon_table_with_its_columns(con):
    """A SQL user reading docs/contracts.md finds every column the built table has, in order."""
    views = refresh(con)
    docs = (Path(__file__).parents[2] / "docs" / "contracts.md").read_text()
    for name in views.created:
        line = next((ln for ln in docs.splitlines() if ln.startswith(f"| `{name}` |")), None)
        assert line, f"recon.{name} is not in docs/contracts.md"
        built = [c for (c,) in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'recon' "
            "AND table_name = ? ORDER BY ordinal_position", [name]).fetchall()]
        assert re.findall(r"`(\w+)`", line.split("|")[2]) == built, name


def test_an_order_lost_in_ometria_is_listed_everywhere(con):
    con.execute("DELETE FROM recon.ometria_snapshot WHERE id = 'SO-4'")
    refresh(con)
    c3 = by_customer(con)["C003", "GBP"]
    assert (c3["sap_net"], c3["sent_net"], c3["ometria_net"]) == (D("21.60"), D("21.60"), D("0.00"))
    assert c3["ometria_difference"] == D("-21.60") and c3["status"] == "differs"
    day = rows(con, "FROM recon.orders_by_day WHERE day = DATE '2024-03-03'")[0]
    assert (day["sap_orders"], day["ometria_orders"], day["status"]) == (1, 0, "differs")
    missing = rows(con, "SELECT id, sap_key, reason FROM recon.missing_in_ometria")
    assert missing == [{"id": "SO-4", "sap_key": "4", "reason": "acknowledged but not in Ometria"}]


def test_a_penny_is_a_difference(con):
    con.execute("UPDATE recon.ometria_snapshot SET payload = replace(payload, '\"grand_total\":54.0', "
                "'\"grand_total\":54.01') WHERE id = 'SO-1'")
    refresh(con)
    c1 = by_customer(con)["C001", "GBP"]
    assert c1["ometria_difference"] == D("0.01") and c1["status"] == "differs"


def test_extra_records_in_ometria_with_reasons(con):
    con.execute("UPDATE sap_raw.ocrd SET _deleted_at = TIMESTAMPTZ '2024-03-09 00:00:00+00' "
                "WHERE CardCode = 'C003'")
    con.execute("DELETE FROM ometria.contacts WHERE id = 'C003'")
    con.execute("INSERT INTO recon.ometria_snapshot VALUES ('contact', 'WEB-77', '{\"id\":\"WEB-77\"}', ?)",
                [T0])
    refresh(con)
    extra = {(r["id"], r["reason"]) for r in rows(con, "FROM recon.extra_in_ometria")}
    assert extra == {("C003", "deleted in SAP"), ("WEB-77", "not from SAP")}


def test_a_difference_explained_by_an_open_exception(con):
    # Order 2 is in SFR, which the mapping does not know: held back, never sent.
    con.execute("UPDATE sap_raw.ordr SET DocCurrency = 'SFR' WHERE DocEntry = 2")
    con.execute("UPDATE ometria.orders SET held_back_reason = 'unmapped_currency:SFR' WHERE id = 'SO-2'")
    con.execute("DELETE FROM ometria_push.ledger WHERE id = 'SO-2'")
    con.execute("DELETE FROM recon.ometria_snapshot WHERE id = 'SO-2'")
    refresh(con)
    c2 = [r for r in rows(con, "FROM recon.customer_net_revenue") if r["card_code"] == "C002"]
    assert len(c2) == 1 and c2[0]["currency"] is None  # no ISO code for SFR
    assert (c2[0]["sap_net"], c2[0]["sent_net"]) == (D("12.00"), D("0.00"))
    assert c2[0]["status"] == "explained" and "currency_unmapped" in c2[0]["explanation"]
    assert rows(con, "SELECT id, reason, detail FROM recon.missing_in_ometria") == [
        {"id": "SO-2", "reason": "held back", "detail": "unmapped_currency:SFR"}]
    assert {r["status"] for r in rows(con, "FROM recon.customer_net_revenue WHERE card_code <> 'C002'")} \
        == {"agrees"}


def test_refund_on_original_mode_reconciles(con):
    # The credit memo is applied to order SO-1 instead of a negative order CN-20.
    con.execute("DELETE FROM ometria.orders WHERE id = 'CN-20'")
    con.execute("DELETE FROM ometria_push.ledger WHERE id = 'CN-20'")
    refunded = order("SO-1", "C001", "2024-03-01T10:00:00+00:00", "GBP", 54.0, status="partial_refund",
                     lines=[{"product_id": "SKU1", "quantity": 2, "unit_price": 20.0, "subtotal": 40.0,
                             "total": 48.0, "quantity_refunded": 1, "refunded": 24.0}])
    set_payload(con, "orders", "SO-1", refunded)
    con.execute("UPDATE ometria_push.ledger l SET payload_hash = o.payload_hash FROM ometria.orders o "
                "WHERE l.id = o.id AND o.id = 'SO-1'")
    snapshot_from_ometria_tables(con, T0)
    refresh(con, FACTS.model_copy(update={"credit_memo_mode": "refund_on_original"}))
    c1 = by_customer(con)["C001", "GBP"]
    assert c1["sap_net"] == c1["sent_net"] == c1["ometria_net"] == D("30.00")
    assert c1["status"] == "agrees"


def test_in_flight_change_is_explained_and_becomes_stale_after_the_limit(con):
    changed = order("SO-4", "C003", "2024-03-03T09:15:00+00:00", "GBP", 30.0)
    set_payload(con, "orders", "SO-4", changed)
    con.execute("UPDATE sap_raw.ordr SET DocTotal = 30, VatSum = 12 WHERE DocEntry = 4")
    # stale_records measures waiting time against the real clock when reconciliation runs
    refresh(con, now=datetime.now(timezone.utc))
    c3 = by_customer(con)["C003", "GBP"]
    # SAP and our new payload say 30.00; the ledger still holds the 21.60 version
    assert (c3["sap_net"], c3["sent_net"]) == (D("30.00"), D("0.00"))
    assert c3["status"] == "explained" and "not yet acknowledged" in c3["explanation"]
    assert rows(con, "FROM recon.stale_records") == []
    # the same change, first seen 30 hours ago: drift
    con.execute("UPDATE recon.payload_versions SET first_seen = now() - INTERVAL 30 HOUR WHERE id = 'SO-4'")
    refresh(con, now=datetime.now(timezone.utc))
    stale = rows(con, "SELECT feed, id, hours_waiting FROM recon.stale_records")
    assert [(s["feed"], s["id"]) for s in stale] == [("orders", "SO-4")]
    assert stale[0]["hours_waiting"] >= 30


def test_without_a_read_back_only_sap_and_sent_are_compared(con):
    write_snapshot(con, [], T0 + timedelta(hours=1), available=False, note="dry run")
    assert not snapshot_available(con)
    refresh(con)
    c = by_customer(con)
    assert all(r["ometria_net"] is None and r["status"] == "agrees" for r in c.values())


def test_views_whose_inputs_are_missing_are_skipped_with_the_reason(con):
    con.execute("DROP TABLE ometria_push.ledger")
    views = refresh(con)
    assert "sent_orders" in views.skipped and "ometria_push.ledger" in views.skipped["sent_orders"]
    assert "customer_net_revenue" in views.skipped
    assert "sap_documents" in views.created
    assert not con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'recon' "
                           "AND table_name = 'customer_net_revenue'").fetchall()[0][0]


def test_payload_versions_remember_when_a_change_first_appeared(con):
    track_pending_changes(con, T0)
    set_payload(con, "contacts", "C001", {"@type": "contact", "id": "C001", "firstname": "Al"})
    assert track_pending_changes(con, T0 + timedelta(hours=2)) == 1
    assert track_pending_changes(con, T0 + timedelta(hours=3)) == 0
    first = dict(con.execute("SELECT id, first_seen FROM recon.payload_versions WHERE feed = 'contacts'"
                             ).fetchall())
    assert first["C001"] == T0 + timedelta(hours=2) and first["C002"] == T0


def test_payload_versions_of_a_feed_not_built_are_kept(con):
    track_pending_changes(con, T0)
    count = "SELECT count(*) FROM recon.payload_versions WHERE feed = 'products'"
    before = con.execute(count).fetchall()[0][0]
    con.execute("DROP TABLE ometria.products")
    assert track_pending_changes(con, T0 + timedelta(hours=1)) == 0
    assert con.execute(count).fetchall()[0][0] == before > 0


def test_money_rounds_every_sum_as_a_direct_cast_would(con):
    create_recon_views(con, FACTS, CONFIG)
    values = ["0.005", "-0.005", "0.004999", "12.344999", "999999999999.995", "-123456789012345.675",
              "9999999999999999.994"]
    for text in values:
        v = f"CAST({text!r} AS DECIMAL(38,6))"
        got, want = con.execute(f"SELECT recon.money({v}), CAST({v} AS DECIMAL(19,2))").fetchall()[0]
        assert got == want, text
    assert con.execute("SELECT recon.money(NULL)").fetchall()[0][0] is None


class FakeReadBackClient:
    def __init__(self):
        self.collections = []

    def iter_contacts(self, collection):
        self.collections.append(collection)
        return iter([{"id": "C001", "email": "alice@example.com"}, {"email": "no id"}])

    def iter_orders(self):
        return iter([{"id": "SO-1", "grand_total": 54.0}])

    def iter_products(self):
        return iter([{"id": 101, "title": "numeric id"}])


def test_read_back_records_from_the_client(con):
    client = FakeReadBackClient()
    records = list(read_back_records(client, "sap_b1"))
    assert client.collections == ["sap_b1"]
    assert [(t, i) for t, i, _ in records] == [("contact", "C001"), ("order", "SO-1"), ("product", "101")]
    assert json.loads(records[1][2]) == {"id": "SO-1", "grand_total": 54.0}
    counts = write_snapshot(con, records, T0 + timedelta(days=1))
    assert counts == {"contact": 1, "order": 1, "product": 1}
    assert con.execute("SELECT count(*) FROM recon.ometria_snapshot").fetchall()[0][0] == 3
    assert snapshot_available(con)


def test_payload_row_helper_hashes_payload():
    row = payload_row("orders", "ORDR", "9", order("SO-9", "C1", "2024-01-01T00:00:00+00:00", "GBP", 1.0))
    assert len(row["payload_hash"]) == 64


def test_missing_and_extra_are_not_judged_against_a_read_back_that_did_not_happen(con):
    con.execute("DELETE FROM recon.ometria_snapshot WHERE id = 'SO-4'")  # would look missing
    con.execute("INSERT INTO recon.ometria_snapshot VALUES ('contact', 'WEB-1', '{}', ?)", [T0])
    write_snapshot(con, [], T0 + timedelta(hours=1), available=False, note="dry run")
    con.execute("DELETE FROM ometria.contacts WHERE id = 'C003'")  # never became a record
    refresh(con)
    assert rows(con, "SELECT sap_key, reason FROM recon.missing_in_ometria") == [
        {"sap_key": "C003", "reason": "no Ometria-ready record"}]
    assert rows(con, "FROM recon.extra_in_ometria") == []


def test_only_exceptions_that_keep_a_record_out_of_ometria_explain_a_difference(con):
    # The credit memo is stand-alone (an open credit_memo_unlinked exception) and Ometria lost
    # its negative order: the exception does not explain the loss.
    con.execute("UPDATE sap_raw.rin1 SET BaseType = -1, BaseEntry = NULL, BaseLine = NULL")
    con.execute("DELETE FROM recon.ometria_snapshot WHERE id = 'CN-20'")
    refresh(con)
    c1 = by_customer(con)["C001", "GBP"]
    assert c1["ometria_difference"] == D("24.00") and c1["status"] == "differs"
    assert con.execute("SELECT rule, keeps_record_from_ometria FROM recon.open_document_exceptions"
                       ).fetchall() == [("credit_memo_unlinked", False)]


def test_a_warehouse_from_the_views_era_is_upgraded_to_tables(con):
    """Warehouses built before reconciliation was materialised hold views of the same names."""
    refresh(con)
    con.execute("DROP TABLE recon.sap_documents")
    con.execute("CREATE VIEW recon.sap_documents AS SELECT 1 AS doc_entry")
    views = refresh(con)
    assert "sap_documents" in views.created
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'recon' "
                       "AND table_name = 'sap_documents'").fetchall()[0][0] == 1


def test_customer_net_revenue_has_the_columns_the_catalog_describes(con):
    refresh(con)
    created = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = "
        "'recon' AND table_name = 'customer_net_revenue' ORDER BY ordinal_position").fetchall()
    assert created == [(c, t) for c, (t, _) in CUSTOMER_NET_REVENUE.items()]
