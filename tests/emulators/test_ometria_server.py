"""The Ometria emulator over real HTTP: it must refuse what the documented API refuses, keep
what it accepts the way Ometria upserts it, report field errors through `_errors`, and
misbehave on request."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from sap_ometria_assets.emulators.ometria.server import OmetriaEmulator
from sap_ometria_assets.emulators.ometria.validation import MAX_RECORD_BYTES

KEY = "emu-test-key"


@pytest.fixture
def emu():
    with OmetriaEmulator(api_key=KEY) as emulator:
        yield emulator


@pytest.fixture
def http(emu):
    with httpx.Client(base_url=emu.url + "/", headers={"X-Ometria-Auth": KEY}, timeout=10) as c:
        yield c


def push(http: httpx.Client, records) -> httpx.Response:
    return http.post("push", content=json.dumps(records), headers={"Content-Type": "application/json"})


def order(i, **kw):
    return {"@type": "order", "id": f"O{i}", "timestamp": "2024-05-01T14:00:00+01:00",
            "currency": "GBP", "grand_total": 12.5, **kw}


def product(i, **kw):
    return {"@type": "product", "id": f"P{i}", "title": f"Item {i}", "price": 9.99, **kw}


def contact(i, **kw):
    return {"@type": "contact", "@collection": "sap_b1", "id": f"C{i}", "email": f"c{i}@example.com", **kw}


def test_push_without_the_right_key_is_forbidden(emu):
    for headers in ({}, {"X-Ometria-Auth": "wrong"}):
        r = httpx.post(emu.url + "/push", json=[order(1)], headers=headers)
        assert r.status_code == 403
    assert emu.records("order") == {}
    assert httpx.get(emu.url + "/orders/O1").status_code == 403


def test_accepted_push_answers_like_ometria(http, emu):
    r = push(http, [order(1), order(2)])
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "OK" and body["accepted"] == 2 and body["rejected"] == 0
    assert len(body["request_id"]) == 36
    assert r.headers["X-QueueSize-Limit"] == "50000" and r.headers["X-QueueSize-Remaining"] == "50000"
    assert emu.stats.records["order"] == 2 and emu.stats.push_ok == 1


@pytest.mark.parametrize("records, message", [
    ({"@type": "order"}, "JSON array"),
    ([], "no records"),
    ([order(i) for i in range(101)], "at most 100"),
    ([order(1), product(1)], "must not be mixed"),
    ([{"@type": "invoice", "id": "1"}], "unknown @type"),
    ([order(1, notes="x" * MAX_RECORD_BYTES)], "Record is too large"),
    (["not an object"], "not an object"),
])
def test_structurally_invalid_requests_are_refused_whole(http, emu, records, message):
    r = push(http, records)
    assert r.status_code == 400 and message in r.json()["message"]
    assert emu.records("order") == {} and emu.records("product") == {}


def test_invalid_json_is_a_400(http):
    r = http.post("push", content=b"[{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]


def test_field_errors_are_rejected_and_listed_in_errors(http, emu):
    r = push(http, [
        order(1),
        order(2, timestamp="2024-05-01T14:00:00"),   # no offset
        order(3, currency="US$"),                     # not ISO 4217
        {"@type": "order", "id": "O4", "timestamp": "2024-05-01T14:00:00Z", "currency": "GBP"},
    ])
    body = r.json()
    assert r.status_code == 202 and body["accepted"] == 1 and body["rejected"] == 3
    assert set(i for _, i in emu.records("order")) == {"O1"}
    errors = http.get("push/_errors").json()
    assert {(e["record_id"], e["message"]["error_path"]) for e in errors} == {
        ("O2", "root > timestamp"), ("O3", "root > currency"), ("O4", "root > grand_total")}
    assert all(e["request_id"] == body["request_id"] and e["record_type"] == "order" for e in errors)

    r = push(http, [{"@type": "contact", "@collection": "sap_b1", "id": "C1"}, product(1, title="")])
    assert r.status_code == 400  # mixed types: refused whole
    assert push(http, [{"@type": "contact", "@collection": "sap_b1", "id": "C1"}]).json()["rejected"] == 1
    assert push(http, [{"@type": "product", "id": "P1", "price": 3}]).json()["rejected"] == 1
    assert push(http, [{"@type": "product", "id": "P1", "is_in_stock": False, "@merge": True}]).json()["rejected"] == 0


def test_phone_numbers_must_be_valid_for_libphonenumber_not_just_e164_shaped(http, emu):
    # Ometria validates phone numbers with Google's libphonenumber: Ofcom's drama mobiles
    # (+44 7700 900xxx) look like E.164 but are not valid numbers; its drama landlines are.
    body = push(http, [contact(1, phone_number="+442079460123"), contact(2, phone_number="+447700900123"),
                       contact(3, phone_number="07700 900123")]).json()
    assert body["accepted"] == 1 and body["rejected"] == 2
    assert {i for _, i in emu.records("contact")} == {"C1"}
    assert {(e["record_id"], e["message"]["error_path"]) for e in emu.errors()} == {
        ("C2", "root > phone_number"), ("C3", "root > phone_number")}


def line(pid, **kw):
    return {"product_id": pid, "quantity": 1, "unit_price": 5.0, **kw}


def test_with_known_products_only_an_order_line_must_name_a_product_ometria_holds():
    # "product_id: must reference an existing Ometria product id": the demo's Ometria checks it.
    with OmetriaEmulator(api_key=KEY, known_products_only=True) as emu, httpx.Client(
            base_url=emu.url + "/", headers={"X-Ometria-Auth": KEY}, timeout=10) as http:
        assert push(http, [product(1), product(2)]).json()["accepted"] == 2
        body = push(http, [
            order(1, lineitems=[line("P1"), line("P2")]),
            order(2, lineitems=[line("P1"), line("LEGACY-7"), line("P9")]),
            order(3),                                       # no lines: nothing to check
            {"@type": "order", "id": "O1", "status": "shipped", "@merge": True},
        ]).json()
        assert body["accepted"] == 3 and body["rejected"] == 1
        assert {i for _, i in emu.records("order")} == {"O1", "O3"}
        assert emu.get("order", "O1")["status"] == "shipped"
        errors = http.get("push/_errors").json()
        assert sorted((e["record_id"], e["message"]["error_path"]) for e in errors) == [
            ("O2", "root > lineitems > 1 > product_id"), ("O2", "root > lineitems > 2 > product_id")]
        assert {e["message"]["error_message"] for e in errors} == {"not a valid value"}
        assert all(e["request_id"] == body["request_id"] for e in errors)
        # once the product exists, the same order goes in
        push(http, [product(9), {"@type": "product", "id": "LEGACY-7", "title": "Old", "price": 1}])
        assert push(http, [order(2, lineitems=[line("P1"), line("LEGACY-7"), line("P9")])]).json()["rejected"] == 0


def test_by_default_orders_need_no_catalogue(http, emu):
    assert push(http, [order(1, lineitems=[line("P404")])]).json()["accepted"] == 1


def test_errors_keep_only_the_100_most_recent_and_can_be_flat(http, emu):
    for start in range(0, 150, 50):
        push(http, [order(i, currency="x") for i in range(start, start + 50)])
    errors = http.get("push/_errors").json()
    assert len(errors) == 100
    assert {e["record_id"] for e in errors} == {f"O{i}" for i in range(50, 150)}
    emu.faults.errors_shape = "flat"
    push(http, [order(999, currency="x")])
    assert http.get("push/_errors").json()[0] == {"error_message": "not a valid value",
                                                  "error_path": "root > currency"}


def test_upsert_replaces_and_merge_merges(http, emu):
    push(http, [product(1, is_in_stock=True, colour="red")])
    push(http, [{"@type": "product", "id": "P1", "is_in_stock": False, "@merge": True}])
    assert emu.get("product", "P1") == {"@type": "product", "id": "P1", "title": "Item 1",
                                         "price": 9.99, "is_in_stock": False, "colour": "red"}
    push(http, [product(1, title="New")])  # no @merge: the record is replaced
    assert emu.get("product", "P1") == {"@type": "product", "id": "P1", "title": "New", "price": 9.99}


def test_contacts_are_keyed_by_collection_and_id(http, emu):
    push(http, [contact(1), contact(1, **{"@collection": "web", "email": "web@example.com"})])
    assert http.get("contacts/sap_b1/C1").json()["email"] == "c1@example.com"
    assert http.get("contacts/web/C1").json()["email"] == "web@example.com"
    assert http.get("contacts").json() == ["sap_b1", "web"]
    assert http.get("contacts/sap_b1/C2").status_code == 404


def test_read_back_lists_page_with_limit_and_offset(http):
    for start in range(0, 300, 100):
        push(http, [order(i) for i in range(start, start + 100)])
    push(http, [product(1, is_active=False), product(2)])
    page = http.get("orders", params={"limit": 250, "offset": 0}).json()
    rest = http.get("orders", params={"limit": 250, "offset": 250}).json()
    assert len(page) == 250 and len(rest) == 50
    assert {o["id"] for o in page + rest} == {f"O{i}" for i in range(300)}
    assert http.get("orders", params={"limit": 251}).status_code == 400
    assert [p["id"] for p in http.get("products", params={"active": "true"}).json()] == ["P2"]
    push(http, [order(5, grand_total=1)])
    assert http.get("orders", params={"limit": 1, "offset": 299,
                                      "orderby": "timestamp_update"}).json()[0]["id"] == "O5"


def _read_all(http, path, limit, **params):
    out, offset = [], 0
    while page := http.get(path, params={"limit": limit, "offset": offset, **params}).json():
        out += page
        offset += len(page)
    return out


def test_paging_through_a_listing_returns_each_record_once_in_order_even_with_writes_between(http):
    for start in range(0, 600, 100):
        push(http, [order(i) for i in range(start, start + 100)])
    push(http, [product(i, is_active=i % 3 != 0) for i in range(90)])
    assert [o["id"] for o in _read_all(http, "orders", 70)] == [f"O{i}" for i in range(600)]
    assert [p["id"] for p in _read_all(http, "products", 7, active="false")] == [f"P{i}" for i in range(0, 90, 3)]

    # a write between two pages: offsets are positions in the listing as it now stands
    first = http.get("orders", params={"limit": 100, "offset": 0, "orderby": "timestamp_update"}).json()
    assert first[0]["id"] == "O0"
    push(http, [order(0, grand_total=1), order(600)])  # O0 moves to the end, O600 is new
    second = http.get("orders", params={"limit": 100, "offset": 100, "orderby": "timestamp_update"}).json()
    assert [o["id"] for o in second] == [f"O{i}" for i in range(101, 201)]
    updated = _read_all(http, "orders", 250, orderby="timestamp_update")
    assert [o["id"] for o in updated[-2:]] == ["O0", "O600"] and len(updated) == 601
    # random access still works
    assert http.get("orders", params={"limit": 2, "offset": 333}).json()[1]["id"] == "O334"


def test_a_page_costs_the_same_in_a_listing_ten_times_longer(emu, http):
    """Read-back of a large account must not be quadratic: each page of a listing read from
    start to end costs about a page, whatever the listing's length (counted in SQLite VM
    steps, not time)."""
    steps = {"n": 0}

    def count():
        steps["n"] += 1
        return 0

    def page_costs() -> list[int]:
        costs, offset = [], 0
        emu._store.db.set_progress_handler(count, 100)
        try:
            while True:
                steps["n"] = 0
                page = http.get("orders", params={"limit": 250, "offset": offset}).json()
                if not page:
                    return costs
                costs.append(steps["n"])
                offset += len(page)
        finally:
            emu._store.db.set_progress_handler(None, 0)

    for start in range(0, 500, 100):
        push(http, [order(i) for i in range(start, start + 100)])
    short = page_costs()
    for start in range(500, 5000, 100):
        push(http, [order(i) for i in range(start, start + 100)])
    long = page_costs()
    assert len(short) == 2 and len(long) == 20
    # sorting or skipping the whole listing per page would cost ~10x here
    assert max(long) <= 2 * max(short) + 5, (short, long)


def test_fault_switches(http, emu):
    emu.faults.throttle(2, retry_after=7)
    r = push(http, [order(1)])
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert push(http, [order(1)]).status_code == 429
    assert push(http, [order(1)]).status_code == 202

    emu.faults.fail_next(1, status=502)
    assert push(http, [order(2)]).status_code == 502
    assert push(http, [order(2)]).status_code == 202

    emu.faults.queue_remaining = 120
    assert push(http, [order(3)]).headers["X-QueueSize-Remaining"] == "120"

    emu.faults.reject(ids=["O4"], predicate=lambda r: ("no", "root > grand_total") if r["grand_total"] > 100 else None)
    body = push(http, [order(4), order(5, grand_total=500), order(6)]).json()
    assert body["rejected"] == 2
    assert {e["record_id"] for e in http.get("push/_errors").json()} == {"O4", "O5"}

    emu.faults.drop_next(1)
    with pytest.raises(httpx.TransportError):
        push(http, [order(7)])
    assert push(http, [order(7)]).status_code == 202

    emu.faults.max_rate_per_s = 2
    statuses = [push(http, [order(8)]).status_code for _ in range(4)]
    assert statuses.count(429) >= 1 and statuses[0] == 202
    assert emu.stats.statuses[429] >= 3


def test_state_survives_a_restart_with_a_store(tmp_path):
    store = tmp_path / "ometria.sqlite"
    with OmetriaEmulator(api_key=KEY, store_path=store) as first:
        httpx.post(first.url + "/push", json=[order(1)], headers={"X-Ometria-Auth": KEY})
        httpx.post(first.url + "/push", json=[order(2, currency="x")], headers={"X-Ometria-Auth": KEY})
    with OmetriaEmulator(api_key=KEY, store_path=store) as second:
        assert httpx.get(second.url + "/orders/O1", headers={"X-Ometria-Auth": KEY}).json()["id"] == "O1"
        assert len(httpx.get(second.url + "/push/_errors", headers={"X-Ometria-Auth": KEY}).json()) == 1


def test_cli_runs_the_emulator_in_another_process_with_remote_fault_control(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sap_ometria_assets.emulators.ometria.server", "--port", "0",
         "--store", str(tmp_path / "o.sqlite"), "--api-key", KEY],
        stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("OMETRIA_API_URL=http://127.0.0.1:")
        url = line.split("=", 1)[1]
        root = url.rsplit("/v2", 1)[0]
        h = {"X-Ometria-Auth": KEY}
        assert httpx.post(root + "/_emulator/faults", json={"fail_next": 1}, headers=h).status_code == 200
        assert httpx.post(url + "/push", json=[order(1)], headers=h).status_code == 503
        assert httpx.post(url + "/push", json=[order(1)], headers=h).status_code == 202
        stats = httpx.get(root + "/_emulator/stats", headers=h).json()
        assert stats["push_requests"] == 2 and stats["records"] == {"order": 1}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_slow_answers(http, emu):
    emu.faults.delay_s = 0.3
    with pytest.raises(httpx.ReadTimeout):
        http.post("push", content=json.dumps([order(1)]), timeout=0.05)
    time.sleep(0.3)  # let the slow handler finish before the emulator stops
