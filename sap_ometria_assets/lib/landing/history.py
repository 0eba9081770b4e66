"""SCD type 2 history in `sap_history`: every version of a business partner, item or document
(and of their child rows) this product has landed, with two validities side by side.

- **SAP's change time**: `valid_from` / `valid_to` (TIMESTAMPTZ; NULL `valid_to` = still
  current): from the version's UpdateDate + UpdateTime, wall-clock time of the company time zone
  (`SAP_OMETRIA_TIMEZONE`). Child rows (lines, addresses, prices) carry no UpdateDate of their own
  and take their parent's. A version is valid until the next version's `valid_from`; a version
  that disappears (a removed line, a stock row SAP no longer returns) ends at its document's new
  change time, or at the landing time when there is none; a deleted record (deletion scan) ends
  at the landing that found it deleted. `valid_from_source` says where `valid_from` came from:
  `sap` (UpdateDate + UpdateTime), `sap_day` (UpdateTime missing or unreadable: the start of
  UpdateDate), `landed` (no UpdateDate: the landing time, e.g. stock per warehouse), `clamped`
  (SAP's time went backwards for this key, a clock or skew problem, or a record came back from
  a deletion with its old UpdateDate: moved up to where the key's previous version started or
  ended, so intervals never overlap; an older version may then have an empty interval).
- **This product's landing time**: `_valid_from` / `_valid_to` / `_is_current`, when this
  product learnt (and replaced) the version.

Only changed rows make a new version (content hash `_row_hash`), so history grows with what
SAP changed between syncs, not with the number of syncs; several edits between two syncs leave
only the last one. "As SAP had it at T": `valid_from <= T AND (valid_to IS NULL OR valid_to > T)`.
A history table created for a warehouse that already holds the sap_raw table starts with every
stored row (one INSERT ... SELECT); an old history table without `valid_from` is extended and
filled from each version's stored UpdateDate/UpdateTime at the next landing (history_migrate.py).
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from sap_ometria_assets.lib.landing.history_migrate import migrate
from sap_ometria_assets.lib.landing.history_time import (
    IS_CURRENT,
    SAP_COLUMNS,
    SAP_FROM,
    SAP_TO,
    SOURCE,
    VALID_FROM,
    VALID_TO,
    own_time,
    parent_of,
)
from sap_ometria_assets.lib.landing.plan import Plan, Target, key_join
from sap_ometria_assets.lib.landing.split import ROW_HASH
from sap_ometria_assets.lib.sap.tables import DELETED_AT, LANDED_AT
from sap_ometria_assets.lib.warehouse.sql import fqn, q, table_columns


def ensure_history(con: duckdb.DuckDBPyConnection, plan: Plan, target: Target,
                   zone: str) -> tuple[str, dict[str, str]]:
    """Create the history table (sap_raw's columns plus both validities), add the columns
    sap_raw gained since, or migrate an old-shape one. Returns its name and sap_raw's columns."""
    tbl = fqn("sap_history", target.table)
    raw_cols = table_columns(con, "sap_raw", target.table)
    hist = table_columns(con, "sap_history", target.table)
    if not hist:
        defs = [f"{q(n)} {t}" for n, t in raw_cols.items()]
        defs += [f"{VALID_FROM} TIMESTAMPTZ", f"{VALID_TO} TIMESTAMPTZ", f"{IS_CURRENT} BOOLEAN"]
        defs += [f"{n} {t}" for n, t in SAP_COLUMNS]
        con.execute(f"CREATE TABLE {tbl} ({', '.join(defs)})")
        return tbl, raw_cols
    for name, dtype in raw_cols.items():
        if name not in hist:
            con.execute(f"ALTER TABLE {tbl} ADD COLUMN {q(name)} {dtype}")
        elif hist[name] != dtype:
            con.execute(f"ALTER TABLE {tbl} ALTER COLUMN {q(name)} SET DATA TYPE {dtype}")
    if SAP_FROM not in hist:
        migrate(con, plan, target, tbl, zone)
    return tbl, raw_cols


def _scope(plan: Plan, target: Target, keys: str, alias: str) -> str:
    """Rows of `alias` whose key (or, for a child, whose parent key) is in the temp table `keys`."""
    if target.parent_key_column is None or target.collection is None:
        return f"EXISTS (SELECT 1 FROM {q(keys)} c WHERE {key_join('c', alias, target.key)})"
    pk, pkey = q(target.parent_key_column), q(plan.entity_key)  # type: ignore[arg-type]
    return f"EXISTS (SELECT 1 FROM {q(keys)} c WHERE c.{pkey} = {alias}.{pk})"


def _seed(con: duckdb.DuckDBPyConnection, plan: Plan, target: Target, hist: str,
          raw_cols: dict[str, str], now: datetime, zone: str) -> None:
    """An empty history starts with every stored row (one INSERT ... SELECT): their landing
    time, SAP's time (a child's from its parent's current version; a child of a deleted
    parent, which has none, from its landing time), deleted ones closed."""
    raw = fqn("sap_raw", target.table)
    landed = f"coalesce(t.{LANDED_AT}, $now::TIMESTAMPTZ)"
    parent = parent_of(plan, target)
    if parent is None:
        ts, src = own_time(raw_cols, "t", zone)
        source = f"{raw} t"
    else:
        # the parent's current version was written just before (this landing's seed or edit)
        ts, src = "p.valid_from", "p.valid_from_source"
        source = (f"{raw} t LEFT JOIN {fqn('sap_history', parent.table)} p ON p.{IS_CURRENT} AND "
                  f"p.{q(plan.entity_key)} = t.{q(target.parent_key_column)}")  # type: ignore[arg-type]
    start = f"coalesce({ts}, {landed})"
    deleted = f"t.{DELETED_AT}" if DELETED_AT in raw_cols else "NULL::TIMESTAMPTZ"
    con.execute(
        f"INSERT INTO {hist} BY NAME SELECT t.*, {landed} AS {VALID_FROM}, {deleted} AS {VALID_TO}, "
        f"{deleted} IS NULL AS {IS_CURRENT}, {start} AS {SAP_FROM}, "
        f"CASE WHEN {deleted} IS NOT NULL THEN greatest({start}, {deleted}) END AS {SAP_TO}, "
        f"coalesce({src}, 'landed') AS {SOURCE} FROM {source}", {"now": now},
    )


def _temps(target: Target) -> tuple[str, str, str]:
    """Temp tables of one landing's history step: the history rows of the keys in scope, the
    parents' current versions, the stored rows in scope."""
    return tuple(f"_hist_{target.table}_{what}" for what in ("scope", "parents", "rows"))  # type: ignore[return-value]


def _drop_temps(con: duckdb.DuckDBPyConnection, target: Target) -> None:
    for temp in _temps(target):
        con.execute(f"DROP TABLE IF EXISTS temp.{q(temp)}")


def add_versions(con: duckdb.DuckDBPyConnection, plan: Plan, target: Target, hist: str,
                 raw_cols: dict[str, str], keys: str, work: str, now: datetime,
                 zone: str) -> None:
    """Temp table `work`: key, valid_from and source of each stored row whose key (a child's:
    whose parent key) is in the temp table `keys` and that has no current version with its
    content. A version never starts before the key's last version started or ended: SAP's
    clock went backwards for the key, or a record came back from a deletion with its old
    UpdateDate (`clamped`), so intervals never overlap.

    The history rows of those keys (and, for a child, its parents' current versions) are read
    into temp tables first: compared in one statement, duckdb built its hash tables over the
    whole history (1M current orders, 3.1M lines) at every landing, however little changed."""
    raw = fqn("sap_raw", target.table)
    scope, parents, _ = _temps(target)
    keys_t = ", ".join(f"t.{q(k)}" for k in target.key)
    keys_h = ", ".join(f"h.{q(k)}" for k in target.key)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {q(scope)} AS SELECT {keys_h}, h.{ROW_HASH}, "
                f"h.{IS_CURRENT}, h.{SAP_FROM}, h.{SAP_TO} FROM {hist} h "
                f"WHERE {_scope(plan, target, keys, 'h')}")
    parent = parent_of(plan, target)
    if parent is None:
        ts, src = own_time(raw_cols, "t", zone)
        join = ""
    else:
        ekey = q(plan.entity_key)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {q(parents)} AS SELECT p.{ekey}, p.{SAP_FROM}, "
                    f"p.{SOURCE} FROM {fqn('sap_history', parent.table)} p WHERE p.{IS_CURRENT} "
                    f"AND EXISTS (SELECT 1 FROM {q(keys)} c WHERE c.{ekey} = p.{ekey})")
        ts, src = f"p.{SAP_FROM}", f"p.{SOURCE}"
        join = f" LEFT JOIN {q(parents)} p ON p.{ekey} = t.{q(target.parent_key_column)}"  # type: ignore[arg-type]
    same = f"{key_join('h', 't', target.key)} AND h.{ROW_HASH} = t.{ROW_HASH}"
    # the stored row's landing time rides along: insert_versions prunes sap_raw by it
    landed = f"t.{LANDED_AT}" if LANDED_AT in raw_cols else "NULL::TIMESTAMPTZ"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {q(work)} AS WITH n AS (SELECT {keys_t}, coalesce({ts}, "
        f"$now::TIMESTAMPTZ) AS ts, coalesce({src}, 'landed') AS src, {landed} AS _landed "
        f"FROM {raw} t{join} WHERE {_scope(plan, target, keys, 't')} AND NOT EXISTS ("
        f"SELECT 1 FROM {q(scope)} h WHERE h.{IS_CURRENT} AND {same})), "
        f"b AS (SELECT {keys_h}, max(coalesce(h.{SAP_TO}, h.{SAP_FROM})) AS last_end "
        f"FROM {q(scope)} h GROUP BY ALL) "
        f"SELECT {', '.join(f'n.{q(k)}' for k in target.key)}, greatest(n.ts, b.last_end) AS "
        f"{SAP_FROM}, CASE WHEN b.last_end > n.ts THEN 'clamped' ELSE n.src END AS {SOURCE}, "
        f"n._landed FROM n LEFT JOIN b ON {key_join('n', 'b', target.key)}", {"now": now},
    )


def insert_versions(con: duckdb.DuckDBPyConnection, target: Target, hist: str, work: str,
                    now: datetime) -> None:
    # The rows to copy were mostly just merged, so they sit in the table's last row groups: a
    # literal lower bound on their landing time lets DuckDB skip the others by their zone maps
    # instead of reading every column of every row (0.5 s for 10,000 of 1M orders). Exact: every
    # row of `work` carries its stored _landed_at.
    low = con.execute(f"SELECT min(_landed), count(*) = count(_landed) FROM {q(work)}").fetchone()
    prune = (f" AND t.{LANDED_AT} >= '{low[0].isoformat()}'::TIMESTAMPTZ"
             if low and low[0] is not None and low[1] else "")
    con.execute(
        f"INSERT INTO {hist} BY NAME SELECT t.*, $now::TIMESTAMPTZ AS {VALID_FROM}, "
        f"NULL::TIMESTAMPTZ AS {VALID_TO}, true AS {IS_CURRENT}, w.{SAP_FROM}, "
        f"NULL::TIMESTAMPTZ AS {SAP_TO}, w.{SOURCE} FROM {fqn('sap_raw', target.table)} t JOIN "
        f"{q(work)} w ON {key_join('w', 't', target.key)}{prune}", {"now": now},
    )


def write_history(con: duckdb.DuckDBPyConnection, plan: Plan, target: Target, changed: str,
                  now: datetime, zone: str = "UTC") -> None:
    """Close the current version of changed rows and add the new one, by the `changed` keys
    (work proportional to what changed). An empty history is seeded from the whole stored
    table (a first load is that seed); an old-shape one is migrated first."""
    hist, raw_cols = ensure_history(con, plan, target, zone)
    if not con.execute(f"SELECT count(*) FROM {hist}").fetchone()[0]:
        _seed(con, plan, target, hist, raw_cols, now, zone)
        return
    full = plan.spec.read_mode == "full" and target is plan.main
    if not full and not con.execute(f"SELECT count(*) FROM {q(changed)}").fetchone()[0]:
        return   # nothing changed: no scan of the history at all
    work = f"_hist_{target.table}_new"
    add_versions(con, plan, target, hist, raw_cols, changed, work, now, zone)
    _, parents, rows = _temps(target)
    raw = fqn("sap_raw", target.table)
    if full:
        # A full read (stock per warehouse) also closes rows SAP stopped returning, which no
        # changed key names; the anti-join costs what the full read already cost.
        scope_h, stored = "true", raw
    else:
        scope_h, stored = _scope(plan, target, changed, "h"), q(rows)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {q(rows)} AS SELECT "
                    f"{', '.join(f't.{q(k)}' for k in target.key)}, t.{ROW_HASH} FROM {raw} t "
                    f"WHERE {_scope(plan, target, changed, 't')}")
    parent = parent_of(plan, target)
    gone = "$now::TIMESTAMPTZ" if parent is None else (
        f"coalesce((SELECT p.{SAP_FROM} FROM {q(parents)} p WHERE "
        f"p.{q(plan.entity_key)} = h.{q(target.parent_key_column)}), "  # type: ignore[arg-type]
        "$now::TIMESTAMPTZ)")
    same = f"{key_join('h', 't', target.key)} AND h.{ROW_HASH} = t.{ROW_HASH}"
    con.execute(
        f"UPDATE {hist} h SET {VALID_TO} = $now, {IS_CURRENT} = false, {SAP_TO} = greatest("
        f"h.{SAP_FROM}, coalesce((SELECT w.{SAP_FROM} FROM {q(work)} w WHERE "
        f"{key_join('w', 'h', target.key)}), {gone})) WHERE h.{IS_CURRENT} AND {scope_h} AND "
        f"NOT EXISTS (SELECT 1 FROM {stored} t WHERE {same})", {"now": now},
    )
    insert_versions(con, target, hist, work, now)
    con.execute(f"DROP TABLE IF EXISTS temp.{q(work)}")
    _drop_temps(con, target)


def close_deleted(con: duckdb.DuckDBPyConnection, plan: Plan, now: datetime, zone: str) -> None:
    """Records (and their child rows) the deletion scan marked deleted at `now` have no current
    version any more: both validities end at this landing."""
    for target in plan.targets:
        if not target.history or not table_columns(con, "sap_history", target.table):
            continue
        hist, _ = ensure_history(con, plan, target, zone)
        con.execute(
            f"UPDATE {hist} h SET {VALID_TO} = $now, {IS_CURRENT} = false, {SAP_TO} = greatest("
            f"h.{SAP_FROM}, $now) FROM {fqn('sap_raw', target.table)} t WHERE h.{IS_CURRENT} AND "
            f"{key_join('h', 't', target.key)} AND t.{DELETED_AT} = $now", {"now": now},
        )


def reopen_restored(con: duckdb.DuckDBPyConnection, plan: Plan, restored: str, now: datetime,
                    zone: str) -> None:
    """Records that came back (keys in the temp table `restored`) and their child rows get a
    current version again, starting no earlier than their last one ended."""
    for target in plan.targets:
        if not target.history or not table_columns(con, "sap_history", target.table):
            continue
        hist, raw_cols = ensure_history(con, plan, target, zone)
        work = f"_hist_{target.table}_back"
        add_versions(con, plan, target, hist, raw_cols, restored, work, now, zone)
        insert_versions(con, target, hist, work, now)
        con.execute(f"DROP TABLE IF EXISTS temp.{q(work)}")
        _drop_temps(con, target)
