"""Delta pushes to Ometria with a ledger, an audit trail and a dry-run outbox.

A feed is one `ometria.<feed>` table (contacts, products, orders, stock), one row per Ometria
record with its `payload` and `payload_hash`. `push_feed` sends the rows whose hash differs
from the one Ometria last acknowledged for that (feed, id), in batches of at most 100 records
of one type. Acknowledgements are written in groups of `OMETRIA_ACK_EVERY_REQUESTS` requests
(default 1: every acknowledged request) or `ACK_EVERY_S` (1 s), whichever comes first: one
transaction writes their ledger rows, `ometria_push.requests` audit rows and per-record
`sent_records` rows. An exception (Ometria down, a bug, Ctrl-C) writes the acknowledged group
before it propagates. A process killed outright (SIGKILL, power loss) loses only the group not
yet written, and the re-run sends what was not recorded: nothing is lost, and at most that
many requests (by default only the batch in flight, 100 records) are sent twice (harmless,
Ometria upserts by type and id). At Ometria's few requests a second the per-request write
(~15 ms on a ledger of a million rows) is noise; a bulk load against an unthrottled endpoint
can raise the group size to trade that bound for speed.

The delta is read in chunks of `chunk_batches` batches: the plan keeps only keys (the source
row's `rowid`, id, hash), and each chunk reads its payloads by rowid range, so a push holds one
chunk of payloads in memory, not the whole feed, and reads the table once. Batches follow the
table's row order.

Stock flags (partial `@merge` products) are only sent for products Ometria holds from us,
and again after their product was re-sent whole.

Tables (schema `ometria_push`; DDL below is the contract):
- `ledger`, one row per (feed, id) (kept so by this module, which replaces rows): the last
  `payload_hash` sent, its `request_id`, `acknowledged_at`, `dry_run` and `status`:
  `accepted`; `pending` (Ometria said some records of the request were rejected and we have not
  yet learnt which); `unconfirmed` (we never learnt which, so it is sent again); `rejected`
  (Ometria reported this record in `/push/_errors`; sent again when its payload changes or when
  a run asks for `retry_rejected`); `dry_run` (written to the outbox only: a real push still
  sends it).
- `requests`: every push request (or outbox line), acknowledged or failed.
- `sent_records`: which record went in which request (audit, and to match Ometria's errors).
- `errors`: Ometria's reported errors (deduplicated), plus records refused before sending
  (`source = 'client'`, e.g. over 60 KB) or refused with a 4xx (`source = 'http'`).
- `error_fetches`: when `/push/_errors` was read and what it brought.

Nothing secret is written: the key stays inside the client.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import duckdb
import polars as pl

from sap_ometria_assets.lib.ometria.client import (
    MAX_RECORDS_PER_REQUEST,
    OmetriaClient,
    OmetriaError,
    OmetriaRequestError,
    OmetriaUnconfirmedError,
    PushError,
    PushResponse,
    build_body,
)

# One record limit ("Record is too large" above 60 KB) for the transforms, which hold such
# records back, and the push, which never sends one.
from sap_ometria_assets.lib.ometria.models import MAX_RECORD_BYTES

from sap_ometria_assets.lib.config.secrets import scrub, scrubbed_logger

log = scrubbed_logger(__name__)

# Feed (= table of schema `ometria`) -> record types it may hold.
FEEDS: dict[str, tuple[str, ...]] = {
    "contacts": ("contact",),
    "products": ("product",),
    "orders": ("order",),
    "stock": ("product",),
}
# Stock flags are partial (`@merge`) updates of products. They are sent only for products
# Ometria holds from us (a flag alone would create an empty stub product), and again whenever
# the product was re-sent whole after its flag (a whole product may drop the flag it held).
PARENT_FEED: dict[str, str] = {"stock": "products"}
# Ometria answers these for a request it cannot take as it stands; splitting the batch finds
# the record at fault so the other 99 still go.
_BISECT_STATUSES = (400, 413, 422)
# Grouped acknowledgements (see the module docstring): what a killed process sends again is
# at most OMETRIA_ACK_EVERY_REQUESTS requests (the group not yet written and the one in flight).
ACK_EVERY_S = 1.0


def ack_every_requests() -> int:
    from sap_ometria_assets.lib.config.settings import get_settings

    return get_settings().ometria_ack_every_requests

DDL = """
CREATE TABLE IF NOT EXISTS ometria_push.ledger (
    feed            VARCHAR NOT NULL,
    record_type     VARCHAR NOT NULL,
    id              VARCHAR NOT NULL,
    payload_hash    VARCHAR NOT NULL,
    request_id      VARCHAR,
    acknowledged_at TIMESTAMPTZ NOT NULL,
    dry_run         BOOLEAN NOT NULL,
    status          VARCHAR NOT NULL,
    error           VARCHAR
);
CREATE TABLE IF NOT EXISTS ometria_push.requests (
    request_id   VARCHAR NOT NULL,
    feed         VARCHAR NOT NULL,
    record_type  VARCHAR,
    sent_at      TIMESTAMPTZ NOT NULL,
    record_count INTEGER,
    bytes        BIGINT,
    http_status  INTEGER,
    duration_ms  DOUBLE,
    accepted     INTEGER,
    rejected     INTEGER,
    error        VARCHAR,
    dry_run      BOOLEAN NOT NULL,
    attempts     INTEGER,
    run_id       VARCHAR,
    outbox_path  VARCHAR
);
CREATE TABLE IF NOT EXISTS ometria_push.sent_records (
    request_id   VARCHAR NOT NULL,
    feed         VARCHAR NOT NULL,
    record_type  VARCHAR NOT NULL,
    id           VARCHAR NOT NULL,
    payload_hash VARCHAR NOT NULL,
    sent_at      TIMESTAMPTZ NOT NULL,
    dry_run      BOOLEAN NOT NULL
);
CREATE TABLE IF NOT EXISTS ometria_push.errors (
    error_key     VARCHAR PRIMARY KEY,
    fetched_at    TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    source        VARCHAR NOT NULL,
    request_id    VARCHAR,
    feed          VARCHAR,
    record_type   VARCHAR,
    record_id     VARCHAR,
    payload_hash  VARCHAR,
    error_message VARCHAR,
    error_path    VARCHAR,
    matched       BOOLEAN NOT NULL,
    raw           VARCHAR
);
CREATE TABLE IF NOT EXISTS ometria_push.error_fetches (
    fetched_at      TIMESTAMPTZ NOT NULL,
    errors_returned INTEGER NOT NULL,
    new_errors      INTEGER NOT NULL,
    matched         INTEGER NOT NULL,
    run_id          VARCHAR
);
"""


class Logger(Protocol):
    def info(self, msg: str) -> Any: ...
    def warning(self, msg: str) -> Any: ...


class PushInputMissingError(RuntimeError):
    """The `ometria.<feed>` table is not there yet."""


class PushAbortedError(RuntimeError):
    """A push stopped early (bad key, Ometria unavailable). `result` holds what was done."""

    def __init__(self, message: str, result: PushResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class ErrorSyncResult:
    fetched: int = 0
    new: int = 0
    matched: int = 0
    unmatched: int = 0
    pending_resolved: int = 0
    unconfirmed: int = 0


@dataclass
class PushResult:
    feed: str
    dry_run: bool
    rows_in_table: int = 0
    held_back: int = 0
    invalid: int = 0                 # pushable rows we refused to send (no id, over 60 KB, ...)
    waiting_for_parent: int = 0      # stock flags of products Ometria does not hold yet
    duplicate_ids: int = 0
    skipped_unchanged: int = 0
    to_send: int = 0
    records_sent: int = 0            # records in acknowledged requests (or outbox lines)
    records_accepted: int = 0
    records_rejected: int = 0        # rejected by Ometria (synchronously or via _errors) this run
    records_failed: int = 0          # refused with a 4xx; not acknowledged, retried next run
    records_unconfirmed: int = 0     # answered with a 2xx that is not Ometria's: sent again
    rejected_outstanding: int = 0    # records of the feed whose current version Ometria rejected
    requests: int = 0                # push requests that reached Ometria (acknowledged or not)
    bytes_sent: int = 0
    duration_s: float = 0.0
    outbox_path: str | None = None
    request_ids: list[str] = field(default_factory=list)
    errors: ErrorSyncResult | None = None
    aborted: str | None = None

    def metadata(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("request_ids", "errors")}
        if self.errors is not None:
            data.update({f"errors_{k}": v for k, v in asdict(self.errors).items()})
        return data


# --------------------------------------------------------------------------------------
def ensure_push_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS ometria_push")
    for statement in DDL.split(";"):
        if statement.strip():
            con.execute(statement)


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    # fetchall: an unfinished fetchone() result blocks the next con.sql() on duckdb 2.x
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table]).fetchall()[0][0])


def _now() -> datetime:
    return datetime.now(UTC)


class _Push:
    """State of one `push_feed` call."""

    def __init__(self, con: duckdb.DuckDBPyConnection, client: OmetriaClient | None, feed: str,
                 dry_run: bool, outbox: Path | None, run_id: str | None, logger: Logger) -> None:
        self.con = con
        self.client = client
        self.feed = feed
        self.dry_run = dry_run
        self.outbox = outbox
        self.run_id = run_id
        self.log = logger
        self.result = PushResult(feed=feed, dry_run=dry_run,
                                 outbox_path=str(outbox) if outbox else None)
        self.out: Any = None                                  # the outbox file, in a dry run
        # Acknowledged batches not yet written: (records, request row) pairs.
        self.pending: list[tuple[pl.DataFrame, dict[str, Any]]] = []
        self.pending_since = 0.0
        self.ack_every = ack_every_requests()

    # -- acknowledgements --------------------------------------------------------------
    def acknowledged(self, frame: pl.DataFrame, request: dict[str, Any]) -> None:
        """Queue an acknowledged batch; write the group once it is big or old enough."""
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.append((frame.select("record_type", "id", "payload_hash"), request))
        if (len(self.pending) >= self.ack_every
                or time.monotonic() - self.pending_since >= ACK_EVERY_S):
            self.flush()

    def flush(self) -> None:
        """Write the acknowledged group (after the outbox lines are on disk, in a dry run)."""
        if not self.pending:
            return
        if self.out is not None:
            self.out.flush()
            os.fsync(self.out.fileno())
        self._ack(self.pending)
        self.pending = []

    def flush_on_the_way_out(self) -> None:
        """`flush` while another exception propagates: that one matters more than ours."""
        if self.dry_run:
            return  # the outbox may be closed: the next dry run writes these lines again
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - the re-run resends the group: nothing lost
            self.log.warning(f"{self.feed}: could not record {len(self.pending)} acknowledged "
                             f"requests ({exc}); the next run sends them again")

    # -- writes ------------------------------------------------------------------------
    def _insert(self, table: str, frame: pl.DataFrame) -> None:
        self.con.register("_push_rows", frame)
        try:
            self.con.execute(f"INSERT INTO ometria_push.{table} BY NAME SELECT * FROM _push_rows")
        finally:
            self.con.unregister("_push_rows")

    def _ack(self, acked: list[tuple[pl.DataFrame, dict[str, Any]]]) -> None:
        """Ledger + sent_records + requests for acknowledged batches, in one transaction.

        Each pair is a batch's records and its request row, which names the ledger `status`."""
        requests = [req for _, req in acked]
        per_request = pl.DataFrame(
            {"request_id": [r["request_id"] for r in requests], "ts": [r["sent_at"] for r in requests],
             "status": [r["status"] for r in requests]},
            schema={"request_id": pl.String, "ts": pl.Datetime("us", "UTC"), "status": pl.String})
        # each record next to its request's values (row i of `per_request`, repeated per record)
        owner = pl.select(pl.int_range(len(acked), dtype=pl.UInt32).repeat_by(
            pl.Series([rows.height for rows, _ in acked], dtype=pl.UInt32)).explode()).to_series()
        base = pl.concat(
            [pl.concat([rows for rows, _ in acked]), per_request.select(pl.all().gather(owner))],
            how="horizontal",
        ).with_columns(pl.lit(self.feed).alias("feed"), pl.lit(self.dry_run).alias("dry_run"))
        ledger = base.select("feed", "record_type", "id", "payload_hash", "request_id",
                             pl.col("ts").alias("acknowledged_at"), "dry_run", "status",
                             pl.lit(None, dtype=pl.String).alias("error"))
        sent = base.select("request_id", "feed", "record_type", "id", "payload_hash",
                           pl.col("ts").alias("sent_at"), "dry_run")
        audit = pl.DataFrame([{k: v for k, v in r.items() if k in _REQUEST_SCHEMA} for r in requests],
                             schema=_REQUEST_SCHEMA)
        self.con.execute("BEGIN TRANSACTION")
        try:
            self._insert("requests", audit)
            # One row per (feed, id), kept by replacing inside this transaction: on a large
            # ledger this is several times faster than a primary key's ON CONFLICT upsert.
            self.con.register("_push_ack", ledger)
            try:
                self.con.execute(
                    "DELETE FROM ometria_push.ledger WHERE feed = ? "
                    "AND id IN (SELECT id FROM _push_ack)", [self.feed])
            finally:
                self.con.unregister("_push_ack")
            self._insert("ledger", ledger)
            self._insert("sent_records", sent)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def _record_failure(self, req: dict[str, Any], frame: pl.DataFrame | None, message: str) -> None:
        self.flush()  # the audit stays in the order things happened
        self.con.execute("BEGIN TRANSACTION")
        try:
            self._insert("requests", pl.DataFrame([req], schema=_REQUEST_SCHEMA))
            if frame is not None:
                record_errors(self.con, self.feed, frame, message, source="http")
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def _request_row(self, frame: pl.DataFrame, record_type: str, **values: Any) -> dict[str, Any]:
        row = {
            "request_id": None, "feed": self.feed, "record_type": record_type, "sent_at": _now(),
            "record_count": frame.height, "bytes": None, "http_status": None, "duration_ms": None,
            "accepted": None, "rejected": None, "error": None, "dry_run": self.dry_run,
            "attempts": None, "run_id": self.run_id,
            "outbox_path": str(self.outbox) if self.outbox else None,
        }
        row.update(values)
        if row.get("error"):
            row["error"] = scrub(row["error"])
        return row

    # -- sending -----------------------------------------------------------------------
    def send_real(self, frame: pl.DataFrame) -> None:
        assert self.client is not None
        record_type = frame["record_type"][0]
        records = frame["payload"].to_list()
        try:
            response = self.client.push(records, record_type)
        except OmetriaUnconfirmedError as exc:
            # A 2xx that is not Ometria's answer: maybe delivered, maybe not. The batch's ledger
            # rows say `unconfirmed` (sent again next run), its audit row names the reason, and
            # the push stops: whoever answered this is likely to answer every batch so.
            self.result.requests += 1
            self.result.records_unconfirmed += frame.height
            self.flush()
            row = self._failed_row(frame, record_type, exc)
            row.update(request_id=f"unconfirmed-{uuid.uuid4()}",
                       error=f"unconfirmed: {exc.reason}", status="unconfirmed")
            self._ack([(frame.select("record_type", "id", "payload_hash"), row)])
            raise
        except OmetriaRequestError as exc:
            self.result.requests += 1
            if exc.http_status in _BISECT_STATUSES and frame.height > 1:
                half = frame.height // 2
                self.log.warning(
                    f"Ometria refused a batch of {frame.height} {record_type} records "
                    f"(HTTP {exc.http_status}); splitting it to find the record at fault")
                self._record_failure(self._failed_row(frame, record_type, exc), None, str(exc))
                self.send_real(frame.slice(0, half))
                self.send_real(frame.slice(half))
                return
            if exc.http_status in _BISECT_STATUSES:
                self.result.records_failed += 1
                self.log.warning(f"Ometria refused {self.feed} record {frame['id'][0]!r}: {exc}")
                self._record_failure(self._failed_row(frame, record_type, exc), frame, str(exc))
                return
            self._record_failure(self._failed_row(frame, record_type, exc), None, str(exc))
            raise
        except OmetriaError as exc:
            if exc.http_status is not None:
                self.result.requests += 1
            self._record_failure(self._failed_row(frame, record_type, exc), None, str(exc))
            raise
        self.result.requests += 1
        self._count_ack(frame, response)
        status = "accepted" if response.rejected == 0 else "pending"
        self.acknowledged(frame, self._request_row(
            frame, record_type, request_id=response.request_id, bytes=response.bytes_sent,
            sent_at=_now() - timedelta(milliseconds=response.duration_ms),
            http_status=response.http_status, duration_ms=response.duration_ms,
            accepted=response.accepted, rejected=response.rejected, attempts=response.attempts,
            status=status,
        ))

    def _failed_row(self, frame: pl.DataFrame, record_type: str, exc: OmetriaError) -> dict[str, Any]:
        return self._request_row(
            frame, record_type, request_id=f"failed-{uuid.uuid4()}", http_status=exc.http_status,
            duration_ms=exc.duration_ms, attempts=exc.attempts, error=str(exc),
            bytes=int(frame["bytes"].sum()) + frame.height + 1)

    def _count_ack(self, frame: pl.DataFrame, response: PushResponse) -> None:
        r = self.result
        r.records_sent += frame.height
        r.records_accepted += response.accepted
        r.records_rejected += response.rejected
        r.bytes_sent += response.bytes_sent
        r.request_ids.append(response.request_id)

    def send_dry(self, chunk: pl.DataFrame) -> None:
        for frame in chunk.partition_by("batch_no", maintain_order=True):
            record_type = frame["record_type"][0]
            body = build_body(frame["payload"].to_list())
            self.out.write(body + b"\n")
            request_id = f"dry-{uuid.uuid4()}"
            self.pending.append((frame.select("record_type", "id", "payload_hash"),
                                 self._request_row(
                frame, record_type, request_id=request_id, bytes=len(body), accepted=frame.height,
                rejected=0, status="dry_run")))
            r = self.result
            r.requests += 1
            r.records_sent += frame.height
            r.records_accepted += frame.height
            r.bytes_sent += len(body)
            r.request_ids.append(request_id)
        # One transaction per chunk; the outbox lines are on disk before the ledger says so.
        self.flush()


_REQUEST_SCHEMA = {
    "request_id": pl.String, "feed": pl.String, "record_type": pl.String,
    "sent_at": pl.Datetime("us", "UTC"), "record_count": pl.Int32, "bytes": pl.Int64,
    "http_status": pl.Int32, "duration_ms": pl.Float64, "accepted": pl.Int32, "rejected": pl.Int32,
    "error": pl.String, "dry_run": pl.Boolean, "attempts": pl.Int32, "run_id": pl.String,
    "outbox_path": pl.String,
}


def record_errors(con: duckdb.DuckDBPyConnection, feed: str, frame: pl.DataFrame,
                  message: str | pl.Expr, *, source: str) -> None:
    """Errors we raise ourselves (records refused before or while sending), one per record
    and payload version: seen again, only `last_seen_at` moves."""
    now = _now()
    rows = frame.with_columns(
        (message if isinstance(message, pl.Expr) else pl.lit(scrub(message))).alias("error_message"),
    ).select(
        pl.col("record_type"), pl.col("id").alias("record_id"), pl.col("payload_hash"),
        pl.col("error_message"), pl.lit(feed).alias("feed"),
    )
    con.register("_push_err", rows)
    try:
        con.execute(
            """
            INSERT INTO ometria_push.errors (error_key, fetched_at, last_seen_at, source, request_id,
                feed, record_type, record_id, payload_hash, error_message, error_path, matched, raw)
            SELECT DISTINCT ON (k) k, ?, ?, ?, NULL, feed, record_type, record_id, payload_hash,
                   error_message, NULL, TRUE, NULL
            FROM (SELECT *, sha256(concat_ws('|', ?, feed, record_id, payload_hash, error_message)) AS k
                  FROM _push_err)
            ON CONFLICT (error_key) DO UPDATE SET last_seen_at = excluded.last_seen_at
            """,
            [now, now, source, source],
        )
    finally:
        con.unregister("_push_err")


def _outbox_path(outbox_dir: Path, run_id: str | None, feed: str) -> Path:
    stem = run_id or _now().strftime("%Y%m%dT%H%M%SZ")
    return Path(outbox_dir) / f"{stem}-{feed}.ndjson"


def push_feed(
    con: duckdb.DuckDBPyConnection,
    client: OmetriaClient | None,
    feed: str,
    *,
    dry_run: bool,
    outbox_dir: str | Path | None = None,
    run_id: str | None = None,
    logger: Logger | None = None,
    retry_rejected: bool = False,
    where: str | None = None,
    chunk_batches: int = 100,
) -> PushResult:
    """Push what changed in `ometria.<feed>` (or write it to the outbox when `dry_run`).

    `where` narrows the feed with a SQL predicate on its columns (trusted code only, e.g. a
    backfill month); `retry_rejected` sends again records Ometria rejected even if unchanged
    (after fixing the cause in Ometria, e.g. a missing custom field).
    Raises `PushAbortedError` (with the partial result) when Ometria refuses the key or stays
    unavailable; everything acknowledged before is kept in the ledger."""
    if feed not in FEEDS:
        raise ValueError(f"unknown feed {feed!r}; expected one of {sorted(FEEDS)}")
    if not dry_run and client is None:
        raise ValueError("a real push needs an OmetriaClient (or dry_run=True)")
    if dry_run and outbox_dir is None:
        raise ValueError("a dry run needs an outbox_dir")
    logger = logger or log
    started = time.perf_counter()
    ensure_push_tables(con)
    if not _table_exists(con, "ometria", feed):
        raise PushInputMissingError(
            f"ometria.{feed} does not exist: materialise the ometria/{feed} asset first")
    if con.execute("SELECT count(*) FROM duckdb_views() WHERE schema_name = 'ometria' AND view_name = ?",
                   [feed]).fetchall()[0][0]:
        # the chunks read payloads back by rowid, which only a table has
        raise PushInputMissingError(f"ometria.{feed} is a view; the push reads a table")

    outbox = _outbox_path(Path(outbox_dir), run_id, feed) if dry_run else None
    state = _Push(con, client, feed, dry_run, outbox, run_id, logger)
    result = state.result
    _plan(con, feed, result, dry_run=dry_run, retry_rejected=retry_rejected, where=where,
          logger=logger)
    logger.info(
        f"{feed}: {result.rows_in_table} rows, {result.held_back} held back, {result.invalid} invalid, "
        f"{result.skipped_unchanged} unchanged, {result.to_send} to "
        f"{'write to the outbox' if dry_run else 'send'}")

    try:
        if result.to_send:
            if dry_run:
                assert outbox is not None
                outbox.parent.mkdir(parents=True, exist_ok=True)
                with open(outbox, "ab") as state.out:
                    for chunk in _chunks(con, feed, chunk_batches):
                        state.send_dry(chunk)
                state.out = None
            else:
                for chunk in _chunks(con, feed, chunk_batches):
                    for frame in chunk.partition_by("batch_no", maintain_order=True):
                        state.send_real(frame)
                state.flush()
    except OmetriaError as exc:
        state.flush()  # what Ometria acknowledged before it failed
        result.aborted = str(exc)
        result.duration_s = round(time.perf_counter() - started, 3)
        raise PushAbortedError(
            f"Push of {feed} stopped: {exc} ({result.records_sent} of {result.to_send} records "
            "acknowledged in this run are kept; the next run sends the rest).", result) from exc
    except BaseException:
        state.flush_on_the_way_out()
        raise
    finally:
        con.execute("DROP TABLE IF EXISTS _push_delta")

    if not dry_run and result.requests:
        assert client is not None
        try:
            result.errors = sync_errors(con, client, run_id=run_id, logger=logger)
        except OmetriaError as exc:
            logger.warning(f"could not read Ometria's error list after pushing {feed}: {exc}")
    if result.request_ids and not dry_run:
        result.records_rejected = max(result.records_rejected, _rejected_in(con, result.request_ids))
    result.rejected_outstanding = int(con.execute(
        "SELECT count(*) FROM ometria_push.ledger WHERE feed = ? AND status = 'rejected'",
        [feed]).fetchall()[0][0])
    if not result.records_sent:
        result.outbox_path = None
    result.duration_s = round(time.perf_counter() - started, 3)
    if result.to_send:
        logger.info(
            f"{feed}: {'wrote' if dry_run else 'sent'} {result.records_sent} records in "
            f"{result.requests} requests ({result.bytes_sent} bytes), {result.records_rejected} "
            f"rejected, {result.records_failed} refused, in {result.duration_s:.1f}s")
    return result


def _rejected_in(con: duckdb.DuckDBPyConnection, request_ids: list[str]) -> int:
    con.register("_push_reqs", pl.DataFrame({"request_id": request_ids}))
    try:
        row = con.execute(
            "SELECT count(*) FROM ometria_push.ledger WHERE status = 'rejected' "
            "AND request_id IN (SELECT request_id FROM _push_reqs)").fetchall()[0]
    finally:
        con.unregister("_push_reqs")
    return int(row[0]) if row else 0


def _invalid_sql(feed: str) -> str:
    types = ", ".join(f"'{t}'" for t in FEEDS[feed])
    return f"""CASE
        WHEN id IS NULL OR CAST(id AS VARCHAR) = '' THEN 'record has no id'
        WHEN payload IS NULL OR payload = '' THEN 'record has no payload'
        WHEN record_type IS NULL OR record_type NOT IN ({types})
            THEN 'record_type ' || coalesce(record_type, 'NULL') || ' does not belong to feed {feed}'
        WHEN strlen(payload) > {MAX_RECORD_BYTES}
            THEN 'Record is too large: ' || strlen(payload) || ' bytes, Ometria takes at most {MAX_RECORD_BYTES}'
        END"""


def _plan(con: duckdb.DuckDBPyConnection, feed: str, result: PushResult, *, dry_run: bool,
          retry_rejected: bool, where: str | None, logger: Logger) -> None:
    """Counts, locally invalid rows, and the delta (temp table `_push_delta` with batch numbers)."""
    source = f'ometria."{feed}"'
    filt = f"({where})" if where else "TRUE"
    invalid = _invalid_sql(feed)
    total, held_back, pushable, distinct_ids = con.execute(
        f"""SELECT count(*), count(*) FILTER (WHERE held_back_reason IS NOT NULL),
                   count(*) FILTER (WHERE held_back_reason IS NULL AND ({invalid}) IS NULL),
                   count(DISTINCT CAST(id AS VARCHAR)) FILTER (WHERE held_back_reason IS NULL AND ({invalid}) IS NULL)
            FROM {source} WHERE {filt}""").fetchall()[0]
    result.rows_in_table, result.held_back = int(total), int(held_back)

    bad = con.sql(
        f"""SELECT record_type, CAST(id AS VARCHAR) AS id,
                   coalesce(payload_hash, sha256(coalesce(payload, ''))) AS payload_hash, ({invalid}) AS reason
            FROM {source} WHERE {filt} AND held_back_reason IS NULL AND ({invalid}) IS NOT NULL""").pl()
    result.invalid = bad.height
    if bad.height:
        reasons = bad.group_by("reason").len().sort("len", descending=True).head(5).rows()
        logger.warning(f"{feed}: {bad.height} rows not sent (see ometria_push.errors): {reasons}")
        record_errors(con, feed, bad.with_columns(pl.col("record_type").fill_null("?"),
                                                  pl.col("id").fill_null("")),
                      pl.col("reason"), source="client")

    dedupe = ""
    result.duplicate_ids = int(pushable) - int(distinct_ids)
    if result.duplicate_ids:
        # The contract is one row per record; if a transform ever breaks it, send one
        # deterministic version instead of letting two versions overwrite each other.
        logger.warning(f"{feed}: {result.duplicate_ids} duplicate ids in ometria.{feed}; "
                       "sending one version of each")
        dedupe = "QUALIFY row_number() OVER (PARTITION BY id ORDER BY payload_hash) = 1"

    changed = ["l.id IS NULL", "l.payload_hash <> s.payload_hash"]
    if not dry_run:
        changed += ["l.dry_run", "l.status IN ('pending', 'unconfirmed')"]
        if retry_rejected:
            changed.append("l.status = 'rejected'")
    parent_join, parent_ok = "", "TRUE"
    if feed in PARENT_FEED:
        parent_join = (
            "LEFT JOIN (SELECT id, acknowledged_at, dry_run, status FROM ometria_push.ledger "
            f"WHERE feed = '{PARENT_FEED[feed]}') p ON p.id = s.id")
        changed.append("p.acknowledged_at > l.acknowledged_at")
        parent_ok = "p.id IS NOT NULL AND p.status <> 'rejected'" + ("" if dry_run else " AND NOT p.dry_run")
    # Keys only (the payloads stay in the table until their chunk is sent); `rid` is the
    # source row, which `_chunks` reads back by rowid range.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _push_delta AS
        WITH s AS (
            SELECT rowid AS rid, record_type, CAST(id AS VARCHAR) AS id,
                   coalesce(payload_hash, sha256(payload)) AS payload_hash,
                   strlen(payload) AS bytes
            FROM {source}
            WHERE {filt} AND held_back_reason IS NULL AND ({invalid}) IS NULL
            {dedupe}
        ),
        d AS (
            SELECT s.rid, s.record_type, s.id, s.payload_hash, s.bytes,
                   coalesce({parent_ok}, FALSE) AS parent_ok
            FROM s
            LEFT JOIN (SELECT id, payload_hash, dry_run, status, acknowledged_at
                       FROM ometria_push.ledger WHERE feed = ?) l ON l.id = s.id
            {parent_join}
            WHERE {' OR '.join(changed)}
        )
        -- batch_no NULL: waiting for its product to reach Ometria
        SELECT CASE WHEN parent_ok THEN dense_rank() OVER (
                   PARTITION BY parent_ok ORDER BY record_type, (pos - 1) // {MAX_RECORDS_PER_REQUEST})
               END AS batch_no, *
        FROM (SELECT *, row_number() OVER (PARTITION BY parent_ok, record_type ORDER BY rid) AS pos FROM d)
        """,
        [feed],
    )
    to_send, waiting = con.execute(
        "SELECT count(batch_no), count(*) - count(batch_no) FROM _push_delta").fetchall()[0]
    result.to_send, result.waiting_for_parent = int(to_send), int(waiting)
    if waiting:
        logger.info(f"{feed}: {waiting} records wait until their {PARENT_FEED[feed]} reach Ometria")
    result.skipped_unchanged = int(distinct_ids) - result.to_send - result.waiting_for_parent


def _chunks(con: duckdb.DuckDBPyConnection, feed: str, chunk_batches: int) -> Iterator[pl.DataFrame]:
    """The delta with its payloads, `chunk_batches` batches at a time (a batch = one
    `batch_no`, one record type, consecutive rows of the table).

    A chunk's rows lie in one rowid range of `ometria.<feed>`, so reading their payloads skips
    the rest of the table: the whole push reads each row about once. The ids are checked
    against the plan: if the table was rewritten since (it cannot be while this connection
    holds the warehouse, but a check costs nothing), this stops rather than send the wrong
    payload under an id."""
    last = int(con.execute("SELECT coalesce(max(batch_no), 0) FROM _push_delta").fetchall()[0][0])
    for first in range(1, last + 1, chunk_batches):
        bounds = [first, first + chunk_batches - 1]
        lo, hi, expected = con.execute(
            "SELECT min(rid), max(rid), count(*) FROM _push_delta WHERE batch_no BETWEEN ? AND ?",
            bounds).fetchall()[0]
        chunk = con.sql(
            f"""SELECT d.batch_no, d.record_type, d.id, s.payload, d.payload_hash, d.bytes
                FROM (SELECT * FROM _push_delta WHERE batch_no BETWEEN ? AND ?) d
                JOIN (SELECT rowid AS rid, CAST(id AS VARCHAR) AS id, payload FROM ometria."{feed}"
                      WHERE rowid BETWEEN ? AND ?) s ON s.rid = d.rid AND s.id = d.id
                ORDER BY d.batch_no, d.pos""",
            params=[*bounds, lo, hi],
        ).pl()
        if chunk.height != expected:
            raise RuntimeError(
                f"ometria.{feed} changed while it was being pushed ({expected - chunk.height} "
                "planned rows gone); run the push again")
        yield chunk


# --------------------------------------------------------------------------------------
# Ometria's asynchronous errors
# --------------------------------------------------------------------------------------
_FETCHED_SCHEMA = {
    "request_id": pl.String, "record_type": pl.String, "record_id": pl.String,
    "error_message": pl.String, "error_path": pl.String, "raw": pl.String,
}


def sync_errors(con: duckdb.DuckDBPyConnection, client: OmetriaClient, *, run_id: str | None = None,
                logger: Logger | None = None, errors: list[PushError] | None = None) -> ErrorSyncResult:
    """Read `GET /push/_errors`, store what is new and mark the records it names.

    An error is matched to the record sent in its request (request_id + record_id, the richer
    shape); failing that, to the latest acknowledged record of that id and type; errors that
    name no record (the documented flat shape) are kept unmatched. Batches Ometria answered
    with `rejected > 0` wait in `pending` until their rejected records are identified: the
    rest become `accepted`, and if not all could be identified the unidentified ones become
    `unconfirmed` and are sent again next run rather than silently counted as delivered."""
    logger = logger or log
    ensure_push_tables(con)
    fetched = client.fetch_errors() if errors is None else errors
    out = ErrorSyncResult(fetched=len(fetched))
    now = _now()
    # Ometria echoes records and messages back: whatever secret they carry is not stored (at
    # most 100 entries a read, so a Python pass is nothing)
    frame = pl.DataFrame(
        [{k: scrub(getattr(e, k)) for k in _FETCHED_SCHEMA} for e in fetched], schema=_FETCHED_SCHEMA)
    con.register("_fetched", frame)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE _new_errors AS
            WITH f AS (
                SELECT DISTINCT ON (k) sha256('ometria|' || raw) AS k, * FROM _fetched
            ),
            n AS (SELECT f.* FROM f ANTI JOIN ometria_push.errors e ON e.error_key = f.k),
            by_request AS (
                SELECT n.k, sr.feed, sr.payload_hash, sr.record_type AS sent_type
                FROM n JOIN ometria_push.sent_records sr
                  ON sr.request_id = n.request_id AND sr.id = n.record_id AND NOT sr.dry_run
                QUALIFY row_number() OVER (PARTITION BY n.k ORDER BY sr.sent_at DESC) = 1
            ),
            by_id AS (
                SELECT n.k, l.feed, l.payload_hash, l.request_id AS ledger_request
                FROM n JOIN ometria_push.ledger l
                  ON l.id = n.record_id AND NOT l.dry_run
                 AND (n.record_type IS NULL OR l.record_type = n.record_type)
                WHERE n.k NOT IN (SELECT k FROM by_request)
                QUALIFY row_number() OVER (PARTITION BY n.k ORDER BY l.acknowledged_at DESC) = 1
            )
            SELECT n.*, coalesce(r.feed, i.feed) AS feed,
                   coalesce(r.payload_hash, i.payload_hash) AS payload_hash,
                   coalesce(n.record_type, r.sent_type) AS resolved_type,
                   CASE WHEN r.k IS NOT NULL THEN n.request_id ELSE i.ledger_request END AS match_request,
                   (r.k IS NOT NULL OR i.k IS NOT NULL) AS matched
            FROM n LEFT JOIN by_request r ON r.k = n.k LEFT JOIN by_id i ON i.k = n.k
            """
        )
        con.execute(
            """
            INSERT INTO ometria_push.errors (error_key, fetched_at, last_seen_at, source, request_id,
                feed, record_type, record_id, payload_hash, error_message, error_path, matched, raw)
            SELECT k, ?, ?, 'ometria', request_id, feed, resolved_type, record_id, payload_hash,
                   error_message, error_path, matched, raw
            FROM _new_errors
            """,
            [now, now],
        )
        con.execute(
            "UPDATE ometria_push.errors SET last_seen_at = ? "
            "WHERE error_key IN (SELECT sha256('ometria|' || raw) FROM _fetched)", [now])
        # Only the version the error was about: a record re-sent since keeps its newer status.
        con.execute(
            """
            UPDATE ometria_push.ledger AS l SET status = 'rejected', error = m.msg
            FROM (SELECT feed, record_id, match_request,
                         string_agg(coalesce(error_path || ': ', '') || error_message, '; ') AS msg
                  FROM _new_errors WHERE matched GROUP BY ALL) m
            WHERE l.feed = m.feed AND l.id = m.record_id AND l.request_id = m.match_request
            """
        )
        counts = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE matched) FROM _new_errors").fetchall()[0]
        out.new, out.matched = int(counts[0]), int(counts[1])
        out.unmatched = out.new - out.matched
        pending = con.execute(
            """
            SELECT l.request_id,
                   count(*) FILTER (WHERE l.status = 'rejected') AS identified,
                   any_value(r.rejected) AS rejected
            FROM ometria_push.ledger l JOIN ometria_push.requests r USING (request_id)
            WHERE l.request_id IN (SELECT request_id FROM ometria_push.ledger WHERE status = 'pending')
            GROUP BY l.request_id
            """
        ).fetchall()
        complete = [rid for rid, identified, rejected in pending if identified >= (rejected or 0)]
        incomplete = [rid for rid, identified, rejected in pending if identified < (rejected or 0)]
        for ids, status in ((complete, "accepted"), (incomplete, "unconfirmed")):
            if ids:
                res = con.execute(
                    "UPDATE ometria_push.ledger SET status = ? WHERE status = 'pending' "
                    "AND request_id IN (SELECT unnest(?::VARCHAR[]))", [status, ids]).fetchall()[0]
                n = int(res[0]) if res else 0
                if status == "accepted":
                    out.pending_resolved += n
                else:
                    out.unconfirmed += n
        con.execute(
            "INSERT INTO ometria_push.error_fetches VALUES (?, ?, ?, ?, ?)",
            [now, out.fetched, out.new, out.matched, run_id])
        con.execute("DROP TABLE IF EXISTS _new_errors")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_fetched")
    if out.new:
        logger.warning(
            f"Ometria reported {out.new} new validation errors ({out.matched} matched to records, "
            f"{out.unmatched} unmatched); see ometria_push.errors")
    if out.unconfirmed:
        logger.warning(
            f"{out.unconfirmed} records of requests with rejections could not be identified in "
            "Ometria's error list; they will be sent again next run")
    return out


def errors_fetch_due(con: duckdb.DuckDBPyConnection, *, settle_s: float = 300.0,
                     now: datetime | None = None) -> bool:
    """Whether `/push/_errors` is worth reading: something was pushed since the last read, or
    the last read came before Ometria's asynchronous validation had time to settle (so late
    errors are still collected once). A sync with nothing new then makes no request at all."""
    ensure_push_tables(con)
    now = now or _now()
    last_push, last_fetch = con.execute(
        """SELECT (SELECT max(sent_at) FROM ometria_push.requests
                   WHERE NOT dry_run AND http_status BETWEEN 200 AND 299),
                  (SELECT max(fetched_at) FROM ometria_push.error_fetches)""").fetchall()[0]
    if last_push is None:
        return False
    if last_fetch is None or last_fetch < last_push:
        return True
    settled = last_push + timedelta(seconds=settle_s)
    return last_fetch < settled <= now


def ledger_summary(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Records per feed and status (what Ometria holds from us, what needs attention)."""
    ensure_push_tables(con)
    return con.sql(
        "SELECT feed, status, dry_run, count(*) AS records FROM ometria_push.ledger "
        "GROUP BY ALL ORDER BY ALL").pl()
