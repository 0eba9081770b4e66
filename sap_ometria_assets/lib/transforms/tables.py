"""Reading the landed SAP tables the transforms need and writing the ometria.* tables they produce.

`read_raw` reads a `sap_raw` table (only the columns a transform uses, only the rows a partial
build needs); `load_run_mapping` loads the mapping file and checks it against the UDFs SAP
declares; `write_ometria` replaces an ometria table and documents its columns in DuckDB
(COMMENT ON) for SQL users; `previous_hashes` gives what the table held before (for the
new/changed/unchanged counts).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import duckdb
import polars as pl

from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.ometria.mapping import Mapping, load_mapping, validate_against_cufd
from sap_ometria_assets.lib.warehouse.db import read_table, write_table
from sap_ometria_assets.lib.warehouse.sql import compression_off, fqn, lit, q, table_columns, table_exists


class MissingUpstreamError(RuntimeError):
    """A landed SAP table this asset needs is not in the warehouse yet."""


def read_raw(con: duckdb.DuckDBPyConnection, table: str, required: bool = True,
             columns: Iterable[str] | None = None, where: str | None = None,
             params: list | None = None) -> pl.DataFrame | None:
    """A landed table, or only `columns` of it (those it has; a missing one is the transform's
    to report) and only the rows matching `where`."""
    if not table_exists(con, "sap_raw", table):
        if required:
            raise MissingUpstreamError(
                f"sap_raw.{table} does not exist: materialise the sap_raw/{table} asset first"
            )
        return None
    if columns is None:
        return read_table(con, "sap_raw", table, where=where, params=params)
    have = list(table_columns(con, "sap_raw", table))
    wanted = set(columns)
    select = ", ".join(q(c) for c in have if c in wanted)
    sql = f'SELECT {select or "*"} FROM {fqn("sap_raw", table)}'
    if where:
        sql += f" WHERE {where}"
    return con.sql(sql, params=params or []).pl()


def load_run_mapping(con: duckdb.DuckDBPyConnection) -> Mapping:
    """The mapping file, checked against the UDFs SAP declares (an error names file, key, value)."""
    mapping = load_mapping(get_settings().mapping_path)
    cufd = read_raw(con, "cufd")
    return validate_against_cufd(mapping, cufd)  # type: ignore[arg-type]


def previous_hashes(con: duckdb.DuckDBPyConnection, table: str) -> pl.DataFrame | None:
    """id/payload_hash of every row the ometria table holds now (None before its first build)."""
    if not table_exists(con, "ometria", table):
        return None
    if not {"id", "payload_hash"} <= set(table_columns(con, "ometria", table)):
        return None
    return con.sql(f'SELECT id, payload_hash FROM {fqn("ometria", table)}').pl()


@contextmanager
def fast_string_writes(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """DuckDB's DICT_FSST string compression took 18 s of a 22 s write of a million order
    payloads (x100 demo company, 2 cores). FSST and dictionary analysis still cost half of what
    remained (x100, a 220k-order slice: 3.8 s with them, 1.7 s without; 85 MB on disk vs 235 MB),
    so strings are stored plain. Used for full rebuilds; incremental builds write a few rows
    with the defaults."""
    with compression_off(con, "dict_fsst,fsst,dictionary"):
        yield


def write_ometria(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame,
                  descriptions: dict[str, str]) -> None:
    """Replace the table and document it in DuckDB too (COMMENT ON), for SQL users."""
    with fast_string_writes(con):
        write_table(con, "ometria", table, frame)
    for column in frame.columns:
        text = descriptions.get(column)
        if text:
            con.execute(f"COMMENT ON COLUMN {fqn('ometria', table)}.{q(column)} IS " + lit(text))
