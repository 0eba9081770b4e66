"""The delta of a push: which rows of `ometria.<feed>` go to Ometria, in which batches.

`plan_delta` counts the feed (held back, locally invalid, unchanged), lists the rows it cannot
key or batch in `ometria_push.errors`, and keeps in a temp table `_push_delta` the keys of the rows
whose hash differs from the one Ometria last acknowledged, numbered into batches of at most 100
records of one type. Stock flags wait until their product is in Ometria.

The delta is read in chunks of `chunk_batches` batches (`delta_chunks`): the plan keeps only
keys (the source row's `rowid`, id, hash), and each chunk reads its payloads by rowid range, so
a push holds one chunk of payloads in memory, not the whole feed, and reads the table once.
Batches follow the table's row order.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import polars as pl

from sap_ometria_assets.lib.ometria.client import MAX_RECORDS_PER_REQUEST

from sap_ometria_assets.lib.push.errors import record_errors
from sap_ometria_assets.lib.push.ledger import FEEDS, PARENT_FEED
from sap_ometria_assets.lib.push.results import Logger, PushResult


def _invalid_sql(feed: str) -> str:
    """Why a row cannot be keyed or batched (no id, no payload, another feed's type), NULL when
    it can. Not a validation of the record: that was done where it was built (finalize holds
    back what Ometria would refuse, a record over 60 KB among them)."""
    types = ", ".join(f"'{t}'" for t in FEEDS[feed])
    return f"""CASE
        WHEN id IS NULL OR CAST(id AS VARCHAR) = '' THEN 'record has no id'
        WHEN payload IS NULL OR payload = '' THEN 'record has no payload'
        WHEN record_type IS NULL OR record_type NOT IN ({types})
            THEN 'record_type ' || coalesce(record_type, 'NULL') || ' does not belong to feed {feed}'
        END"""


def plan_delta(con: duckdb.DuckDBPyConnection, feed: str, result: PushResult, *, dry_run: bool,
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
    # source row, which `delta_chunks` reads back by rowid range.
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


def delta_chunks(con: duckdb.DuckDBPyConnection, feed: str, chunk_batches: int) -> Iterator[pl.DataFrame]:
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
