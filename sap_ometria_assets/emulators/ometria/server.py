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

Package layout: `validation` (limits, directives, record rules), `faults` (`Faults`, `Stats`),
`store` (SQLite), `readback` (what reconciliation reads back), `handler` (the HTTP handler); this
module holds `OmetriaEmulator` (push handling) and the command line.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sap_ometria_assets.emulators.ometria.faults import Faults, Stats
from sap_ometria_assets.emulators.ometria.handler import _Handler
from sap_ometria_assets.emulators.ometria.readback import ReadBackMixin
from sap_ometria_assets.emulators.ometria.store import _Store
from sap_ometria_assets.emulators.ometria.validation import (
    DIRECTIVES, KNOWN_TYPES, MAX_RECORDS, MAX_RECORD_BYTES, _BadRequest, line_product_ids, validate_record,
)


# --------------------------------------------------------------------------------------
# Emulator
# --------------------------------------------------------------------------------------
class OmetriaEmulator(ReadBackMixin):
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
