"""SQL building blocks every step shares: quoting, catalogue look-ups, one transaction helper,
and reading the column descriptions our own DDL carries as `-- comments` (`ddl_columns`).

SAP property names and values come from outside and may hold anything (quotes included), so
identifiers and literals are always quoted through `q` and `lit`. The catalogue helpers read
`information_schema` with `fetchall()`: an unconsumed result blocked the next statement on
duckdb 2.x, and fetching costs nothing on 1.5.x.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import duckdb


def q(identifier: str) -> str:
    """A quoted identifier (Service Layer property names keep their case)."""
    return '"' + identifier.replace('"', '""') + '"'


def lit(value: object) -> str:
    """A quoted SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def text_list(values: Iterable[object]) -> str:
    """A VARCHAR[] literal, typed even when empty (so list_contains never sees NULL)."""
    return "[" + ", ".join(lit(v) for v in values) + "]::VARCHAR[]"


def fqn(schema: str, table: str) -> str:
    """schema.table, both quoted."""
    return f"{q(schema)}.{q(table)}"


# DESCRIBE reads one entry of the catalogue (under 1 ms); information_schema builds the rows of
# every table and column first (4-9 ms a query), and a sync asks these questions hundreds of
# times. A name DESCRIBE cannot resolve (missing, or a view whose own inputs are missing) is
# answered by information_schema, so the answer is the same as before in every case.
def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """A table or view of that name exists in the schema."""
    if _describe(con, schema, table) is not None:
        return True
    rows = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    ).fetchall()
    return bool(rows[0][0])


def table_columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> dict[str, str]:
    """Column name -> DuckDB type, in table order; empty when the table does not exist."""
    described = _describe(con, schema, table)
    if described is not None:
        return described
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    return {name: dtype for name, dtype in rows}


def _describe(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> dict[str, str] | None:
    # A catalogue error does not abort an open transaction (a binder error, not an execution one).
    try:
        rows = con.execute(f"DESCRIBE {fqn(schema, table)}").fetchall()
    except (duckdb.CatalogException, duckdb.BinderException):
        return None
    return {name: dtype for name, dtype, *_ in rows}


def has_column(con: duckdb.DuckDBPyConnection, schema: str, table: str, column: str) -> bool:
    return column in table_columns(con, schema, table)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All statements inside commit together or not at all (a failure rolls back and re-raises).

    Readers and a killed process see either the state before or the state after, never a
    half-written step: the ledger's crash guarantee and every merge rely on it.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+\.\w+)|ALTER TABLE (\w+\.\w+) ADD COLUMN")
_COLUMN = re.compile(
    r"^\s*(?:ALTER TABLE \w+\.\w+ ADD COLUMN IF NOT EXISTS\s+)?(\w+)\s+"
    r"([A-Z]+(?:\([0-9, ]+\))?(?:\[\])?)[^-]*--\s*(.+?)\s*$"
)


@contextmanager
def compression_off(con: duckdb.DuckDBPyConnection, methods: str) -> Iterator[None]:
    """Writes on this connection without DuckDB's compression `methods` (e.g. 'dict_fsst') for
    the block, then back to the defaults; each caller says what it trades for what."""
    con.execute(f"SET disabled_compression_methods = {lit(methods)}")
    try:
        yield
    finally:
        con.execute("RESET disabled_compression_methods")


def ddl_columns(ddl: str) -> dict[str, dict[str, tuple[str, str]]]:
    """`schema.table` -> column -> (type, description) from DDL whose column lines end with
    `-- description`: the one place a table's columns are described (catalog and docs read it)."""
    tables: dict[str, dict[str, tuple[str, str]]] = {}
    current: str | None = None
    for line in ddl.splitlines():
        head = _TABLE.search(line)
        if head:
            current = head.group(1) or head.group(2)
            tables.setdefault(current, {})
        col = _COLUMN.match(line)
        if current and col and col.group(1).upper() not in {"CREATE", "ALTER"}:
            tables[current][col.group(1)] = (col.group(2), col.group(3))
    return tables
