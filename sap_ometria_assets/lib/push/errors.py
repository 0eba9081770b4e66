"""Errors about our records: Ometria's asynchronous ones and those we raise ourselves.

Ometria validates pushed records after answering and lists its 100 most recent errors at
`GET /push/_errors`. `sync_errors` reads that list, stores what is new in
`ometria_push.errors`, matches each error to the record (and version) it names and marks it
`rejected` in the ledger; `errors_fetch_due` says whether the list is worth reading.
`record_errors` stores the records we refused ourselves (before sending, or refused with a 4xx).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import polars as pl

from sap_ometria_assets.lib.config.secrets import scrub, scrubbed_logger
from sap_ometria_assets.lib.ometria.answers import PushError
from sap_ometria_assets.lib.ometria.client import OmetriaClient
from sap_ometria_assets.lib.push.journal import settle
from sap_ometria_assets.lib.push.ledger import ensure_push_tables, utc_now
from sap_ometria_assets.lib.push.results import ErrorSyncResult, Logger
from sap_ometria_assets.lib.warehouse.sql import transaction

log = scrubbed_logger(__name__)


def record_errors(con: duckdb.DuckDBPyConnection, feed: str, frame: pl.DataFrame,
                  message: str | pl.Expr, *, source: str) -> None:
    """Errors we raise ourselves (records refused before or while sending), one per record
    and payload version: seen again, only `last_seen_at` moves."""
    now = utc_now()
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
    settle(con)  # the errors are matched against the complete ledger (a killed push journalled some)
    fetched = client.fetch_errors() if errors is None else errors
    out = ErrorSyncResult(fetched=len(fetched))
    now = utc_now()
    # Ometria echoes records and messages back: whatever secret they carry is not stored (at
    # most 100 entries a read, so a Python pass is nothing)
    frame = pl.DataFrame(
        [{k: scrub(getattr(e, k)) for k in _FETCHED_SCHEMA} for e in fetched], schema=_FETCHED_SCHEMA)
    con.register("_fetched", frame)
    try:
        with transaction(con):
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
    now = now or utc_now()
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


def error_counts(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Errors stored in all, and those matched to no record seen in the last 24 hours."""
    total, unmatched_24h = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE NOT matched AND last_seen_at > now() - INTERVAL 1 DAY) "
        "FROM ometria_push.errors").fetchall()[0]
    return int(total), int(unmatched_24h)
