"""Deletions of master data: the key scan, the guard that judges it, and the marking.

SAP leaves no tombstone: a master-data record is "deleted" when a key scan (`key_scan`:
`$select=<key>`, paged, run when asked or implied by a full read) no longer finds it. Such keys
get `_deleted_at` (`mark_deletions`; cleared when a key comes back, children follow their parent,
history closes the current version); nothing is deleted from `sap_raw`. Marking happens only
from a key scan that is provably complete and plausible.
A scan cut short (a Service Layer restarting mid-scan, a page cap, a proxy cutting a response)
would otherwise mark live customers deleted, and with `contacts.on_deleted: opt_out` opt them
out in Ometria. So before `_deleted_at` is set:

1. **Complete.** The scan's distinct keys must number exactly the collection's `$count` (with
   the registry filter), asked just before the scan; the scan itself is bounded by that count
   (lib/sap/client.py) and must have ended normally (its last page had no next link).
2. **Plausible.** A scan that would mark more than `SAP_B1_DELETION_MAX_SHARE` (default 5%) of
   the live records deleted in one go marks nothing.

A refused scan marks nothing (records that came back are still restored), is stored in
`sap_meta.deletion_scan_refusals` (the `deletion_scan_refused` exception, ERROR, owner ops,
reads it) and raises an alert. **Approving it:** when a person has checked in SAP that the
deletions are real, set `SAP_B1_ACCEPT_DELETION_SCAN=ocrd` (table names, comma-separated, or
`all`) for one run of the deletion scan job, then unset it. Approval lifts the share limit only:
an incomplete scan is never accepted. A later accepted scan clears the table's refusals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from sap_ometria_assets.lib.config.settings import Settings
from sap_ometria_assets.lib.landing.fetch import Fetcher, read_repairing
from sap_ometria_assets.lib.landing.history import close_deleted, reopen_restored
from sap_ometria_assets.lib.landing.plan import Plan, TempNames, contract_read_type, key_join
from sap_ometria_assets.lib.landing.results import LandingError, LandResult
from sap_ometria_assets.lib.landing.shape import read_json_sql, struct_type
from sap_ometria_assets.lib.landing.split import Staged
from sap_ometria_assets.lib.sap.tables import DELETED_AT, SapTable
from sap_ometria_assets.lib.warehouse.sql import fqn, q, table_columns

_log = logging.getLogger(__name__)

REFUSALS_DDL = """CREATE TABLE IF NOT EXISTS sap_meta.deletion_scan_refusals (
    table_name VARCHAR PRIMARY KEY, entity_set VARCHAR, refused_at TIMESTAMPTZ, reason VARCHAR,
    scan_keys BIGINT, sap_count BIGINT, live BIGINT, would_delete BIGINT)"""


@dataclass(frozen=True)
class ScanVerdict:
    table: str
    entity_set: str
    scan_keys: int
    sap_count: int | None
    live: int
    would_delete: int
    reason: str | None   # None: the scan may mark deletions

    @property
    def refused(self) -> bool:
        return self.reason is not None


def accepted_by_person(settings: Settings, table: str) -> bool:
    """SAP_B1_ACCEPT_DELETION_SCAN names this table (or says `all`)."""
    raw = settings.sap_b1_accept_deletion_scan or ""
    names = {n.strip().lower() for n in raw.split(",") if n.strip()}
    return "all" in names or table.lower() in names


def judge_scan(con: duckdb.DuckDBPyConnection, *, table: str, entity_set: str, stored: str,
               scan: str, key_join: str, sap_count: int | None,
               settings: Settings) -> ScanVerdict:
    """Whether the key scan `scan` (temp table of keys) may mark records of `stored` deleted.
    `key_join` joins `k` (scan) and `t` (stored) on the key."""
    found = con.execute(f"SELECT count(*) FROM {scan}").fetchone()[0]
    live = con.execute(f"SELECT count(*) FROM {stored} WHERE _deleted_at IS NULL").fetchone()[0]
    would = con.execute(
        f"SELECT count(*) FROM {stored} t WHERE _deleted_at IS NULL AND NOT EXISTS "
        f"(SELECT 1 FROM {scan} k WHERE {key_join})").fetchone()[0]
    reason = None
    if would == 0:
        pass
    elif sap_count is not None and found != sap_count:
        reason = (f"the key scan of {entity_set} is not complete: it found {found} key(s) while "
                  f"the Service Layer counts {sap_count}; marking nothing deleted "
                  "(an approval cannot accept an incomplete scan; the next scan tries again)")
    elif live and would > settings.sap_b1_deletion_max_share * live and not accepted_by_person(
            settings, table):
        reason = (f"the key scan of {entity_set} would mark {would} of {live} live record(s) "
                  f"deleted ({would / live:.0%}, above SAP_B1_DELETION_MAX_SHARE="
                  f"{settings.sap_b1_deletion_max_share:g}); marking nothing. If SAP really lost "
                  f"them, set SAP_B1_ACCEPT_DELETION_SCAN={table} for one deletion scan")
    return ScanVerdict(table, entity_set, found, sap_count, live, would, reason)


def record_verdict(con: duckdb.DuckDBPyConnection, verdict: ScanVerdict, now: datetime) -> None:
    """A refusal is stored (one row per table, the latest); an accepted scan clears it."""
    con.execute(REFUSALS_DDL)
    if verdict.refused:
        con.execute(
            "INSERT OR REPLACE INTO sap_meta.deletion_scan_refusals VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [verdict.table, verdict.entity_set, now, verdict.reason, verdict.scan_keys,
             verdict.sap_count, verdict.live, verdict.would_delete])
    else:
        con.execute("DELETE FROM sap_meta.deletion_scan_refusals WHERE table_name = ?",
                    [verdict.table])


_KEY_SCAN_PAGE_SIZE = 5000    # key-only pages are tiny: fewer requests


def live_count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Stored records not marked deleted (0 when the table does not exist yet)."""
    if DELETED_AT not in {c.lower() for c in table_columns(con, "sap_raw", table)}:
        return 0
    return con.execute(f"SELECT count(*) FROM {fqn('sap_raw', table)} WHERE {DELETED_AT} IS NULL"
                       ).fetchone()[0]


def key_scan(con: duckdb.DuckDBPyConnection, client: Any, spec: SapTable, folder: Path,
             names: TempNames, result: LandResult, expected: int | None = None) -> str:
    """Every key SAP holds now (`$select=<key>`, paged), as a temp table typed like sap_raw.
    `expected` (the collection's `$count`) bounds the pages the scan may take."""
    keys = spec.key
    size = max(_KEY_SCAN_PAGE_SIZE, client.page_size)
    with Fetcher(client, spec.entity_set, folder, "keys", select=",".join(keys),
                 filter=spec.filter, orderby=",".join(keys), result=None,
                 page_size=size,
                 # every page but the last brings at least one key: never more pages than
                 # keys (SL may serve smaller pages than asked)
                 max_pages=None if expected is None else expected + 3) as fetcher:
        files = fetcher.wait_all()
        name = names("keys")
        types = [(k, contract_read_type(spec.columns.get(k, "VARCHAR"))) for k in keys]
        if not files:
            con.execute(f"CREATE TEMP TABLE {q(name)} ({', '.join(f'{q(k)} {t}' for k, t in types)})")
            return name
        read_repairing(con, fetcher, TempNames("scan"), lambda: con.execute(
            f"CREATE OR REPLACE TEMP TABLE {q(name)} AS SELECT DISTINCT unnest(_e) FROM (SELECT "
            f"unnest(value) AS _e FROM {read_json_sql('$files', struct_type(types) + '[]')}) WHERE "
            + " AND ".join(f"_e.{q(k)} IS NOT NULL" for k in keys), {"files": files},
        ))
    return name


def mark_deletions(con: duckdb.DuckDBPyConnection, plan: Plan, staged: Staged,
                   scan_keys: str | None, now: datetime, result: LandResult,
                   zone: str = "UTC") -> None:
    """`_deleted_at` for keys the scan no longer finds; cleared for keys that came back."""
    main = plan.main
    tbl = fqn("sap_raw", main.table)
    counts = result.tables[main.table]
    key = main.key
    keys_sql = ", ".join(f"t.{q(k)}" for k in key)
    seen = [staged.tables[main.table]] + ([scan_keys] if scan_keys else [])
    present = " OR ".join(
        f"EXISTS (SELECT 1 FROM {q(s)} k WHERE {key_join('k', 't', key)})" for s in seen
    )
    restored = con.execute(
        f"UPDATE {tbl} t SET {DELETED_AT} = NULL WHERE {DELETED_AT} IS NOT NULL AND ({present}) "
        f"RETURNING {keys_sql}"
    ).fetchall()
    counts.keys_restored = len(restored)
    marked: list[tuple] = []
    if scan_keys:
        live = con.execute(f"SELECT count(*) FROM {tbl} WHERE {DELETED_AT} IS NULL").fetchone()[0]
        found = con.execute(f"SELECT count(*) FROM {q(scan_keys)}").fetchone()[0]
        if found == 0 and live > 0:
            raise LandingError(
                f"{main.table}: the key scan of {plan.spec.entity_set} found no keys at all while "
                f"{live} are stored; refusing to mark every record deleted (check the SAP user's "
                "permissions on this object)"
            )
        marked = con.execute(
            f"UPDATE {tbl} t SET {DELETED_AT} = $now WHERE {DELETED_AT} IS NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {q(scan_keys)} k WHERE {key_join('k', 't', key)}) RETURNING {keys_sql}",
            {"now": now},
        ).fetchall()
        counts.keys_marked_deleted = len(marked)
    if not marked and not restored:
        return
    # Children follow their parent's mark.
    for child in plan.children:
        cfqn = fqn("sap_raw", child.table)
        pk, pkey = q(child.parent_key_column), q(plan.entity_key)  # type: ignore[arg-type]
        con.execute(
            f"UPDATE {cfqn} c SET {DELETED_AT} = p.{DELETED_AT} FROM {tbl} p WHERE c.{pk} = "
            f"p.{pkey} AND c.{DELETED_AT} IS DISTINCT FROM p.{DELETED_AT}"
        )
        result.tables[child.table].keys_marked_deleted = con.execute(
            f"SELECT count(*) FROM {cfqn} WHERE {DELETED_AT} = $now", {"now": now}
        ).fetchone()[0]
    if main.history:
        # A deleted record (and its child rows) has no current version; one that came back
        # gets a new version.
        close_deleted(con, plan, now, zone)
        if restored:
            back = staged.names("restored")
            con.execute(f"CREATE TEMP TABLE {q(back)} AS SELECT {keys_sql} FROM {tbl} t LIMIT 0")
            con.executemany(f"INSERT INTO {q(back)} VALUES ({', '.join('?' for _ in key)})",
                            [list(r) for r in restored])
            reopen_restored(con, plan, back, now, zone)
