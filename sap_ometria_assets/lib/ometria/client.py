"""Client for Ometria's Data API: the push endpoint, its error list and the read-back.

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

import time
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from sap_ometria_assets.lib.config import secrets as secret_scrub
from sap_ometria_assets.lib.ometria.answers import (
    PushError,
    PushResponse,
    parse_push_errors,
    parse_retry_after,
    push_answer_problem,
    str_or_none,
)
from sap_ometria_assets.lib.ometria.errors import (
    OmetriaAuthError,
    OmetriaBatchError,
    OmetriaError,
    OmetriaRequestError,
    OmetriaUnavailableError,
    OmetriaUnconfirmedError,
)
from sap_ometria_assets.lib.ometria.ratelimit import Clock, RateLimiter, Sleep
from sap_ometria_assets.lib.ometria.readback import ReadBack

log = secret_scrub.scrubbed_logger(__name__)

MAX_RECORDS_PER_REQUEST = 100
RECORD_TYPES = ("contact", "order", "product", "custom_event")


class _Retryable(Exception):
    """Internal: an attempt that may succeed if repeated."""

    def __init__(self, reason: str, *, http_status: int | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status
        self.retry_after_s = retry_after_s


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


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    raw = headers.get(name)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None



class OmetriaClient(ReadBack):
    """One Ometria account. Thread-safe for the rate limiter; use as a context manager.

    Pushes and the error list are here; reading Ometria's records back comes from `ReadBack`."""

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
        """Send one batch (1-100 pre-serialised records of `record_type`).

        Only the batch's shape is checked (its size, a known type): the records are sent as
        they are."""
        if not records:
            raise OmetriaBatchError("a push needs at least one record")
        if len(records) > MAX_RECORDS_PER_REQUEST:
            raise OmetriaBatchError(
                f"{len(records)} records in one push; Ometria takes at most {MAX_RECORDS_PER_REQUEST}")
        if record_type not in RECORD_TYPES:
            raise OmetriaBatchError(f"unknown record type {record_type!r}")
        # The records themselves are not parsed again here: each was validated where it was
        # built (lib/transforms/payloads.finalize: a JSON object of its feed's model, at most
        # 60 KB), and the push batches them by record type.
        encoded = [_as_bytes(r) for r in records]
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
        request_id = str_or_none(data.get("request_id"))
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

    # -- GETs: the error list, and the requests of the read-back --------------------------
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
