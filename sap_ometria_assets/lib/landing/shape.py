"""How Service Layer pages are typed for DuckDB's `read_json`: the column type of every property.

Contract columns as the registry says (amounts `DECIMAL(19,6)` read straight from the JSON text,
so no binary float ever touches them); UDF columns from the landed `sap_raw.cufd` (`udf_types`);
a property sap_raw already stores keeps the kind of its stored type; other properties as the
JSON shows them (integers and reals read exactly as `DECIMAL(38,6)`, never DOUBLE; date-like
text; booleans; nested collections that are no registered child table as JSON text). `shape_of`
turns the inferred structure of a page into `Col`s (parent and registered collections),
`value_type_sql` into the `STRUCT(...)[]` type `read_json` is given, `entities_sql` into the
statement producing one row per entity.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import duckdb

from sap_ometria_assets.lib.landing.plan import Plan, contract_read_type
from sap_ometria_assets.lib.warehouse.sql import lit, q, table_columns


_NUMERIC_IDS = {"tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint",
                "uinteger", "ubigint", "uhugeint", "float", "double", "decimal"}

_DATELIKE_IDS = {"date", "timestamp", "timestamp with time zone", "timestamp_ns", "timestamp_ms",
                 "timestamp_s"}

WIDE_DECIMAL = "DECIMAL(38,6)"

AMOUNT = "DECIMAL(19,6)"


def udf_types(con: duckdb.DuckDBPyConnection, udf_table: str | None) -> dict[str, str]:
    """DuckDB types of a table's UDFs (`U_<Name>`) from the landed `sap_raw.cufd`."""
    if not udf_table or not table_columns(con, "sap_raw", "cufd"):
        return {}
    cols = table_columns(con, "sap_raw", "cufd")
    if not {"TableName", "Name", "Type"} <= cols.keys():
        return {}
    sub = "SubType" if "SubType" in cols else "NULL"
    rows = con.execute(
        f"SELECT Name, Type, {sub} FROM sap_raw.cufd WHERE TableName = ? AND Name IS NOT NULL",
        [udf_table],
    ).fetchall()
    out: dict[str, str] = {}
    for name, ftype, subtype in rows:
        if ftype == "db_Float":
            out[f"U_{name}"] = AMOUNT
        elif ftype == "db_Numeric":
            out[f"U_{name}"] = "BIGINT"
        elif ftype == "db_Date" and subtype != "st_Time":
            out[f"U_{name}"] = "DATE"
        else:
            out[f"U_{name}"] = "VARCHAR"
    return out


def is_numeric_type(dtype: str) -> bool:
    d = dtype.upper()
    return d.startswith("DECIMAL") or d in ("BIGINT", "INTEGER", "HUGEINT", "SMALLINT",
                                            "TINYINT", "DOUBLE", "FLOAT", "UBIGINT")


@dataclass
class Col:
    name: str
    read_type: str                 # type read_json produces
    kind: str                      # forced | number | datelike | text | bool | json
    final_type: str | None = None  # type in sap_raw (decided by _conform)

    def cast(self, src: str) -> str:
        """SQL turning the staged value `src` into `final_type`."""
        target = self.final_type or self.read_type
        if self.kind == "datelike" and target.upper() == "DATE":
            return f"CAST(substr({src}, 1, 10) AS DATE)"
        if target.upper() == self.read_type.upper():
            return src
        if self.kind in ("number", "integer") and target.upper() == "VARCHAR":
            # the number as SL wrote it (5, 5.5), not DECIMAL's padding (5.000000)
            return f"rtrim(rtrim(CAST({src} AS VARCHAR), '0'), '.')"
        return f"CAST({src} AS {target})"


def is_annotation(name: str) -> bool:
    return "@" in name or name.startswith("odata.")


def _classify(dtype: duckdb.typing.DuckDBPyType) -> tuple[str, str]:
    """(read type, kind) for a property that no contract or UDF types."""
    tid = dtype.id
    if str(dtype) == "JSON":
        return "VARCHAR", "text"
    if tid in ("struct", "list", "map", "array", "union"):
        return "JSON", "json"
    if tid in _NUMERIC_IDS:
        # Read exactly as DECIMAL(38,6) whatever the JSON; JSON integers (ids, codes) become
        # BIGINT, JSON reals (SL writes Edm.Double as 0.0) DECIMAL(19,6), never DOUBLE.
        kind = "number" if tid in ("float", "double", "decimal") else "integer"
        return WIDE_DECIMAL, kind
    if tid == "boolean":
        return "BOOLEAN", "bool"
    if tid in _DATELIKE_IDS:
        return "VARCHAR", "datelike"
    return "VARCHAR", "text"


def struct_type(fields: Iterable[tuple[str, str]]) -> str:
    return "STRUCT(" + ", ".join(f"{q(n)} {t}" for n, t in fields) + ")"


@dataclass
class Shape:
    """Read types of one target's properties (in SL order) plus its child collections."""

    cols: list[Col]
    # collection property -> element columns (None: the sample held no element to learn from)
    collections: dict[str, list[Col] | None] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)   # child tables whose collection SL omitted


def _from_stored(stored: str) -> tuple[str, str]:
    """(read type, kind) for a property the sample only saw empty but the table already types."""
    s = stored.upper()
    if is_numeric_type(s):
        return WIDE_DECIMAL, "integer" if s in ("BIGINT", "INTEGER", "HUGEINT") else "number"
    if s == "DATE":
        return "VARCHAR", "datelike"
    if s == "BOOLEAN":
        return "BOOLEAN", "bool"
    if s == "JSON":
        return "JSON", "json"
    return "VARCHAR", "text"


def _columns_for(fields: list[tuple[str, Any]], forced: dict[str, str], exclude: set[str],
                 stored: dict[str, str], prefer_stored: bool) -> list[Col]:
    """Read types: contract/UDF types; else, for a column sap_raw already has, the kind of its
    stored type (so reads, and hashes, do not flip with what a sample happened to see); else what
    the JSON shows. The lenient re-read after a failed read ignores stored types, so a property
    whose values really changed kind widens its column instead of being rejected."""
    cols = []
    for name, dtype in fields:
        if is_annotation(name) or name in exclude:
            continue
        if name in forced:
            cols.append(Col(name, contract_read_type(forced[name]), "forced"))
        elif name in stored and (prefer_stored or dtype.id == "null"):
            cols.append(Col(name, *_from_stored(stored[name])))
        else:
            cols.append(Col(name, *_classify(dtype)))
    return cols


def _element_fields(dtype: Any) -> list[tuple[str, Any]] | None:
    if dtype.id == "list" and dtype.child.id == "struct":
        return list(dtype.child.children)
    return None


def shape_of(plan: Plan, element: Any, forced: dict[str, dict[str, str]],
             stored: dict[str, dict[str, str]], prefer_stored: bool = True) -> Shape:
    """Read types for the entity struct (main target columns plus registered collections)."""
    fields = list(element.children)
    by_name = dict(fields)
    if plan.main.collection:  # oitw: entities are (ItemCode, collection)
        key_type = contract_read_type(plan.main.contract.get(plan.entity_key, "VARCHAR"))  # type: ignore[arg-type]
        shape = Shape(cols=[Col(plan.entity_key, key_type, "forced")])  # type: ignore[arg-type]
        colls = [(plan.main.collection, plan.main.table)]
    else:
        exclude = {c.collection for c in plan.children} | set(plan.foreign_collections)
        shape = Shape(cols=_columns_for(fields, forced[plan.main.table], exclude,  # type: ignore[arg-type]
                                        stored[plan.main.table], prefer_stored))
        colls = [(c.collection, c.table) for c in plan.children]
    for coll, table in colls:
        dtype = by_name.get(coll)  # type: ignore[arg-type]
        if dtype is None:
            shape.absent.add(table)  # SL did not send the collection: its rows are unknown
            continue
        el = _element_fields(dtype)
        shape.collections[coll] = (  # type: ignore[index]
            _columns_for(el, forced[table], set(), stored[table], prefer_stored)
            if el is not None else None
        )
    return shape


def value_type_sql(shape: Shape, *, as_text: set[str] | None = None) -> str:
    """The STRUCT(...)[] type for read_json; `as_text` reads those properties as VARCHAR."""
    def t(col: Col) -> str:
        return "VARCHAR" if as_text is not None and col.name in as_text else col.read_type

    fields = [(c.name, t(c)) for c in shape.cols]
    for coll, cols in shape.collections.items():
        if cols is None:
            fields.append((coll, "JSON"))
        else:
            fields.append((coll, struct_type((c.name, t(c)) for c in cols) + "[]"))
    return struct_type(fields) + "[]"


def known_types(con: duckdb.DuckDBPyConnection, plan: Plan) -> tuple[dict, dict]:
    forced = {t.table: {**udf_types(con, t.udf_table), **t.contract} for t in plan.targets}
    stored = {t.table: table_columns(con, "sap_raw", t.table) for t in plan.targets}
    return forced, stored


def read_json_sql(files_param: str, value_type: str, *, ignore_errors: bool = False) -> str:
    return (
        f"read_json({files_param}, columns={{'value': {lit(value_type)}}}, format='unstructured', "
        f"records=true, filename=true{', ignore_errors=true' if ignore_errors else ''})"
    )


def entities_sql(value_type: str, *, ignore_errors: bool = False) -> str:
    """One row per entity: page file, position in the page, then every property as a column."""
    return (
        "SELECT _page, _pos, unnest(_e) FROM (SELECT filename AS _page, generate_subscripts(value, "
        f"1) AS _pos, unnest(value) AS _e FROM {read_json_sql('$files', value_type, ignore_errors=ignore_errors)})"
    )
