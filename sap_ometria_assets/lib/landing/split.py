"""From the staged entity table to one stage per sap_raw table, ready to merge (`Staged`).

Child rows are unnested from their parent's collection (the parent key injected when the
collection lacks it, as ItemPrices lack ItemCode), one row is kept per key (`dedupe`: `$skip`
paging can return a record twice; the latest version wins), and every row gets its content hash
`_row_hash`: XOR of per-property hashes over the non-null properties, so a property that appears
empty changes nothing; a parent's hash folds in its children's, so an order whose lines changed
counts as changed. The hash is DuckDB's `hash()` (20x cheaper than md5 over text): a DuckDB
upgrade that changed it would re-land the rows read again, once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import duckdb

from sap_ometria_assets.lib.landing.plan import Plan, TempNames, contract_read_type, keys_present
from sap_ometria_assets.lib.landing.shape import Col, Shape
from sap_ometria_assets.lib.warehouse.sql import lit, q

_log = logging.getLogger(__name__)


ROW_HASH = "_row_hash"


@dataclass
class Staged:
    """Per target: the temp table (deduplicated, raw read types, `_row_hash`) and its columns.
    Rows whose key could not be read stay in the stage (for the reject report) and are skipped
    by the merge."""

    tables: dict[str, str]
    cols: dict[str, list[Col]]
    rejects: str | None                    # temp table of rejected values (or None)
    empty: bool
    names: TempNames
    hashes: dict[str, str] = field(default_factory=dict)  # target -> (key, _row_hash) table
    absent: set[str] = field(default_factory=set)         # child tables left untouched


def entity_key_columns(plan: Plan) -> tuple[str, ...]:
    return plan.main.key if plan.main.collection is None else (plan.entity_key,)  # type: ignore[return-value]


def dedupe(con: duckdb.DuckDBPyConnection, table: str, keys: tuple[str, ...], order: str) -> int:
    """Keep one row per key (the latest version): `$skip` paging without a snapshot can return a
    record twice when rows move during the read. Checked first, since it is rare."""
    cols = ", ".join(q(k) for k in keys)
    present = keys_present(keys)
    total, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT ({cols})) FROM {q(table)} WHERE {present}"
    ).fetchone()
    if total == distinct:
        return 0
    removed = con.execute(
        f"DELETE FROM {q(table)} WHERE (_page, _pos) IN (SELECT (_page, _pos) FROM {q(table)} "
        f"WHERE {present} QUALIFY row_number() OVER (PARTITION BY {cols} ORDER BY {order}) > 1)"
    ).fetchone()[0]
    _log.info("%s: %d duplicate record(s) from paging dropped (latest version kept)", table, removed)
    return int(removed)


def dedupe_order(cols: Iterable[str]) -> str:
    names_ = set(cols)
    order = [f"{q(c)} DESC NULLS LAST" for c in ("UpdateDate", "UpdateTime") if c in names_]
    return ", ".join(order + ["_page DESC", "_pos DESC"])


def _hash_expr(columns: Iterable[str], prefix: str = "") -> str:
    """Content hash of a row: XOR of hash(name, value) over the non-null columns. Order-free and
    blind to NULLs, so a property that appears empty (a new UDF nobody filled) changes nothing.
    DuckDB's hash is fast (about 20x md5 over text) but only stable within a DuckDB release: after
    an upgrade that changes it, re-read rows are re-landed once."""
    terms = [f"CASE WHEN {prefix}{q(c)} IS NULL THEN 0::UBIGINT ELSE hash({lit(c)}, {prefix}{q(c)}) END"
             for c in sorted(columns)]
    return _xor_all(terms)


def _xor_all(terms: list[str]) -> str:
    """XOR of many terms as a balanced tree: a 350-deep chain costs DuckDB a second to plan."""
    if not terms:
        return "0::UBIGINT"
    while len(terms) > 1:
        terms = [f"xor({terms[i]}, {terms[i + 1]})" if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


def _hex(expr: str) -> str:
    return f"printf('%016x', {expr})"


def split_targets(con: duckdb.DuckDBPyConnection, plan: Plan, shape: Shape, ent: str, names: TempNames,
                  rejects: str | None) -> Staged:
    """Per-target stages. The main table's stage is the entity table itself; child rows are
    unnested from it (parent key injected). Hashes: own columns, and a parent's hash also folds
    in its children's (XOR), so an order whose lines changed counts as changed."""
    tables: dict[str, str] = {}
    cols_by: dict[str, list[Col]] = {}
    hashes: dict[str, str] = {}
    main = plan.main
    entity_keys = entity_key_columns(plan)
    if main.collection is None:
        tables[main.table], cols_by[main.table] = ent, shape.cols
        children = list(plan.children)
    else:
        children = [main]
    for child in children:
        ccols = shape.collections.get(child.collection)  # type: ignore[arg-type]
        cname = names(f"t_{child.table}")
        pk = child.parent_key_column
        if ccols is None:
            ccols = [Col(n, contract_read_type(t), "forced") for n, t in child.contract.items()]
            defs = ", ".join(f"{q(c.name)} {c.read_type}" for c in ccols)
            con.execute(f"CREATE TEMP TABLE {q(cname)} ({defs}, _page VARCHAR, _pos BIGINT, "
                        f"_h UBIGINT, {ROW_HASH} VARCHAR)")
            tables[child.table], cols_by[child.table] = cname, ccols
            continue
        present = {c.name for c in ccols}
        select = []
        for c in ccols:
            if c.name == pk:
                select.append(f"coalesce(_c.{q(c.name)}, CAST(_pk AS {c.read_type})) AS {q(c.name)}")
            else:
                select.append(f"_c.{q(c.name)} AS {q(c.name)}")
        if pk not in present:
            pk_type = contract_read_type(child.contract.get(pk, "VARCHAR"))  # type: ignore[arg-type]
            select.insert(0, f"CAST(_pk AS {pk_type}) AS {q(pk)}")  # type: ignore[arg-type]
            ccols = [Col(pk, pk_type, "forced"), *ccols]  # type: ignore[arg-type]
        con.execute(
            f"CREATE TEMP TABLE {q(cname)} AS SELECT *, {_hex('_h')} AS {ROW_HASH} FROM (SELECT *, "
            f"{_hash_expr(c.name for c in ccols)} AS _h FROM (SELECT {', '.join(select)}, _page, "
            f"_pos * 100000 + _cpos AS _pos FROM (SELECT _page, _pos, {q(plan.entity_key)} AS _pk, "  # type: ignore[arg-type]
            f"generate_subscripts({q(child.collection)}, 1) AS _cpos, "  # type: ignore[arg-type]
            f"unnest({q(child.collection)}) AS _c FROM {q(ent)} "  # type: ignore[arg-type]
            f"WHERE {keys_present(entity_keys)})))"
        )
        dedupe(con, cname, child.key, "_page DESC, _pos DESC")
        tables[child.table], cols_by[child.table] = cname, ccols
    if main.collection is None:
        # The parent's hash folds in its children's (XOR), so changed lines change the order.
        hname = names("hash")
        joins, terms = [], [_hash_expr((c.name for c in shape.cols), prefix="e.")]
        for i, child in enumerate(plan.children):
            joins.append(
                f"LEFT JOIN (SELECT {q(child.parent_key_column)} AS pk, bit_xor(_h) AS h FROM "  # type: ignore[arg-type]
                f"{q(tables[child.table])} GROUP BY ALL) c{i} ON e.{q(plan.entity_key)} = c{i}.pk"  # type: ignore[arg-type]
            )
            terms.append(f"coalesce(c{i}.h, 0::UBIGINT)")
        combined = _xor_all(terms)
        con.execute(
            f"CREATE TEMP TABLE {q(hname)} AS SELECT {', '.join(f'e.{q(k)}' for k in main.key)}, "
            f"{_hex(combined)} AS {ROW_HASH} FROM {q(ent)} e {' '.join(joins)} "
            f"WHERE {keys_present(main.key, 'e.')}"
        )
        hashes[main.table] = hname
        # The child rows now live in their own stages: the nested copy is dropped so the read
        # does not hold every line twice (at x100, over the memory cap, it would spill).
        for coll in shape.collections:
            con.execute(f"ALTER TABLE {q(ent)} DROP COLUMN {q(coll)}")
    return Staged(tables, cols_by, rejects, False, names, hashes, shape.absent)


def empty_stage(con: duckdb.DuckDBPyConnection, plan: Plan, names: TempNames) -> Staged:
    tables, cols = {}, {}
    for target in plan.targets:
        tcols = [Col(n, contract_read_type(t), "forced") for n, t in target.contract.items()]
        name = names(f"t_{target.table}")
        defs = ", ".join(f"{q(c.name)} {c.read_type}" for c in tcols)
        con.execute(f"CREATE TEMP TABLE {q(name)} ({defs}, {ROW_HASH} VARCHAR)")
        tables[target.table], cols[target.table] = name, tcols
    return Staged(tables, cols, None, True, names)
