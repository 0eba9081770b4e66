"""Sending a feed to Ometria: the push loop, its acknowledgements and the dry-run outbox.

A feed is one `ometria.<feed>` table (contacts, products, orders, stock), one row per Ometria
record with its `payload` and `payload_hash`. `push_feed` sends the rows whose hash differs
from the one Ometria last acknowledged for that (feed, id), in batches of at most 100 records
of one type. Each acknowledged request is journalled durably (lib/push/journal.py: one line
and an fdatasync, 1-2 ms) before the next request goes; the acknowledged group then reaches
DuckDB every `OMETRIA_ACK_EVERY_REQUESTS` requests (default 50) or `ACK_EVERY_S` (1 s),
whichever comes first: one transaction writes their `ometria_push.requests` audit rows and
per-record `sent_records` rows and appends the records to `ometria_push.acks`, which is merged
into the ledger once at the end of the feed's push (so no write grows with the ledger). An
exception (Ometria down, a bug, Ctrl-C) writes the acknowledged group before it propagates. A
process killed outright (SIGKILL, power loss) leaves its journal, which the next push replays
first: nothing is lost, and at most the batch in flight (100 records) is sent twice (harmless,
Ometria upserts by type and id), whatever the group size. A dry run writes the outbox instead
and keeps no journal (its group is written after the outbox lines are on disk).

What is sent is planned in `plan.py`; the tables written are described in `ledger.py`.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from sap_ometria_assets.lib.config.secrets import scrub, scrubbed_logger
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.ometria.answers import PushResponse
from sap_ometria_assets.lib.ometria.client import OmetriaClient, build_body
from sap_ometria_assets.lib.ometria.errors import (
    OmetriaError,
    OmetriaRequestError,
    OmetriaUnconfirmedError,
)
from sap_ometria_assets.lib.push.errors import record_errors, sync_errors
from sap_ometria_assets.lib.push.journal import Journal, journal_dir, settle
from sap_ometria_assets.lib.push.ledger import (
    FEEDS,
    REQUEST_SCHEMA,
    ensure_push_tables,
    insert_rows,
    merge_acknowledged,
    rejected_in,
    rejected_outstanding,
    utc_now,
    write_acknowledged,
)
from sap_ometria_assets.lib.push.plan import delta_chunks, plan_delta
from sap_ometria_assets.lib.push.results import Logger, PushAbortedError, PushInputMissingError, PushResult
from sap_ometria_assets.lib.warehouse.sql import table_exists, transaction

log = scrubbed_logger(__name__)

# Ometria answers these for a request it cannot take as it stands; splitting the batch finds
# the record at fault so the other 99 still go.
_BISECT_STATUSES = (400, 413, 422)
# Grouped acknowledgements (see the module docstring): what a killed process sends again is
# at most OMETRIA_ACK_EVERY_REQUESTS requests (the group not yet written and the one in flight).
ACK_EVERY_S = 1.0


def ack_every_requests() -> int:
    return get_settings().ometria_ack_every_requests


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
        # a real push journals each acknowledgement durably before the next request (journal.py)
        folder = None if dry_run else journal_dir(con)
        self.journal = Journal(folder, feed) if folder is not None else None

    # -- acknowledgements --------------------------------------------------------------
    def acknowledged(self, frame: pl.DataFrame, request: dict[str, Any]) -> None:
        """Queue an acknowledged batch; write the group once it is big or old enough."""
        if not self.pending:
            self.pending_since = time.monotonic()
        records = frame.select("record_type", "id", "payload_hash")
        if self.journal is not None:
            self.journal.append(self.feed, self.dry_run, records, request)
        self.pending.append((records, request))
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
        if self.journal is not None:
            self.journal.clear()

    def flush_on_the_way_out(self) -> None:
        """`flush` while another exception propagates: that one matters more than ours."""
        if self.dry_run:
            return  # the outbox may be closed: the next dry run writes these lines again
        try:
            self.flush()
            merge_acknowledged(self.con)
        except Exception as exc:  # noqa: BLE001 - the re-run resends the group: nothing lost
            self.log.warning(f"{self.feed}: could not record {len(self.pending)} acknowledged "
                             f"requests ({exc}); the next run sends them again")

    # -- writes ------------------------------------------------------------------------
    def _ack(self, acked: list[tuple[pl.DataFrame, dict[str, Any]]]) -> None:
        write_acknowledged(self.con, self.feed, self.dry_run, acked)

    def _record_failure(self, req: dict[str, Any], frame: pl.DataFrame | None, message: str) -> None:
        self.flush()  # the audit stays in the order things happened
        with transaction(self.con):
            insert_rows(self.con, "requests", pl.DataFrame([req], schema=REQUEST_SCHEMA))
            if frame is not None:
                record_errors(self.con, self.feed, frame, message, source="http")

    def _request_row(self, frame: pl.DataFrame, record_type: str, **values: Any) -> dict[str, Any]:
        row = {
            "request_id": None, "feed": self.feed, "record_type": record_type, "sent_at": utc_now(),
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
            sent_at=utc_now() - timedelta(milliseconds=response.duration_ms),
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


def _outbox_path(outbox_dir: Path, run_id: str | None, feed: str) -> Path:
    stem = run_id or utc_now().strftime("%Y%m%dT%H%M%SZ")
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
    settle(con)  # what a killed push had acknowledged, before planning from the ledger
    if not table_exists(con, "ometria", feed):
        raise PushInputMissingError(
            f"ometria.{feed} does not exist: materialise the ometria/{feed} asset first")
    if con.execute("SELECT count(*) FROM duckdb_views() WHERE schema_name = 'ometria' AND view_name = ?",
                   [feed]).fetchall()[0][0]:
        # the chunks read payloads back by rowid, which only a table has
        raise PushInputMissingError(f"ometria.{feed} is a view; the push reads a table")

    outbox = _outbox_path(Path(outbox_dir), run_id, feed) if dry_run else None
    state = _Push(con, client, feed, dry_run, outbox, run_id, logger)
    result = state.result
    plan_delta(con, feed, result, dry_run=dry_run, retry_rejected=retry_rejected, where=where,
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
                    for chunk in delta_chunks(con, feed, chunk_batches):
                        state.send_dry(chunk)
                state.out = None
            else:
                for chunk in delta_chunks(con, feed, chunk_batches):
                    for frame in chunk.partition_by("batch_no", maintain_order=True):
                        state.send_real(frame)
                state.flush()
        merge_acknowledged(con)
    except OmetriaError as exc:
        state.flush()  # what Ometria acknowledged before it failed
        merge_acknowledged(con)
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
        if state.journal is not None:
            state.journal.close()

    if not dry_run and result.requests:
        assert client is not None
        try:
            result.errors = sync_errors(con, client, run_id=run_id, logger=logger)
        except OmetriaError as exc:
            logger.warning(f"could not read Ometria's error list after pushing {feed}: {exc}")
    if result.request_ids and not dry_run:
        result.records_rejected = max(result.records_rejected, rejected_in(con, result.request_ids))
    result.rejected_outstanding = rejected_outstanding(con, feed)
    if not result.records_sent:
        result.outbox_path = None
    result.duration_s = round(time.perf_counter() - started, 3)
    if result.to_send:
        logger.info(
            f"{feed}: {'wrote' if dry_run else 'sent'} {result.records_sent} records in "
            f"{result.requests} requests ({result.bytes_sent} bytes), {result.records_rejected} "
            f"rejected, {result.records_failed} refused, in {result.duration_s:.1f}s")
    return result
