"""OmetriaClient against scripted HTTP answers (httpx.MockTransport) on a fake clock: batching
rules, the client-side rate limit, retries, authentication failures and key hygiene."""

from __future__ import annotations

import json
import logging
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from pydantic import SecretStr

from sap_ometria_assets.lib.ometria.errors import (
    OmetriaAuthError,
    OmetriaBatchError,
    OmetriaRequestError,
    OmetriaUnavailableError,
)
from sap_ometria_assets.lib.ometria.client import OmetriaClient
from sap_ometria_assets.lib.ometria.answers import PushError, parse_push_errors, parse_retry_after
from sap_ometria_assets.lib.ometria.ratelimit import RateLimiter

KEY = "sk-live-7f3c9e1b-not-for-logs"
BASE = "https://api.ometria.test/v2"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(seconds, 0.0)


def ok(request: httpx.Request, accepted: int | None = None, **headers: str) -> httpx.Response:
    n = len(json.loads(request.content)) if request.method == "POST" else 0
    return httpx.Response(202, json={"status": "OK", "request_id": f"req-{id(request)}",
                                     "accepted": n if accepted is None else accepted,
                                     "rejected": 0 if accepted is None else n - accepted},
                          headers=headers)


def make(handler, clock: FakeClock | None = None, **kw) -> tuple[OmetriaClient, FakeClock, list]:
    clock = clock or FakeClock()
    seen: list[tuple[float, httpx.Request]] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append((clock(), request))
        return handler(request)

    kw.setdefault("rate_limit_per_s", 4.0)
    client = OmetriaClient(BASE, SecretStr(KEY), clock=clock, sleep=clock.sleep,
                           transport=httpx.MockTransport(record), **kw)
    return client, clock, seen


def rec(kind: str, i: int) -> str:
    return json.dumps({"@type": kind, "id": f"{kind[0].upper()}{i}"}, separators=(",", ":"))


# ---------------------------------------------------------------------------------------
def test_push_sends_the_records_verbatim_as_one_json_array_with_the_key_header():
    client, _, seen = make(ok)
    records = [rec("order", 1), rec("order", 2).encode(), '{"@type": "order", "id": "O3"}']
    response = client.push(records, "order")

    (_, request), = seen
    assert request.method == "POST" and str(request.url) == f"{BASE}/push"
    assert request.headers["X-Ometria-Auth"] == KEY
    assert request.headers["Content-Type"] == "application/json"
    assert request.content == (b'[{"@type":"order","id":"O1"},{"@type":"order","id":"O2"},'
                               b'{"@type": "order", "id": "O3"}]')
    assert response.accepted == 3 and response.rejected == 0 and response.record_count == 3
    assert response.bytes_sent == len(request.content) and response.attempts == 1


def test_push_refuses_batches_ometria_would_refuse_without_calling_it():
    """The batch's shape is the client's to check; the records were validated where they were
    built (one JSON object of the batch's type each: test_ometria_models, test_push)."""
    client, _, seen = make(ok)
    with pytest.raises(OmetriaBatchError, match="at most 100"):
        client.push([rec("order", i) for i in range(101)], "order")
    with pytest.raises(OmetriaBatchError, match="at least one"):
        client.push([], "contact")
    with pytest.raises(OmetriaBatchError, match="unknown record type"):
        client.push([rec("order", 1)], "invoice")
    assert seen == []
    client.push([rec("order", i) for i in range(100)], "order")
    assert len(seen) == 1


@pytest.mark.parametrize("rate", [4.0, 8.0])
def test_rate_limit_holds_over_many_requests_on_a_fake_clock(rate):
    rng = random.Random(7)
    clock = FakeClock()

    def slow_ok(request):
        clock.t += rng.uniform(0.0, 0.2)  # the server takes a while to answer
        return ok(request)

    client, _, seen = make(slow_ok, clock=clock, rate_limit_per_s=rate)
    for i in range(120):
        client.push([rec("contact", i)], "contact")
    times = [t for t, _ in seen]
    per_window = int(rate)
    # No one-second window (half-open) ever holds more than `rate` requests ...
    assert all(times[i + per_window] - times[i] >= 1.0 - 1e-9 for i in range(len(times) - per_window))
    # ... and the limiter does not slow down more than it must.
    assert times[-1] - times[0] <= (len(times) - 1) / rate + 0.2 * len(times)


def test_rate_limiter_burst_allows_a_burst_then_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(2.0, burst=3, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(9):
        limiter.acquire()
        starts.append(clock.t)
    assert starts[:3] == [1000.0] * 3
    assert starts[-1] - starts[0] == pytest.approx(3.0)  # 6 more at 2/s


def test_429_waits_the_retry_after_seconds_then_succeeds():
    answers = iter([429, 429, 202])

    def handler(request):
        status = next(answers)
        if status == 429:
            return httpx.Response(429, headers={"Retry-After": "3"}, json={"status": "ERROR"})
        return ok(request)

    client, clock, seen = make(handler)
    response = client.push([rec("order", 1)], "order")
    assert response.attempts == 3 and len(seen) == 3
    assert clock.sleeps.count(3.0) == 2
    assert seen[2][0] - seen[0][0] >= 6.0


def test_429_with_an_http_date_retry_after():
    def handler(request):
        if len(handler.calls) == 0:
            handler.calls.append(1)
            when = datetime.now(UTC) + timedelta(seconds=20)
            return httpx.Response(429, headers={"Retry-After": format_datetime(when, usegmt=True)})
        return ok(request)

    handler.calls = []
    client, clock, _ = make(handler)
    client.push([rec("order", 1)], "order")
    assert any(15.0 <= s <= 20.0 for s in clock.sleeps)


def test_429_asking_for_a_very_long_wait_stops_instead_of_hanging_the_run():
    client, _, seen = make(lambda r: httpx.Response(429, headers={"Retry-After": "7200"}))
    with pytest.raises(OmetriaUnavailableError, match="7200s"):
        client.push([rec("order", 1)], "order")
    assert len(seen) == 1


def test_low_queue_headroom_slows_the_next_requests_down():
    answers = iter(["0", "40000", "40000"])
    client, _, seen = make(lambda r: ok(r, **{"X-QueueSize-Limit": "50000",
                                              "X-QueueSize-Remaining": next(answers)}))
    for i in range(3):
        client.push([rec("order", i)], "order")
    t = [s for s, _ in seen]
    assert t[1] - t[0] >= 10.0           # empty queue: the longest pause
    assert t[2] - t[1] == pytest.approx(0.25)  # healthy queue: just the rate limit
    assert client.last_queue_remaining == 40000


@pytest.mark.parametrize("failure", ["503", "timeout", "connect"])
def test_server_errors_timeouts_and_dropped_connections_are_retried_with_bounded_backoff(failure):
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) <= 2:
            if failure == "503":
                return httpx.Response(503, text="busy")
            if failure == "timeout":
                raise httpx.ReadTimeout("slow", request=request)
            raise httpx.ConnectError("refused", request=request)
        return ok(request)

    client, clock, _ = make(handler, backoff_initial_s=0.5, backoff_max_s=4.0)
    response = client.push([rec("product", 1)], "product")
    assert response.attempts == 3
    backoffs = [s for s in clock.sleeps if s > 0.3]
    assert len(backoffs) == 2 and all(s <= 4.0 + 0.5 for s in backoffs)


def test_retries_are_bounded_then_the_failure_is_explicit():
    client, _, seen = make(lambda r: httpx.Response(502), max_retries=3)
    with pytest.raises(OmetriaUnavailableError) as info:
        client.push([rec("order", 1)], "order")
    assert len(seen) == 4
    assert info.value.attempts == 4 and info.value.http_status == 502
    assert "the next run resumes" in str(info.value)


def test_403_stops_at_once_with_a_clear_message_and_no_key():
    client, _, seen = make(lambda r: httpx.Response(403, json={"message": f"bad key {KEY}"}))
    with pytest.raises(OmetriaAuthError) as info:
        client.push([rec("contact", 1)], "contact")
    assert len(seen) == 1
    assert "OMETRIA_API_KEY" in str(info.value) and "403" in str(info.value)
    assert KEY not in str(info.value)


def test_other_4xx_raise_with_ometrias_message_and_are_not_retried():
    client, _, seen = make(lambda r: httpx.Response(
        400, json={"status": "ERROR", "message": "Payload invalid: Record is too large"}))
    with pytest.raises(OmetriaRequestError, match="Record is too large") as info:
        client.push([rec("order", 1)], "order")
    assert info.value.http_status == 400 and len(seen) == 1


def test_the_key_never_shows_in_logs_reprs_or_errors(caplog):
    caplog.set_level(logging.DEBUG)
    answers = iter([503, 429, 202, 400])

    def handler(request):
        status = next(answers)
        if status == 202:
            return ok(request)
        return httpx.Response(status, headers={"Retry-After": "0"}, text=f"echo {KEY}")

    client, _, _ = make(handler)
    client.push([rec("order", 1)], "order")
    with pytest.raises(OmetriaRequestError) as info:
        client.push([rec("order", 2)], "order")
    assert KEY not in caplog.text
    assert KEY not in repr(client) and KEY not in str(info.value)
    assert "echo **********" in str(info.value)


def test_a_missing_key_is_refused_before_any_request():
    with pytest.raises(OmetriaAuthError, match="OMETRIA_API_KEY"):
        OmetriaClient(BASE, SecretStr(""))
    with pytest.raises(TypeError):
        OmetriaClient(BASE, KEY)  # type: ignore[arg-type]


def test_parse_retry_after_forms():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("5", now=now) == 5.0
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None and parse_retry_after(None) is None


def test_errors_are_parsed_in_both_documented_shapes():
    flat = [{"error_message": "not a valid value", "error_path": "root > lastname"}]
    wrapper = [{
        "request_id": "r-1", "record_type": "contact", "record_id": "C1",
        "record": {"@type": "contact", "id": "C1"}, "timestamp": "2024-05-01T12:00:00Z",
        "message": {"error_message": "not a valid value", "error_path": "root > email"},
    }, {
        "request_id": "r-2", "record": {"@type": "order", "id": "O9"},
        "message": [{"error_message": "bad", "error_path": "root > currency"},
                    {"error_message": "bad", "error_path": "root > timestamp"}],
    }, "something unexpected"]
    assert parse_push_errors(flat) == [PushError(
        error_message="not a valid value", error_path="root > lastname",
        raw='{"error_message":"not a valid value","error_path":"root > lastname"}')]
    parsed = parse_push_errors({"errors": wrapper})
    assert [(e.request_id, e.record_type, e.record_id, e.error_path) for e in parsed] == [
        ("r-1", "contact", "C1", "root > email"),
        ("r-2", "order", "O9", "root > currency"),
        ("r-2", "order", "O9", "root > timestamp"),
        (None, None, None, None),
    ]
    assert parsed[-1].error_message == "something unexpected"


def test_fetch_errors_and_read_back_endpoints():
    orders = [{"@type": "order", "id": f"O{i}"} for i in range(520)]

    def handler(request):
        path = request.url.path
        if path.endswith("/push/_errors"):
            return httpx.Response(200, json=[{"error_message": "x", "error_path": "root > id"}])
        if path.endswith("/orders"):
            limit, offset = int(request.url.params["limit"]), int(request.url.params["offset"])
            return httpx.Response(200, json=orders[offset:offset + limit])
        if path.endswith("/contacts/sap_b1/C%2F1") or path.endswith("/contacts/sap_b1/C/1"):
            return httpx.Response(200, json={"@type": "contact", "id": "C/1"})
        return httpx.Response(404, json={"status": "ERROR", "message": "Not found"})

    client, _, seen = make(handler, rate_limit_per_s=100)
    assert client.fetch_errors()[0].error_path == "root > id"
    assert client.get_contact("sap_b1", "C/1") == {"@type": "contact", "id": "C/1"}
    assert client.get_order("missing") is None and client.get_product("missing") is None
    before = len(seen)
    assert [o["id"] for o in client.iter_orders()] == [o["id"] for o in orders]
    assert len(seen) - before == 3  # 250 + 250 + 20
    with pytest.raises(ValueError, match="250"):
        list(client.iter_products(limit=251))


# ---------------------------------------------------------------------------------------
@pytest.fixture
def settings_env(monkeypatch, tmp_path):
    from sap_ometria_assets.lib.config.settings import get_settings

    monkeypatch.setenv("SAP_OMETRIA_DEMO_DIR", str(tmp_path / "demo"))
    for name in ("OMETRIA_API_URL", "OMETRIA_API_KEY", "OMETRIA_DRY_RUN", "OMETRIA_RATE_LIMIT_PER_S"):
        monkeypatch.delenv(name, raising=False)

    def apply(**env: str | None) -> None:
        for name, value in env.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        get_settings(refresh=True)

    yield apply
    from sap_ometria_assets.emulators.ometria.embedded import stop_embedded_ometria

    stop_embedded_ometria()
    monkeypatch.undo()
    get_settings(refresh=True)


def test_resource_chooses_real_embedded_or_dry_run_from_the_environment(settings_env):
    from sap_ometria_assets.defs.resources import OmetriaResource

    settings_env(OMETRIA_API_URL=BASE, OMETRIA_API_KEY=KEY, OMETRIA_RATE_LIMIT_PER_S="8")
    with OmetriaResource().open_client() as client:
        assert client.base_url == BASE and client.limiter.interval == pytest.approx(1 / 8)
    with OmetriaResource(dry_run=True).open_client() as client:
        assert client is None  # a run can be switched to dry run from the launchpad

    settings_env(OMETRIA_DRY_RUN="1")
    assert OmetriaResource().is_dry_run()
    with OmetriaResource().open_client() as client:
        assert client is None

    settings_env(OMETRIA_DRY_RUN="0", OMETRIA_API_KEY="")
    assert OmetriaResource().is_dry_run()  # a real URL but no key: never send

    settings_env(OMETRIA_API_URL="")
    resource = OmetriaResource()
    assert not resource.is_dry_run()
    with resource.open_client() as client:  # the demo: the embedded emulator over HTTP
        assert client.base_url.startswith("http://127.0.0.1:")
        assert client.limiter.interval == pytest.approx(1 / 8)  # the configured rate still holds
        assert client.push([rec("product", 1).replace('"id"', '"title":"T","price":1,"id"')],
                           "product").accepted == 1
        assert resource.target(client).describe().startswith("embedded emulator http://127.0.0.1:")
    settings_env(OMETRIA_RATE_LIMIT_PER_S=None)
    with OmetriaResource().open_client() as client:
        assert client.limiter.interval < 1 / 8  # unset: the local demo need not crawl at 4/s
