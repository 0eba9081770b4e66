"""Client for Ometria's Data API push endpoint, and the `ometria` Dagster resource.

Protocol facts (docs/reference `ometria_data_api.md`): `POST {base}/push` takes a JSON array of
1-100 records of one `@type`, each at most 60 KB, authenticated by `X-Ometria-Auth`. Any 2xx
means "received and authenticated", not "valid": field validation happens later and shows up
in `GET {base}/push/_errors` (only the 100 most recent, account wide). 403 = bad key, 429 =
rate limited or the asynchronous queue is full (`Retry-After`, `X-QueueSize-Limit`,
`X-QueueSize-Remaining`).

What the client does about it:
- a client-side rate limit (default 4 requests/s, the lower of the two documented figures),
  so a backfill is paced before Ometria has to throttle it;
- 429 honours `Retry-After` (seconds or an HTTP date); a low `X-QueueSize-Remaining` slows the
  next requests down in proportion, so we never run the 50k-record queue into the ground;
- 5xx, timeouts and dropped connections are retried with bounded exponential backoff. A retried
  POST is safe: Ometria upserts by type + id, so a batch received twice changes nothing;
- 403 raises `OmetriaAuthError` at once (retrying a bad key only burns the rate budget);
- other 4xx raise `OmetriaRequestError` with Ometria's own message;
- the API key lives in a `SecretStr`, is only unwrapped into the request header, and is
  scrubbed from every message we build from a response.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import dagster as dg
import httpx
import orjson
from pydantic import Field, SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from sap_ometria_assets.lib.config import secrets as secret_scrub

log = secret_scrub.scrubbed_logger(__name__)

MAX_RECORDS_PER_REQUEST = 100
MAX_LIST_LIMIT = 250
# Read-back bound: pages of one listing before we stop and call the read-back unavailable
# (250 records a page: 5 million records). An API that ignores `offset` is caught sooner, by
# its repeated pages.
MAX_READ_BACK_PAGES = 20_000
EMBEDDED_RATE_LIMIT_PER_S = 50.0
RECORD_TYPES = ("contact", "order", "product", "custom_event")

Clock = Callable[[], float]
Sleep = Callable[[float], None]

# Backoff base and sleep of the clients the Dagster resource builds. Module attributes so the
# fault-injection tests can shorten the backoff and record the waits (a 429's Retry-After)
# without sleeping; None = time.sleep.
RETRY_BACKOFF_S = 0.5
SLEEP: Sleep | None = None


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------
class OmetriaError(RuntimeError):
    """A call to Ometria that did not succeed. Carries what the audit trail needs."""

    def __init__(self, message: str, *, http_status: int | None = None, attempts: int = 1,
                 duration_ms: float | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.attempts = attempts
        self.duration_ms = duration_ms


class OmetriaAuthError(OmetriaError):
    """403: the API key is missing, wrong or revoked. Never retried; stops the run."""


class OmetriaRequestError(OmetriaError):
    """A 4xx other than 403/429: Ometria refused this request as it stands (not retried)."""


class OmetriaUnavailableError(OmetriaError):
    """Retries exhausted (5xx, timeouts, connection errors, 429) or a Retry-After too long to wait."""


class OmetriaUnconfirmedError(OmetriaError):
    """A 2xx whose body is not Ometria's push answer (`{"status": "OK", "request_id": ...,
    "accepted": n, "rejected": m}`): an HTML page of a proxy or captive portal, an empty body, a
    wrong URL. We cannot tell whether Ometria received the batch, so it is not counted as
    delivered: recorded as unconfirmed and sent again."""

    def __init__(self, message: str, *, reason: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.reason = reason


class OmetriaPagingError(OmetriaError):
    """A read-back listing that does not advance (the API ignores `offset` and serves a page
    already seen) or passes the page ceiling: stopped instead of looping."""


class OmetriaBatchError(ValueError):
    """The caller built a batch the API would refuse (size, mixed types): a bug upstream."""


class _Retryable(Exception):
    """Internal: an attempt that may succeed if repeated."""

    def __init__(self, reason: str, *, http_status: int | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status
        self.retry_after_s = retry_after_s


# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PushResponse:
    """Ometria's answer to one accepted push (any 2xx)."""

    request_id: str
    http_status: int
    accepted: int
    rejected: int
    record_type: str
    record_count: int
    bytes_sent: int
    duration_ms: float
    attempts: int
    status: str = "OK"
    queue_limit: int | None = None
    queue_remaining: int | None = None
    # True when Ometria's body carried no request id and we made one up for the audit trail.
    request_id_is_local: bool = False


@dataclass(frozen=True)
class PushError:
    """One entry of `GET /push/_errors`, normalised from either documented shape."""

    error_message: str
    error_path: str | None = None
    request_id: str | None = None
    record_type: str | None = None
    record_id: str | None = None
    timestamp: str | None = None
    raw: str = ""


# --------------------------------------------------------------------------------------
# Rate limiting
# --------------------------------------------------------------------------------------
class RateLimiter:
    """Token bucket (as a virtual-schedule: each request reserves the next free slot).

    `burst=1` spaces requests evenly, `1/rate` seconds apart, so no one-second window ever holds
    more than `rate` requests: Ometria counts requests per second and a burst at a window's edge
    would otherwise double it. `hold(seconds)` pushes every later request back (queue
    pressure)."""

    def __init__(self, rate_per_s: float, *, burst: int = 1, clock: Clock = time.monotonic,
                 sleep: Sleep = time.sleep) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.interval = 1.0 / rate_per_s
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tat = -math.inf  # theoretical arrival time of the next request
        self._hold_until = -math.inf
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until a request may go; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            start = max(now, self._tat - (self.burst - 1) * self.interval, self._hold_until)
            self._tat = max(self._tat, start) + self.interval
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def hold(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self._hold_until = max(self._hold_until, self._clock() + seconds)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def _as_bytes(record: bytes | str) -> bytes:
    return record if isinstance(record, bytes) else record.encode("utf-8")


def build_body(records: Sequence[bytes | str]) -> bytes:
    """The request body for pre-serialised records: a JSON array, records copied byte for byte.

    The dry-run outbox and the real push share this function, so the outbox holds exactly what
    would have been sent. Raw line breaks can only be insignificant whitespace in valid JSON
    (inside strings they must be escaped), so they are dropped to keep one request per line."""
    body = b"[" + b",".join(_as_bytes(r) for r in records) + b"]"
    if b"\n" in body or b"\r" in body:
        body = body.replace(b"\r", b"").replace(b"\n", b"")
    return body


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date); None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    raw = headers.get(name)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


_PUSH_STATUSES = ("OK", "SUCCESS", "ERROR")


def push_answer_problem(response: httpx.Response, record_count: int) -> str | None:
    """Why a 2xx answer to `POST /push` is not Ometria's documented answer, or None if it is.

    Ometria's contract (ometria_data_api.md 1.3): a JSON object `{"status": "OK", "request_id":
    "<uuid>", "accepted": n, "rejected": m}`. We require a JSON object with a `status` string;
    `accepted`/`rejected`, when present, whole numbers from 0 to the batch size. A missing
    `request_id` is tolerated (the audit row gets a local one). Anything else (an HTML page, an
    empty body, a JSON array, `"accepted": "yes"`) does not tell us Ometria took the batch."""
    body = response.content
    kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
    if not body.strip():
        return f"empty body ({kind})"
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        start = " ".join(body[:80].decode("utf-8", "replace").split())
        return f"the body is not JSON ({kind}, {len(body)} bytes, starting {start!r})"
    if not isinstance(data, dict):
        return f"the body is a JSON {type(data).__name__}, not Ometria's answer object"
    status = data.get("status")
    if not isinstance(status, str) or status.upper() not in _PUSH_STATUSES:
        return f"the body has no push status (status={status!r})"
    for name in ("accepted", "rejected"):
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) \
                or not 0 <= value <= record_count:
            return f"{name}={value!r} is not a count of the {record_count} records sent"
    return None


def parse_push_errors(payload: Any) -> list[PushError]:
    """Normalise `GET /push/_errors`.

    Accepts the documented flat entries `{"error_message", "error_path"}`, the richer wrapper
    seen in public code `{"request_id","record_type","record_id","record","timestamp",
    "message": {"error_message","error_path"}}` (where `message` may also be a list or a string),
    and a `{"errors": [...]}`/`{"data": [...]}` envelope. Anything unrecognised is kept with its
    raw text rather than dropped."""
    if isinstance(payload, dict):
        for key in ("errors", "data", "results"):
            if isinstance(payload.get(key), list):
                payload = payload[key]
                break
        else:
            payload = [payload]
    if not isinstance(payload, list):
        payload = [payload]
    out: list[PushError] = []
    for item in payload:
        raw = orjson.dumps(item, option=orjson.OPT_SORT_KEYS).decode()
        if not isinstance(item, dict):
            out.append(PushError(error_message=str(item), raw=raw))
            continue
        record = item.get("record") if isinstance(item.get("record"), dict) else {}
        base = {
            "request_id": _str_or_none(item.get("request_id")),
            "record_type": _str_or_none(item.get("record_type") or record.get("@type")),
            "record_id": _str_or_none(
                item["record_id"] if item.get("record_id") is not None else record.get("id")),
            "timestamp": _str_or_none(item.get("timestamp")),
        }
        message = item.get("message")
        messages: list[Any]
        if "error_message" in item or "error_path" in item:
            messages = [{"error_message": item.get("error_message"), "error_path": item.get("error_path")}]
        elif isinstance(message, list):
            messages = message or [None]
        else:
            messages = [message]
        for msg in messages:
            if isinstance(msg, dict):
                text = _str_or_none(msg.get("error_message")) or _str_or_none(msg.get("message")) or raw
                path = _str_or_none(msg.get("error_path"))
            else:
                text, path = (_str_or_none(msg) or raw), None
            out.append(PushError(error_message=text, error_path=path, raw=raw, **base))
    return out


# --------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------
class OmetriaClient:
    """One Ometria account. Thread-safe for the rate limiter; use as a context manager."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        rate_limit_per_s: float = 4.0,
        timeout_s: float = 30.0,
        max_retries: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 300.0,
        queue_low_water: int = 10_000,
        queue_pause_max_s: float = 10.0,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(api_key, SecretStr):
            raise TypeError("api_key must be a pydantic SecretStr (keeps it out of logs and reprs)")
        if not api_key.get_secret_value().strip():
            raise OmetriaAuthError(
                "No Ometria API key: set OMETRIA_API_KEY (or OMETRIA_DRY_RUN=1 to review pushes "
                "in the outbox without sending)."
            )
        secret_scrub.register(api_key)
        # a key from a secret file ends in a line break; one that cannot travel in a header
        # fails here, naming the variable, not as a UnicodeEncodeError inside httpx
        api_key = SecretStr(api_key.get_secret_value().strip())
        key = api_key.get_secret_value()
        if not key.isascii() or any(ord(c) < 32 or ord(c) == 127 for c in key):
            raise OmetriaAuthError(
                "OMETRIA_API_KEY holds characters an HTTP header cannot carry (non-ASCII, spaces "
                "or control characters); copy the key again from Ometria's Settings > API keys.")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.max_retries = max_retries
        self.max_retry_after_s = max_retry_after_s
        self.queue_low_water = queue_low_water
        self.queue_pause_max_s = queue_pause_max_s
        self._clock = clock or time.monotonic
        self._sleep = sleep or time.sleep
        self._backoff = wait_exponential_jitter(multiplier=backoff_initial_s, max=backoff_max_s,
                                                jitter=backoff_initial_s)
        self.limiter = RateLimiter(rate_limit_per_s, clock=self._clock, sleep=self._sleep)
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "sap-ometria-assets"},
        )
        self.last_queue_limit: int | None = None
        self.last_queue_remaining: int | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> OmetriaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"OmetriaClient(base_url={self.base_url!r}, api_key=**********)"

    # -- plumbing ----------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        return secret_scrub.scrub(text, self._api_key) or text

    def _message_of(self, response: httpx.Response) -> str:
        try:
            data = response.json()
        except ValueError:
            text = response.text.strip()
            return self._scrub(text[:500]) if text else response.reason_phrase
        if isinstance(data, dict):
            for key in ("message", "error", "detail", "error_message", "status"):
                if data.get(key):
                    return self._scrub(str(data[key])[:500])
        return self._scrub(str(data)[:500])

    def _note_queue(self, response: httpx.Response) -> None:
        limit = _int_header(response.headers, "X-QueueSize-Limit")
        remaining = _int_header(response.headers, "X-QueueSize-Remaining")
        if limit is not None:
            self.last_queue_limit = limit
        if remaining is None:
            return
        self.last_queue_remaining = remaining
        low_water = self.queue_low_water
        if limit:
            low_water = min(low_water, max(1, limit // 5))
        if remaining < low_water:
            # The fuller Ometria's validation queue, the longer we let it drain.
            pause = self.queue_pause_max_s * (1.0 - max(remaining, 0) / low_water)
            log.info("Ometria queue headroom low (%s of %s records left); pausing %.1fs",
                     remaining, limit if limit is not None else "?", pause)
            self.limiter.hold(pause)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after_s is not None:
            return exc.retry_after_s
        return self._backoff(state)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("Ometria %s; retrying in %.1fs (attempt %d of %d)",
                    exc.reason if isinstance(exc, _Retryable) else exc, wait,
                    state.attempt_number + 1, self.max_retries + 1)

    def _attempt(self, method: str, path: str, *, content: bytes | None,
                 params: dict[str, Any] | None) -> httpx.Response:
        self.limiter.acquire()
        headers = {"X-Ometria-Auth": self._api_key.get_secret_value()}
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(method, path, content=content, params=params,
                                          headers=headers)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__}: {self._scrub(str(exc))})") from None
        self._note_queue(response)
        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None and retry_after > self.max_retry_after_s:
                raise OmetriaUnavailableError(
                    f"Ometria is throttling (429) and asked us to wait {retry_after:.0f}s, longer "
                    f"than the {self.max_retry_after_s:.0f}s we wait inside a run. Everything "
                    "acknowledged so far is kept; the next run resumes from there.",
                    http_status=429,
                )
            raise _Retryable("throttled (429)", http_status=429, retry_after_s=retry_after)
        if status >= 500:
            raise _Retryable(f"server error {status}", http_status=status)
        return response

    def _send(self, method: str, path: str, *, content: bytes | None = None,
              params: dict[str, Any] | None = None) -> tuple[httpx.Response, int, float]:
        """One logical call with retries; returns (response, attempts, duration_ms)."""
        started = self._clock()
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            retry=retry_if_exception_type(_Retryable),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        attempts = 0
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    response = self._attempt(method, path, content=content, params=params)
        except _Retryable as exc:
            duration = (self._clock() - started) * 1000
            raise OmetriaUnavailableError(
                f"Ometria {method} {self.base_url}/{path} failed after {attempts} attempts: "
                f"{exc.reason}. Everything acknowledged before this is kept; the next run resumes.",
                http_status=exc.http_status, attempts=attempts, duration_ms=duration,
            ) from None
        except OmetriaError as exc:
            exc.attempts = attempts
            exc.duration_ms = (self._clock() - started) * 1000
            raise
        duration = (self._clock() - started) * 1000
        if response.status_code in (401, 403):
            raise OmetriaAuthError(
                f"Ometria refused the API key (HTTP {response.status_code} on {method} "
                f"{self.base_url}/{path}). "
                "Check OMETRIA_API_KEY is a current push key of this account; nothing is sent "
                "until it is fixed, and everything acknowledged before is kept.",
                http_status=response.status_code, attempts=attempts, duration_ms=duration,
            )
        return response, attempts, duration

    # -- push --------------------------------------------------------------------------
    def push(self, records: Sequence[bytes | str], record_type: str) -> PushResponse:
        """Send one batch (1-100 pre-serialised records of `record_type`)."""
        if not records:
            raise OmetriaBatchError("a push needs at least one record")
        if len(records) > MAX_RECORDS_PER_REQUEST:
            raise OmetriaBatchError(
                f"{len(records)} records in one push; Ometria takes at most {MAX_RECORDS_PER_REQUEST}")
        if record_type not in RECORD_TYPES:
            raise OmetriaBatchError(f"unknown record type {record_type!r}")
        encoded = [_as_bytes(r) for r in records]
        for rec in encoded:
            try:
                parsed = orjson.loads(rec)
            except orjson.JSONDecodeError as exc:
                raise OmetriaBatchError(f"a record is not valid JSON: {exc}") from None
            if not isinstance(parsed, dict) or parsed.get("@type") != record_type:
                found = parsed.get("@type") if isinstance(parsed, dict) else type(parsed).__name__
                raise OmetriaBatchError(
                    f"one @type per push: batch is {record_type!r} but a record is {found!r}")
        body = build_body(encoded)
        response, attempts, duration = self._send("POST", "push", content=body)
        if not response.is_success:
            raise OmetriaRequestError(
                f"Ometria refused a push of {len(encoded)} {record_type} records "
                f"(HTTP {response.status_code}): {self._message_of(response)}",
                http_status=response.status_code, attempts=attempts, duration_ms=duration,
            )
        unconfirmed = push_answer_problem(response, len(encoded))
        if unconfirmed is not None:
            raise OmetriaUnconfirmedError(
                f"Ometria's answer to a push of {len(encoded)} {record_type} records (HTTP "
                f"{response.status_code}) does not confirm it: {self._scrub(unconfirmed)}. The "
                "records are not counted as delivered and are sent again on the next run; check "
                "OMETRIA_API_URL points at Ometria's API (not a proxy, login or maintenance page).",
                reason=self._scrub(unconfirmed), http_status=response.status_code,
                attempts=attempts, duration_ms=duration,
            )
        data = response.json()
        if str(data.get("status")).upper() not in ("OK", "SUCCESS"):
            raise OmetriaRequestError(
                f"Ometria answered HTTP {response.status_code} with status "
                f"{data.get('status')!r}: {self._message_of(response)}",
                http_status=response.status_code, attempts=attempts, duration_ms=duration,
            )
        request_id = _str_or_none(data.get("request_id"))
        rejected_n = int(data.get("rejected") or 0)
        accepted = data.get("accepted")
        accepted_n = int(accepted) if accepted is not None else len(encoded) - rejected_n
        result = PushResponse(
            request_id=request_id or f"local-{uuid.uuid4()}",
            http_status=response.status_code,
            accepted=accepted_n,
            rejected=rejected_n,
            record_type=record_type,
            record_count=len(encoded),
            bytes_sent=len(body),
            duration_ms=duration,
            attempts=attempts,
            status=str(data.get("status", "OK")),
            queue_limit=self.last_queue_limit,
            queue_remaining=self.last_queue_remaining,
            request_id_is_local=request_id is None,
        )
        log.debug("pushed %d %s records -> HTTP %d, request %s (accepted %d, rejected %d)",
                  len(encoded), record_type, response.status_code, result.request_id,
                  accepted_n, rejected_n)
        return result

    # -- errors and read-back ----------------------------------------------------------
    def _get_json(self, path: str, params: dict[str, Any] | None = None, *,
                  missing_ok: bool = False) -> Any:
        response, attempts, duration = self._send("GET", path, params=params)
        if missing_ok and response.status_code == 404:
            return None
        if not response.is_success:
            raise OmetriaRequestError(
                f"Ometria GET {self.base_url}/{path} answered HTTP {response.status_code}: "
                f"{self._message_of(response)}",
                http_status=response.status_code, attempts=attempts, duration_ms=duration,
            )
        try:
            return response.json()
        except ValueError:
            raise OmetriaRequestError(
                f"Ometria GET {self.base_url}/{path} answered non-JSON: {self._scrub(response.text[:200])}",
                http_status=response.status_code, attempts=attempts, duration_ms=duration,
            ) from None

    def fetch_errors(self) -> list[PushError]:
        """The (at most 100) most recent asynchronous validation errors of the account."""
        return parse_push_errors(self._get_json("push/_errors"))

    def get_contact(self, collection: str, contact_id: str) -> dict | None:
        return self._get_json(f"contacts/{quote(collection, safe='')}/{quote(contact_id, safe='')}",
                              missing_ok=True)

    def get_order(self, order_id: str) -> dict | None:
        return self._get_json(f"orders/{quote(order_id, safe='')}", missing_ok=True)

    def get_product(self, product_id: str) -> dict | None:
        return self._get_json(f"products/{quote(product_id, safe='')}", missing_ok=True)

    def _iter(self, path: str, limit: int, offset: int, extra: dict[str, Any] | None = None,
              max_pages: int | None = None) -> Iterator[dict]:
        """Every record of a listing, page by page (`limit`/`offset`).

        Bounded: a page whose records (by id) are exactly those of a page already read means
        the API is not advancing (it ignores `offset`), and `max_pages` caps the listing; both
        raise `OmetriaPagingError` instead of reading forever. Pages that merely overlap (a
        record inserted while we read shifts the offsets) are fine: the snapshot dedupes."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIST_LIMIT} (Ometria's maximum), got {limit}")
        max_pages = max_pages or MAX_READ_BACK_PAGES
        seen: set[int] = set()
        pages = 0
        while True:
            if pages >= max_pages:
                raise OmetriaPagingError(
                    f"Ometria GET {self.base_url}/{path}: still not at the end after {pages} pages "
                    f"of {limit} (the read-back ceiling); stopped reading.")
            page = self._get_json(path, {"limit": limit, "offset": offset, **(extra or {})})
            pages += 1
            if isinstance(page, dict):
                page = next((page[k] for k in ("data", "results", "items") if isinstance(page.get(k), list)), [])
            if not isinstance(page, list):
                return
            keys = hash(tuple(sorted(
                str(r.get("id")) if isinstance(r, dict) else orjson.dumps(r).decode() for r in page)))
            if page and keys in seen:
                raise OmetriaPagingError(
                    f"Ometria GET {self.base_url}/{path} served the same {len(page)} records again "
                    f"at offset {offset} (page {pages}): the API is not honouring `offset`, so the "
                    "listing cannot be read to its end; stopped reading.")
            seen.add(keys)
            yield from page
            if len(page) < limit:
                return
            offset += len(page)

    def iter_orders(self, limit: int = MAX_LIST_LIMIT, offset: int = 0) -> Iterator[dict]:
        return self._iter("orders", limit, offset)

    def iter_products(self, limit: int = MAX_LIST_LIMIT, offset: int = 0,
                      active: bool | None = None) -> Iterator[dict]:
        extra = None if active is None else {"active": "true" if active else "false"}
        return self._iter("products", limit, offset, extra)

    def iter_contacts(self, collection: str, limit: int = MAX_LIST_LIMIT, offset: int = 0
                      ) -> Iterator[dict]:
        return self._iter(f"contacts/{quote(collection, safe='')}", limit, offset)


# --------------------------------------------------------------------------------------
# Dagster resource
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OmetriaTarget:
    """Where pushes go, for logs and metadata (never the key)."""

    url: str | None
    dry_run: bool
    embedded: bool
    collection: str
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.dry_run:
            return "dry run (outbox only, nothing sent)"
        return f"{'embedded emulator ' if self.embedded else ''}{self.url}"


class OmetriaResource(dg.ConfigurableResource):
    """Ometria Data API, configured from the environment (`OMETRIA_API_URL`, `OMETRIA_API_KEY`,
    `OMETRIA_DRY_RUN`, `OMETRIA_RATE_LIMIT_PER_S`, ...). With no URL it pushes to the embedded
    emulator of the demo; with `OMETRIA_DRY_RUN=1`, or a real URL but no key, nothing is sent and
    the requests are written to the outbox for review."""

    dry_run: bool | None = Field(
        default=None,
        description="Override OMETRIA_DRY_RUN for this run (true: write the outbox, send nothing).",
    )
    rate_limit_per_s: float | None = Field(
        default=None, description="Override OMETRIA_RATE_LIMIT_PER_S for this run (e.g. a slow backfill).",
    )

    def _settings(self):
        from sap_ometria_assets.lib.config.settings import get_settings

        return get_settings()

    def is_dry_run(self) -> bool:
        if self.dry_run is not None:
            return self.dry_run
        settings = self._settings()
        # An empty OMETRIA_API_KEY= line (as in .env.example) is no key either.
        no_key = settings.ometria_api_key is None or not settings.ometria_api_key.get_secret_value()
        return settings.ometria_is_dry_run or (not settings.uses_embedded_ometria and no_key)

    def target(self, client: OmetriaClient | None = None) -> OmetriaTarget:
        """What a push goes to; pass the open client to name the embedded emulator's URL."""
        settings = self._settings()
        dry = self.is_dry_run()
        url = client.base_url if client is not None else settings.ometria_api_url
        return OmetriaTarget(url=url, dry_run=dry, embedded=settings.uses_embedded_ometria,
                             collection=settings.ometria_collection)

    @contextmanager
    def open_client(self) -> Iterator[OmetriaClient | None]:
        """A client for the configured account, or None in dry run (no HTTP at all)."""
        settings = self._settings()
        if self.is_dry_run():
            yield None
            return
        if settings.uses_embedded_ometria:
            from sap_ometria_assets.emulators.ometria.embedded import ensure_embedded_ometria

            embedded = ensure_embedded_ometria(settings)
            url, key = embedded.url, embedded.api_key
        else:
            url = settings.ometria_api_url
            key = settings.ometria_api_key
            if key is None or not key.get_secret_value():
                raise OmetriaAuthError("OMETRIA_API_KEY is not set; set it, or OMETRIA_DRY_RUN=1.")
        rate = self.rate_limit_per_s or settings.ometria_rate_limit_per_s
        if (self.rate_limit_per_s is None and settings.uses_embedded_ometria
                and "ometria_rate_limit_per_s" not in settings.model_fields_set):
            # The demo's emulator is local: no need to wait at Ometria's pace unless asked to.
            rate = EMBEDDED_RATE_LIMIT_PER_S
        client = OmetriaClient(
            url,
            key,
            rate_limit_per_s=rate,
            timeout_s=settings.ometria_timeout_s,
            max_retries=settings.ometria_max_retries,
            backoff_initial_s=RETRY_BACKOFF_S,
            sleep=SLEEP,
        )
        try:
            yield client
        finally:
            client.close()
