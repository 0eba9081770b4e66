"""The push's own tables in schema `ometria_push`: their DDL, and the ledger's reads and writes.

What Ometria holds from us is read from here: each feed's last acknowledged version of every
record, every request sent, and which record went in which request.

Tables (schema `ometria_push`; DDL below is the contract):
- `ledger`, one row per (feed, id) (kept so by `merge_acknowledged`, which replaces rows): the last
  `payload_hash` sent, its `request_id`, `acknowledged_at`, `dry_run` and `status`:
  `accepted`; `pending` (Ometria said some records of the request were rejected and we have not
  yet learnt which); `unconfirmed` (we never learnt which, so it is sent again); `rejected`
  (Ometria reported this record in `/push/_errors`; sent again when its payload changes or when
  a run asks for `retry_rejected`); `dry_run` (written to the outbox only: a real push still
  sends it).
- `acks`: acknowledgements not yet merged into `ledger`, same columns. Each acknowledged request
  appends its rows here (work proportional to the request, not to the ledger) in the transaction
  that writes its `requests` and `sent_records` rows; `merge_acknowledged` folds them into
  `ledger` in one pass at the end of each feed's push, and at the start of the next push (or
  error read) after a process was killed, so the ledger a push plans from is always complete.
- `requests`: every push request (or outbox line), acknowledged or failed.
- `sent_records`: which record went in which request (audit, and to match Ometria's errors).
- `errors`: Ometria's reported errors (deduplicated), plus records refused before sending
  (`source = 'client'`, e.g. without an id) or refused with a 4xx (`source = 'http'`).
- `error_fetches`: when `/push/_errors` was read and what it brought.

Nothing secret is written: the key stays inside the client.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import duckdb
import polars as pl

from sap_ometria_assets.lib.warehouse.db import append_rows
from sap_ometria_assets.lib.warehouse.sql import transaction

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

DDL = """
CREATE TABLE IF NOT EXISTS ometria_push.ledger (
    feed            VARCHAR NOT NULL,  -- Ometria-ready table the record comes from: contacts, products, orders or stock
    record_type     VARCHAR NOT NULL,  -- Ometria record type (contact, product, order)
    id              VARCHAR NOT NULL,  -- Ometria id of the record (the SAP key, e.g. the CardCode for a contact)
    payload_hash    VARCHAR NOT NULL,  -- Hash of the last payload sent and acknowledged: unchanged records are not sent again
    request_id      VARCHAR,  -- Request that carried it (ometria_push.requests.request_id)
    acknowledged_at TIMESTAMPTZ NOT NULL,  -- When Ometria acknowledged the request (UTC)
    dry_run         BOOLEAN NOT NULL,  -- True when only written to the outbox (a real push still sends it)
    status          VARCHAR NOT NULL,  -- accepted, pending (rejections reported, not yet which), unconfirmed (sent again), rejected (listed by /push/_errors) or dry_run
    error           VARCHAR  -- Ometria's error message for a rejected record
);
CREATE TABLE IF NOT EXISTS ometria_push.acks (
    feed            VARCHAR NOT NULL,  -- Ometria-ready table the record comes from
    record_type     VARCHAR NOT NULL,  -- Ometria record type (contact, product, order)
    id              VARCHAR NOT NULL,  -- Ometria id of the record
    payload_hash    VARCHAR NOT NULL,  -- Hash of the payload acknowledged
    request_id      VARCHAR,  -- Request that carried it (ometria_push.requests.request_id)
    acknowledged_at TIMESTAMPTZ NOT NULL,  -- When Ometria acknowledged the request (UTC)
    dry_run         BOOLEAN NOT NULL,  -- True when only written to the outbox
    status          VARCHAR NOT NULL,  -- Ledger status the record takes when merged (see ledger.status)
    error           VARCHAR  -- Always NULL here: errors are set on the ledger by /push/_errors
);
CREATE TABLE IF NOT EXISTS ometria_push.requests (
    request_id   VARCHAR NOT NULL,  -- Id of the push request (or outbox line)
    feed         VARCHAR NOT NULL,  -- Ometria-ready table pushed
    record_type  VARCHAR,  -- Record type of the request (one type per request)
    sent_at      TIMESTAMPTZ NOT NULL,  -- When the request was sent (UTC)
    record_count INTEGER,  -- Records in the request (at most 100)
    bytes        BIGINT,  -- Size of the request body in bytes
    http_status  INTEGER,  -- HTTP status Ometria answered (NULL: no answer)
    duration_ms  DOUBLE,  -- Time the request took, in milliseconds
    accepted     INTEGER,  -- Records Ometria accepted
    rejected     INTEGER,  -- Records Ometria rejected
    error        VARCHAR,  -- Why the request failed, in words (secrets scrubbed)
    dry_run      BOOLEAN NOT NULL,  -- True when written to the outbox instead of sent
    attempts     INTEGER,  -- Attempts made (retries after 429 or 5xx included)
    run_id       VARCHAR,  -- Dagster run that sent it
    outbox_path  VARCHAR  -- Outbox file of a dry run
);
CREATE TABLE IF NOT EXISTS ometria_push.sent_records (
    request_id   VARCHAR NOT NULL,  -- Request the record version went in
    feed         VARCHAR NOT NULL,  -- Ometria-ready table of the record
    record_type  VARCHAR NOT NULL,  -- Ometria record type
    id           VARCHAR NOT NULL,  -- Ometria id of the record
    payload_hash VARCHAR NOT NULL,  -- Hash of the payload version sent
    sent_at      TIMESTAMPTZ NOT NULL,  -- When it was sent (UTC)
    dry_run      BOOLEAN NOT NULL  -- True when written to the outbox only
);
CREATE TABLE IF NOT EXISTS ometria_push.errors (
    error_key     VARCHAR PRIMARY KEY,  -- Key of the error (deduplicates repeats of the same error)
    fetched_at    TIMESTAMPTZ NOT NULL,  -- When the error was first read (UTC)
    last_seen_at  TIMESTAMPTZ NOT NULL,  -- When it was last seen (UTC)
    source        VARCHAR NOT NULL,  -- ometria (GET /push/_errors), client (refused before sending, e.g. no id) or http (refused with a 4xx)
    request_id    VARCHAR,  -- Request the rejected record went in, when known
    feed          VARCHAR,  -- Ometria-ready table of the record, when known
    record_type   VARCHAR,  -- Ometria record type
    record_id     VARCHAR,  -- Ometria id of the rejected record
    payload_hash  VARCHAR,  -- Payload version Ometria rejected
    error_message VARCHAR,  -- Ometria's message
    error_path    VARCHAR,  -- Field of the payload the error is about
    matched       BOOLEAN NOT NULL,  -- True when the error is tied to a record we sent
    raw           VARCHAR  -- The error as Ometria returned it (JSON)
);
CREATE TABLE IF NOT EXISTS ometria_push.error_fetches (
    fetched_at      TIMESTAMPTZ NOT NULL,  -- When /push/_errors was read (UTC)
    errors_returned INTEGER NOT NULL,  -- Errors Ometria returned
    new_errors      INTEGER NOT NULL,  -- Errors not seen before
    matched         INTEGER NOT NULL,  -- Errors tied to a record we sent
    run_id          VARCHAR  -- Dagster run that read them
);
"""


REQUEST_SCHEMA = {

    "request_id": pl.String, "feed": pl.String, "record_type": pl.String,
    "sent_at": pl.Datetime("us", "UTC"), "record_count": pl.Int32, "bytes": pl.Int64,
    "http_status": pl.Int32, "duration_ms": pl.Float64, "accepted": pl.Int32, "rejected": pl.Int32,
    "error": pl.String, "dry_run": pl.Boolean, "attempts": pl.Int32, "run_id": pl.String,
    "outbox_path": pl.String,
}


def ensure_push_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS ometria_push")
    for statement in DDL.split(";"):
        if statement.strip():
            con.execute(statement)


def utc_now() -> datetime:
    """The time written to the push tables (UTC)."""
    return datetime.now(UTC)


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Append a frame to `ometria_push.<table>`, columns matched by name."""
    append_rows(con, "ometria_push", table, frame)


def write_acknowledged(con: duckdb.DuckDBPyConnection, feed: str, dry_run: bool,
                       acked: list[tuple[pl.DataFrame, dict[str, Any]]]) -> None:
    """Acknowledgements (`acks`, merged into the ledger later by `merge_acknowledged`) +
    sent_records + requests for acknowledged batches, in one transaction.

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
    ).with_columns(pl.lit(feed).alias("feed"), pl.lit(dry_run).alias("dry_run"))
    ledger = base.select("feed", "record_type", "id", "payload_hash", "request_id",
                         pl.col("ts").alias("acknowledged_at"), "dry_run", "status",
                         pl.lit(None, dtype=pl.String).alias("error"))
    sent = base.select("request_id", "feed", "record_type", "id", "payload_hash",
                       pl.col("ts").alias("sent_at"), "dry_run")
    audit = pl.DataFrame([{k: v for k, v in r.items() if k in REQUEST_SCHEMA} for r in requests],
                         schema=REQUEST_SCHEMA)
    with transaction(con):
        insert_rows(con, "requests", audit)
        # Appends only: replacing rows of the ledger itself would scan it on every request
        # (a DELETE on 1.3M rows is ~20 ms); `merge_acknowledged` does that once per push.
        insert_rows(con, "acks", ledger)
        insert_rows(con, "sent_records", sent)


def merge_acknowledged(con: duckdb.DuckDBPyConnection) -> int:
    """Fold `ometria_push.acks` into the ledger (one row per (feed, id), the latest
    acknowledgement wins) and empty it, in one transaction; returns the rows merged.

    Cheap when there is nothing to merge; idempotent, so a killed process's acknowledgements
    are merged by whichever push or error read comes next."""
    pending = int(con.execute("SELECT count(*) FROM ometria_push.acks").fetchall()[0][0])
    if not pending:
        return 0
    with transaction(con):
        con.execute(
            "DELETE FROM ometria_push.ledger l USING (SELECT DISTINCT feed, id FROM ometria_push.acks) a "
            "WHERE l.feed = a.feed AND l.id = a.id")
        con.execute(
            "INSERT INTO ometria_push.ledger BY NAME SELECT * FROM ometria_push.acks "
            "QUALIFY row_number() OVER (PARTITION BY feed, id ORDER BY acknowledged_at DESC, request_id DESC) = 1")
        con.execute("DELETE FROM ometria_push.acks")
    return pending


def rejected_in(con: duckdb.DuckDBPyConnection, request_ids: list[str]) -> int:
    """Records of these requests whose version Ometria rejected."""
    con.register("_push_reqs", pl.DataFrame({"request_id": request_ids}))
    try:
        row = con.execute(
            "SELECT count(*) FROM ometria_push.ledger WHERE status = 'rejected' "
            "AND request_id IN (SELECT request_id FROM _push_reqs)").fetchall()[0]
    finally:
        con.unregister("_push_reqs")
    return int(row[0]) if row else 0


def rejected_outstanding(con: duckdb.DuckDBPyConnection, feed: str) -> int:
    """Records of the feed whose current version Ometria rejected."""
    return int(con.execute(
        "SELECT count(*) FROM ometria_push.ledger WHERE feed = ? AND status = 'rejected'",
        [feed]).fetchall()[0][0])


def ledger_rows(con: duckdb.DuckDBPyConnection, feed: str) -> int:
    """Records of the feed Ometria acknowledged (one ledger row per record)."""
    return int(con.execute(
        "SELECT count(*) FROM ometria_push.ledger WHERE feed = ?", [feed]).fetchall()[0][0])


def status_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Records sent for real (not dry run) per ledger status."""
    return dict(con.execute(
        "SELECT status, count(*) FROM ometria_push.ledger WHERE NOT dry_run GROUP BY ALL"
    ).fetchall())


def rejected_by_feed(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Records whose current version Ometria rejected, per feed."""
    return con.sql(
        "SELECT feed, count(*) AS rejected FROM ometria_push.ledger "
        "WHERE status = 'rejected' GROUP BY ALL ORDER BY feed").pl()


def ledger_summary(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Records per feed and status (what Ometria holds from us, what needs attention)."""
    ensure_push_tables(con)
    return con.sql(
        "SELECT feed, status, dry_run, count(*) AS records FROM ometria_push.ledger "
        "GROUP BY ALL ORDER BY ALL").pl()
