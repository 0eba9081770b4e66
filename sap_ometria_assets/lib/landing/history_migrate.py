"""Bring an old-shape `sap_history` table (landing times only) to SAP's change time, in place.

History tables written before `valid_from` existed are extended (`ALTER TABLE ADD COLUMN
valid_from, valid_to, valid_from_source`) at the next landing, inside its transaction, and
filled from what each version already holds: its own UpdateDate/UpdateTime, or, for a child
row, its parent's version of the same landing (an as-of join on the landing time). Versions
without an UpdateDate take their landing time (`landed`). Then, per key in landing order, a
version never starts before an earlier one started or ended (`clamped`), and ends where the
next one starts (the next version of the same landing) or, when the key was gone in between
(removed, deleted), at the landing that closed it. Every version is kept; nothing is re-read
from SAP.
"""

from __future__ import annotations

import logging

import duckdb

from sap_ometria_assets.lib.landing.history_time import (
    IS_CURRENT,
    SAP_COLUMNS,
    SAP_FROM,
    SAP_TO,
    SOURCE,
    VALID_FROM,
    VALID_TO,
    parent_of,
    sap_time_sql,
)
from sap_ometria_assets.lib.landing.plan import Plan, Target
from sap_ometria_assets.lib.warehouse.sql import fqn, q, table_columns

_log = logging.getLogger(__name__)


def migrate(con: duckdb.DuckDBPyConnection, plan: Plan, target: Target, hist: str,
            zone: str) -> bool:
    """Add and fill SAP's validity on an old-shape history table; False when already there."""
    cols = table_columns(con, "sap_history", target.table)
    if SAP_FROM in cols:
        return False
    for name, dtype in SAP_COLUMNS:
        if name not in cols:
            con.execute(f"ALTER TABLE {hist} ADD COLUMN {name} {dtype}")
    parent = parent_of(plan, target)
    if parent is not None:
        pk, pkey = q(target.parent_key_column), q(plan.entity_key)  # type: ignore[arg-type]
        con.execute(
            f"UPDATE {hist} h SET {SAP_FROM} = x.vf, {SOURCE} = x.src FROM (SELECT c.rowid AS rid, "
            f"p.vf, p.src FROM {hist} c ASOF JOIN (SELECT {pkey} AS _pk, {VALID_FROM} AS _at, "
            f"{SAP_FROM} AS vf, {SOURCE} AS src FROM {fqn('sap_history', parent.table)}) p "
            f"ON c.{pk} = p._pk AND c.{VALID_FROM} >= p._at) x WHERE h.rowid = x.rid"
        )
    elif "UpdateDate" in cols:
        ts, src = sap_time_sql("h", zone, has_time="UpdateTime" in cols)
        con.execute(f"UPDATE {hist} h SET {SAP_FROM} = {ts}, {SOURCE} = {src}")
    con.execute(f"UPDATE {hist} SET {SAP_FROM} = {VALID_FROM}, {SOURCE} = 'landed' "
                f"WHERE {SAP_FROM} IS NULL")
    _intervals(con, plan, target, hist)
    n = con.execute(f"SELECT count(*) FROM {hist}").fetchone()[0]
    _log.warning("sap_history.%s: %d version(s) given SAP's change time (valid_from/valid_to) "
                 "from their stored UpdateDate/UpdateTime", target.table, n)
    return True


def _intervals(con: duckdb.DuckDBPyConnection, plan: Plan, target: Target, hist: str) -> None:
    """Per key in landing order: clamp starts so they never go back, then end each version at
    the next one's start, or, when the key was gone in between, where it went: a child row
    removed by an edit of its parent at that edit's time, anything else at its closing landing."""
    part = ", ".join(q(k) for k in target.key)
    parent = parent_of(plan, target)
    ended = f"h.{VALID_TO}"
    join = ""
    if parent is not None:
        ended = f"coalesce(p.vf, h.{VALID_TO})"
        join = (f" LEFT JOIN (SELECT {q(plan.entity_key)} AS _pk, {VALID_FROM} AS _at, "  # type: ignore[arg-type]
                f"{SAP_FROM} AS vf FROM {fqn('sap_history', parent.table)}) p ON "
                f"h.{q(target.parent_key_column)} = p._pk AND h.{VALID_TO} = p._at")  # type: ignore[arg-type]
    order = f"PARTITION BY {part} ORDER BY {VALID_FROM}, rid"
    con.execute(
        f"""UPDATE {hist} h SET
            {SOURCE} = CASE WHEN w.vf > h.{SAP_FROM} THEN 'clamped' ELSE h.{SOURCE} END,
            {SAP_FROM} = w.vf,
            {SAP_TO} = w.vt
        FROM (
            SELECT rid, vf, CASE WHEN {IS_CURRENT} THEN NULL
                                 WHEN next_at = {VALID_TO} THEN lead(vf) OVER ({order})
                                 ELSE greatest(vf, ended) END AS vt
            FROM (
                SELECT *, greatest(
                    max({SAP_FROM}) OVER ({order} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
                    max(gap_end) OVER ({order} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                ) AS vf
                FROM (
                    SELECT *, CASE WHEN NOT {IS_CURRENT} AND next_at IS DISTINCT FROM {VALID_TO}
                                   THEN ended END AS gap_end
                    FROM (
                        SELECT h.rowid AS rid, {', '.join(f'h.{q(k)}' for k in target.key)},
                               h.{VALID_FROM}, h.{VALID_TO}, h.{IS_CURRENT}, h.{SAP_FROM},
                               {ended} AS ended, lead(h.{VALID_FROM}) OVER (PARTITION BY
                               {', '.join(f'h.{q(k)}' for k in target.key)} ORDER BY
                               h.{VALID_FROM}, h.rowid) AS next_at
                        FROM {hist} h{join}
                    )
                )
            )
        ) w
        WHERE h.rowid = w.rid"""
    )
