"""Deletion marking only from a key scan that is provably complete and plausible.

SAP leaves no tombstone: a master-data record is "deleted" when a key scan no longer finds it.
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

import duckdb

from sap_ometria_assets.lib.config.settings import Settings

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
