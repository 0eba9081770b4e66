"""Staging one read: the fetched pages parsed by DuckDB's `read_json` into a temp table, typed.

Pages are parsed a batch at a time while the fetcher brings the next ones (unnesting the
`value` array), with an explicit column type built from the first page and the stored table: no
Python object is built per record. Once every page is in, the type is checked against a few
pages sampled over the whole read; when they disagree (a property only later pages fill), or a
value does not fit, every page is read again in one statement, leniently if need be (other
properties widen, contract and UDF values that do not fit are rejected), so the outcome never
depends on the batching. The stage is then de-duplicated and split per target (split.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import duckdb

from sap_ometria_assets.lib.landing.fetch import Fetcher, read_repairing
from sap_ometria_assets.lib.landing.plan import Plan, TempNames, contract_read_type
from sap_ometria_assets.lib.landing.rejects import find_rejects, numeric_booleans, reject_null_keys
from sap_ometria_assets.lib.landing.results import LandingError
from sap_ometria_assets.lib.landing.shape import (
    WIDE_DECIMAL,
    Col,
    Shape,
    entities_sql,
    is_annotation,
    known_types,
    read_json_sql,
    shape_of,
    struct_type,
    value_type_sql,
)
from sap_ometria_assets.lib.landing.split import (
    Staged,
    dedupe,
    dedupe_order,
    empty_stage,
    entity_key_columns,
    split_targets,
)
from sap_ometria_assets.lib.warehouse.sql import lit, q

_log = logging.getLogger(__name__)


_SAMPLE_FILES = 8             # pages sampled (spread over the read) to infer the JSON structure

# A streamed read_json takes every page fetched so far, at least this many while the read goes
# on: DuckDB parses the files of one statement in parallel, and each statement has a fixed cost
# (on 2 cores, 200 pages in 8 statements of 25 cost about 40% more than in one).
_BATCH_MIN = 8


def _sample(files: list[str]) -> list[str]:
    """Pages spread over the read (first, last, between): up to 8, one in thirty, at least 2.
    Inferring a page's structure costs about 3x reading it, so the sample stays small: the
    Service Layer sends every property of an entity set on every record (nulls included), and
    properties sap_raw already has are read with their stored types anyway."""
    n = min(_SAMPLE_FILES, max(2, len(files) // 30))
    if len(files) <= n:
        return files
    step = (len(files) - 1) / (n - 1)
    return sorted({files[round(i * step)] for i in range(n)})


def _infer(con: duckdb.DuckDBPyConnection, files: list[str]) -> Any | None:
    """The inferred type of `value` elements over `files` (every record of them), or None."""
    rel = con.sql(
        "SELECT * FROM read_json($files, format='unstructured', records=true, sample_size=-1, "
        "maximum_sample_files=-1) LIMIT 0", params={"files": files},
    )
    for name, dtype in zip(rel.columns, rel.types, strict=True):
        if name == "value":
            return dtype.child if dtype.id == "list" else None
    return None


def _entity_count(con: duckdb.DuckDBPyConnection, files: list[str]) -> int:
    row = con.execute(
        "SELECT coalesce(sum(len(value)), 0) FROM " + read_json_sql("$files", "JSON[]"),
        {"files": files},
    ).fetchone()
    return int(row[0]) if row else 0


def stage_pages(con: duckdb.DuckDBPyConnection, client: Any, fetcher: Fetcher, plan: Plan,
                names: TempNames) -> Staged:
    """Stage the pages while they arrive; anything unusual (values that do not fit, a damaged
    page, a type the first page could not tell) goes to the whole read of every page."""
    try:
        staged = _stage_streaming(con, fetcher, plan, names)
        if staged is not None:
            return staged
    except (duckdb.InvalidInputException, duckdb.ConversionException) as exc:
        _log.info("%s: streamed read stopped (%s); reading every page again", plan.spec.table,
                  str(exc).splitlines()[0][:200])
    files = fetcher.wait_all()
    names.drop_all(con)
    return read_repairing(con, fetcher, names,
                          lambda: _stage(con, files, plan, names, fetcher.with_booleans))


def _stage_streaming(con: duckdb.DuckDBPyConnection, fetcher: Fetcher, plan: Plan,
                     names: TempNames) -> Staged | None:
    """Parse batches of pages as they are fetched, typed from the first page; None when the
    whole read must decide (no struct to learn from, or the sample over every page disagrees)."""
    first = fetcher.next_batch(1)
    if not first:
        return None
    forced, stored = known_types(con, plan)
    element = _infer(con, first[:1])
    if element is None or element.id != "struct":
        return None
    shape = shape_of(plan, element, forced, stored)
    value_type = value_type_sql(shape)
    ent = names("entities")
    select = entities_sql(value_type)
    batch = first + fetcher.next_batch(_BATCH_MIN - 1)
    con.execute(f"CREATE TEMP TABLE {q(ent)} AS {select}", {"files": batch})
    while batch := fetcher.next_batch(_BATCH_MIN):
        con.execute(f"INSERT INTO {q(ent)} {select}", {"files": batch})
    files = fetcher.wait_all()
    sampled = _infer(con, _sample(files))
    if (sampled is None or sampled.id != "struct"
            or value_type_sql(shape_of(plan, sampled, forced, stored)) != value_type):
        _log.info("%s: pages sampled over the whole read type some property differently from "
                  "the first page; reading every page again", plan.spec.table)
        return None
    if numeric_booleans(con, fetcher.with_booleans(files), shape):
        return None
    return _finish_stage(con, plan, shape, ent, names, None, forced)


def _stage(con: duckdb.DuckDBPyConnection, files: list[str], plan: Plan, names: TempNames,
           with_booleans: Callable[[list[str]], list[str]]) -> Staged:
    """The whole read: every page in one statement, typed from a sample over all of them, with
    the lenient re-read when values do not fit. `with_booleans`: the pages that may hold a JSON
    boolean (`Fetcher.with_booleans`)."""
    forced, stored = known_types(con, plan)
    if not files:
        return empty_stage(con, plan, names)
    element = _infer(con, _sample(files))
    if element is None or element.id != "struct":
        if _entity_count(con, files) == 0:
            return empty_stage(con, plan, names)
        element = _infer(con, files)
        if element is None or element.id != "struct":
            raise LandingError(
                f"{plan.spec.table}: the Service Layer returned `value` entries that are not "
                f"objects ({element}); cannot land {plan.spec.entity_set}"
            )
    shape = shape_of(plan, element, forced, stored)
    ent = names("entities")
    rejects = None
    try:
        con.execute(f"CREATE TEMP TABLE {q(ent)} AS {entities_sql(value_type_sql(shape))}",
                    {"files": files})
        if numeric_booleans(con, with_booleans(files), shape):
            raise duckdb.ConversionException("Could not convert: a JSON boolean in a number column")
    except (duckdb.InvalidInputException, duckdb.ConversionException) as exc:
        text = str(exc)
        if not any(s in text for s in ("JSON transform error", "Failed to cast", "Could not convert")):
            raise
        _log.warning("%s: some values do not fit the expected types (%s); reading again "
                     "leniently: other properties widen their column, contract and UDF values "
                     "that do not fit land as NULL and are listed in sap_meta.rejected_values",
                     plan.spec.table, text.splitlines()[0][:300])
        full = _infer(con, files)
        shape = shape_of(plan, full, forced, stored, prefer_stored=False)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {q(ent)} AS "
                    f"{entities_sql(value_type_sql(shape), ignore_errors=True)}", {"files": files})
        rejects = find_rejects(con, files, plan, shape, ent, names)
    return _finish_stage(con, plan, shape, ent, names, rejects, forced)


def _finish_stage(con: duckdb.DuckDBPyConnection, plan: Plan, shape: Shape, ent: str,
                  names: TempNames, rejects: str | None, forced: dict[str, dict[str, str]]) -> Staged:
    rejects = reject_null_keys(con, plan, ent, names, rejects)
    dedupe(con, ent, entity_key_columns(plan), dedupe_order(c.name for c in shape.cols))
    for coll, cols in list(shape.collections.items()):
        if cols is None:
            shape.collections[coll] = _learn_collection(con, plan, ent, coll, forced)
    return split_targets(con, plan, shape, ent, names, rejects)


def _learn_collection(con: duckdb.DuckDBPyConnection, plan: Plan, ent: str, coll: str,
                      forced: dict[str, dict[str, str]]) -> list[Col] | None:
    """A registered collection that was empty in every sampled page was read as JSON text: learn
    its element structure from the non-empty ones (if any) and convert it to typed rows."""
    nonempty = f"{q(coll)} IS NOT NULL AND {q(coll)}::VARCHAR NOT IN ('[]', 'null')"
    if not con.execute(f"SELECT count(*) FROM {q(ent)} WHERE {nonempty}").fetchone()[0]:
        return None
    table = next(t.table for t in plan.targets if t.collection == coll)
    structure = con.execute(
        f"SELECT json_group_structure(j) FROM (SELECT unnest(CAST({q(coll)} AS JSON[])) AS j "
        f"FROM {q(ent)} WHERE {nonempty})"
    ).fetchone()[0]
    learnt = json.loads(structure) if structure else {}
    if not isinstance(learnt, dict):
        raise LandingError(f"{table}: `{coll}` holds entries that are not objects")
    cols: list[Col] = []
    for name, jtype in learnt.items():
        if is_annotation(name):
            continue
        if name in forced[table]:
            cols.append(Col(name, contract_read_type(forced[table][name]), "forced"))
        elif isinstance(jtype, dict | list) or jtype == "JSON":
            cols.append(Col(name, "JSON", "json"))
        elif jtype in ("UBIGINT", "BIGINT", "HUGEINT"):
            cols.append(Col(name, WIDE_DECIMAL, "integer"))
        elif jtype == "DOUBLE":
            cols.append(Col(name, WIDE_DECIMAL, "number"))
        elif jtype == "BOOLEAN":
            cols.append(Col(name, "BOOLEAN", "bool"))
        else:
            cols.append(Col(name, "VARCHAR", "text"))
    target = "[" + json.dumps({c.name: c.read_type for c in cols}) + "]"
    try:
        con.execute(f"UPDATE {q(ent)} SET {q(coll)} = NULL WHERE NOT ({nonempty})")
        con.execute(f"ALTER TABLE {q(ent)} ALTER COLUMN {q(coll)} SET DATA TYPE "
                    f"{struct_type((c.name, c.read_type) for c in cols)}[] USING "
                    f"json_transform_strict({q(coll)}, {lit(target)})")
    except duckdb.Error as exc:
        raise LandingError(
            f"{table}: `{coll}` holds values that do not fit their column type: "
            f"{str(exc).splitlines()[0][:300]}"
        ) from None
    return cols
