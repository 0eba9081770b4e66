"""Merging staged rows into `sap_raw`, in the landing's one transaction.

First every column's type in sap_raw is decided (`_conform`): a column keeps its stored type
while the values fit; when they stop fitting (an integer property starts carrying fractions or
text) it widens (DECIMAL(38,6), else VARCHAR) in sap_raw and sap_history and the change is
recorded in `sap_meta.schema_changes`; new properties are added (`ALTER TABLE ADD COLUMN`), also
recorded. Then only changed keys are replaced (content hash compared with what is stored; delete
+ insert BY NAME), so unchanged rows keep their `_landed_at`. Child rows of a changed parent are
replaced as a set (an edited order can lose lines); a collection the Service Layer did not send
leaves its table untouched. Full-mode tables drop rows SAP no longer returns (an empty full read
is refused). Deletion marks, history and rejected values follow, and
`sap_meta.extract_columns` records the columns the extract returned (contract checks).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

import duckdb

from sap_ometria_assets.lib.landing.deletions import mark_deletions
from sap_ometria_assets.lib.landing.history import write_history
from sap_ometria_assets.lib.landing.plan import (
    Plan,
    Target,
    contract_read_type,
    key_join,
    keys_present,
)
from sap_ometria_assets.lib.landing.rejects import clear_rejects, record_rejects
from sap_ometria_assets.lib.landing.results import LandingError, LandResult, TableCounts
from sap_ometria_assets.lib.landing.shape import AMOUNT, WIDE_DECIMAL, Col, is_numeric_type
from sap_ometria_assets.lib.landing.split import ROW_HASH, Staged
from sap_ometria_assets.lib.sap.tables import DELETED_AT, IS_CANCELLATION, LANDED_AT
from sap_ometria_assets.lib.warehouse.sql import fqn, lit, q, table_columns

_log = logging.getLogger(__name__)


_DATE_RE = r"\d{4}-\d{2}-\d{2}([T ]00:00:00(\.0+)?(Z|[+-]00:?00)?)?"


def _decimal_width(dtype: str) -> int:
    m = re.match(r"DECIMAL\((\d+),", dtype.upper())
    return int(m.group(1)) if m else 0


def _conform(con: duckdb.DuckDBPyConnection, target: Target, stage: str, cols: list[Col],
             now: datetime) -> None:
    """Decide every column's type in sap_raw, evolving the stored table (and its history) when
    the extract brings a value the stored type cannot hold. Never narrows, never loses a value."""
    existing = table_columns(con, "sap_raw", target.table)
    stats = _stats(con, stage, [c for c in cols if c.kind in ("number", "integer", "datelike")])
    for col in cols:
        stat = stats.get(col.name)
        desired = _desired_type(col, stat)
        stored = existing.get(col.name)
        if stored is None or _fits(col, stat, stored):
            col.final_type = stored or desired
        elif col.kind in ("number", "integer") and is_numeric_type(stored):
            col.final_type = WIDE_DECIMAL
        elif col.kind == "forced" and _table_casts(con, target.table, col.name, desired):
            col.final_type = desired
        else:
            col.final_type = "VARCHAR"
        if stored is not None and stored.upper() != col.final_type.upper():
            _alter_type(con, target, col.name, stored, col.final_type, now)


def _stats(con: duckdb.DuckDBPyConnection, stage: str, cols: list[Col]) -> dict[str, tuple]:
    """Per column: numbers (all integral, max |x|); date-like text (all plain dates)."""
    if not cols:
        return {}
    exprs = []
    for c in cols:
        if c.kind in ("number", "integer"):
            exprs.append(f"bool_and({q(c.name)} = trunc({q(c.name)}))")
            exprs.append(f"max(abs({q(c.name)}))")
        else:
            exprs.append(f"bool_and(regexp_full_match({q(c.name)}, {lit(_DATE_RE)}))")
            exprs.append("NULL")
    row = con.execute(f"SELECT {', '.join(exprs)} FROM {q(stage)}").fetchone()
    return {c.name: (row[2 * i], row[2 * i + 1]) for i, c in enumerate(cols)}


def _desired_type(col: Col, stat: tuple | None) -> str:
    if col.kind in ("number", "integer"):
        integral, biggest = stat or (None, None)
        if col.kind == "integer" and (biggest is None or (integral and biggest < 2**62)):
            return "BIGINT"
        return AMOUNT if biggest is None or biggest < 10**13 else WIDE_DECIMAL
    if col.kind == "datelike":
        return "DATE" if (stat is None or stat[0] is not False) else "VARCHAR"
    return col.read_type


def _fits(col: Col, stat: tuple | None, stored: str) -> bool:
    """Can every staged value be stored, unchanged, in a column of type `stored`?"""
    s, r = stored.upper(), col.read_type.upper()
    if s == r:
        return True
    if col.kind == "forced":
        return False
    if s == "VARCHAR":
        return True
    if col.kind in ("number", "integer") and is_numeric_type(s):
        integral, biggest = stat or (None, None)
        if biggest is None:
            return True
        if s == "BIGINT":
            return bool(integral) and biggest < 2**62
        if s == "INTEGER":
            return bool(integral) and biggest < 2**31
        if s.startswith("DECIMAL") and s.endswith(",6)"):
            return biggest < 10 ** (_decimal_width(s) - 6)
        return False
    if col.kind == "datelike" and s == "DATE":
        return stat is None or stat[0] is not False
    return False


def _table_casts(con: duckdb.DuckDBPyConnection, table: str, column: str, target: str) -> bool:
    bad = con.execute(
        f"SELECT count(*) FROM {fqn('sap_raw', table)} WHERE {q(column)} IS NOT NULL AND "
        f"TRY_CAST({q(column)} AS {target}) IS NULL"
    ).fetchone()[0]
    return bad == 0


def _alter_type(con: duckdb.DuckDBPyConnection, target: Target, column: str, old: str, new: str,
                now: datetime) -> None:
    for schema in ("sap_raw", "sap_history"):
        if column in table_columns(con, schema, target.table):
            con.execute(f"ALTER TABLE {fqn(schema, target.table)} ALTER COLUMN {q(column)} "
                        f"SET DATA TYPE {new}")
    con.execute("INSERT INTO sap_meta.schema_changes VALUES (?, ?, 'type_changed', ?, ?, ?)",
                [target.table, column, old, new, now])
    _log.warning("%s.%s: values no longer fit %s; column widened to %s", target.table, column,
                 old, new)


def _metadata_columns(target: Target) -> list[tuple[str, str]]:
    cols = [(ROW_HASH, "VARCHAR"), (LANDED_AT, "TIMESTAMPTZ")]
    if target.master_data:
        cols.append((DELETED_AT, "TIMESTAMPTZ"))
    if target.is_document:
        cols.append((IS_CANCELLATION, "BOOLEAN"))
    return cols


def _ordered(target: Target, cols: list[Col]) -> list[Col]:
    """Contract columns first, in registry order, then the rest as the Service Layer sent them."""
    order = {name: i for i, name in enumerate(target.contract)}
    return sorted(cols, key=lambda c: order.get(c.name, len(order)))


def _ensure_table(con: duckdb.DuckDBPyConnection, target: Target, cols: list[Col],
                  now: datetime, counts: TableCounts) -> None:
    """Create the sap_raw table, or add the columns this extract brings for the first time."""
    tbl = fqn("sap_raw", target.table)
    existing = table_columns(con, "sap_raw", target.table)
    wanted = [(c.name, c.final_type) for c in _ordered(target, cols)]
    present = {c.name for c in cols}
    wanted += [(n, contract_read_type(t)) for n, t in target.contract.items() if n not in present]
    wanted += _metadata_columns(target)
    if not existing:
        con.execute(f"CREATE TABLE {tbl} ({', '.join(f'{q(n)} {t}' for n, t in wanted)})")
        return
    for name, dtype in wanted:
        if name not in existing:
            con.execute(f"ALTER TABLE {tbl} ADD COLUMN {q(name)} {dtype}")
            counts.columns_added.append(name)
            con.execute("INSERT INTO sap_meta.schema_changes VALUES (?, ?, 'added', NULL, ?, ?)",
                        [target.table, name, dtype, now])


def merge_all(con: duckdb.DuckDBPyConnection, plan: Plan, staged: Staged, result: LandResult,
              now: datetime, scan_keys: str | None, full_refresh: bool,
              zone: str = "UTC") -> None:
    main = plan.main
    changed = staged.names("changed")
    for target in plan.targets:
        counts = result.tables.setdefault(target.table, TableCounts())
        stage, cols = staged.tables[target.table], staged.cols[target.table]
        _conform(con, target, stage, cols, now)
        _ensure_table(con, target, cols, now, counts)
        counts.rows_landed = con.execute(
            f"SELECT count(*) FROM {q(stage)} WHERE {keys_present(target.key)}").fetchone()[0]
    main_stage = staged.tables[main.table]
    tbl = fqn("sap_raw", main.table)
    full_mode = plan.spec.read_mode == "full"
    main_counts = result.tables[main.table]
    if full_mode and main_counts.rows_landed == 0 and not full_refresh:
        stored = con.execute(f"SELECT count(*) FROM {tbl}").fetchone()[0]
        if stored:
            raise LandingError(
                f"{main.table}: the Service Layer returned no {plan.spec.entity_set} at all while "
                f"{stored} row(s) are stored; not replacing the table with nothing. If SAP really "
                "holds none now, run with full_refresh to accept it."
            )
    # Keys whose content changed (or is new): compare hashes with what is stored.
    con.execute(
        f"CREATE TEMP TABLE {q(changed)} AS SELECT {', '.join(f's.{q(k)}' for k in main.key)} "
        f"FROM {q(staged.hashes.get(main.table, main_stage))} s LEFT JOIN {tbl} t ON "
        f"{key_join('s', 't', main.key)} "
        f"WHERE {keys_present(main.key, 's.')} AND t.{ROW_HASH} IS DISTINCT FROM s.{ROW_HASH}"
    )
    # Every staged key new or changed (a first load): no row to compare, keep or filter.
    n_changed = con.execute(f"SELECT count(*) FROM {q(changed)}").fetchone()[0]
    every = n_changed == main_counts.rows_landed
    _replace_rows(con, main, staged, changed, main.key, now, main_counts, every=every)
    parent_key = plan.entity_key
    for child in plan.children:
        counts = result.tables[child.table]
        if child.table in staged.absent:
            log_absent = f"{child.table}: the Service Layer sent no `{child.collection}`; left as is"
            _log.warning(log_absent)
            continue
        _replace_rows(con, child, staged, changed, (child.parent_key_column,), now, counts,
                      parent_key=parent_key, every=every)
    if full_mode:
        removed = con.execute(
            f"DELETE FROM {tbl} t WHERE NOT EXISTS (SELECT 1 FROM {q(main_stage)} s WHERE "
            f"{key_join('s', 't', main.key)})"
        ).fetchone()
        main_counts.rows_removed = int(removed[0]) if removed else 0
    # Deletions and restorations (master data).
    if main.master_data:
        mark_deletions(con, plan, staged, scan_keys, now, result, zone)
    # History after everything else, from the rows as stored.
    for target in plan.targets:
        if target.history:
            write_history(con, plan, target, changed, now, zone)
    clear_rejects(con, plan, staged, full_read=result.read == "full")
    if staged.rejects:
        record_rejects(con, plan, staged, now, result)
    for target in plan.targets:
        counts = result.tables[target.table]
        counts.rows_total = con.execute(f"SELECT count(*) FROM {fqn('sap_raw', target.table)}").fetchone()[0]
        if not staged.empty and counts.rows_landed:
            con.execute("DELETE FROM sap_meta.extract_columns WHERE table_name = ?", [target.table])
            cols = staged.cols[target.table]
            con.execute(
                "INSERT INTO sap_meta.extract_columns SELECT ?, unnest(?::VARCHAR[]), "
                "unnest(?::VARCHAR[]), ?",
                [target.table, [c.name for c in cols], [c.final_type for c in cols], now],
            )


def _replace_rows(con: duckdb.DuckDBPyConnection, target: Target, staged: Staged, changed: str,
                  link: tuple[str | None, ...], now: datetime, counts: TableCounts,
                  parent_key: str | None = None, every: bool = False) -> None:
    """Delete and re-insert (BY NAME) the rows of changed keys; children: of changed parents.
    `every`: every staged key changed, so every staged row is inserted without a lookup."""
    tbl = fqn("sap_raw", target.table)
    stage = staged.tables[target.table]
    cols = staged.cols[target.table]
    if parent_key is None:
        match_t = key_join("t", "c", target.key)
        match_s = key_join("s", "c", target.key)
    else:
        pk = link[0]
        match_t = f"t.{q(pk)} = c.{q(parent_key)}"  # type: ignore[arg-type]
        match_s = f"s.{q(pk)} = c.{q(parent_key)}"  # type: ignore[arg-type]
    if not every or con.execute(f"SELECT count(*) FROM {tbl}").fetchone()[0]:
        con.execute(f"DELETE FROM {tbl} t WHERE EXISTS (SELECT 1 FROM {q(changed)} c WHERE {match_t})")
    source = f"{q(stage)} s"
    hash_ref = f"s.{ROW_HASH}"
    if target.table in staged.hashes:
        source += (f" JOIN {q(staged.hashes[target.table])} h ON "
                   f"{key_join('s', 'h', target.key)}")
        hash_ref = f"h.{ROW_HASH}"
    meta = [f"{hash_ref} AS {ROW_HASH}", f"$now::TIMESTAMPTZ AS {LANDED_AT}"]
    if target.master_data:
        meta.append(f"NULL::TIMESTAMPTZ AS {DELETED_AT}")
    if target.is_document:
        flag = "s.\"CancelStatus\" = 'csCancellation'" if any(c.name == "CancelStatus" for c in cols) else "NULL"
        meta.append(f"coalesce({flag}, false) AS {IS_CANCELLATION}")
    select = [f"{c.cast(f's.{q(c.name)}')} AS {q(c.name)}" for c in cols]
    scope = "" if every else f" AND EXISTS (SELECT 1 FROM {q(changed)} c WHERE {match_s})"
    inserted = con.execute(
        f"INSERT INTO {tbl} BY NAME SELECT {', '.join(select + meta)} FROM {source} "
        f"WHERE {keys_present(target.key, 's.')}{scope}", {"now": now},
    ).fetchone()
    counts.rows_changed = int(inserted[0]) if inserted else 0
    counts.rows_unchanged = counts.rows_landed - counts.rows_changed if parent_key is None or every \
        else con.execute(f"SELECT count(*) FROM {q(stage)} s WHERE {keys_present(target.key, 's.')} "
                    f"AND NOT EXISTS (SELECT 1 FROM {q(changed)} c WHERE {match_s})").fetchone()[0]
