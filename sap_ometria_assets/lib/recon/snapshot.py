"""The read-back snapshot: what Ometria holds, read from its API, and a log of every read.

`read_back_records` reads every contact (of our collection), order and product Ometria holds;
`write_snapshot` replaces `recon.ometria_snapshot` with them and logs the read in
`recon.snapshot_runs` (outcome 'read', 'dry_run' or 'unavailable'); `latest_snapshot_run` and
`snapshot_available` tell the reconciliation whether the latest read reached Ometria, so it
compares with Ometria only then (otherwise SAP with the push ledger only).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

import duckdb
import orjson
import polars as pl

from sap_ometria_assets.lib.warehouse.sql import has_column, table_exists, transaction

SNAPSHOT_DDL = """
CREATE TABLE IF NOT EXISTS recon.ometria_snapshot (
    record_type VARCHAR NOT NULL,  -- contact, order or product
    id VARCHAR NOT NULL,  -- Ometria id of the record
    payload VARCHAR,  -- The record as Ometria returned it (JSON)
    fetched_at TIMESTAMPTZ NOT NULL  -- When it was read back (UTC)
);
CREATE TABLE IF NOT EXISTS recon.snapshot_runs (
    fetched_at TIMESTAMPTZ NOT NULL,  -- When the read-back ran (UTC)
    available BOOLEAN NOT NULL,  -- True when Ometria was read back whole and is compared
    note VARCHAR,  -- Why the read-back was unavailable
    contacts BIGINT,  -- Contacts read back
    orders BIGINT,  -- Orders read back
    products BIGINT  -- Products read back
);
ALTER TABLE recon.snapshot_runs ADD COLUMN IF NOT EXISTS outcome VARCHAR;  -- read, dry_run (nothing sent, nothing read) or unavailable (see note)
"""
# recon.snapshot_runs.outcome: 'read' (Ometria read back whole), 'dry_run' (nothing sent,
# nothing read: by design), 'unavailable' (the read-back failed: an outage, a 404, an API not
# honouring offset; the pushes stand, reconciliation compares SAP with the ledger only).
SNAPSHOT_OUTCOMES = ("read", "dry_run", "unavailable")

READ_BACK_TYPES = ("contact", "order", "product")


def read_back_records(client, collection: str) -> Iterator[tuple[str, str, str]]:
    """Every contact (of our collection), order and product Ometria holds, as
    (record_type, id, payload JSON). The one place that knows the client's read-back API."""
    sources = (
        ("contact", client.iter_contacts(collection)),
        ("order", client.iter_orders()),
        ("product", client.iter_products()),
    )
    for record_type, records in sources:
        for record in records:
            record_id = record.get("id") if isinstance(record, dict) else None
            if record_id is None:
                continue
            yield record_type, str(record_id), orjson.dumps(record).decode()


def write_snapshot(
    con: duckdb.DuckDBPyConnection, records: Iterable[tuple[str, str, str]], fetched_at: datetime,
    available: bool = True, note: str | None = None, outcome: str | None = None,
) -> dict[str, int]:
    """Replace `recon.ometria_snapshot` with `records`; log the read in `recon.snapshot_runs`.

    `available=False` keeps the previous snapshot (it is no longer compared) and records why
    (`note`, `outcome` 'dry_run' or 'unavailable')."""
    outcome = outcome or ("read" if available else "unavailable")
    if outcome not in SNAPSHOT_OUTCOMES:
        raise ValueError(f"outcome must be one of {SNAPSHOT_OUTCOMES}, got {outcome!r}")
    con.execute("CREATE SCHEMA IF NOT EXISTS recon")
    con.execute(SNAPSHOT_DDL)
    types, ids, payloads = [], [], []
    for record_type, record_id, payload in records:
        types.append(record_type)
        ids.append(record_id)
        payloads.append(payload)
    frame = pl.DataFrame(
        {"record_type": types, "id": ids, "payload": payloads},
        schema={"record_type": pl.String, "id": pl.String, "payload": pl.String},
    )
    counts = {t: 0 for t in READ_BACK_TYPES}
    for t, n in frame.group_by("record_type").len().iter_rows():
        counts[t] = int(n)
    con.register("_snapshot_frame", frame)
    try:
        with transaction(con):
            if available:
                con.execute("DELETE FROM recon.ometria_snapshot")
                con.execute(
                    "INSERT INTO recon.ometria_snapshot SELECT DISTINCT ON (record_type, id) "
                    "record_type, id, payload, CAST($at AS TIMESTAMPTZ) FROM _snapshot_frame",
                    {"at": fetched_at},
                )
            con.execute(
                "INSERT INTO recon.snapshot_runs (fetched_at, available, note, contacts, orders, "
                "products, outcome) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [fetched_at, available, note, counts["contact"], counts["order"], counts["product"],
                 outcome],
            )
    finally:
        con.unregister("_snapshot_frame")
    con.execute(
        "COMMENT ON TABLE recon.ometria_snapshot IS 'What Ometria holds, read back from its API "
        "(contacts of our collection, orders, products): one row per record, payload = the JSON "
        "Ometria returned. Replaced on every read.'"
    )
    return counts


def latest_snapshot_run(con: duckdb.DuckDBPyConnection) -> dict | None:
    """The latest read-back: fetched_at, available, outcome, note (None if never tried)."""
    if not table_exists(con, "recon", "snapshot_runs"):
        return None
    has_outcome = has_column(con, "recon", "snapshot_runs", "outcome")
    rows = con.execute(
        f"SELECT fetched_at, available, {'outcome' if has_outcome else 'NULL'}, note "
        "FROM recon.snapshot_runs ORDER BY fetched_at DESC LIMIT 1").fetchall()
    if not rows:
        return None
    fetched_at, available, outcome, note = rows[0]
    if outcome is None:  # a row of an older version
        outcome = "read" if available else ("dry_run" if (note or "").startswith("dry run") else "unavailable")
    return {"fetched_at": fetched_at, "available": bool(available), "outcome": outcome, "note": note}


def snapshot_available(con: duckdb.DuckDBPyConnection) -> bool:
    if not table_exists(con, "recon", "snapshot_runs"):
        return False
    rows = con.execute(
        "SELECT available FROM recon.snapshot_runs ORDER BY fetched_at DESC LIMIT 1"
    ).fetchall()
    return bool(rows and rows[0][0])

