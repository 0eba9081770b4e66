"""The tables the sync-exception rules read, as temp views that always exist.

Every table a rule reads (landed SAP tables `sap_raw`, Ometria-ready records `ometria`, the push
audit `ometria_push`, the payload versions `recon.payload_versions`) becomes a temp view with the
columns the rules expect, so a table not built yet (or a metadata column a layer does not write)
reads as empty/NULL instead of crashing every rule. Helper views on top (`om_all`: all Ometria
records; `x_customers`, `x_live_orders`, `x_live_memos`, `x_customer_net`, and the credit memo
-> order links `x_memo_line_orders` / `x_memo_orders`) hold what several rules share. The
`POP_*` queries count the records a rule looks at (its population, for exception rates).
"""

from __future__ import annotations

import duckdb

from sap_ometria_assets.lib.ometria.feeds import OMETRIA_FEEDS
from sap_ometria_assets.lib.quality.checks_config import MappingFacts
from sap_ometria_assets.lib.quality.sql_fragments import live_document, not_cancellation
from sap_ometria_assets.lib.sap.tables import all_table_names, contract_columns
from sap_ometria_assets.lib.warehouse.sql import lit, q, text_list

# A rule that needs any one Ometria-ready table lists this in `requires`.
ANY_OMETRIA = "|".join(f"ometria.{f}" for f in OMETRIA_FEEDS)

SAP_META_COLUMNS = {
    "_landed_at": "TIMESTAMPTZ",
    "_deleted_at": "TIMESTAMPTZ",
    "_is_cancellation": "BOOLEAN",
}
OMETRIA_COLUMNS = {
    "record_type": "VARCHAR",
    "id": "VARCHAR",
    "sap_object": "VARCHAR",
    "sap_key": "VARCHAR",
    "payload": "VARCHAR",
    "payload_hash": "VARCHAR",
    "payload_bytes": "INTEGER",
    "held_back_reason": "VARCHAR",
}
# The push layer's tables (lib/push/ledger.py DDL is the contract); only what the rules read.
PUSH_COLUMNS = {
    "ledger": {
        "feed": "VARCHAR", "record_type": "VARCHAR", "id": "VARCHAR", "payload_hash": "VARCHAR",
        "request_id": "VARCHAR", "acknowledged_at": "TIMESTAMPTZ", "dry_run": "BOOLEAN",
        "status": "VARCHAR", "error": "VARCHAR",
    },
    "requests": {
        "request_id": "VARCHAR", "feed": "VARCHAR", "record_type": "VARCHAR",
        "sent_at": "TIMESTAMPTZ", "record_count": "INTEGER", "bytes": "BIGINT",
        "http_status": "INTEGER", "duration_ms": "DOUBLE", "accepted": "INTEGER",
        "rejected": "INTEGER", "error": "VARCHAR", "dry_run": "BOOLEAN",
    },
    "errors": {
        "fetched_at": "TIMESTAMPTZ", "last_seen_at": "TIMESTAMPTZ", "source": "VARCHAR",
        "request_id": "VARCHAR", "feed": "VARCHAR", "record_type": "VARCHAR",
        "record_id": "VARCHAR", "payload_hash": "VARCHAR", "error_message": "VARCHAR",
        "error_path": "VARCHAR", "matched": "BOOLEAN", "raw": "VARCHAR",
    },
}
VERSION_COLUMNS = {
    "feed": "VARCHAR", "id": "VARCHAR", "payload_hash": "VARCHAR", "first_seen": "TIMESTAMPTZ",
}


def source_specs() -> dict[str, tuple[str, str, dict[str, str]]]:
    """alias -> (schema, table, expected columns) for every table the rules read."""
    specs: dict[str, tuple[str, str, dict[str, str]]] = {}
    for table in all_table_names():
        specs[f"raw_{table}"] = ("sap_raw", table, {**contract_columns(table), **SAP_META_COLUMNS})
    for feed in OMETRIA_FEEDS:
        specs[f"om_{feed}"] = ("ometria", feed, OMETRIA_COLUMNS)
    for name, cols in PUSH_COLUMNS.items():
        specs[f"push_{name}"] = ("ometria_push", name, cols)
    specs["versions"] = ("recon", "payload_versions", VERSION_COLUMNS)
    return specs


def prepare_sources(con: duckdb.DuckDBPyConnection, facts: MappingFacts) -> set[str]:
    """Create the temp views the rules read; returns the `schema.table` names that exist."""
    present: set[str] = set()
    catalog: dict[tuple[str, str], set[str]] = {}
    for schema, table, column in con.execute(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns "
        "WHERE table_schema IN ('sap_raw', 'ometria', 'ometria_push', 'recon')"
    ).fetchall():
        catalog.setdefault((schema, table), set()).add(column.lower())
    for alias, (schema, table, expected) in source_specs().items():
        if (schema, table) in catalog:
            present.add(f"{schema}.{table}")
            have = catalog[(schema, table)]
            extra = [
                f"CAST(NULL AS {dtype}) AS {q(col)}"
                for col, dtype in expected.items() if col.lower() not in have
            ]
            select = ", ".join(["*", *extra])
            sql = f"SELECT {select} FROM {q(schema)}.{q(table)}"
        else:
            cols = ", ".join(f"CAST(NULL AS {dtype}) AS {q(col)}" for col, dtype in expected.items())
            sql = f"SELECT {cols} WHERE false"
        con.execute(f"CREATE OR REPLACE TEMP VIEW {alias} AS {sql}")

    feeds = " UNION ALL ".join(
        f"SELECT {lit(feed)} AS feed, record_type, CAST(id AS VARCHAR) AS id, sap_object, "
        f"CAST(sap_key AS VARCHAR) AS sap_key, payload, payload_hash, "
        f"coalesce(payload_bytes, strlen(payload)) AS payload_bytes, payload_bytes AS stored_bytes, "
        f"held_back_reason "
        f"FROM om_{feed}"
        for feed in OMETRIA_FEEDS
    )
    types = text_list(facts.customer_card_types)
    helpers = {
        "om_all": feeds,
        "x_customers": f"SELECT * FROM raw_ocrd WHERE list_contains({types}, \"CardType\") "
                       "AND \"_deleted_at\" IS NULL",
        "x_live_orders": f"SELECT * FROM raw_ordr WHERE {live_document()}",
        "x_live_memos": f"SELECT * FROM raw_orin WHERE {live_document()}",
        "x_customer_net": """
            SELECT CAST(card_code AS VARCHAR) AS card_code, sum(amount) AS net FROM (
                SELECT "CardCode" AS card_code, "DocTotal" AS amount FROM x_live_orders
                UNION ALL
                SELECT "CardCode", -"DocTotal" FROM x_live_memos
            ) GROUP BY ALL""",
        # Credit memo line -> invoice line -> (delivery line ->) order: SAP's copy-from chain.
        "x_memo_line_orders": """
            WITH l0 AS (
                SELECT "DocEntry" AS memo_entry, "LineNum" AS memo_line,
                       "BaseType" AS bt, "BaseEntry" AS be, "BaseLine" AS bl
                FROM raw_rin1 WHERE coalesce("BaseType", -1) <> -1 AND "BaseEntry" IS NOT NULL
            ), l1 AS (
                SELECT memo_entry, memo_line, bt, be, bl FROM l0 WHERE bt <> 13
                UNION ALL
                SELECT l0.memo_entry, l0.memo_line, i."BaseType", i."BaseEntry", i."BaseLine"
                FROM l0 JOIN raw_inv1 i ON l0.bt = 13 AND i."DocEntry" = l0.be
                     AND (l0.bl IS NULL OR i."LineNum" = l0.bl)
            ), l2 AS (
                SELECT memo_entry, memo_line, bt, be, bl FROM l1 WHERE bt <> 15
                UNION ALL
                SELECT l1.memo_entry, l1.memo_line, d."BaseType", d."BaseEntry", d."BaseLine"
                FROM l1 JOIN raw_dln1 d ON l1.bt = 15 AND d."DocEntry" = l1.be
                     AND (l1.bl IS NULL OR d."LineNum" = l1.bl)
            )
            SELECT DISTINCT l2.memo_entry, l2.memo_line, l2.be AS order_entry
            FROM l2 JOIN raw_ordr o ON l2.bt = 17 AND o."DocEntry" = l2.be""",
        "x_memo_orders": "SELECT DISTINCT memo_entry, order_entry FROM x_memo_line_orders",
    }
    for alias, sql in helpers.items():
        con.execute(f"CREATE OR REPLACE TEMP VIEW {alias} AS {sql}")
    for alias in ("x_memo_line_orders", "x_memo_orders"):
        _materialise(con, alias, helpers[alias])
    return present


def _materialise(con: duckdb.DuckDBPyConnection, alias: str, sql: str) -> None:
    """Replace the helper view `alias` by a temp table of its rows. The credit memo -> order
    chain is read four times by two rules (0.6 s at x100 as a view, 0.1 s once as a table).
    If it cannot be computed, the view stays and the rules reading it fail one by one, named,
    as they would have."""
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _{alias} AS {sql}")
    except duckdb.Error:
        return
    con.execute(f"CREATE OR REPLACE TEMP VIEW {alias} AS SELECT * FROM _{alias}")


# ---------------------------------------------------------------------------------------------
# Rules


# Populations: the records a rule looks at.
POP_CUSTOMERS = "SELECT count(*) FROM x_customers"
POP_ORDERS = f"SELECT count(*) FROM raw_ordr WHERE {not_cancellation()}"
POP_MEMOS = "SELECT count(*) FROM x_live_memos"
POP_ITEMS = "SELECT count(*) FROM raw_oitm WHERE \"_deleted_at\" IS NULL"
POP_OMETRIA = "SELECT count(*) FROM om_all"
