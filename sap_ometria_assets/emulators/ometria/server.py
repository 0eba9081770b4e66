"""A local stand-in for Ometria's Data API v2, served over real HTTP.

It validates like the documented API (see `docs/reference/ometria_data_api.md`), so code that
passes here has met the published rules, and it keeps what it accepted so reconciliation can
read it back:

- `POST /v2/push`: `X-Ometria-Auth` (403 otherwise); body a JSON array of 1-100 objects of a
  single, known `@type`, each at most 60 KB ("Payload invalid: Record is too large"): any of
  these wrong and the whole request is refused with 400. Otherwise 202
  `{"status":"OK","request_id":..,"accepted":n,"rejected":m}` with `X-QueueSize-Limit` /
  `X-QueueSize-Remaining`. Records failing a field rule (required fields, ISO timestamps with
  an offset, ISO currency, numbers, phone numbers libphonenumber accepts) are not stored and are
  reported in `_errors`, as Ometria's asynchronous validation would; accepted records are
  upserted by type + id (+ `@collection` for contacts), merged into the stored record with
  `"@merge": true`, replacing it otherwise. With `known_products_only` (the embedded demo turns
  it on) an order line's `product_id` must name a product the account holds ("must reference
  an existing Ometria product id"), else the order is rejected with
  `root > lineitems > <i> > product_id`; off, unit tests can push orders without a catalogue.
- `GET /v2/push/_errors`: the 100 most recent errors, most recent first, in the richer wrapper
  public clients model (`request_id`, `record_type`, `record_id`, `record`, `timestamp`,
  `message: {error_message, error_path}`) or, with `faults.errors_shape = "flat"`, exactly the
  documented `{error_message, error_path}`.
- Read-back: `GET /v2/contacts` (collections), `/v2/contacts/{collection}[/{id}]`,
  `/v2/orders[/{id}]`, `/v2/products[/{id}]`; lists take `limit` (<= 250), `offset`,
  `orderby=timestamp_update`, products also `active=true|false`.

Fault switches (`emulator.faults`, or `POST /_emulator/faults` from another process): 429 with
`Retry-After` for the next n requests or above a request rate, 5xx bursts, dropped connections,
slow answers, record rejections by id or predicate, queue headers. `emulator.stats` counts what
arrived. With `store_path` the records and errors live in SQLite and survive restarts (the
embedded demo keeps what it was sent between runs).

Run it alone: `python -m sap_ometria_assets.emulators.ometria.server --port 8089 --store x.sqlite`.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sqlite3
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import phonenumbers

MAX_RECORDS = 100
MAX_RECORD_BYTES = 60 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_LIST_LIMIT = 250
MAX_ERRORS_KEPT = 100
_CURSORS_KEPT = 256  # page ends remembered for keyset pagination (a few listings read at once)
KNOWN_TYPES = ("contact", "order", "product", "custom_event")
# Instructions to the API, not data: not stored with the record.
DIRECTIVES = ("@merge", "@force_optin", "@add_to_lists", "@remove_from_lists")
OPTIN_VALUES = ("EXPLICITLY_OPTEDIN", "EXPLICITLY_OPTEDOUT", "NOT_SPECIFIED")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

RejectRule = Callable[[dict], "str | tuple[str, str] | None"]


# --------------------------------------------------------------------------------------
# Faults and counters
# --------------------------------------------------------------------------------------
@dataclass
class Faults:
    """Switches for misbehaviour; all apply to `POST /push` unless noted."""

    throttle_remaining: int = 0          # next n pushes answer 429
    retry_after: str | None = "1"        # Retry-After value sent with 429 (None: header absent)
    max_rate_per_s: float | None = None  # above this rate of pushes: 429 (sliding 1 s window)
    fail_remaining: int = 0              # next n pushes answer `fail_status`
    fail_status: int = 503
    drop_remaining: int = 0              # next n pushes: connection closed without an answer
    delay_s: float = 0.0                 # every request answers this much later
    reject_ids: set[str] = field(default_factory=set)
    reject_if: RejectRule | None = None  # record -> message or (message, path): rejected
    queue_limit: int = 50_000
    queue_remaining: int | None = None   # None: full headroom
    report_rejected_sync: bool = True    # False: `rejected` always 0, errors only in _errors
    errors_shape: str = "wrapper"        # or "flat": documented {error_message, error_path} only

    def throttle(self, n: int = 1, retry_after: str | float | None = 1) -> None:
        self.throttle_remaining = n
        self.retry_after = None if retry_after is None else str(retry_after)

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        self.fail_remaining, self.fail_status = n, status

    def drop_next(self, n: int = 1) -> None:
        self.drop_remaining = n

    def reject(self, ids: set[str] | list[str] | None = None, predicate: RejectRule | None = None) -> None:
        if ids is not None:
            self.reject_ids = set(ids)
        if predicate is not None:
            self.reject_if = predicate

    def reset(self) -> None:
        fresh = Faults()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))


@dataclass
class Stats:
    requests: int = 0                    # every HTTP request
    push_requests: int = 0               # every POST /push that reached the handler
    push_ok: int = 0                     # of which answered 2xx
    records: Counter = field(default_factory=Counter)    # records in 2xx pushes, by @type
    accepted: int = 0
    rejected: int = 0
    bytes: int = 0                       # bytes of push bodies received
    statuses: Counter = field(default_factory=Counter)   # push answers by HTTP status
    push_log: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (request_id, type, ids)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "push_requests": self.push_requests, "push_ok": self.push_ok,
            "records": dict(self.records), "accepted": self.accepted, "rejected": self.rejected,
            "bytes": self.bytes, "statuses": {str(k): v for k, v in self.statuses.items()},
        }


class _BadRequest(Exception):
    pass


# --------------------------------------------------------------------------------------
# Field validation (what Ometria reports asynchronously)
# --------------------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int | float):
        return True
    if isinstance(v, str):
        try:
            float(v)
            return True
        except ValueError:
            return False
    return False


def _is_iso_with_offset(v: Any) -> bool:
    if not isinstance(v, str) or "T" not in v:
        return False
    try:
        return datetime.fromisoformat(v).tzinfo is not None
    except ValueError:
        return False


def _nonempty_str(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _is_valid_phone(v: Any) -> bool:
    """E.164 and valid for Google's libphonenumber, the validator Ometria documents."""
    return isinstance(v, str) and bool(_E164.match(v)) and _libphonenumber_valid(v)


@lru_cache(maxsize=65_536)  # ~90 us a number in pure Python; pushes repeat numbers a lot
def _libphonenumber_valid(v: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(v, None))
    except phonenumbers.NumberParseException:
        return False


def line_product_ids(rec: dict) -> list[tuple[int, str]]:
    """(line index, product_id) of an order's line items that name a product."""
    items = rec.get("lineitems")
    if not isinstance(items, list):
        return []
    return [(i, item["product_id"]) for i, item in enumerate(items)
            if isinstance(item, dict) and _nonempty_str(item.get("product_id"))]


def validate_record(rec: dict) -> list[tuple[str, str]]:
    """Field problems of one record as (error_message, error_path); empty = valid."""
    problems: list[tuple[str, str]] = []
    bad = "not a valid value"
    kind = rec.get("@type")
    merge = rec.get("@merge") is True
    if not _nonempty_str(rec.get("id")):
        problems.append(("id is required and must be a non-empty string", "root > id"))
    if kind == "contact":
        email, customer_id = rec.get("email"), rec.get("customer_id")
        if not merge and not (_nonempty_str(email) or _nonempty_str(customer_id)):
            problems.append(("email or customer_id is required", "root > email"))
        if email is not None and not (isinstance(email, str) and _EMAIL.match(email)):
            problems.append((bad, "root > email"))
        if "marketing_optin" in rec and rec["marketing_optin"] not in OPTIN_VALUES:
            problems.append((bad, "root > marketing_optin"))
        phone = rec.get("phone_number")
        if phone is not None and not _is_valid_phone(phone):
            problems.append((bad, "root > phone_number"))
        for ts in ("timestamp_acquired", "timestamp_subscribed", "timestamp_unsubscribed"):
            if ts in rec and rec[ts] is not None and not _is_iso_with_offset(rec[ts]):
                problems.append((bad, f"root > {ts}"))
    elif kind == "order":
        if not merge or "timestamp" in rec:
            if not _is_iso_with_offset(rec.get("timestamp")):
                problems.append((bad, "root > timestamp"))
        if not merge or "currency" in rec:
            if not (isinstance(rec.get("currency"), str) and _CURRENCY.match(rec["currency"])):
                problems.append((bad, "root > currency"))
        if not merge or "grand_total" in rec:
            if not _is_number(rec.get("grand_total")):
                problems.append((bad, "root > grand_total"))
        if "customer" in rec and rec["customer"] is not None and not isinstance(rec["customer"], dict):
            problems.append((bad, "root > customer"))
        items = rec.get("lineitems")
        if items is not None:
            if not isinstance(items, list):
                problems.append((bad, "root > lineitems"))
            else:
                for i, item in enumerate(items):
                    if not isinstance(item, dict) or not _nonempty_str(item.get("product_id")) \
                            or not _is_number(item.get("quantity")) \
                            or not (_is_number(item.get("unit_price")) or _is_number(item.get("subtotal"))):
                        problems.append((bad, f"root > lineitems > {i}"))
    elif kind == "product":
        if not merge:
            if not _nonempty_str(rec.get("title")):
                problems.append(("title is required", "root > title"))
            if not _is_number(rec.get("price")):
                problems.append(("price is required", "root > price"))
        elif "price" in rec and not _is_number(rec["price"]):
            problems.append((bad, "root > price"))
        for flag in ("is_in_stock", "is_active", "is_variant"):
            if flag in rec and not isinstance(rec[flag], bool):
                problems.append((bad, f"root > {flag}"))
    elif kind == "custom_event":
        if not _nonempty_str(rec.get("event_type")):
            problems.append((bad, "root > event_type"))
        if not _is_iso_with_offset(rec.get("timestamp")):
            problems.append((bad, "root > timestamp"))
    return problems


# --------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------
class _Store:
    """Records and errors in SQLite (":memory:" unless a file is given); callers hold the lock."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False,
                                  isolation_level=None, timeout=30)
        if path is not None:
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS records (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                type TEXT NOT NULL, collection TEXT NOT NULL, id TEXT NOT NULL,
                body TEXT NOT NULL, updated_at TEXT NOT NULL, update_seq INTEGER NOT NULL,
                UNIQUE (type, collection, id));
            CREATE INDEX IF NOT EXISTS records_update_seq ON records (update_seq);
            CREATE INDEX IF NOT EXISTS records_type_seq ON records (type, seq);
            CREATE INDEX IF NOT EXISTS records_type_update_seq ON records (type, update_seq);
            CREATE TABLE IF NOT EXISTS errors (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
            """
        )
        # Where each recently served page ended: (listing, offset) -> sort key of the last row
        # before that offset, valid while nothing is written (`_version`). The next page of a
        # listing then starts from that key through the index (keyset pagination) instead of
        # skipping `offset` rows: reading a whole listing costs in proportion to its size.
        self._version = 0
        self._cursors: OrderedDict[tuple, tuple[int, int]] = OrderedDict()

    def next_update_seq(self) -> int:
        row = self.db.execute("SELECT coalesce(max(update_seq), 0) FROM records").fetchone()
        return int(row[0]) + 1

    def get(self, kind: str, collection: str, rid: str) -> dict | None:
        row = self.db.execute("SELECT body FROM records WHERE type=? AND collection=? AND id=?",
                              (kind, collection, rid)).fetchone()
        return json.loads(row[0]) if row else None

    def upsert(self, rows: list[tuple[str, str, str, str]]) -> None:
        self._version += 1
        now = datetime.now(UTC).isoformat()
        seq = self.next_update_seq()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT INTO records (type, collection, id, body, updated_at, update_seq) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (type, collection, id) DO UPDATE SET "
                "body = excluded.body, updated_at = excluded.updated_at, update_seq = excluded.update_seq",
                [(k, c, i, b, now, seq + n) for n, (k, c, i, b) in enumerate(rows)],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def add_errors(self, errors: list[dict]) -> None:
        if not errors:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT INTO errors (body) VALUES (?)",
                                [(json.dumps(e, separators=(",", ":")),) for e in errors])
            self.db.execute("DELETE FROM errors WHERE seq <= (SELECT max(seq) FROM errors) - ?",
                            (MAX_ERRORS_KEPT,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def recent_errors(self) -> list[dict]:
        rows = self.db.execute("SELECT body FROM errors ORDER BY seq DESC LIMIT ?", (MAX_ERRORS_KEPT,))
        return [json.loads(r[0]) for r in rows]

    def page(self, kind: str, collection: str | None, limit: int, offset: int, order: str,
             active: bool | None) -> list[dict]:
        """`limit` records from position `offset` of a listing, in `seq` (first stored) or
        `update_seq` (`orderby=timestamp_update`) order. Offsets are positions as of now, as
        the API's; the page following one just served is read from where that one ended."""
        key = "update_seq" if order == "timestamp_update" else "seq"
        sql = f"SELECT {key}, body FROM records WHERE type = ?"
        params: list[Any] = [kind]
        if collection is not None:
            sql += " AND collection = ?"
            params.append(collection)
        if active is not None:
            sql += " AND coalesce(json_extract(body, '$.is_active'), 1) = ?"
            params.append(1 if active else 0)
        listing = (kind, collection, key, active)
        cursor = self._cursors.get((listing, offset)) if offset else None
        if cursor is not None and cursor[0] == self._version:
            rows = self.db.execute(f"{sql} AND {key} > ? ORDER BY {key} LIMIT ?",
                                   [*params, cursor[1], limit]).fetchall()
        else:
            rows = self.db.execute(f"{sql} ORDER BY {key} LIMIT ? OFFSET ?",
                                   [*params, limit, offset]).fetchall()
        if rows:
            self._cursors[(listing, offset + len(rows))] = (self._version, rows[-1][0])
            self._cursors.move_to_end((listing, offset + len(rows)))
            while len(self._cursors) > _CURSORS_KEPT:
                self._cursors.popitem(last=False)
        return [json.loads(body) for _, body in rows]

    def existing_ids(self, kind: str, ids: set[str]) -> set[str]:
        found: set[str] = set()
        todo = sorted(ids)
        for start in range(0, len(todo), 500):
            chunk = todo[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.db.execute(
                f"SELECT id FROM records WHERE type = ? AND collection = '' AND id IN ({marks})",
                [kind, *chunk]))
        return found

    def collections(self) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT collection FROM records WHERE type = 'contact' ORDER BY 1")]

    def all(self, kind: str) -> dict[tuple[str, str], dict]:
        return {(r[0], r[1]): json.loads(r[2]) for r in self.db.execute(
            "SELECT collection, id, body FROM records WHERE type = ?", (kind,))}

    def clear(self) -> None:
        self._version += 1
        self.db.executescript("DELETE FROM records; DELETE FROM errors;")

    def close(self) -> None:
        self.db.close()


# --------------------------------------------------------------------------------------
# Emulator
# --------------------------------------------------------------------------------------
class OmetriaEmulator:
    """`with OmetriaEmulator() as emu:` or `.start()` / `.stop()`; base URL in `.url`."""

    def __init__(self, *, api_key: str = "demo-key", host: str = "127.0.0.1", port: int = 0,
                 store_path: str | Path | None = None, verbose: bool = False,
                 known_products_only: bool = False) -> None:
        self.api_key = api_key
        self.known_products_only = known_products_only
        self.host = host
        self.port = port
        self.store_path = Path(store_path) if store_path else None
        self.verbose = verbose
        self.faults = Faults()
        self.stats = Stats()
        self._lock = threading.RLock()
        self._push_times: deque[float] = deque()
        self._store = _Store(self.store_path)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return f"http://{self.host}:{self._server.server_address[1]}/v2"

    def start(self) -> OmetriaEmulator:
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"emulator": self})
        server = ThreadingHTTPServer((self.host, self.port), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="ometria-emulator",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            self._store.close()

    def __enter__(self) -> OmetriaEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Run in the foreground (the CLI)."""
        self.start()
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(0.5)

    # -- inspection for tests and reconciliation --------------------------------------
    def records(self, kind: str) -> dict[tuple[str, str], dict]:
        """Stored records of a type keyed by (collection, id); collection is "" except contacts."""
        with self._lock:
            return self._store.all(kind)

    def get(self, kind: str, rid: str, collection: str = "") -> dict | None:
        with self._lock:
            return self._store.get(kind, collection, rid)

    def errors(self) -> list[dict]:
        with self._lock:
            return self._store.recent_errors()

    def reset(self) -> None:
        with self._lock:
            self._store.clear()
            self.stats = Stats()
            self.faults.reset()

    # -- request handling (called by the handler threads) -----------------------------
    def _queue_headers(self) -> dict[str, str]:
        f = self.faults
        remaining = f.queue_limit if f.queue_remaining is None else f.queue_remaining
        return {"X-QueueSize-Limit": str(f.queue_limit), "X-QueueSize-Remaining": str(remaining)}

    def handle_push(self, raw: bytes) -> tuple[int, dict, dict[str, str]]:
        """Returns (status, json body, extra headers); None status = drop the connection."""
        headers = self._queue_headers()
        with self._lock:
            f = self.faults
            self.stats.bytes += len(raw)
            now = time.monotonic()
            if f.drop_remaining > 0:
                f.drop_remaining -= 1
                return -1, {}, {}
            if f.throttle_remaining > 0:
                f.throttle_remaining -= 1
                return 429, {"status": "ERROR", "message": "Too many requests"}, {
                    **headers, **({"Retry-After": f.retry_after} if f.retry_after is not None else {})}
            if f.max_rate_per_s is not None:
                while self._push_times and now - self._push_times[0] >= 1.0:
                    self._push_times.popleft()
                if len(self._push_times) >= f.max_rate_per_s:
                    return 429, {"status": "ERROR", "message": "Rate limit exceeded"}, {
                        **headers, "Retry-After": "1"}
                self._push_times.append(now)
            if f.fail_remaining > 0:
                f.fail_remaining -= 1
                return f.fail_status, {"status": "ERROR", "message": "Internal error (injected)"}, headers

        try:
            records, kind = self._parse_batch(raw)
        except _BadRequest as exc:
            return 400, {"status": "ERROR", "message": str(exc)}, headers

        request_id = str(uuid.uuid4())
        stamp = datetime.now(UTC).isoformat()
        errors: list[dict] = []
        good: list[dict] = []
        for rec in records:
            problems = validate_record(rec)
            rid = rec.get("id")
            if not problems and (str(rid) in self.faults.reject_ids):
                problems = [("not a valid value", "root > id")]
            if not problems and self.faults.reject_if is not None:
                verdict = self.faults.reject_if(rec)
                if verdict:
                    problems = [verdict if isinstance(verdict, tuple) else (str(verdict), "root")]
            if problems:
                for message, path in problems:
                    errors.append(self._error_entry(request_id, kind, rid, rec, stamp, message, path))
            else:
                good.append(rec)

        with self._lock:
            if kind == "order" and self.known_products_only and good:
                good = self._check_line_products(good, errors, request_id, stamp)
            rows = []
            staged: dict[tuple[str, str], dict] = {}
            for rec in good:
                collection = (str(rec.get("@collection") or "default")) if kind == "contact" else ""
                rid = str(rec["id"])
                doc = {k: v for k, v in rec.items() if k not in DIRECTIVES}
                if rec.get("@merge") is True:
                    existing = staged.get((collection, rid)) or self._store.get(kind, collection, rid)
                    if existing is not None:
                        doc = {**existing, **doc}
                staged[(collection, rid)] = doc
            for (collection, rid), doc in staged.items():
                rows.append((kind, collection, rid, json.dumps(doc, separators=(",", ":"))))
            self._store.upsert(rows)
            self._store.add_errors(errors)
            n_rejected = len(records) - len(good)
            self.stats.push_ok += 1
            self.stats.records[kind] += len(records)
            self.stats.accepted += len(good)
            self.stats.rejected += n_rejected
            self.stats.push_log.append((request_id, kind, [str(r.get("id")) for r in records]))
        reported = n_rejected if self.faults.report_rejected_sync else 0
        body = {"status": "OK", "request_id": request_id,
                "accepted": len(records) - reported, "rejected": reported}
        return 202, body, headers

    def _check_line_products(self, orders: list[dict], errors: list[dict], request_id: str,
                             stamp: str) -> list[dict]:
        """Orders whose every line names a product the account holds; the others go to `errors`
        (Ometria: a line's product_id "must reference an existing Ometria product id")."""
        lines = {id(rec): line_product_ids(rec) for rec in orders}
        known = self._store.existing_ids("product", {pid for ls in lines.values() for _, pid in ls})
        kept = []
        for rec in orders:
            unknown = [i for i, pid in lines[id(rec)] if pid not in known]
            if not unknown:
                kept.append(rec)
                continue
            for i in unknown:
                errors.append(self._error_entry(request_id, "order", rec.get("id"), rec, stamp,
                                                "not a valid value", f"root > lineitems > {i} > product_id"))
        return kept

    def _error_entry(self, request_id: str, kind: str, rid: Any, rec: dict, stamp: str,
                     message: str, path: str) -> dict:
        if self.faults.errors_shape == "flat":
            return {"error_message": message, "error_path": path}
        return {"request_id": request_id, "record_type": kind,
                "record_id": None if rid is None else str(rid), "record": rec, "timestamp": stamp,
                "message": {"error_message": message, "error_path": path}}

    def _parse_batch(self, raw: bytes) -> tuple[list[dict], str]:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _BadRequest(f"Payload invalid: body is not valid JSON ({exc})") from None
        if not isinstance(data, list):
            raise _BadRequest("Payload invalid: body must be a JSON array of records")
        if not data:
            raise _BadRequest("Payload invalid: no records")
        if len(data) > MAX_RECORDS:
            raise _BadRequest(f"Payload invalid: {len(data)} records, at most {MAX_RECORDS} per request")
        kinds = set()
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise _BadRequest(f"Payload invalid: record {i} is not an object")
            kind = rec.get("@type")
            if kind not in KNOWN_TYPES:
                raise _BadRequest(f"Payload invalid: record {i} has unknown @type {kind!r}")
            kinds.add(kind)
            if len(json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode()) > MAX_RECORD_BYTES:
                raise _BadRequest("Payload invalid: Record is too large")
        if len(kinds) > 1:
            raise _BadRequest(f"Payload invalid: object types must not be mixed in one call ({sorted(kinds)})")
        return data, kinds.pop()

    def handle_get(self, parts: list[str], query: dict[str, list[str]]) -> tuple[int, Any]:
        def one(name: str, default: str | None = None) -> str | None:
            return query.get(name, [default])[0]

        if parts == ["push", "_errors"]:
            with self._lock:
                return 200, self._store.recent_errors()
        try:
            limit = int(one("limit", str(MAX_LIST_LIMIT)) or MAX_LIST_LIMIT)
            offset = int(one("offset", "0") or 0)
        except ValueError:
            return 400, {"status": "ERROR", "message": "limit and offset must be integers"}
        if not 1 <= limit <= MAX_LIST_LIMIT or offset < 0:
            return 400, {"status": "ERROR", "message": f"limit must be 1..{MAX_LIST_LIMIT}, offset >= 0"}
        order = one("orderby", "") or ""
        active_raw = one("active")
        active = None if active_raw is None else active_raw.lower() == "true"
        with self._lock:
            if parts == ["contacts"]:
                return 200, self._store.collections()
            if len(parts) == 2 and parts[0] == "contacts":
                return 200, self._store.page("contact", parts[1], limit, offset, order, None)
            if len(parts) == 3 and parts[0] == "contacts":
                doc = self._store.get("contact", parts[1], parts[2])
                return (200, doc) if doc else (404, {"status": "ERROR", "message": "Not found"})
            for plural, kind in (("orders", "order"), ("products", "product")):
                if parts == [plural]:
                    return 200, self._store.page(kind, None, limit, offset, order,
                                                 active if kind == "product" else None)
                if len(parts) == 2 and parts[0] == plural:
                    doc = self._store.get(kind, "", parts[1])
                    return (200, doc) if doc else (404, {"status": "ERROR", "message": "Not found"})
        return 404, {"status": "ERROR", "message": "Unknown endpoint"}

    def handle_admin(self, method: str, action: str, raw: bytes) -> tuple[int, Any]:
        """`/_emulator/...` control endpoints, so a test can drive an emulator in another process."""
        if method == "GET" and action == "stats":
            with self._lock:
                return 200, self.stats.snapshot()
        if method == "POST" and action == "reset":
            self.reset()
            return 200, {"status": "OK"}
        if method == "POST" and action == "faults":
            try:
                spec = json.loads(raw or b"{}")
            except ValueError:
                return 400, {"status": "ERROR", "message": "faults body must be JSON"}
            with self._lock:
                f = self.faults
                if "throttle" in spec:
                    f.throttle(int(spec["throttle"]), spec.get("retry_after", 1))
                if "fail_next" in spec:
                    f.fail_next(int(spec["fail_next"]), int(spec.get("fail_status", 503)))
                if "drop_next" in spec:
                    f.drop_next(int(spec["drop_next"]))
                for name in ("delay_s", "max_rate_per_s", "queue_limit", "queue_remaining",
                             "report_rejected_sync", "errors_shape"):
                    if name in spec:
                        setattr(f, name, spec[name])
                if "reject_ids" in spec:
                    f.reject_ids = {str(x) for x in spec["reject_ids"]}
            return 200, {"status": "OK"}
        return 404, {"status": "ERROR", "message": "Unknown emulator control"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server_version = "OmetriaEmulator/1.0"
    emulator: OmetriaEmulator  # set on the bound subclass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.emulator.verbose:
            super().log_message(format, *args)

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            return None
        return self.rfile.read(length) if length else b""

    def _route(self, method: str) -> None:
        emu = self.emulator
        with emu._lock:
            emu.stats.requests += 1
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.split("/") if p]
        raw = self._body() if method == "POST" else b""
        if emu.faults.delay_s > 0:
            time.sleep(emu.faults.delay_s)
        if raw is None:
            self.close_connection = True
            self._reply(413, {"status": "ERROR", "message": "Payload invalid: request too large"})
            return
        if self.headers.get("X-Ometria-Auth") != emu.api_key:
            if parts[:2] == ["v2", "push"] and method == "POST":
                with emu._lock:
                    emu.stats.push_requests += 1
                    emu.stats.statuses[403] += 1
            self._reply(403, {"status": "ERROR", "message": "Forbidden: invalid or missing X-Ometria-Auth"})
            return
        if parts[:1] == ["_emulator"] and len(parts) == 2:
            self._reply(*emu.handle_admin(method, parts[1], raw))
            return
        if parts[:1] != ["v2"]:
            self._reply(404, {"status": "ERROR", "message": "Unknown endpoint"})
            return
        parts = parts[1:]
        if method == "POST" and parts == ["push"]:
            with emu._lock:
                emu.stats.push_requests += 1
            status, body, headers = emu.handle_push(raw)
            with emu._lock:
                emu.stats.statuses[status] += 1
            if status == -1:
                self.close_connection = True
                try:
                    self.connection.shutdown(2)
                except OSError:
                    pass
                return
            self._reply(status, body, headers)
            return
        if method == "GET":
            self._reply(*emu.handle_get(parts, parse_qs(split.query)))
            return
        self._reply(405, {"status": "ERROR", "message": f"{method} not allowed here"})

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local Ometria Data API v2 emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed)")
    parser.add_argument("--store", type=Path, default=None, help="SQLite file keeping what was pushed")
    parser.add_argument("--api-key", default="demo-key")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--known-products-only", action="store_true",
                        help="reject orders whose lines name a product Ometria does not hold (as Ometria does)")
    args = parser.parse_args(argv)
    emulator = OmetriaEmulator(api_key=args.api_key, host=args.host, port=args.port,
                               store_path=args.store, verbose=args.verbose,
                               known_products_only=args.known_products_only).start()
    print(f"OMETRIA_API_URL={emulator.url}", flush=True)

    def _stop(*_: object) -> None:
        threading.Thread(target=emulator.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    emulator.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
