"""Delta pushes end to end: small `ometria.*` tables in a DuckDB file, the real client, the
Ometria emulator over HTTP. What a user relies on: only changes are sent, every acknowledged
batch is in the ledger at once (so a killed push resumes without losing or doubling records),
rejections are visible and not mistaken for deliveries, dry runs send nothing."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import httpx
import polars as pl
import pytest
from pydantic import SecretStr

from sap_ometria_assets.emulators.ometria.server import OmetriaEmulator
from sap_ometria_assets.lib.ometria.errors import OmetriaAuthError, OmetriaUnavailableError
from sap_ometria_assets.lib.ometria.client import OmetriaClient
from sap_ometria_assets.lib.push.send import push_feed
from sap_ometria_assets.lib.push.results import PushAbortedError
from sap_ometria_assets.lib.push.errors import errors_fetch_due, sync_errors

KEY = "sk-push-test-0b7e55d1c2"
DIRECTIVES = ("@merge", "@force_optin")


# --------------------------------------------------------------------------------------
# Fixture tables shaped like the ometria.* contract
# --------------------------------------------------------------------------------------
def contact(i: int, **kw) -> dict:
    return {"@type": "contact", "@collection": "sap_b1", "id": f"C{i:05d}", "customer_id": f"C{i:05d}",
            "email": f"customer{i}@example.com", "firstname": "Ann", "lastname": f"Lee{i}",
            "@merge": True, **kw}


def product(i: int, **kw) -> dict:
    return {"@type": "product", "id": f"P{i:04d}", "title": f"Item {i}", "price": 10.0 + i,
            "is_active": True, **kw}


def stock(i: int, in_stock: bool = True) -> dict:
    return {"@type": "product", "id": f"P{i:04d}", "is_in_stock": in_stock, "@merge": True}


def order(i: int, **kw) -> dict:
    return {"@type": "order", "id": f"{i}", "timestamp": "2024-05-01T14:00:00+01:00", "currency": "GBP",
            "grand_total": 20.0 + i, "status": "complete", "is_valid": True,
            "customer": {"id": f"C{i % 50:05d}"},
            "lineitems": [{"product_id": f"P{i % 20:04d}", "quantity": 1, "unit_price": 20.0 + i}], **kw}


SAP_OBJECT = {"contacts": "OCRD", "products": "OITM", "orders": "ORDR", "stock": "OITW"}


def write_feed(con: duckdb.DuckDBPyConnection, feed: str, records: list[dict],
               held_back: dict[str, str] | None = None, raw_payloads: dict[str, str] | None = None) -> None:
    payloads = [(raw_payloads or {}).get(r["id"]) or json.dumps(r, separators=(",", ":")) for r in records]
    frame = pl.DataFrame({
        "record_type": [r["@type"] for r in records],
        "id": [r["id"] for r in records],
        "sap_object": SAP_OBJECT[feed],
        "sap_key": [r["id"] for r in records],
        "payload": payloads,
        "payload_hash": [hashlib.sha256(p.encode()).hexdigest() for p in payloads],
        "payload_bytes": [len(p.encode()) for p in payloads],
        "held_back_reason": [(held_back or {}).get(r["id"]) for r in records],
    }, schema_overrides={"held_back_reason": pl.String, "payload_bytes": pl.Int32})
    con.execute("CREATE SCHEMA IF NOT EXISTS ometria")
    con.register("_fixture", frame)
    con.execute(f"CREATE OR REPLACE TABLE ometria.{feed} AS SELECT * FROM _fixture")
    con.unregister("_fixture")


def edit(con: duckdb.DuckDBPyConnection, feed: str, record: dict) -> None:
    payload = json.dumps(record, separators=(",", ":"))
    con.execute(f"UPDATE ometria.{feed} SET payload = ?, payload_hash = sha256(?), payload_bytes = ? "
                "WHERE id = ?", [payload, payload, len(payload.encode()), record["id"]])


def table_records(con: duckdb.DuckDBPyConnection, feed: str) -> dict[str, dict]:
    rows = con.execute(f"SELECT id, payload FROM ometria.{feed} WHERE held_back_reason IS NULL").fetchall()
    return {i: {k: v for k, v in json.loads(p).items() if k not in DIRECTIVES} for i, p in rows}


def emulator_records(emu: OmetriaEmulator, kind: str) -> dict[str, dict]:
    return {rid: doc for (_, rid), doc in emu.records(kind).items()}


class Counting(httpx.BaseTransport):
    """Forwards to the network; can crash the process-to-be after n push requests."""

    def __init__(self, crash_after: int | None = None, crash_after_send: bool = False) -> None:
        self.inner = httpx.HTTPTransport()
        self.pushes = 0
        self.crash_after = crash_after
        self.crash_after_send = crash_after_send

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/push"):
            if self.crash_after is not None and self.pushes >= self.crash_after:
                if not self.crash_after_send:
                    raise KeyboardInterrupt("killed before sending")
                response = self.inner.handle_request(request)
                response.read()
                raise KeyboardInterrupt("killed after Ometria received the batch")
            self.pushes += 1
        return self.inner.handle_request(request)


@pytest.fixture
def emu():
    with OmetriaEmulator(api_key=KEY) as emulator:
        yield emulator


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield connection
    connection.close()


def client_for(emu: OmetriaEmulator, transport: httpx.BaseTransport | None = None, **kw) -> OmetriaClient:
    kw.setdefault("rate_limit_per_s", 1000.0)
    kw.setdefault("sleep", lambda s: None)
    return OmetriaClient(emu.url, SecretStr(KEY), transport=transport, **kw)


def push_all(con, client) -> dict[str, object]:
    return {feed: push_feed(con, client, feed, dry_run=False)
            for feed in ("contacts", "products", "orders", "stock")}


def demo_tables(con, n_contacts=120, n_products=20, n_orders=250):
    write_feed(con, "contacts", [contact(i) for i in range(n_contacts)])
    write_feed(con, "products", [product(i) for i in range(n_products)])
    write_feed(con, "orders", [order(i) for i in range(n_orders)])
    write_feed(con, "stock", [stock(i, in_stock=i % 3 != 0) for i in range(n_products)])


def assert_ometria_matches_tables(con, emu):
    assert {rid: doc for rid, doc in emulator_records(emu, "contact").items()} == table_records(con, "contacts")
    assert emulator_records(emu, "order") == table_records(con, "orders")
    products, flags = table_records(con, "products"), table_records(con, "stock")
    expected = {pid: {**doc, **flags.get(pid, {})} for pid, doc in products.items()}
    assert emulator_records(emu, "product") == expected


# --------------------------------------------------------------------------------------
def test_batches_hold_at_most_100_records_of_one_type_and_everything_arrives(con, emu):
    demo_tables(con)
    with client_for(emu) as client:
        results = push_all(con, client)
    assert [len(ids) for _, kind, ids in emu.stats.push_log if kind == "order"] == [100, 100, 50]
    assert [len(ids) for _, kind, ids in emu.stats.push_log if kind == "contact"] == [100, 20]
    assert all(len(ids) <= 100 for _, _, ids in emu.stats.push_log)
    assert results["orders"].records_sent == 250 and results["orders"].requests == 3
    assert results["stock"].records_sent == 20
    assert_ometria_matches_tables(con, emu)
    audit = con.execute("SELECT feed, record_type, sum(record_count) AS n, count(*) AS requests, "
                    "bool_and(http_status = 202) AS ok FROM ometria_push.requests GROUP BY ALL ORDER BY feed").fetchall()
    assert audit == [("contacts", "contact", 120, 2, True), ("orders", "order", 250, 3, True),
                     ("products", "product", 20, 1, True), ("stock", "product", 20, 1, True)]


def test_a_second_run_with_no_change_sends_nothing(con, emu):
    demo_tables(con)
    with client_for(emu) as client:
        push_all(con, client)
        requests_before = emu.stats.requests
        results = push_all(con, client)
    assert emu.stats.requests == requests_before  # not even a GET
    assert all(r.requests == 0 and r.records_sent == 0 for r in results.values())
    assert results["orders"].skipped_unchanged == 250


def test_one_edited_business_partner_sends_exactly_one_contact(con, emu):
    demo_tables(con)
    with client_for(emu) as client:
        push_all(con, client)
        pushes, contacts = emu.stats.push_requests, emu.stats.records["contact"]
        edit(con, "contacts", contact(7, email="new.address@example.com"))
        results = push_all(con, client)
    assert emu.stats.push_requests == pushes + 1 and emu.stats.records["contact"] == contacts + 1
    assert emu.stats.push_log[-1][2] == ["C00007"]
    assert results["contacts"].records_sent == 1 and results["contacts"].skipped_unchanged == 119
    assert emu.get("contact", "C00007", "sap_b1")["email"] == "new.address@example.com"


def test_held_back_and_locally_invalid_rows_are_not_sent_but_accounted_for(con, emu):
    # A record over 60 KB is held back where it is built (`record_too_large`, finalize:
    # test_ometria_models.test_60kb_limit_is_enforced_by_the_finaliser); the push relies on it.
    big = contact(9, notes="x" * 70_000)
    write_feed(con, "contacts", [contact(i) for i in range(5)] + [big],
               held_back={"C00001": "email missing", "C00009": "record_too_large"})
    edit(con, "contacts", big)
    # rows the push cannot key or batch: another feed's type, no id
    con.execute("INSERT INTO ometria.contacts SELECT 'order', 'O-stray', 'ORDR', 'x', '{\"@type\":\"order\"}', "
                "'h', 10, NULL")
    con.execute("INSERT INTO ometria.contacts SELECT 'contact', NULL, 'OCRD', 'y', '{\"@type\":\"contact\"}', "
                "'h2', 10, NULL")
    with client_for(emu) as client:
        result = push_feed(con, client, "contacts", dry_run=False)
    assert result.held_back == 2 and result.invalid == 2 and result.records_sent == 4
    assert set(emulator_records(emu, "contact")) == {"C00000", "C00002", "C00003", "C00004"}
    reasons = dict(con.execute("SELECT record_id, error_message FROM ometria_push.errors "
                               "WHERE source = 'client'").fetchall())
    assert reasons == {"O-stray": "record_type order does not belong to feed contacts",
                       "": "record has no id"}


def test_a_push_killed_between_batches_resumes_without_loss(con, emu):
    write_feed(con, "orders", [order(i) for i in range(450)])
    with client_for(emu, Counting(crash_after=2)) as client, pytest.raises(KeyboardInterrupt):
        push_feed(con, client, "orders", dry_run=False)
    assert con.execute("SELECT count(*) FROM ometria_push.ledger").fetchall()[0][0] == 200
    with client_for(emu) as client:
        result = push_feed(con, client, "orders", dry_run=False)
    assert result.records_sent == 250 and result.skipped_unchanged == 200
    assert emu.stats.records["order"] == 450  # nothing sent twice
    assert_ometria_matches_tables_orders(con, emu)


def test_a_push_killed_after_ometria_received_a_batch_resends_only_that_batch(con, emu):
    write_feed(con, "orders", [order(i) for i in range(450)])
    with client_for(emu, Counting(crash_after=3, crash_after_send=True)) as client, \
            pytest.raises(KeyboardInterrupt):
        push_feed(con, client, "orders", dry_run=False)
    assert emu.stats.records["order"] == 400
    assert con.execute("SELECT count(*) FROM ometria_push.ledger").fetchall()[0][0] == 300
    with client_for(emu) as client:
        push_feed(con, client, "orders", dry_run=False)
    assert emu.stats.records["order"] == 550  # the in-flight batch of 100, once more
    assert_ometria_matches_tables_orders(con, emu)


def assert_ometria_matches_tables_orders(con, emu):
    assert emulator_records(emu, "order") == table_records(con, "orders")


_KILLED_PUSH = textwrap.dedent("""
    import sys, duckdb
    from pydantic import SecretStr
    from sap_ometria_assets.lib.ometria.client import OmetriaClient
    from sap_ometria_assets.lib.push.send import push_feed
    db, url, key = sys.argv[1:4]
    con = duckdb.connect(db)
    with OmetriaClient(url, SecretStr(key), rate_limit_per_s=1000) as client:
        push_feed(con, client, "orders", dry_run=False)
    print("finished", flush=True)
""")


def _journalled_records(db) -> int:
    """Records the killed push's journal holds whole (lib/push/journal.py; a torn line does not count)."""
    folder = db.parent / ".push_journal" / db.name
    lines = [line for f in folder.glob("*.ndjson") for line in f.read_bytes().splitlines()]
    whole = []
    for line in lines:
        try:
            whole.append(json.loads(line))
        except ValueError:
            break
    return sum(len(e["records"]["id"]) for e in whole)


def test_a_push_process_killed_with_sigkill_resumes_and_ends_exactly_as_the_table(tmp_path, emu):
    db = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(db))
    write_feed(con, "orders", [order(i) for i in range(6000)])
    con.close()
    emu.faults.delay_s = 0.02  # slow enough to be killed mid-push
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_PUSH, str(db), emu.url, KEY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while emu.stats.push_ok < 25 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    received_before = emu.stats.records["order"]
    assert 2500 <= received_before < 6000

    emu.faults.delay_s = 0.0
    con = duckdb.connect(str(db))
    try:
        # what the killed process recorded: the ledger, the acknowledgements not yet merged
        # into it (ometria_push.acks) and those only journalled (replayed by the next push)
        in_duckdb = con.execute(
            "SELECT (SELECT count(*) FROM ometria_push.ledger) + (SELECT count(*) FROM ometria_push.acks)"
        ).fetchall()[0][0]
        acknowledged = in_duckdb + _journalled_records(db)
        assert acknowledged % 100 == 0 and acknowledged >= 2400
        # received but not recorded: at most the batch in flight, whatever the group size
        assert 0 <= received_before - acknowledged <= 100
        with client_for(emu) as client:
            result = push_feed(con, client, "orders", dry_run=False)
        assert result.records_sent == 6000 - acknowledged
        assert emu.stats.records["order"] - 6000 <= 100  # the documented bound: one batch
        assert_ometria_matches_tables_orders(con, emu)
        assert con.execute("SELECT count(*) FROM ometria_push.ledger WHERE status = 'accepted'"
                           ).fetchall()[0][0] == 6000
        assert con.execute("SELECT count(*) FROM ometria_push.acks").fetchall()[0][0] == 0
        # every request audited exactly once, the journalled ones included (the batch in flight
        # at the kill, answered but never recorded, is audited only as sent again)
        audited, distinct = con.execute(
            "SELECT count(*), count(DISTINCT request_id) FROM ometria_push.requests").fetchall()[0]
        assert audited == distinct and emu.stats.push_ok - audited in (0, 1)
        assert not list((db.parent / ".push_journal" / db.name).glob("*.ndjson"))
    finally:
        con.close()


def test_dry_run_writes_the_exact_requests_to_the_outbox_and_sends_nothing(con, emu, tmp_path):
    demo_tables(con)
    outbox = tmp_path / "outbox"
    results = {feed: push_feed(con, None, feed, dry_run=True, outbox_dir=outbox, run_id="run42")
               for feed in ("contacts", "orders")}
    assert emu.stats.requests == 0
    lines = (outbox / "run42-orders.ndjson").read_bytes().splitlines()
    assert len(lines) == 3 == results["orders"].requests
    bodies = [json.loads(line) for line in lines]
    assert [len(b) for b in bodies] == [100, 100, 50]
    sent = {r["id"]: r for b in bodies for r in b}
    assert sent == {i: json.loads(p) for i, p in con.execute("SELECT id, payload FROM ometria.orders").fetchall()}
    # byte for byte what a real push sends: the stored payloads, batched in table order
    first = [p for (p,) in con.execute("SELECT payload FROM ometria.orders ORDER BY rowid LIMIT 100").fetchall()]
    assert lines[0] == ("[" + ",".join(first) + "]").encode()
    assert con.execute("SELECT bool_and(dry_run), min(status) FROM ometria_push.ledger").fetchall() == [(True, "dry_run")]
    assert con.execute("SELECT count(*), bool_and(dry_run) FROM ometria_push.requests WHERE feed = 'orders'"
                       ).fetchall() == [(3, True)]

    # a second dry run has nothing new to show; a real push still sends everything
    again = push_feed(con, None, "orders", dry_run=True, outbox_dir=outbox, run_id="run43")
    assert again.records_sent == 0 and not (outbox / "run43-orders.ndjson").exists()
    with client_for(emu) as client:
        real = push_feed(con, client, "orders", dry_run=False)
    assert real.records_sent == 250 and emu.stats.records["order"] == 250


def test_the_api_key_never_reaches_logs_duckdb_or_the_outbox(tmp_path, emu, caplog):
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    demo_tables(con, n_contacts=30, n_products=5, n_orders=30)
    emu.faults.reject(ids=["C00003"])
    emu.faults.fail_next(1)
    with client_for(emu) as client:
        push_all(con, client)
    push_feed(con, None, "orders", dry_run=True, outbox_dir=tmp_path / "outbox", run_id="r")
    edit(con, "orders", order(1, grand_total=99.0))
    push_feed(con, None, "orders", dry_run=True, outbox_dir=tmp_path / "outbox", run_id="r")
    bad = OmetriaEmulator(api_key="other-key").start()
    try:
        with OmetriaClient(bad.url, SecretStr(KEY), rate_limit_per_s=1000) as wrong, pytest.raises(PushAbortedError):
            push_feed(con, wrong, "orders", dry_run=False)
    finally:
        bad.stop()
    con.close()
    assert KEY not in caplog.text
    for path in [db, *tmp_path.glob("w.duckdb*"), *(tmp_path / "outbox").iterdir()]:
        assert KEY.encode() not in path.read_bytes(), path


def test_rejected_records_are_recorded_and_not_counted_as_sent(con, emu):
    write_feed(con, "contacts", [contact(i) for i in range(10)])
    emu.faults.reject(ids=["C00002", "C00005"])
    with client_for(emu) as client:
        result = push_feed(con, client, "contacts", dry_run=False)
        assert result.records_rejected == 2 and result.rejected_outstanding == 2
        status = dict(con.execute("SELECT id, status FROM ometria_push.ledger").fetchall())
        assert {i for i, s in status.items() if s == "rejected"} == {"C00002", "C00005"}
        assert set(status.values()) == {"accepted", "rejected"}
        errs = con.execute("SELECT record_id, feed, request_id, matched FROM ometria_push.errors "
                           "ORDER BY record_id").fetchall()
        assert [(e[0], e[1], e[3]) for e in errs] == [("C00002", "contacts", True), ("C00005", "contacts", True)]
        assert errs[0][2] == result.request_ids[0]

        # unchanged, they are not sent again (they would fail again and push newer errors out
        # of Ometria's 100-error window) ...
        assert push_feed(con, client, "contacts", dry_run=False).records_sent == 0
        # ... unless asked, or once their data changes
        emu.faults.reject(ids=[])
        assert push_feed(con, client, "contacts", dry_run=False, retry_rejected=True).records_sent == 2
        assert con.execute("SELECT count(*) FROM ometria_push.ledger WHERE status <> 'accepted'"
                           ).fetchall()[0][0] == 0
        # reading the same error list again adds nothing
        again = sync_errors(con, client)
        assert again.new == 0 and con.execute("SELECT count(*) FROM ometria_push.errors").fetchall()[0][0] == 2


def test_rejections_that_cannot_be_identified_are_sent_again(con, emu):
    write_feed(con, "orders", [order(i) for i in range(10)])
    emu.faults.reject(ids=["4"])
    emu.faults.errors_shape = "flat"  # the documented shape names no record
    with client_for(emu) as client:
        result = push_feed(con, client, "orders", dry_run=False)
        assert result.errors.unconfirmed == 10 and result.errors.unmatched == 1
        emu.faults.reject(ids=[])
        assert push_feed(con, client, "orders", dry_run=False).records_sent == 10
    assert con.execute("SELECT count(*) FROM ometria_push.ledger WHERE status = 'accepted'").fetchall()[0][0] == 10


def test_asynchronous_errors_flip_acknowledged_records_to_rejected(con, emu):
    write_feed(con, "orders", [order(i) for i in range(5)])
    emu.faults.reject(ids=["3"])
    emu.faults.report_rejected_sync = False  # as Ometria: "OK" now, errors later
    with client_for(emu) as client:
        result = push_feed(con, client, "orders", dry_run=False)
    assert result.records_accepted == 5 and result.records_rejected == 1
    assert con.execute("SELECT id FROM ometria_push.ledger WHERE status = 'rejected'").fetchall() == [("3",)]


def test_a_record_ometria_refuses_with_400_is_isolated_and_the_rest_delivered(con, emu):
    write_feed(con, "orders", [order(i) for i in range(100)])

    class RefuseOne(httpx.BaseTransport):
        inner = httpx.HTTPTransport()

        def handle_request(self, request):
            if request.url.path.endswith("/push") and b'"id":"42"' in request.content:
                return httpx.Response(400, json={"status": "ERROR", "message": "Payload invalid: bad record"})
            return self.inner.handle_request(request)

    with client_for(emu, RefuseOne()) as client:
        result = push_feed(con, client, "orders", dry_run=False)
        assert result.records_sent == 99 and result.records_failed == 1
        assert set(emulator_records(emu, "order")) == {str(i) for i in range(100)} - {"42"}
        assert con.execute("SELECT record_id, source FROM ometria_push.errors").fetchall() == [("42", "http")]
        assert result.requests <= 1 + 2 * 7 + 2  # bisection, not one request per record
        retry = push_feed(con, client, "orders", dry_run=False)
        assert retry.to_send == 1 and retry.records_failed == 1


def test_403_stops_the_push_with_a_clear_message(con, emu):
    write_feed(con, "orders", [order(i) for i in range(250)])
    with OmetriaClient(emu.url, SecretStr("revoked-key"), rate_limit_per_s=1000) as client, \
            pytest.raises(PushAbortedError, match="OMETRIA_API_KEY") as info:
        push_feed(con, client, "orders", dry_run=False)
    assert isinstance(info.value.__cause__, OmetriaAuthError)
    assert emu.stats.push_requests == 1
    assert con.execute("SELECT count(*) FROM ometria_push.ledger").fetchall()[0][0] == 0
    assert con.execute("SELECT http_status FROM ometria_push.requests").fetchall() == [(403,)]


def test_throttling_and_server_errors_are_ridden_out(con, emu):
    write_feed(con, "orders", [order(i) for i in range(300)])
    emu.faults.throttle(2, retry_after=0)
    with client_for(emu) as client:
        push_feed(con, client, "orders", dry_run=False, chunk_batches=1)
        emu.faults.fail_next(2, status=503)
        edit(con, "orders", order(5, grand_total=1.0))
        assert push_feed(con, client, "orders", dry_run=False).records_sent == 1
    assert emu.stats.statuses[429] == 2 and emu.stats.statuses[503] == 2
    assert_ometria_matches_tables_orders(con, emu)
    assert con.execute("SELECT max(attempts) FROM ometria_push.requests").fetchall()[0][0] == 3


def test_ometria_staying_down_aborts_and_keeps_what_was_acknowledged(con, emu):
    write_feed(con, "orders", [order(i) for i in range(300)])
    with client_for(emu, max_retries=2) as client:
        original = client.push

        def push_then_break(records, record_type):
            response = original(records, record_type)
            emu.faults.fail_next(100)
            return response

        client.push = push_then_break  # type: ignore[method-assign]
        with pytest.raises(PushAbortedError, match="100 of 300 records") as info:
            push_feed(con, client, "orders", dry_run=False)
    assert isinstance(info.value.__cause__, OmetriaUnavailableError)
    assert info.value.result.records_sent == 100
    assert con.execute("SELECT count(*) FROM ometria_push.ledger").fetchall()[0][0] == 100
    failed = con.execute("SELECT http_status, attempts, error FROM ometria_push.requests WHERE accepted IS NULL"
                         ).fetchall()
    assert failed[0][:2] == (503, 3) and "failed after 3 attempts" in failed[0][2]


def test_stock_flag_is_sent_again_after_its_product_was_replaced(con, emu):
    write_feed(con, "products", [product(i) for i in range(3)])
    write_feed(con, "stock", [stock(i, in_stock=False) for i in range(3)])
    with client_for(emu) as client:
        push_feed(con, client, "products", dry_run=False)
        push_feed(con, client, "stock", dry_run=False)
        edit(con, "products", product(1, title="Renamed"))
        push_feed(con, client, "products", dry_run=False)
        assert "is_in_stock" not in emu.get("product", "P0001")  # a whole product replaces
        result = push_feed(con, client, "stock", dry_run=False)
    assert result.records_sent == 1
    assert emu.get("product", "P0001") == {"@type": "product", "id": "P0001", "title": "Renamed",
                                          "price": 11.0, "is_active": True, "is_in_stock": False}


def test_error_list_is_read_only_when_worth_it(con, emu):
    from datetime import UTC, datetime, timedelta

    write_feed(con, "orders", [order(i) for i in range(3)])
    assert not errors_fetch_due(con)  # nothing pushed yet
    with client_for(emu) as client:
        push_feed(con, client, "orders", dry_run=False)  # reads _errors right after pushing
    now = datetime.now(UTC)
    assert not errors_fetch_due(con, settle_s=300, now=now)
    assert errors_fetch_due(con, settle_s=300, now=now + timedelta(minutes=6))  # once, late errors
    con.execute("INSERT INTO ometria_push.error_fetches VALUES (?, 0, 0, 0, NULL)", [now + timedelta(minutes=6)])
    assert not errors_fetch_due(con, settle_s=300, now=now + timedelta(hours=2))


def test_missing_input_table_is_a_clear_error(con):
    from sap_ometria_assets.lib.push.results import PushInputMissingError

    with pytest.raises(PushInputMissingError, match="materialise the ometria/orders asset"):
        push_feed(con, None, "orders", dry_run=True, outbox_dir=Path("/tmp/unused"))


def test_stock_flags_wait_for_their_product_to_reach_ometria(con, emu):
    write_feed(con, "products", [product(i) for i in range(3)], held_back={"P0002": "no price"})
    write_feed(con, "stock", [stock(i) for i in range(3)])
    with client_for(emu) as client:
        first = push_feed(con, client, "stock", dry_run=False)  # products not pushed yet
        assert first.records_sent == 0 and first.waiting_for_parent == 3
        push_feed(con, client, "products", dry_run=False)
        second = push_feed(con, client, "stock", dry_run=False)
    assert second.records_sent == 2 and second.waiting_for_parent == 1
    assert set(emulator_records(emu, "product")) == {"P0000", "P0001"}  # no stub for P0002
    assert emu.get("product", "P0001")["title"] == "Item 1" and emu.get("product", "P0001")["is_in_stock"]
