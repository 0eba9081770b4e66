"""Bad values: what cannot land as its type does not stop the run and does not disappear.

A contract or UDF value that cannot be read as its type (DocTotal `"abc"`, or a JSON true/false
in a number column, which DuckDB would silently read as 1/0) lands as NULL and its raw text is
kept in `sap_meta.rejected_values(table_name, record_key, column_name, raw_value, seen_at)`
(record_key: key values joined by `|`, e.g. `DocEntry|LineNum`). A record whose key is null or
unreadable cannot be merged: it is listed there (`(null key) record N of the extract`) and not
landed. Entries of records read again are replaced, so the table shows what is wrong now.
`broken_contract` names the contract columns an extract did not deliver (the watermark then
stays, so the records are read again once SAP is fixed).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

import duckdb

from sap_ometria_assets.lib.landing.plan import Plan, TempNames
from sap_ometria_assets.lib.landing.results import LandingError, LandResult, TableCounts
from sap_ometria_assets.lib.landing.shape import (
    Shape,
    entities_sql,
    is_numeric_type,
    read_json_sql,
    value_type_sql,
)
from sap_ometria_assets.lib.landing.split import Staged, entity_key_columns
from sap_ometria_assets.lib.sap.tables import optional_columns
from sap_ometria_assets.lib.warehouse.sql import lit, q

_log = logging.getLogger(__name__)


NULL_KEY_PREFIX = "(null key) "


def numeric_booleans(con: duckdb.DuckDBPyConnection, files: list[str], shape: Shape) -> bool:
    """Whether any page holds a JSON true/false for a column read as a number: DuckDB's JSON
    reader turns those into 1/0 without a word, so such a read goes the lenient way, where
    they are rejected instead (`find_rejects`). One regex scan of the page text."""
    numeric = sorted({c.name for c in shape.cols if is_numeric_type(c.read_type)})
    if not numeric or not files:
        return False
    pattern = '"(' + "|".join(re.escape(n) for n in numeric) + ')"\\s*:\\s*(true|false)\\b'
    row = con.execute("SELECT count(*) FROM read_text($files) WHERE regexp_matches(content, $p)",
                      {"files": files, "p": pattern}).fetchone()
    return bool(row and row[0])


def reject_null_keys(con: duckdb.DuckDBPyConnection, plan: Plan, ent: str, names: TempNames,
                     rejects: str | None) -> str | None:
    """Records SAP sent with a null key cannot land (nothing to merge on): each is listed in
    sap_meta.rejected_values as '(null key) record N of the extract' instead of vanishing."""
    keys = entity_key_columns(plan)
    missing = " OR ".join(f"{q(k)} IS NULL" for k in keys)
    n = con.execute(f"SELECT count(*) FROM {q(ent)} WHERE {missing}").fetchone()[0]
    if not n:
        return rejects
    if rejects is not None and con.execute(
            f"SELECT count(*) FROM {q(rejects)} WHERE column_name IN "
            f"({', '.join(lit(k) for k in keys)})").fetchone()[0]:
        return rejects  # the lenient read listed unreadable keys with their raw text already
    if rejects is None:
        rejects = names("rejects")
        con.execute(f"CREATE TEMP TABLE {q(rejects)} (table_name VARCHAR, record_key VARCHAR, "
                    "column_name VARCHAR, raw_value VARCHAR)")
    con.execute(
        f"INSERT INTO {q(rejects)} SELECT {lit(plan.main.table)}, {lit(NULL_KEY_PREFIX)} || "
        f"'record ' || pos || ' of the extract', {lit(', '.join(keys))}, NULL FROM ("
        f"SELECT row_number() OVER (ORDER BY _page, _pos) AS pos, {missing} AS bad FROM {q(ent)}) "
        "WHERE bad")
    _log.warning("%s: %d record(s) with a null key (%s) listed in sap_meta.rejected_values",
                 plan.main.table, n, ", ".join(keys))
    return rejects


def find_rejects(con: duckdb.DuckDBPyConnection, files: list[str], plan: Plan, shape: Shape,
                 ent: str, names: TempNames) -> str:
    """Compare the lenient typed read with a text read of the same pages: values present as text
    but NULL once typed did not fit their column."""
    typed = {c.name for c in shape.cols if c.read_type != "VARCHAR"} | {
        c.name for cols in shape.collections.values() if cols for c in cols if c.read_type != "VARCHAR"}
    shadow = names("shadow")
    con.execute(
        f"CREATE TEMP TABLE {q(shadow)} AS SELECT filename AS _page, generate_subscripts(value, 1) "
        f"AS _pos, unnest(value) AS _e FROM "
        + read_json_sql("$files", value_type_sql(shape, as_text=typed)), {"files": files},
    )
    n_read = con.execute(
        "SELECT count(*) FROM (" + entities_sql(value_type_sql(shape), ignore_errors=True) + ")",
        {"files": files},
    ).fetchone()[0]
    n_shadow = con.execute(f"SELECT count(*) FROM {q(shadow)}").fetchone()[0]
    if n_read != n_shadow:
        raise LandingError(
            f"{plan.spec.table}: the lenient read of {plan.spec.entity_set} kept {n_read} of "
            f"{n_shadow} records; refusing to land a partial extract"
        )
    rejects = names("rejects")
    con.execute(f"CREATE TEMP TABLE {q(rejects)} (table_name VARCHAR, record_key VARCHAR, "
                "column_name VARCHAR, raw_value VARCHAR)")
    main = plan.main
    if main.collection is None:
        key_txt = " || '|' || ".join(f"coalesce(s._e.{q(k)}::VARCHAR, '')" for k in main.key)
        for col in shape.cols:
            if col.read_type == "VARCHAR":
                continue
            # a JSON true/false read as a number is 1/0: rejected too, and set to NULL
            boolean = (f"s._e.{q(col.name)} IN ('true', 'false')"
                       if is_numeric_type(col.read_type) else "false")
            con.execute(
                f"INSERT INTO {q(rejects)} SELECT {lit(main.table)}, {key_txt}, {lit(col.name)}, "
                f"s._e.{q(col.name)} FROM {q(ent)} r JOIN {q(shadow)} s USING (_page, _pos) "
                f"WHERE s._e.{q(col.name)} IS NOT NULL AND (r.{q(col.name)} IS NULL OR {boolean})"
            )
            if boolean != "false":
                con.execute(
                    f"UPDATE {q(ent)} r SET {q(col.name)} = NULL FROM {q(shadow)} s "
                    f"WHERE r._page = s._page AND r._pos = s._pos AND {boolean}"
                )
    targets = [main] if main.collection else list(plan.children)
    for target in targets:
        cols = shape.collections.get(target.collection)  # type: ignore[arg-type]
        if not cols:
            continue
        key_txt = " || '|' || ".join(
            f"coalesce(s._c.{q(k)}::VARCHAR, s._pk::VARCHAR, '')" if k == target.parent_key_column
            else f"coalesce(s._c.{q(k)}::VARCHAR, '')" for k in target.key
        )
        coll = q(target.collection)  # type: ignore[arg-type]
        unnest_r = (f"SELECT _page, _pos, generate_subscripts({coll}, 1) AS _cpos, "
                    f"unnest({coll}) AS _c FROM {q(ent)}")
        unnest_s = (f"SELECT _page, _pos, _e.{q(plan.entity_key)}::VARCHAR AS _pk, "  # type: ignore[arg-type]
                    f"generate_subscripts(_e.{coll}, 1) AS _cpos, unnest(_e.{coll}) AS _c "
                    f"FROM {q(shadow)}")
        for col in cols:
            if col.read_type == "VARCHAR":
                continue
            con.execute(
                f"INSERT INTO {q(rejects)} SELECT {lit(target.table)}, {key_txt}, {lit(col.name)}, "
                f"s._c.{q(col.name)} FROM ({unnest_r}) r JOIN ({unnest_s}) s "
                f"USING (_page, _pos, _cpos) WHERE s._c.{q(col.name)} IS NOT NULL "
                f"AND r._c.{q(col.name)} IS NULL"
            )
    return rejects


def clear_rejects(con: duckdb.DuckDBPyConnection, plan: Plan, staged: Staged,
                  full_read: bool = True) -> None:
    """Records read again lose their old reject entries (SAP may have fixed the value)."""
    for target in plan.targets:
        if not con.execute("SELECT count(*) FROM sap_meta.rejected_values WHERE table_name = ?",
                           [target.table]).fetchone()[0]:
            continue
        # null-key records have no identity: each full read lists the ones it still sees
        relisted = bool(staged.rejects) and con.execute(
            f"SELECT count(*) FROM {q(staged.rejects)} WHERE table_name = ? AND "  # type: ignore[arg-type]
            "starts_with(record_key, ?)", [target.table, NULL_KEY_PREFIX]).fetchone()[0] > 0
        if full_read or relisted:
            con.execute("DELETE FROM sap_meta.rejected_values WHERE table_name = ? AND "
                        "starts_with(record_key, ?)", [target.table, NULL_KEY_PREFIX])
        key_txt = " || '|' || ".join(f"coalesce(CAST({q(k)} AS VARCHAR), '')" for k in target.key)
        con.execute(
            f"DELETE FROM sap_meta.rejected_values WHERE table_name = ? AND record_key IN "
            f"(SELECT {key_txt} FROM {q(staged.tables[target.table])})", [target.table],
        )


def record_rejects(con: duckdb.DuckDBPyConnection, plan: Plan, staged: Staged, now: datetime,
                   result: LandResult) -> None:
    rej = q(staged.rejects)  # type: ignore[arg-type]
    con.execute(f"INSERT INTO sap_meta.rejected_values SELECT table_name, record_key, column_name, "
                f"raw_value, $now FROM {rej}", {"now": now})
    for table, n in con.execute(f"SELECT table_name, count(*) FROM {rej} GROUP BY ALL").fetchall():
        result.tables.setdefault(table, TableCounts()).rejected_values = int(n)


def broken_contract(con: duckdb.DuckDBPyConnection, plan: Plan, staged: Staged) -> list[str]:
    """Contract columns this extract did not deliver: sent by the previous extract but absent
    now (removed or renamed in SAP), or unreadable in most of its records (a type change).
    Rows landed from such an extract hold NULL there. Call before the merge replaces
    `sap_meta.extract_columns`."""
    if staged.empty:
        return []
    broken: list[str] = []
    for target in plan.targets:
        if target.table in staged.absent:
            continue
        before = {r[0].lower() for r in con.execute(
            "SELECT column_name FROM sap_meta.extract_columns WHERE table_name = ?", [target.table]
        ).fetchall()}
        sent = {c.name.lower() for c in staged.cols[target.table]}
        optional = optional_columns(target.table)  # absent: NULL, and the watermark moves on
        broken += [f"{target.table}.{c}" for c in target.contract
                   if c.lower() in before - sent and c not in optional]
    if staged.rejects:
        for table, column, records in con.execute(
                f"SELECT table_name, column_name, count(DISTINCT record_key) FROM {q(staged.rejects)} "
                "GROUP BY ALL").fetchall():
            target = next((t for t in plan.targets if t.table == table), None)
            if (target is None or column not in target.contract or records < 5
                    or column in optional_columns(table)):
                continue
            landed = con.execute(f"SELECT count(*) FROM {q(staged.tables[table])}").fetchone()[0]
            if records * 2 >= landed:
                broken.append(f"{table}.{column}")
    return broken
