"""Which orders and credit memos a run must rebuild: work proportional to what changed.

The one part of `lib/transforms` that talks to DuckDB: it only *selects* documents (in SQL, over
the landed tables' `_landed_at`), and the pure `build_orders` rebuilds them from the rows read.

An Ometria order depends on its ORDR row, lines (RDR1) and freight (RDR3), the deliveries based
on its lines (DLN1 and the ODLN cancellation flags), its customer's identity (OCRD) and, in
`refund_on_original` mode, the credit memos traced to it. A credit memo (ORIN/RIN1/RIN3) depends
on its customer, on the invoice and delivery lines its lines trace through, and on the orders it
reaches. So the rebuild set is: every document one of those rows changed for since the last
build (landing stamps each inserted or replaced row with `_landed_at`), every document that
disappeared from sap_raw, closed over the credit memo <-> order links (current and previous),
so that each rebuilt document sees everything it depends on.

A build records the newest `_landed_at` it saw and a fingerprint of the settings it used (the
mapping, the time zone, `BUILD_VERSION`) through `build_state`; anything else (first run,
changed mapping, missing state, a table without `_landed_at`) means a full rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from sap_ometria_assets.lib.ometria.mapping import Mapping
from sap_ometria_assets.lib.transforms import build_state as bs
from sap_ometria_assets.lib.warehouse.sql import has_column, table_exists

# Bump when the orders transform changes what it produces: the next run rebuilds everything.
BUILD_VERSION = "orders-2"

STATE_TABLE = bs.state_table("orders")
ORDER_TABLES = ("ordr", "rdr1", "rdr3", "odln", "dln1", "inv1", "orin", "rin1", "rin3", "ocrd")
# A full build runs in slices of about this many orders (memory stays flat as the company grows).
FULL_BUILD_SLICE = 200_000
ORDER_SET = "_rebuild_orders"   # temp tables of DocEntry to rebuild
MEMO_SET = "_rebuild_memos"


def fingerprint(mapping: Mapping, zone: str) -> str:
    return bs.fingerprint(BUILD_VERSION, zone, mapping)


def landed_high_water(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """The newest `_landed_at` over the tables the orders read (None when none has one)."""
    return bs.landed_high_water(con, ORDER_TABLES)


def record_build(con: duckdb.DuckDBPyConnection, high_water: datetime | None, print_: str,
                 mode: str, now: datetime) -> None:
    bs.record_build(con, "orders", high_water=high_water, fingerprint=print_, mode=mode, now=now)


def forget_build(con: duckdb.DuckDBPyConnection) -> None:
    bs.forget_build(con, "orders")


@dataclass
class RebuildPlan:
    """Why the build is full, or the high-water mark of the previous build."""

    full_reason: str | None
    since: datetime | None = None
    orders: int = 0
    memos: int = 0


def plan_rebuild(con: duckdb.DuckDBPyConnection, print_: str) -> RebuildPlan:
    """Decide full vs incremental; for incremental, fill the temp tables ORDER_SET and MEMO_SET."""
    base = bs.plan_base(con, "orders", print_, outputs=("orders", "refunds"), required=("ordr", "rdr1"),
                        sources=ORDER_TABLES)
    if base.full_reason is not None:
        return RebuildPlan(base.full_reason)
    since = base.since
    present = set(ORDER_TABLES)
    _fill_sets(con, present, since)
    n_orders = con.execute(f"SELECT count(*) FROM {ORDER_SET}").fetchall()[0][0]
    n_memos = con.execute(f"SELECT count(*) FROM {MEMO_SET}").fetchall()[0][0]
    return RebuildPlan(None, since, n_orders, n_memos)


def _src(present: set[str], table: str, columns: str) -> str:
    """A landed table's columns (plus `_landed_at`), or an empty relation when it is not landed."""
    if table in present:
        return f'(SELECT {columns}, "_landed_at" FROM sap_raw."{table}")'
    cols = ", ".join(f"NULL::BIGINT AS {c.strip()}" for c in columns.split(","))
    return f'(SELECT {cols}, NULL::TIMESTAMPTZ AS "_landed_at" WHERE false)'


_HOP_COLS = '"DocEntry", "LineNum", "BaseType", "BaseEntry", "BaseLine"'


def prepare_links(con: duckdb.DuckDBPyConnection, with_previous: bool = True) -> None:
    """Temp table `_memo_links(memo, order_entry)`: every credit memo -> order it reaches (the
    chain build_orders follows) and, with `with_previous`, the links of the previous build (a
    credit memo edited to another order must release the old one)."""
    present = {t for t in ORDER_TABLES if table_exists(con, "sap_raw", t)}
    previous = ""
    if with_previous and table_exists(con, "ometria", "refunds") and table_exists(con, "ometria", "orders"):
        previous = """
        UNION
        SELECT DISTINCT TRY_CAST(r.sap_key AS BIGINT), TRY_CAST(o.sap_key AS BIGINT)
        FROM (SELECT sap_key, unnest(linked_order_ids) AS oid FROM ometria.refunds) r
        JOIN ometria.orders o ON o.id = r.oid AND o.sap_object = 'ORDR'"""
    step = """SELECT s.memo, coalesce(h.nt, s.t) AS t, CASE WHEN h.t IS NULL THEN s.e ELSE h.ne END AS e,
                   CASE WHEN h.t IS NULL THEN s.l ELSE h.nl END AS l
            FROM {prev} s LEFT JOIN hops h ON h.t = s.t AND h.e = s.e AND h.l = s.l"""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _memo_links AS
        WITH hops AS (
            SELECT 13 AS t, "DocEntry" AS e, "LineNum" AS l, "BaseType" AS nt, "BaseEntry" AS ne,
                   "BaseLine" AS nl FROM {_src(present, 'inv1', _HOP_COLS)}
            UNION ALL
            SELECT 15, "DocEntry", "LineNum", "BaseType", "BaseEntry", "BaseLine"
            FROM {_src(present, 'dln1', _HOP_COLS)}
        ), s0 AS (
            SELECT "DocEntry" AS memo, "BaseType" AS t, "BaseEntry" AS e, "BaseLine" AS l
            FROM {_src(present, 'rin1', _HOP_COLS)} WHERE "BaseEntry" IS NOT NULL
        ), s1 AS ({step.format(prev='s0')}), s2 AS ({step.format(prev='s1')}), s3 AS ({step.format(prev='s2')})
        SELECT DISTINCT CAST(memo AS BIGINT) AS memo, CAST(e AS BIGINT) AS order_entry FROM s3
        WHERE t = 17 AND e IS NOT NULL AND memo IS NOT NULL{previous}
    """)


def _fill_sets(con: duckdb.DuckDBPyConnection, present: set[str], since: datetime) -> None:
    def src(table: str, columns: str) -> str:
        return _src(present, table, columns)

    new = "\"_landed_at\" > $since"
    p = {"since": since}
    hop_cols = _HOP_COLS
    prepare_links(con)
    customers = f"""(SELECT trim(CAST("CardCode" AS VARCHAR)) AS card FROM {src('ocrd', '"CardCode"')} WHERE {new})"""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {ORDER_SET} AS
        SELECT CAST("DocEntry" AS BIGINT) AS entry FROM sap_raw.ordr WHERE {new}
           OR trim(CAST("CardCode" AS VARCHAR)) IN {customers}
        UNION SELECT "DocEntry" FROM sap_raw.rdr1 WHERE {new}
        UNION SELECT "DocEntry" FROM {src('rdr3', '"DocEntry"')} WHERE {new}
        UNION SELECT "BaseEntry" FROM {src('dln1', hop_cols)} d
              WHERE d."BaseType" = 17 AND (d.{new} OR d."DocEntry" IN
                    (SELECT "DocEntry" FROM {src('odln', '"DocEntry"')} WHERE {new}))
        -- orders gone from sap_raw (a full re-read removes what SAP no longer returns)
        UNION SELECT TRY_CAST(sap_key AS BIGINT) FROM ometria.orders o WHERE o.sap_object = 'ORDR'
              AND NOT EXISTS (SELECT 1 FROM sap_raw.ordr r WHERE CAST(r."DocEntry" AS VARCHAR) = o.sap_key)
    """, p)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {MEMO_SET} AS
        SELECT CAST("DocEntry" AS BIGINT) AS entry FROM {src('orin', '"DocEntry", "CardCode"')}
        WHERE {new} OR trim(CAST("CardCode" AS VARCHAR)) IN {customers}
        UNION SELECT "DocEntry" FROM {src('rin1', hop_cols)} WHERE {new}
        UNION SELECT "DocEntry" FROM {src('rin3', '"DocEntry"')} WHERE {new}
        -- credit memos tracing through an invoice or delivery line that changed
        UNION SELECT r."DocEntry" FROM {src('rin1', hop_cols)} r
              JOIN (SELECT 13 AS t, "DocEntry" AS e FROM {src('inv1', hop_cols)} WHERE {new}
                    UNION SELECT 15, "DocEntry" FROM {src('dln1', hop_cols)} WHERE {new}) c
              ON c.t = r."BaseType" AND c.e = r."BaseEntry"
        UNION SELECT r."DocEntry" FROM {src('rin1', hop_cols)} r
              JOIN {src('inv1', hop_cols)} i ON r."BaseType" = 13 AND i."DocEntry" = r."BaseEntry"
              JOIN (SELECT "DocEntry" AS e FROM {src('dln1', hop_cols)} WHERE {new}) c
              ON i."BaseType" = 15 AND c.e = i."BaseEntry"
        UNION SELECT TRY_CAST(sap_key AS BIGINT) FROM ometria.refunds f
              WHERE NOT EXISTS (SELECT 1 FROM {src('orin', '"DocEntry"')} r
                                WHERE CAST(r."DocEntry" AS VARCHAR) = f.sap_key)
    """, p)
    close_sets(con)


def fill_chunk(con: duckdb.DuckDBPyConnection, part: int, parts: int) -> None:
    """Rebuild sets for one slice of a full build, closed over the links; `prepare_links` first.

    Sliced by customer, so each slice reads (and works out the identity of) only its own
    customers. A credit memo reaching orders of two slices is built twice, identically, and the
    second write replaces the first."""
    where = f'hash(trim(CAST("CardCode" AS VARCHAR))) % {int(parts)} = {int(part)}'
    con.execute(f'CREATE OR REPLACE TEMP TABLE {ORDER_SET} AS SELECT DISTINCT CAST("DocEntry" AS BIGINT) AS entry '
                f'FROM sap_raw.ordr WHERE {where}')
    con.execute(f'CREATE OR REPLACE TEMP TABLE {MEMO_SET} AS SELECT DISTINCT CAST("DocEntry" AS BIGINT) AS entry '
                f'FROM sap_raw.orin WHERE {where}')
    close_sets(con)


def close_sets(con: duckdb.DuckDBPyConnection) -> None:
    """Close the rebuild sets over `_memo_links`: a rebuilt order needs its credit memos and a
    rebuilt credit memo the orders it reaches (their lines, validity and currency decide how it
    is sent)."""
    while True:  # each round only adds documents, so it ends
        before = con.execute(f"SELECT (SELECT count(*) FROM {ORDER_SET}), (SELECT count(*) FROM {MEMO_SET})").fetchall()[0]
        con.execute(f"""INSERT INTO {MEMO_SET} SELECT DISTINCT memo FROM _memo_links
                        WHERE order_entry IN (SELECT entry FROM {ORDER_SET})
                          AND memo NOT IN (SELECT entry FROM {MEMO_SET} WHERE entry IS NOT NULL)""")
        con.execute(f"""INSERT INTO {ORDER_SET} SELECT DISTINCT order_entry FROM _memo_links
                        WHERE memo IN (SELECT entry FROM {MEMO_SET})
                          AND order_entry NOT IN (SELECT entry FROM {ORDER_SET} WHERE entry IS NOT NULL)""")
        after = con.execute(f"SELECT (SELECT count(*) FROM {ORDER_SET}), (SELECT count(*) FROM {MEMO_SET})").fetchall()[0]
        if after == before:
            break
    con.execute(f"DELETE FROM {ORDER_SET} WHERE entry IS NULL")
    con.execute(f"DELETE FROM {MEMO_SET} WHERE entry IS NULL")


def subset_filters() -> dict[str, str]:
    """WHERE clauses reading only what the rebuild set needs, per sap_raw table (after plan_rebuild)."""
    orders = f"SELECT entry FROM {ORDER_SET}"
    memos = f"SELECT entry FROM {MEMO_SET}"
    memo_invoices = f'SELECT "BaseEntry" FROM sap_raw.rin1 WHERE "BaseType" = 13 AND "DocEntry" IN ({memos})'
    memo_deliveries = (
        f'SELECT "BaseEntry" FROM sap_raw.rin1 WHERE "BaseType" = 15 AND "DocEntry" IN ({memos}) '
        f'UNION SELECT "BaseEntry" FROM sap_raw.inv1 WHERE "BaseType" = 15 AND "DocEntry" IN ({memo_invoices})'
    )
    dln1 = f'("BaseType" = 17 AND "BaseEntry" IN ({orders})) OR "DocEntry" IN ({memo_deliveries})'
    return {
        "ordr": f'"DocEntry" IN ({orders})',
        "rdr1": f'"DocEntry" IN ({orders})',
        "rdr3": f'"DocEntry" IN ({orders})',
        "orin": f'"DocEntry" IN ({memos})',
        "rin1": f'"DocEntry" IN ({memos})',
        "rin3": f'"DocEntry" IN ({memos})',
        "dln1": dln1,
        "odln": f'"DocEntry" IN (SELECT "DocEntry" FROM sap_raw.dln1 WHERE {dln1})',
        "inv1": f'"DocEntry" IN ({memo_invoices})',
        "ocrd": (f'trim(CAST("CardCode" AS VARCHAR)) IN (SELECT trim(CAST("CardCode" AS VARCHAR)) FROM sap_raw.ordr '
                 f'WHERE "DocEntry" IN ({orders}) UNION SELECT trim(CAST("CardCode" AS VARCHAR)) FROM sap_raw.orin '
                 f'WHERE "DocEntry" IN ({memos}))'),
    }
