"""Reading what Ometria answers: the push answer's shape (`push_answer_problem`), the records
of one push answer and of `GET /push/_errors` (`PushResponse`, `PushError`,
`parse_push_errors`), and `Retry-After` (seconds or an HTTP date).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson


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


def str_or_none(value: Any) -> str | None:
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
            "request_id": str_or_none(item.get("request_id")),
            "record_type": str_or_none(item.get("record_type") or record.get("@type")),
            "record_id": str_or_none(
                item["record_id"] if item.get("record_id") is not None else record.get("id")),
            "timestamp": str_or_none(item.get("timestamp")),
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
                text = str_or_none(msg.get("error_message")) or str_or_none(msg.get("message")) or raw
                path = str_or_none(msg.get("error_path"))
            else:
                text, path = (str_or_none(msg) or raw), None
            out.append(PushError(error_message=text, error_path=path, raw=raw, **base))
    return out
