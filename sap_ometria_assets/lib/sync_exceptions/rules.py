"""Record-level sync exceptions: what is wrong with which SAP record, who owns it, what it costs.

Every rule is one vectorised DuckDB query over the landed SAP tables (`sap_raw`), the
Ometria-ready records (`ometria`) and the push audit (`ometria_push`). `evaluate_exceptions()`
runs them all and keeps `ops.sync_exceptions` up to date:

- a record the rule flags for the first time gets a row with `first_seen = last_seen = now`;
- a record still flagged keeps its `first_seen` and gets `last_seen = now`;
- a record no longer flagged gets `resolved_at = now`; if it is flagged again later the same row
  reopens (`resolved_at` back to NULL, `first_seen` unchanged).

`impact` is the money at stake in local currency (GBP for the demo company): the customer's net
revenue (orders minus credit memos) for customer rules, the document total for order and credit
memo rules, the line's gross total for line rules, the value of the missing stock for stock rules,
0 where no money applies. Each evaluation also appends one row per rule to
`ops.exception_history`, so a trend per rule can be read over time (see `lib/quality/drift.py`).

The rules live in one registry, `RULES`, with an owner (marketing, finance or ops), a severity,
and a description and fix hint in plain language; `rules_markdown()` renders it for the docs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import duckdb

from sap_ometria_assets.lib.quality.checks_config import (
    ChecksConfig,
    MappingFacts,
    Owner,
    Severity,
    get_checks_config,
    mapping_facts,
)
# Valid email = what the contacts transform accepts (EMAIL, at most 254 bytes), so the rule
# flags exactly the contacts that are held back as `invalid_email`.
from sap_ometria_assets.lib.ometria.models import EMAIL as EMAIL_RE
from sap_ometria_assets.lib.sap.tables import (
    TABLES_BY_NAME,
    all_table_names,
    contract_columns,
    table_key,
)
from sap_ometria_assets.lib.warehouse.sql import table_columns, table_exists

Entity = Literal[
    "contact", "order", "order_line", "credit_memo", "credit_memo_line", "product", "stock",
    "record",
]

# Which Ometria asset summarises exceptions of which entity (see defs/ometria/checks.py).
ENTITY_ASSET: dict[str, str] = {
    "contact": "contacts",
    "order": "orders",
    "order_line": "orders",
    "credit_memo": "orders",
    "credit_memo_line": "orders",
    "product": "products",
    "stock": "stock",
}
OMETRIA_FEEDS = ("contacts", "orders", "products", "stock")
ANY_OMETRIA = "|".join(f"ometria.{f}" for f in OMETRIA_FEEDS)

# The Ometria-ready tables say where each record comes from; this names the entity for people.
ENTITY_OF_SAP_OBJECT_SQL = """CASE upper(sap_object)
    WHEN 'OCRD' THEN 'contact' WHEN 'ORDR' THEN 'order' WHEN 'ORIN' THEN 'credit_memo'
    WHEN 'OITM' THEN 'product' WHEN 'OITW' THEN 'stock' ELSE 'record' END"""

# Line and stock keys are "<parent key>/<line>"; the root is the record Ometria receives.
ROOT_ENTITY_SQL = """CASE entity WHEN 'order_line' THEN 'order'
    WHEN 'credit_memo_line' THEN 'credit_memo' ELSE entity END"""
ROOT_KEY_SQL = """CASE WHEN entity IN ('order_line', 'credit_memo_line', 'stock')
    THEN regexp_replace(record_key, '/[^/]*$', '') ELSE record_key END"""

EXCEPTIONS_DDL = """
CREATE TABLE IF NOT EXISTS ops.sync_exceptions (
    rule VARCHAR NOT NULL,
    entity VARCHAR NOT NULL,
    record_key VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    owner VARCHAR NOT NULL,
    detail VARCHAR,
    impact DECIMAL(19,2) NOT NULL,
    currency VARCHAR NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ,
    fix_hint VARCHAR
);
CREATE TABLE IF NOT EXISTS ops.exception_history (
    run_at TIMESTAMPTZ NOT NULL,
    rule VARCHAR NOT NULL,
    open_count BIGINT NOT NULL,
    new_count BIGINT NOT NULL,
    resolved_count BIGINT NOT NULL,
    impact DECIMAL(19,2) NOT NULL,
    population BIGINT
);
"""

TABLE_COMMENTS = {
    "ops.sync_exceptions": (
        "One row per SAP record a sync rule flags (rule, entity, record_key). Open while "
        "resolved_at IS NULL. impact = money at stake in local currency. See RULES in "
        "sap_ometria_assets/lib/sync_exceptions/rules.py or docs for what each rule means and how to fix it."
    ),
    "ops.exception_history": (
        "One row per rule per evaluation: open, new and resolved exceptions and the open impact; "
        "population = records the rule looks at, so open_count/population is the exception rate."
    ),
}


# ---------------------------------------------------------------------------------------------
# SQL helpers
# ---------------------------------------------------------------------------------------------
def q(identifier: str) -> str:
    """Quote an identifier (column names come from SAP and may hold anything)."""
    return '"' + identifier.replace('"', '""') + '"'


def lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def text_list(values) -> str:
    """A VARCHAR[] literal, typed even when empty (so list_contains never sees NULL)."""
    return "[" + ", ".join(lit(v) for v in values) + "]::VARCHAR[]"


def money(expr: str) -> str:
    return f"format('{{:.2f}}', round(CAST({expr} AS DECIMAL(19,6)), 2))"


def qty(expr: str) -> str:
    """A quantity as text without trailing zeros (3 -> '3', 2.5 -> '2.5')."""
    return (f"regexp_replace(CAST(CAST({expr} AS DECIMAL(19,3)) AS VARCHAR), '\\.?0+$', '')")


def live_document(alias: str = "") -> str:
    """Not cancelled and not a cancellation document: the documents that carry money."""
    p = f"{alias}." if alias else ""
    return (
        f"coalesce({p}\"CancelStatus\", 'csNo') NOT IN ('csYes', 'csCancellation') "
        f"AND coalesce({p}\"Cancelled\", 'tNO') <> 'tYES' "
        f"AND NOT coalesce({p}\"_is_cancellation\", false)"
    )


def feeds_ometria(facts: MappingFacts, column: str) -> str:
    """SQL: does this warehouse's stock reach Ometria (included or a store channel, per mapping)?"""
    included = [w for w, feeds in facts.warehouse_feeds.items() if feeds]
    excluded = [w for w, feeds in facts.warehouse_feeds.items() if not feeds]
    default = "true" if facts.warehouse_default_feeds else "false"
    return (f"(CASE WHEN list_contains({text_list(included)}, {column}) THEN true "
            f"WHEN list_contains({text_list(excluded)}, {column}) THEN false ELSE {default} END)")


def not_cancellation(alias: str = "") -> str:
    p = f"{alias}." if alias else ""
    return (
        f"coalesce({p}\"CancelStatus\", 'csNo') <> 'csCancellation' "
        f"AND NOT coalesce({p}\"_is_cancellation\", false)"
    )


# ---------------------------------------------------------------------------------------------
# Sources: every table a rule reads becomes a temp view with the columns the rules expect, so a
# table not built yet (or a metadata column a layer does not write) reads as empty/NULL instead
# of crashing every rule. Rules list the tables without which they mean nothing (`requires`).
# ---------------------------------------------------------------------------------------------
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
# The push layer's tables (lib/push/feed.py DDL is the contract); only what the rules read.
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
        f"coalesce(payload_bytes, strlen(payload)) AS payload_bytes, held_back_reason "
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
    return present


# ---------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------
@dataclass
class RuleContext:
    con: duckdb.DuckDBPyConnection
    config: ChecksConfig
    facts: MappingFacts
    now: datetime
    present: set[str]

    @property
    def local(self) -> str:
        return self.facts.local_currency


class NotEvaluable(Exception):
    """The rule cannot be evaluated now (e.g. the mapping lacks what it needs); state is kept."""


@dataclass(frozen=True)
class Rule:
    """One exception rule. `sql` returns rows of (record_key, detail[, entity][, impact])."""

    id: str
    entity: Entity
    severity: Severity
    owner: Owner
    title: str
    description: str
    fix_hint: str
    sql: Callable[[RuleContext], str]
    requires: tuple[str, ...] = ()
    population_sql: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


def _contact_invalid_email(ctx: RuleContext) -> str:
    # The same library check as the contacts transform (transforms.people.rfc_valid_emails),
    # once per distinct address, into a temp table the SQL reads.
    import polars as pl

    from sap_ometria_assets.lib.transforms.people import rfc_valid_emails

    emails = ctx.con.sql("SELECT DISTINCT trim(\"EmailAddress\") AS e FROM x_customers "
                         "WHERE nullif(trim(\"EmailAddress\"), '') IS NOT NULL").pl()["e"]
    bad = pl.DataFrame({"e": emails.filter(~rfc_valid_emails(emails).fill_null(False))},
                       schema={"e": pl.String})
    ctx.con.register("_rfc_invalid_emails_df", bad)
    ctx.con.execute("CREATE OR REPLACE TEMP TABLE _rfc_invalid_emails AS "
                    "SELECT * FROM _rfc_invalid_emails_df")
    ctx.con.unregister("_rfc_invalid_emails_df")
    return f"""
        SELECT CAST("CardCode" AS VARCHAR) AS record_key,
               'Email "' || trim("EmailAddress") || '" is not a valid address' AS detail
        FROM x_customers
        WHERE nullif(trim("EmailAddress"), '') IS NOT NULL
          AND (NOT (regexp_matches(trim("EmailAddress"), {lit(EMAIL_RE)})
                    AND strlen(trim("EmailAddress")) <= 254)
               OR trim("EmailAddress") IN (SELECT e FROM _rfc_invalid_emails))"""


def _contact_missing_email(ctx: RuleContext) -> str:
    return """
        SELECT CAST("CardCode" AS VARCHAR) AS record_key,
               'No email address on the business partner (' || coalesce(nullif(trim("CardName"), ''),
               'no name') || ')' AS detail
        FROM x_customers WHERE nullif(trim("EmailAddress"), '') IS NULL"""


def _contact_duplicate_email(ctx: RuleContext) -> str:
    return """
        WITH e AS (
            SELECT CAST("CardCode" AS VARCHAR) AS code, lower(trim("EmailAddress")) AS email
            FROM x_customers WHERE nullif(trim("EmailAddress"), '') IS NOT NULL
        ), d AS (
            SELECT email, list(code ORDER BY code) AS codes FROM e GROUP BY email HAVING count(*) > 1
        )
        SELECT e.code AS record_key,
               'Email "' || e.email || '" is also on ' ||
               array_to_string(list_slice(list_filter(d.codes, lambda c: c <> e.code), 1, 10), ', ') ||
               CASE WHEN len(d.codes) > 11 THEN ' and ' || (len(d.codes) - 11) || ' more' ELSE '' END
               AS detail
        FROM e JOIN d USING (email)"""


def _contact_missing_name(ctx: RuleContext) -> str:
    return """
        SELECT CAST("CardCode" AS VARCHAR) AS record_key,
               'The business partner has no name (CardName is blank)' AS detail
        FROM x_customers WHERE nullif(trim("CardName"), '') IS NULL"""


def _order_unknown_customer(ctx: RuleContext) -> str:
    types = text_list(ctx.facts.customer_card_types)
    return f"""
        SELECT CAST(o."DocEntry" AS VARCHAR) AS record_key,
               'Order ' || coalesce(CAST(o."DocNum" AS VARCHAR), CAST(o."DocEntry" AS VARCHAR)) ||
               ' is for business partner ' || coalesce(nullif(trim(o."CardCode"), ''), '(blank)') ||
               CASE
                 WHEN b."CardCode" IS NULL THEN ', which does not exist in SAP'
                 WHEN b."_deleted_at" IS NOT NULL THEN ', which was deleted in SAP'
                 ELSE ' (' || coalesce(b."CardName", '') || '), a ' ||
                      CASE b."CardType" WHEN 'cSupplier' THEN 'supplier' WHEN 'cLid' THEN 'lead'
                           ELSE coalesce(b."CardType", 'partner of unknown type') END ||
                      ', not a customer'
               END AS detail
        FROM raw_ordr o LEFT JOIN raw_ocrd b ON b."CardCode" = o."CardCode"
        WHERE {not_cancellation('o')}
          AND (b."CardCode" IS NULL OR b."_deleted_at" IS NOT NULL
               OR NOT list_contains({types}, b."CardType"))"""


def _line_unknown_item(ctx: RuleContext) -> str:
    parts = []
    for entity, header, lines, label in (
        ("order_line", "raw_ordr", "raw_rdr1", "order"),
        ("credit_memo_line", "raw_orin", "raw_rin1", "credit memo"),
    ):
        parts.append(f"""
        SELECT '{entity}' AS entity,
               CAST(l."DocEntry" AS VARCHAR) || '/' || CAST(l."LineNum" AS VARCHAR) AS record_key,
               'Line ' || l."LineNum" || ' of {label} ' ||
               coalesce(CAST(h."DocNum" AS VARCHAR), CAST(h."DocEntry" AS VARCHAR)) ||
               ' has item ' || l."ItemCode" ||
               CASE WHEN i."ItemCode" IS NULL THEN ', which does not exist in SAP'
                    ELSE ', which was deleted in SAP' END AS detail
        FROM {lines} l JOIN {header} h ON h."DocEntry" = l."DocEntry"
        LEFT JOIN raw_oitm i ON i."ItemCode" = l."ItemCode"
        WHERE {not_cancellation('h')}
          AND nullif(trim(l."ItemCode"), '') IS NOT NULL
          AND (i."ItemCode" IS NULL OR i."_deleted_at" IS NOT NULL)""")
    return " UNION ALL ".join(parts)


def _product_missing_price_or_title(ctx: RuleContext) -> str:
    pl = int(ctx.facts.price_list)
    return f"""
        WITH p AS (
            SELECT "ItemCode", max("Price") AS price FROM raw_itm1
            WHERE "PriceList" = {pl} GROUP BY 1
        )
        SELECT CAST(i."ItemCode" AS VARCHAR) AS record_key,
               concat_ws('; ',
                 CASE WHEN nullif(trim(i."ItemName"), '') IS NULL THEN 'no title (ItemName is blank)' END,
                 CASE WHEN p.price IS NULL THEN 'no price in price list {pl}'
                      WHEN p.price <= 0 THEN 'price is ' || {money('p.price')} || ' in price list {pl}'
                 END) AS detail
        FROM raw_oitm i LEFT JOIN p ON p."ItemCode" = i."ItemCode"
        WHERE coalesce(i."SalesItem", 'tYES') = 'tYES' AND i."_deleted_at" IS NULL
          AND coalesce(i."Frozen", 'tNO') <> 'tYES'
          AND (nullif(trim(i."ItemName"), '') IS NULL OR p.price IS NULL OR p.price <= 0)"""


# Document dates SAP can hold but no real sale has: before 1990 (1899-12-30 is the OLE zero
# date a bad import or a cleared field leaves) or more than a year ahead. The orders and refunds
# transforms hold such documents back (`implausible_doc_date`).
EARLIEST_DOC_DATE = "1990-01-01"


def _document_date_implausible(ctx: RuleContext) -> str:
    latest = (ctx.now.date().replace(year=ctx.now.year + 1) if not (ctx.now.month == 2 and ctx.now.day == 29)
              else ctx.now.date().replace(year=ctx.now.year + 1, day=28))
    docs = []
    for entity, header, label in (("order", "raw_ordr", "Order"), ("credit_memo", "raw_orin", "Credit memo")):
        docs.append(f"""
        SELECT '{entity}' AS entity, CAST("DocEntry" AS VARCHAR) AS record_key,
               '{label} ' || coalesce(CAST("DocNum" AS VARCHAR), CAST("DocEntry" AS VARCHAR)) ||
               ' has DocDate ' || CAST("DocDate" AS VARCHAR) || ', before {EARLIEST_DOC_DATE} or '
               || 'more than a year ahead: not sent as its timestamp' AS detail,
               "DocTotal" AS impact
        FROM {header}
        WHERE {not_cancellation()} AND "DocDate" IS NOT NULL
          AND (CAST("DocDate" AS DATE) < DATE '{EARLIEST_DOC_DATE}'
               OR CAST("DocDate" AS DATE) > DATE '{latest.isoformat()}')""")
    return " UNION ALL ".join(docs)


def _mapped_currencies(ctx: RuleContext) -> str:
    return text_list(ctx.facts.mapped_currency_codes())


def _currency_unmapped(ctx: RuleContext) -> str:
    mapped = _mapped_currencies(ctx)
    pl = int(ctx.facts.price_list)
    docs = []
    for entity, header, label in (("order", "raw_ordr", "Order"), ("credit_memo", "raw_orin", "Credit memo")):
        docs.append(f"""
        SELECT '{entity}' AS entity, CAST("DocEntry" AS VARCHAR) AS record_key,
               '{label} ' || coalesce(CAST("DocNum" AS VARCHAR), CAST("DocEntry" AS VARCHAR)) ||
               ' is in currency "' || "DocCurrency" ||
               '", which the mapping does not translate to an ISO 4217 code' AS detail
        FROM {header}
        WHERE {not_cancellation()} AND nullif(trim("DocCurrency"), '') IS NOT NULL
          AND NOT list_contains({mapped}, "DocCurrency")""")
    docs.append(f"""
        SELECT 'product' AS entity, CAST(p."ItemCode" AS VARCHAR) AS record_key,
               'The price in price list {pl} is in currency "' || p."Currency" ||
               '", which the mapping does not translate to an ISO 4217 code' AS detail
        FROM raw_itm1 p JOIN raw_oitm i ON i."ItemCode" = p."ItemCode" AND i."_deleted_at" IS NULL
        WHERE p."PriceList" = {pl} AND nullif(trim(p."Currency"), '') IS NOT NULL
          AND NOT list_contains({mapped}, p."Currency")""")
    return " UNION ALL ".join(docs)


def _order_total_mismatch(ctx: RuleContext) -> str:
    tol = ctx.config.exceptions.order_total_tolerance
    parts = []
    for entity, live_view, lines, expenses, label in (
        ("order", "x_live_orders", "raw_rdr1", "raw_rdr3", "Order"),
        ("credit_memo", "x_live_memos", "raw_rin1", "raw_rin3", "Credit memo"),
    ):
        parts.append(f"""
        SELECT '{entity}' AS entity, CAST(d."DocEntry" AS VARCHAR) AS record_key,
               '{label} ' || coalesce(CAST(d."DocNum" AS VARCHAR), CAST(d."DocEntry" AS VARCHAR)) ||
               ': DocTotal ' || {money('d.doc_total')} || ' but lines ' || {money('d.lines')} ||
               ' + tax ' || {money('d.tax')} || ' - discount ' || {money('d.discount')} ||
               ' + freight ' || {money('d.freight')} || ' + rounding ' || {money('d.rounding')} ||
               ' = ' || {money('d.expected')} ||
               ' (difference ' || {money('d.doc_total - d.expected')} || ')' AS detail
        FROM (
            SELECT h."DocEntry", h."DocNum", h."DocTotal" AS doc_total,
                   coalesce(l.lines, 0) AS lines, coalesce(h."VatSum", 0) AS tax,
                   coalesce(h."TotalDiscount", 0) AS discount, coalesce(e.freight, 0) AS freight,
                   coalesce(h."RoundingDiffAmount", 0) AS rounding,
                   coalesce(l.lines, 0) + coalesce(h."VatSum", 0) - coalesce(h."TotalDiscount", 0)
                     + coalesce(e.freight, 0) + coalesce(h."RoundingDiffAmount", 0) AS expected
            FROM {live_view} h
            LEFT JOIN (SELECT "DocEntry", sum("LineTotal") AS lines FROM {lines} GROUP BY 1) l
                   ON l."DocEntry" = h."DocEntry"
            LEFT JOIN (SELECT "DocEntry", sum("LineTotal") AS freight FROM {expenses} GROUP BY 1) e
                   ON e."DocEntry" = h."DocEntry"
        ) d
        WHERE abs(coalesce(d.doc_total, 0) - d.expected) > {tol}""")
    return " UNION ALL ".join(parts)


def _credit_memo_unlinked(ctx: RuleContext) -> str:
    return f"""
        SELECT CAST(m."DocEntry" AS VARCHAR) AS record_key,
               'Credit memo ' || coalesce(CAST(m."DocNum" AS VARCHAR), CAST(m."DocEntry" AS VARCHAR)) ||
               ' (' || {money('m."DocTotal"')} || ' ' || coalesce(m."DocCurrency", '') ||
               ') for ' || coalesce(m."CardCode", '(no customer)') ||
               ' is not linked to any sales order' ||
               CASE WHEN EXISTS (SELECT 1 FROM raw_rin1 r WHERE r."DocEntry" = m."DocEntry" AND r."BaseType" = 16)
                    THEN ' (it was copied from a return, which this sync does not read)'
                    WHEN EXISTS (SELECT 1 FROM raw_rin1 r WHERE r."DocEntry" = m."DocEntry"
                                 AND coalesce(r."BaseType", -1) <> -1)
                    THEN ' (its base document does not lead back to an order)'
                    ELSE ' (it was entered stand-alone)' END AS detail
        FROM x_live_memos m
        WHERE m."DocEntry" NOT IN (SELECT memo_entry FROM x_memo_orders)"""


def _credit_memo_exceeds_order(ctx: RuleContext) -> str:
    tol = ctx.config.exceptions.credit_memo_tolerance
    # A credit memo tied to one order counts in full (freight refunds included); one spread over
    # several orders counts line by line, so no amount is attributed twice.
    return f"""
        WITH per_memo AS (SELECT memo_entry, count(*) AS n FROM x_memo_orders GROUP BY 1),
        line_amt AS (
            SELECT lo.memo_entry, lo.order_entry, sum(r."GrossTotal") AS amt
            FROM x_memo_line_orders lo
            JOIN raw_rin1 r ON r."DocEntry" = lo.memo_entry AND r."LineNum" = lo.memo_line
            GROUP BY ALL
        ), credited AS (
            SELECT mo.order_entry, mo.memo_entry, m."DocNum" AS memo_num,
                   CASE WHEN pm.n = 1 THEN m."DocTotal" ELSE coalesce(la.amt, 0) END AS amt
            FROM x_memo_orders mo
            JOIN per_memo pm ON pm.memo_entry = mo.memo_entry
            JOIN x_live_memos m ON m."DocEntry" = mo.memo_entry
            LEFT JOIN line_amt la ON la.memo_entry = mo.memo_entry AND la.order_entry = mo.order_entry
        ), agg AS (
            SELECT order_entry, sum(amt) AS credited,
                   string_agg(coalesce(CAST(memo_num AS VARCHAR), CAST(memo_entry AS VARCHAR)), ', '
                              ORDER BY memo_entry) AS memos
            FROM credited GROUP BY 1
        )
        SELECT CAST(o."DocEntry" AS VARCHAR) AS record_key,
               'Order ' || coalesce(CAST(o."DocNum" AS VARCHAR), CAST(o."DocEntry" AS VARCHAR)) ||
               ' totals ' || {money('o."DocTotal"')} || ' but its credit memos (' || agg.memos ||
               ') total ' || {money('agg.credited')} || ': ' ||
               {money('agg.credited - o."DocTotal"')} || ' more than the order' AS detail,
               agg.credited - o."DocTotal" AS impact
        FROM agg JOIN raw_ordr o ON o."DocEntry" = agg.order_entry
        WHERE {not_cancellation('o')} AND agg.credited > o."DocTotal" + {tol}"""


def _stock_negative_available(ctx: RuleContext) -> str:
    pl = int(ctx.facts.price_list)
    return f"""
        WITH price AS (
            SELECT "ItemCode", max("Price") AS price FROM raw_itm1 WHERE "PriceList" = {pl} GROUP BY 1
        )
        SELECT CAST(w."ItemCode" AS VARCHAR) || '/' || CAST(w."WarehouseCode" AS VARCHAR) AS record_key,
               'Item ' || w."ItemCode" || ' in warehouse ' || w."WarehouseCode" || ': in stock ' ||
               {qty('coalesce(w."InStock", 0)')} || ', committed ' ||
               {qty('coalesce(w."Committed", 0)')} || ', available ' ||
               {qty('coalesce(w."InStock", 0) - coalesce(w."Committed", 0)')} AS detail,
               abs(coalesce(w."InStock", 0) - coalesce(w."Committed", 0)) * coalesce(p.price, 0) AS impact
        FROM raw_oitw w
        LEFT JOIN price p ON p."ItemCode" = w."ItemCode"
        LEFT JOIN raw_oitm i ON i."ItemCode" = w."ItemCode"
        WHERE w."_deleted_at" IS NULL AND i."_deleted_at" IS NULL
          AND {feeds_ometria(ctx.facts, 'w."WarehouseCode"')}
          AND coalesce(w."InStock", 0) - coalesce(w."Committed", 0) < 0"""


_UDF_ENTITY = {
    "ocrd": "contact", "ordr": "order", "rdr1": "order_line", "orin": "credit_memo",
    "rin1": "credit_memo_line", "oitm": "product", "oitw": "stock",
}


def _udf_not_served(ctx: RuleContext) -> str:
    """Mapped UDFs SAP declares (CUFD) that the landed table does not have: SAP lists a new
    UDF in UserFieldsMD before the Service Layer serves it (until SL restarts)."""
    from sap_ometria_assets.lib.ometria.mapping import MappingError, load_mapping, mapped_udfs

    try:
        mapping = load_mapping()
    except MappingError as exc:
        raise NotEvaluable(f"mapping not readable: {exc}") from None
    declared = {(str(t).upper(), f"U_{n}") for t, n in ctx.con.execute(
        'SELECT DISTINCT "TableName", "Name" FROM raw_cufd WHERE "Name" IS NOT NULL').fetchall()}
    rows = []
    for _path, sap_table, field_name, _m in mapped_udfs(mapping):
        table = sap_table.lower()
        if (sap_table, field_name) not in declared or f"sap_raw.{table}" not in ctx.present:
            continue
        if field_name.lower() in {c.lower() for c in table_columns(ctx.con, "sap_raw", table)}:
            continue
        rows.append(f"SELECT {lit(sap_table + '.' + field_name)} AS record_key, "
                    f"{lit(f'{sap_table}.{field_name} is declared in UserFieldsMD but the Service Layer does not serve it yet: the property is left out')} AS detail")
    if not rows:
        return "SELECT NULL::VARCHAR AS record_key, NULL::VARCHAR AS detail WHERE false"
    return " UNION ALL ".join(sorted(set(rows)))


def _udf_value_not_allowed(ctx: RuleContext) -> str:
    con = ctx.con
    declared = con.execute("""
        SELECT DISTINCT "TableName", "Name" FROM raw_cufd
        WHERE "ValidValuesMD" IS NOT NULL
          AND json_array_length(CAST("ValidValuesMD" AS JSON)) > 0
    """).fetchall()
    con.execute("""
        CREATE OR REPLACE TEMP TABLE x_udf_allowed AS
        SELECT upper("TableName") AS table_name, 'U_' || "Name" AS column_name,
               flatten(list(json_extract_string(CAST("ValidValuesMD" AS JSON), '$[*].Value')
                            ORDER BY "FieldID")) AS allowed
        FROM raw_cufd
        WHERE "ValidValuesMD" IS NOT NULL AND json_array_length(CAST("ValidValuesMD" AS JSON)) > 0
        GROUP BY ALL
    """)
    parts = []
    for sap_table, name in sorted(declared, key=lambda r: (str(r[0]), str(r[1]))):
        table = str(sap_table).lower()
        # only tables whose records reach Ometria (deliveries and invoices do not)
        if table not in _UDF_ENTITY or f"sap_raw.{table}" not in ctx.present:
            continue
        column = f"U_{name}"
        if column.lower() not in {c.lower() for c in table_columns(con, "sap_raw", table)}:
            continue
        key_expr = " || '/' || ".join(f'CAST(t.{q(k)} AS VARCHAR)' for k in table_key(table))
        entity = _UDF_ENTITY[table]
        where = ['t."_deleted_at" IS NULL']
        if table in TABLES_BY_NAME and TABLES_BY_NAME[table].is_document:
            where.append(not_cancellation("t"))
        col = f"t.{q(column)}"
        parts.append(f"""
        SELECT '{entity}' AS entity, {key_expr} AS record_key,
               '{table.upper()}.{column} is "' || CAST({col} AS VARCHAR) ||
               '", not one of the values SAP allows: ' || array_to_string(a.allowed, ', ') AS detail
        FROM raw_{table} t JOIN x_udf_allowed a
          ON a.table_name = {lit(table.upper())} AND a.column_name = {lit(column)}
        WHERE {' AND '.join(where)}
          AND nullif(trim(CAST({col} AS VARCHAR)), '') IS NOT NULL
          AND NOT list_contains(a.allowed, CAST({col} AS VARCHAR))""")
    # a JSON object or array in a UDF without valid values: left out of the record (transforms/udfs.py)
    for sap_table, name in con.execute('SELECT DISTINCT "TableName", "Name" FROM raw_cufd WHERE "Name" IS NOT NULL ORDER BY ALL').fetchall():
        table, column = str(sap_table).lower(), f"U_{name}"
        v = f"trim(CAST(t.{q(column)} AS VARCHAR))"
        if ((sap_table, name) in declared or table not in _UDF_ENTITY or f"sap_raw.{table}" not in ctx.present
                or column.lower() not in {c.lower() for c in table_columns(con, "sap_raw", table)}):
            continue
        key_expr = " || '/' || ".join(f'CAST(t.{q(k)} AS VARCHAR)' for k in table_key(table))
        cancelled = f" AND {not_cancellation('t')}" if table in TABLES_BY_NAME and TABLES_BY_NAME[table].is_document else ""
        parts.append(f"""SELECT '{_UDF_ENTITY[table]}' AS entity, {key_expr} AS record_key, '{table.upper()}.{column} holds a JSON object or array, not a single value: it is not sent' AS detail
        FROM raw_{table} t WHERE t."_deleted_at" IS NULL{cancelled} AND left({v}, 1) IN ('{{', '[') AND json_valid({v})""")
    if not parts:
        return "SELECT NULL::VARCHAR AS entity, NULL::VARCHAR AS record_key, NULL::VARCHAR AS detail WHERE false"
    return " UNION ALL ".join(parts)


def _record_too_large(ctx: RuleContext) -> str:
    limit = int(ctx.config.exceptions.ometria_record_limit_bytes)
    return f"""
        SELECT {ENTITY_OF_SAP_OBJECT_SQL} AS entity, sap_key AS record_key,
               'The Ometria ' || coalesce(record_type, feed) || ' record ' || id || ' (' || feed ||
               ') is ' || payload_bytes || ' bytes, over Ometria''s limit of {limit} bytes a record,'
               || ' so it cannot be sent' AS detail
        FROM om_all WHERE payload_bytes > {limit}"""


def _ometria_rejected(ctx: RuleContext) -> str:
    entity = ENTITY_OF_SAP_OBJECT_SQL.replace("sap_object", "o.sap_object")
    days = int(ctx.config.exceptions.unmatched_error_days)
    now = lit(ctx.now.isoformat())
    # The push layer marks the ledger row `rejected` for the version Ometria reported, and moves
    # it on when a new version is acknowledged: the ledger is the source of truth here.
    return f"""
        WITH msg AS (
            SELECT feed, CAST(record_id AS VARCHAR) AS record_id, payload_hash,
                   arg_max(coalesce(error_path || ': ', '') || coalesce(error_message, 'no message'),
                           coalesce(last_seen_at, fetched_at)) AS message
            FROM push_errors WHERE record_id IS NOT NULL GROUP BY ALL
        )
        SELECT {entity} AS entity, o.sap_key AS record_key,
               'Ometria rejected ' || coalesce(o.record_type, 'record') || ' ' || o.id ||
               coalesce(' (request ' || g.request_id || ')', '') || ': ' ||
               coalesce(m.message, g.error, 'no message') AS detail
        FROM push_ledger g
        JOIN om_all o ON o.feed = g.feed AND o.id = CAST(g.id AS VARCHAR)
        LEFT JOIN msg m ON m.feed = g.feed AND m.record_id = CAST(g.id AS VARCHAR)
             AND m.payload_hash IS NOT DISTINCT FROM g.payload_hash
        WHERE g.status = 'rejected'
        UNION ALL
        -- refused before Ometria could queue it (HTTP 4xx, or by the client), current version
        SELECT {entity}, o.sap_key,
               'Ometria refused ' || coalesce(o.record_type, 'record') || ' ' || o.id ||
               ' (' || e.source || '): ' || coalesce(e.error_path || ': ', '') ||
               coalesce(e.error_message, 'no message')
        FROM push_errors e
        JOIN om_all o ON o.feed = e.feed AND o.id = CAST(e.record_id AS VARCHAR)
             AND o.payload_hash = e.payload_hash AND o.held_back_reason IS NULL
        WHERE e.source IN ('http', 'client')
          AND NOT EXISTS (SELECT 1 FROM push_ledger g WHERE g.feed = o.feed AND g.id = o.id
                          AND g.payload_hash = o.payload_hash
                          AND coalesce(g.status, 'accepted') = 'accepted')
        UNION ALL
        SELECT coalesce(record_type, 'record'),
               'unmatched:' || left(md5(coalesce(raw, '') || coalesce(error_message, '') ||
                                        coalesce(error_path, '') || coalesce(request_id, '')), 12),
               'Ometria rejected a record it did not identify' ||
               coalesce(' (request ' || request_id || ')', '') || ': ' ||
               coalesce(error_path || ': ', '') || coalesce(error_message, 'no message')
        FROM push_errors
        WHERE NOT coalesce(matched, record_id IS NOT NULL) AND coalesce(source, 'ometria') = 'ometria'
          AND coalesce(last_seen_at, fetched_at) >= CAST({now} AS TIMESTAMPTZ) - INTERVAL '{days} days'"""


def _ometria_stale(ctx: RuleContext) -> str:
    from sap_ometria_assets.lib.quality.drift import stale_records_sql

    stale = stale_records_sql(
        f"CAST({lit(ctx.now.isoformat())} AS TIMESTAMPTZ)", ctx.config.recon.stale_after_hours,
        records="om_all", ledger="push_ledger", versions="versions",
    )
    entity = ENTITY_OF_SAP_OBJECT_SQL.replace("sap_object", "s.sap_object")
    return f"""
        SELECT {entity} AS entity, s.sap_key AS record_key,
               'The ' || s.feed || ' record ' || s.id || ' changed ' ||
               CAST(CAST(floor(s.hours_waiting) AS BIGINT) AS VARCHAR) ||
               ' hours ago and Ometria has not acknowledged it ' ||
               CASE WHEN s.acknowledged_hash IS NULL THEN '(never sent)'
                    ELSE '(last acknowledged ' || strftime(s.acknowledged_at, '%Y-%m-%d %H:%M') || ')'
               END AS detail
        FROM ({stale}) s"""


def _deletion_scan_refused(ctx: RuleContext) -> str:
    if not table_exists(ctx.con, "sap_meta", "deletion_scan_refusals"):
        return "SELECT NULL AS record_key, NULL AS detail WHERE false"
    return """
        SELECT 'record' AS entity, table_name AS record_key,
               'Deletion scan of ' || entity_set || ' (sap_raw.' || table_name || ') refused on ' ||
               strftime(refused_at, '%Y-%m-%d %H:%M') || ': ' || reason AS detail
        FROM sap_meta.deletion_scan_refusals"""


def _future_update_date(ctx: RuleContext) -> str:
    from sap_ometria_assets.lib.landing.land import future_limit
    from sap_ometria_assets.lib.sap.tables import SAP_TABLES
    from sap_ometria_assets.lib.config.settings import get_settings

    limit = future_limit(get_settings(), ctx.now)
    day, hms = lit(limit.date().isoformat()), lit(limit.strftime("%H:%M:%S"))
    parts = []
    for spec in SAP_TABLES:
        if spec.read_mode != "incremental" or f"sap_raw.{spec.table}" not in ctx.present:
            continue
        key = " || '|' || ".join(f"CAST({q(k)} AS VARCHAR)" for k in spec.key)
        parts.append(f"""
        SELECT {lit(_UDF_ENTITY.get(spec.table, 'record'))} AS entity, {key} AS record_key,
               {lit(spec.sap_object + ' ')} || {key} || ' has UpdateDate ' ||
               CAST("UpdateDate" AS VARCHAR) || coalesce(' ' || "UpdateTime", '') ||
               ', later than now (' || {lit(limit.strftime('%Y-%m-%d %H:%M'))} ||
               ' company time, with the allowed skew): landed, but the watermark does not follow '
               || 'it' AS detail
        FROM raw_{spec.table}
        WHERE "UpdateDate" > CAST({day} AS DATE)
           OR ("UpdateDate" = CAST({day} AS DATE) AND coalesce("UpdateTime", '') > {hms})""")
    return " UNION ALL ".join(parts) or "SELECT NULL AS record_key, NULL AS detail WHERE false"


# Plain-language notes on the transform layer's hold-back reason codes (lib/transforms).
HELD_BACK_NOTES: dict[str, str] = {
    "deleted_in_sap": "deleted in SAP; if Ometria received it before, it still holds it: decide "
                      "whether to erase it there (Ometria's GDPR tool)",
    "missing_currency": "the document has no currency",
    "no_lines": "the order has no lines",
    "invalid_amount": "an amount in SAP is not a usable number (see sap_meta.rejected_values)",
    "missing_doc_date": "the document has no date",
    "negative_quantity": "a line has a negative quantity",
    "duplicate_line": "the same line appears twice",
    "duplicate_sap_key": "SAP returned the record twice",
    "missing_sap_key": "the record has no SAP key",
    "invalid_payload": "the record breaks Ometria's rules",
}


def _held_back_other(ctx: RuleContext) -> str:
    # Rows already explained by another firing rule are removed by the engine (_covered_filter).
    notes = " ".join(
        f"WHEN starts_with(held_back_reason, {lit(code)}) THEN {lit(' (' + note + ')')}"
        for code, note in HELD_BACK_NOTES.items()
    )
    by_design = text_list(ctx.config.exceptions.held_back_by_design)
    return f"""
        SELECT {ENTITY_OF_SAP_OBJECT_SQL} AS entity, sap_key AS record_key,
               'Held back from Ometria (' || feed || ' record ' || id || '): ' || held_back_reason ||
               CASE {notes} ELSE '' END AS detail
        FROM om_all
        WHERE held_back_reason IS NOT NULL
          -- reason codes are joined by '; ' and may carry a detail after ':'
          AND NOT list_has_all({by_design}, list_transform(string_split(held_back_reason, '; '),
                                                          lambda r: split_part(r, ':', 1)))"""


_POP_CUSTOMERS = "SELECT count(*) FROM x_customers"
_POP_ORDERS = f"SELECT count(*) FROM raw_ordr WHERE {not_cancellation()}"
_POP_MEMOS = "SELECT count(*) FROM x_live_memos"
_POP_ITEMS = "SELECT count(*) FROM raw_oitm WHERE \"_deleted_at\" IS NULL"
_POP_OMETRIA = "SELECT count(*) FROM om_all"

RULES: tuple[Rule, ...] = (
    Rule(
        id="contact_invalid_email", entity="contact", severity="ERROR", owner="marketing",
        title="Invalid email address",
        description="A customer's email address in SAP is not a usable address (typo, missing @, "
        "spaces, missing domain). Ometria cannot email this customer, so they drop out of every "
        "campaign and flow.",
        fix_hint="Correct the email on the business partner in SAP (Business Partner Master Data "
        "> General > E-Mail). The next sync sends the fixed contact.",
        sql=_contact_invalid_email, requires=("sap_raw.ocrd",), population_sql=_POP_CUSTOMERS,
    ),
    Rule(
        id="contact_missing_email", entity="contact", severity="WARN", owner="marketing",
        title="Missing email address",
        description="A customer has no email address in SAP, so Ometria can only use them for "
        "reporting, never for email marketing.",
        fix_hint="Add the customer's email on the business partner in SAP if you have it "
        "(and their consent); otherwise no action is needed.",
        sql=_contact_missing_email, requires=("sap_raw.ocrd",), population_sql=_POP_CUSTOMERS,
    ),
    Rule(
        id="contact_duplicate_email", entity="contact", severity="WARN", owner="marketing",
        title="Email shared by several customers",
        description="Several customers in SAP have the same email address (ignoring case and "
        "spaces). Ometria merges profiles by email, so their orders and lifetime value mix.",
        fix_hint="Decide which business partner is the real customer; merge or correct the others "
        "in SAP (or give each their own email).",
        sql=_contact_duplicate_email, requires=("sap_raw.ocrd",), population_sql=_POP_CUSTOMERS,
    ),
    Rule(
        id="contact_missing_name", entity="contact", severity="WARN", owner="marketing",
        title="Customer without a name",
        description="A customer has no name in SAP, so emails cannot be personalised and the "
        "contact is hard to recognise in Ometria.",
        fix_hint="Fill in the business partner's name in SAP.",
        sql=_contact_missing_name, requires=("sap_raw.ocrd",), population_sql=_POP_CUSTOMERS,
    ),
    Rule(
        id="order_unknown_customer", entity="order", severity="ERROR", owner="finance",
        title="Order for an unknown or non-customer business partner",
        description="A sales order points at a business partner that does not exist (or was "
        "deleted) in SAP, or that is a supplier or lead rather than a customer. Ometria cannot "
        "credit the revenue to a customer.",
        fix_hint="Check the order's customer in SAP; if it was entered on the wrong business "
        "partner, correct it (or convert the lead to a customer).",
        sql=_order_unknown_customer, requires=("sap_raw.ordr",), population_sql=_POP_ORDERS,
    ),
    Rule(
        id="line_unknown_item", entity="order_line", severity="ERROR", owner="ops",
        title="Line with an unknown item",
        description="An order or credit memo line uses an item code that is not (or no longer) an "
        "item in SAP. Ometria gets a line for a product it does not know, which breaks product "
        "reports and recommendations.",
        fix_hint="Re-create or restore the item in SAP, or correct the line to the right item.",
        sql=_line_unknown_item, requires=("sap_raw.rdr1", "sap_raw.oitm"),
        population_sql="SELECT count(*) FROM raw_rdr1",
    ),
    Rule(
        id="product_missing_price_or_title", entity="product", severity="ERROR", owner="marketing",
        title="Product without price or title",
        description="A sellable item has no name, or no (or a zero) price in the price list sent "
        "to Ometria. Ometria leaves such products out of emails and recommendations.",
        fix_hint="Give the item a name and a price in the Retail price list in SAP (Item Master "
        "Data), or mark it as not a sales item if it should not be sold.",
        sql=_product_missing_price_or_title, requires=("sap_raw.oitm",), population_sql=_POP_ITEMS,
    ),
    Rule(
        id="currency_unmapped", entity="order", severity="ERROR", owner="finance",
        title="Currency not mapped",
        description="A document or price is in a SAP currency code that the mapping does not "
        "translate to an ISO code (e.g. SFR). Ometria needs ISO codes, so the record is held "
        "back and its revenue is missing in Ometria.",
        fix_hint="Add the SAP currency code to `currencies` in the mapping file with its ISO 4217 "
        "code (e.g. SFR: CHF), or correct the document's currency in SAP.",
        sql=_currency_unmapped, requires=("sap_raw.ordr",), population_sql=_POP_ORDERS,
    ),
    Rule(
        id="document_date_implausible", entity="order", severity="ERROR", owner="finance",
        title="Document date implausible",
        description="An order or credit memo is dated before 1990 (1899-12-30 is the zero date a "
        "cleared field or a bad import leaves) or more than a year ahead. Sent, it would put the "
        "sale in the wrong century of the customer's history, so it is held back.",
        fix_hint="Correct the document's posting date (DocDate) in SAP; the next sync sends it.",
        sql=_document_date_implausible, requires=("sap_raw.ordr",), population_sql=_POP_ORDERS,
    ),
    Rule(
        id="order_total_mismatch", entity="order", severity="ERROR", owner="finance",
        title="Order total does not add up",
        description="A document's total in SAP differs from its lines + tax - discount + freight + "
        "rounding by more than the tolerance. Ometria would show a total that its own lines "
        "cannot explain.",
        fix_hint="Open the document in SAP and check header discount, freight and rounding; "
        "correct the document or ask finance to confirm the total.",
        sql=_order_total_mismatch, requires=("sap_raw.ordr", "sap_raw.rdr1"),
        population_sql=_POP_ORDERS,
    ),
    Rule(
        id="credit_memo_unlinked", entity="credit_memo", severity="WARN", owner="finance",
        title="Credit memo not linked to an order",
        description="A credit memo cannot be traced back to a sales order (it was entered "
        "stand-alone or from a return). It still reduces the customer's value, but Ometria "
        "cannot attach the refund to an order.",
        fix_hint="Where possible create credit memos from the invoice (Copy From) so they link to "
        "the order; otherwise confirm the credit memo is correct.",
        sql=_credit_memo_unlinked, requires=("sap_raw.orin",), population_sql=_POP_MEMOS,
    ),
    Rule(
        id="credit_memo_exceeds_order", entity="order", severity="ERROR", owner="finance",
        title="Credit memos exceed their order",
        description="The credit memos linked to an order add up to more than the order itself: "
        "the customer was refunded more than they paid, and their lifetime value in Ometria "
        "goes negative. Impact is the amount credited above the order total.",
        fix_hint="Review the credit memos for the order in SAP; cancel a duplicate credit memo or "
        "correct the amounts.",
        sql=_credit_memo_exceeds_order, requires=("sap_raw.orin", "sap_raw.ordr"),
        population_sql=_POP_ORDERS,
    ),
    Rule(
        id="stock_negative_available", entity="stock", severity="WARN", owner="ops",
        title="Negative available stock",
        description="In a warehouse that feeds Ometria, more stock is committed to orders than is "
        "on hand. The product shows as out of stock and those orders may not ship. Impact is the "
        "shortfall at the retail price.",
        fix_hint="Check goods receipts and open orders for the item in that warehouse; post "
        "missing receipts or move stock.",
        sql=_stock_negative_available, requires=("sap_raw.oitw",),
        population_sql="SELECT count(*) FROM raw_oitw",
    ),
    Rule(
        id="udf_not_served", entity="record", severity="WARN", owner="ops",
        title="User-defined field declared but not served",
        description="The mapping reads a user-defined field that SAP declares (UserFieldsMD) but "
        "the Service Layer does not return yet: SAP serves a new UDF only after the Service "
        "Layer restarts. The property is left out of every record until then; all else syncs.",
        fix_hint="Restart the SAP Service Layer (or wait for its scheduled restart); the next "
        "sync sends the property.",
        sql=_udf_not_served, requires=("sap_raw.cufd",),
    ),
    Rule(
        id="udf_value_not_allowed", entity="record", severity="WARN", owner="marketing",
        title="User-defined field outside its allowed values",
        description="A user-defined field (e.g. loyalty tier, acquisition source, sales channel) "
        "holds a value that is not in the list SAP declares for it, or a JSON object or array "
        "where SAP should hold a single value. Segments built on that field in Ometria miss the record.",
        fix_hint="Choose one of the allowed values for the field on the record in SAP, or add the "
        "new value to the field's valid values (Tools > Customization Tools > User-Defined "
        "Fields - Management).",
        sql=_udf_value_not_allowed, requires=("sap_raw.cufd",), population_sql=_POP_CUSTOMERS,
    ),
    Rule(
        id="record_too_large", entity="record", severity="ERROR", owner="ops",
        title="Record over Ometria's size limit",
        description="The Ometria record built from this SAP record is larger than Ometria accepts "
        "(60 KB a record), usually an order with very many lines or very long texts. It cannot "
        "be sent.",
        fix_hint="Split the order in SAP or shorten long free-text fields; tell ops if it is a "
        "legitimate record so the mapping can leave fields out.",
        sql=_record_too_large, requires=(ANY_OMETRIA,), population_sql=_POP_OMETRIA,
    ),
    Rule(
        id="ometria_rejected", entity="record", severity="ERROR", owner="ops",
        title="Record rejected by Ometria",
        description="Ometria accepted the push but then rejected this record during its own "
        "validation (reported on its errors endpoint). Ometria does not hold the current version.",
        fix_hint="Read the error message and path: usually a field value Ometria does not accept. "
        "Correct it in SAP (or the mapping) and the next sync re-sends the record.",
        sql=_ometria_rejected, requires=("ometria_push.ledger",), population_sql=_POP_OMETRIA,
    ),
    Rule(
        id="ometria_stale", entity="record", severity="WARN", owner="ops",
        title="Change not acknowledged by Ometria (drift)",
        description="A record changed in SAP longer ago than the configured time, but Ometria has "
        "not acknowledged the new version: Ometria shows outdated data for it.",
        fix_hint="Check the last push runs and ometria_push.requests for failures (rate limits, "
        "authentication); re-run the push.",
        sql=_ometria_stale, requires=(ANY_OMETRIA, "recon.payload_versions"),
        population_sql=_POP_OMETRIA,
    ),
    Rule(
        id="deletion_scan_refused", entity="record", severity="ERROR", owner="ops",
        title="Deletion scan refused, waiting for a person",
        description="The nightly key scan of a master-data table was incomplete (fewer keys than "
        "the Service Layer counts) or would have marked more than SAP_B1_DELETION_MAX_SHARE of "
        "the live records deleted at once. Nothing was marked deleted; no opt-outs follow.",
        fix_hint="Check in SAP whether those records were really deleted. If they were, set "
        "SAP_B1_ACCEPT_DELETION_SCAN=<table> (e.g. ocrd) for one run of the deletion scan job, "
        "then unset it. An incomplete scan is retried by the next scan on its own.",
        sql=_deletion_scan_refused,
    ),
    Rule(
        id="future_update_date", entity="record", severity="WARN", owner="ops",
        title="SAP record dated in the future",
        description="The record's UpdateDate/UpdateTime is later than now (company time zone, "
        "plus SAP_B1_FUTURE_SKEW_MINUTES). It was landed and synced, but the incremental "
        "watermark does not follow it, so later changes keep being read.",
        fix_hint="Correct the date in SAP (or the SAP server's clock). The exception clears once "
        "the record's date is no longer in the future.",
        sql=_future_update_date, requires=("sap_raw.ocrd|sap_raw.ordr|sap_raw.oitm",),
    ),
    Rule(
        id="held_back_other", entity="record", severity="ERROR", owner="ops",
        title="Held back from Ometria for another reason",
        description="The record failed Ometria's rules when it was prepared and was kept back, "
        "for a reason no other rule explains (see detail). It is not in Ometria.",
        fix_hint="Read the reason in detail; correct the record in SAP or the mapping. Tell ops if "
        "the reason is unclear.",
        sql=_held_back_other, requires=(ANY_OMETRIA,), population_sql=_POP_OMETRIA,
    ),
)
RULES_BY_ID: dict[str, Rule] = {r.id: r for r in RULES}
# Rules whose firing means Ometria does not hold the record's current version: the only ones
# that can explain a reconciliation difference.
KEEPS_RECORD_FROM_OMETRIA = ("currency_unmapped", "record_too_large", "ometria_rejected",
                             "ometria_stale", "held_back_other")
_LAST_RULE = "held_back_other"


def rules_markdown() -> str:
    """The rule registry as a markdown table (for README/docs)."""
    lines = [
        "| Rule | Owner | Severity | What it means | How to fix it |",
        "|---|---|---|---|---|",
    ]
    for r in RULES:
        lines.append(
            f"| `{r.id}` ({r.title}) | {r.owner} | {r.severity} | {r.description} | {r.fix_hint} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
@dataclass
class RuleOutcome:
    rule: str
    status: Literal["evaluated", "skipped", "failed", "disabled"]
    fired: int = 0
    new: int = 0
    resolved: int = 0
    open: int = 0
    impact: float = 0.0
    population: int | None = None
    reason: str | None = None


@dataclass
class EvaluationResult:
    run_at: datetime
    outcomes: dict[str, RuleOutcome]

    @property
    def failed(self) -> list[RuleOutcome]:
        return [o for o in self.outcomes.values() if o.status == "failed"]

    @property
    def open_total(self) -> int:
        return sum(o.open for o in self.outcomes.values())


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS ops")
    con.execute(EXCEPTIONS_DDL)
    for table, comment in TABLE_COMMENTS.items():
        con.execute(f"COMMENT ON TABLE {table} IS {lit(comment)}")


_FIRED_DDL = """
CREATE OR REPLACE TEMP TABLE _fired (
    rule VARCHAR, entity VARCHAR, record_key VARCHAR, detail VARCHAR, impact DECIMAL(19,6)
)"""


def _run_rule(ctx: RuleContext, rule: Rule) -> int:
    # UNION ALL BY NAME with a typed empty row: a rule may leave out entity and impact.
    inserted = ctx.con.execute(f"""
        INSERT INTO _fired
        SELECT {lit(rule.id)}, coalesce(entity, {lit(rule.entity)}), record_key,
               string_agg(DISTINCT detail, '; ' ORDER BY detail), max(impact)
        FROM (
            SELECT NULL::VARCHAR AS entity, NULL::VARCHAR AS record_key, NULL::VARCHAR AS detail,
                   NULL::DECIMAL(19,6) AS impact WHERE false
            UNION ALL BY NAME ({rule.sql(ctx)})
        )
        WHERE record_key IS NOT NULL
        GROUP BY ALL""").fetchall()
    return int(inserted[0][0]) if inserted else 0


# The rules whose firing means the transform held the record back; any other rule (an unlinked
# credit memo, a total that does not add up...) leaves the record on its way to Ometria, so it
# cannot explain why the record is missing there.
HOLD_BACK_RULES = ("contact_invalid_email", "contact_missing_email", "currency_unmapped",
                   "record_too_large", "document_date_implausible")


def _covered_filter(ctx: RuleContext) -> None:
    """Held-back rows already explained by a hold-back rule firing on the same record are dropped."""
    ctx.con.execute(f"""
        DELETE FROM _fired f
        WHERE f.rule = {lit(_LAST_RULE)} AND EXISTS (
            SELECT 1 FROM (SELECT rule, {ROOT_ENTITY_SQL} AS re, {ROOT_KEY_SQL} AS rk FROM _fired) o
            WHERE o.rule IN ({", ".join(lit(r) for r in HOLD_BACK_RULES)})
              AND o.re = f.entity AND o.rk = f.record_key)""")


def _apply_impact(ctx: RuleContext) -> None:
    ctx.con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _fired_final AS
        SELECT f.rule, f.entity, f.record_key, f.detail,
               CAST(round(coalesce(f.impact,
                   CASE f.entity
                     WHEN 'contact' THEN cn.net
                     WHEN 'order' THEN CASE WHEN {live_document('o')} THEN o."DocTotal" ELSE 0 END
                     WHEN 'credit_memo' THEN CASE WHEN {live_document('m')} THEN m."DocTotal" ELSE 0 END
                     WHEN 'order_line' THEN ol."GrossTotal"
                     WHEN 'credit_memo_line' THEN ml."GrossTotal"
                   END, 0), 2) AS DECIMAL(19,2)) AS impact
        FROM _fired f
        LEFT JOIN x_customer_net cn ON f.entity = 'contact' AND cn.card_code = f.record_key
        LEFT JOIN raw_ordr o ON f.entity = 'order' AND CAST(o."DocEntry" AS VARCHAR) = f.record_key
        LEFT JOIN raw_orin m ON f.entity = 'credit_memo' AND CAST(m."DocEntry" AS VARCHAR) = f.record_key
        LEFT JOIN raw_rdr1 ol ON f.entity = 'order_line'
             AND CAST(ol."DocEntry" AS VARCHAR) || '/' || CAST(ol."LineNum" AS VARCHAR) = f.record_key
        LEFT JOIN raw_rin1 ml ON f.entity = 'credit_memo_line'
             AND CAST(ml."DocEntry" AS VARCHAR) || '/' || CAST(ml."LineNum" AS VARCHAR) = f.record_key
    """)


def _rule_meta(config: ChecksConfig, rule: Rule) -> tuple[bool, str, str]:
    override = config.exceptions.rules.get(rule.id)
    enabled = override.enabled if override else True
    severity = (override.severity if override and override.severity else rule.severity)
    owner = (override.owner if override and override.owner else rule.owner)
    return enabled, severity, owner


def evaluate_exceptions(
    con: duckdb.DuckDBPyConnection,
    now: datetime,
    config: ChecksConfig | None = None,
    facts: MappingFacts | None = None,
    rules: tuple[Rule, ...] = RULES,
) -> EvaluationResult:
    """Run every rule and bring `ops.sync_exceptions` / `ops.exception_history` up to date.

    `now` is passed in (never read from the clock here) so tests control time. A rule whose
    tables are missing is skipped and a rule whose SQL fails is reported as failed; neither
    touches the state of that rule's existing exceptions.
    """
    from sap_ometria_assets.lib.quality.drift import track_pending_changes

    config = config or get_checks_config()
    facts = facts or mapping_facts()
    ensure_tables(con)
    track_pending_changes(con, now)
    present = prepare_sources(con, facts)
    ctx = RuleContext(con=con, config=config, facts=facts, now=now, present=present)
    con.execute(_FIRED_DDL)

    outcomes: dict[str, RuleOutcome] = {}
    populations: dict[str, int] = {}
    ordered = [r for r in rules if r.id != _LAST_RULE] + [r for r in rules if r.id == _LAST_RULE]
    meta: dict[str, tuple[str, str]] = {}
    for rule in ordered:
        enabled, severity, owner = _rule_meta(config, rule)
        meta[rule.id] = (severity, owner)
        if not enabled:
            outcomes[rule.id] = RuleOutcome(rule.id, "disabled", reason="disabled in checks.yaml")
            continue
        # "a|b" in `requires` means either table will do.
        missing = [t for t in rule.requires if not any(a in present for a in t.split("|"))]
        if missing:
            outcomes[rule.id] = RuleOutcome(
                rule.id, "skipped", reason=f"needs {', '.join(missing)}, which does not exist yet"
            )
            continue
        try:
            fired = _run_rule(ctx, rule)
            if rule.id == _LAST_RULE:
                _covered_filter(ctx)
                fired = con.execute(
                    "SELECT count(*) FROM _fired WHERE rule = ?", [rule.id]
                ).fetchall()[0][0]
            population = None
            if rule.population_sql:
                if rule.population_sql not in populations:
                    populations[rule.population_sql] = con.execute(rule.population_sql).fetchall()[0][0]
                population = populations[rule.population_sql]
            outcomes[rule.id] = RuleOutcome(rule.id, "evaluated", fired=fired, population=population)
        except NotEvaluable as exc:
            outcomes[rule.id] = RuleOutcome(rule.id, "skipped", reason=str(exc))
        except duckdb.Error as exc:
            con.execute("DELETE FROM _fired WHERE rule = ?", [rule.id])
            outcomes[rule.id] = RuleOutcome(
                rule.id, "failed", reason=f"{type(exc).__name__}: {_one_line(str(exc))}"
            )

    _apply_impact(ctx)
    evaluated = [r for r, o in outcomes.items() if o.status == "evaluated"]
    _merge(con, now, facts, meta, evaluated, outcomes)
    return EvaluationResult(run_at=now, outcomes=outcomes)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()[:500]


def _merge(con, now, facts, meta, evaluated, outcomes) -> None:
    rows = [(rid, sev, own, RULES_BY_ID[rid].fix_hint) for rid, (sev, own) in meta.items()
            if rid in RULES_BY_ID]
    con.execute("CREATE OR REPLACE TEMP TABLE _rule_meta (rule VARCHAR, severity VARCHAR, "
                "owner VARCHAR, fix_hint VARCHAR)")
    if rows:
        con.executemany("INSERT INTO _rule_meta VALUES (?, ?, ?, ?)", rows)
    con.execute("CREATE OR REPLACE TEMP TABLE _evaluated (rule VARCHAR)")
    if evaluated:
        con.executemany("INSERT INTO _evaluated VALUES (?)", [(r,) for r in evaluated])
    local = facts.local_currency
    con.execute("BEGIN TRANSACTION")
    try:
        new_counts = dict(con.execute("""
            SELECT f.rule, count(*) FROM _fired_final f
            LEFT JOIN ops.sync_exceptions s
                   ON s.rule = f.rule AND s.entity = f.entity AND s.record_key = f.record_key
            WHERE s.rule IS NULL OR s.resolved_at IS NOT NULL
            GROUP BY 1""").fetchall())
        con.execute("""
            UPDATE ops.sync_exceptions AS s
            SET last_seen = $now, resolved_at = NULL, detail = f.detail, impact = f.impact,
                currency = $cur, severity = f.severity, owner = f.owner, fix_hint = f.fix_hint
            FROM (SELECT f.*, m.severity, m.owner, m.fix_hint
                  FROM _fired_final f JOIN _rule_meta m ON m.rule = f.rule) AS f
            WHERE s.rule = f.rule AND s.entity = f.entity AND s.record_key = f.record_key""",
            {"now": now, "cur": local})
        con.execute("""
            INSERT INTO ops.sync_exceptions
            SELECT f.rule, f.entity, f.record_key, m.severity, m.owner, f.detail, f.impact, $cur,
                   $now, $now, NULL, m.fix_hint
            FROM _fired_final f JOIN _rule_meta m ON m.rule = f.rule
            WHERE NOT EXISTS (SELECT 1 FROM ops.sync_exceptions s WHERE s.rule = f.rule
                              AND s.entity = f.entity AND s.record_key = f.record_key)""",
            {"now": now, "cur": local})
        resolved_rows = con.execute("""
            UPDATE ops.sync_exceptions AS s SET resolved_at = $now
            WHERE s.resolved_at IS NULL AND s.rule IN (SELECT rule FROM _evaluated)
              AND NOT EXISTS (SELECT 1 FROM _fired_final f WHERE f.rule = s.rule
                              AND f.entity = s.entity AND f.record_key = s.record_key)
            RETURNING s.rule""", {"now": now}).fetchall()
        resolved_counts: dict[str, int] = {}
        for (rule_id,) in resolved_rows:
            resolved_counts[rule_id] = resolved_counts.get(rule_id, 0) + 1
        summary = con.execute("""
            SELECT e.rule, count(s.rule), coalesce(sum(s.impact), 0)
            FROM _evaluated e LEFT JOIN ops.sync_exceptions s
                 ON s.rule = e.rule AND s.resolved_at IS NULL
            GROUP BY 1""").fetchall()
        history = []
        for rule_id, open_count, impact in summary:
            o = outcomes[rule_id]
            o.open, o.impact = int(open_count), float(impact)
            o.new, o.resolved = int(new_counts.get(rule_id, 0)), int(resolved_counts.get(rule_id, 0))
            history.append((now, rule_id, o.open, o.new, o.resolved, impact, o.population))
        if history:
            con.executemany(
                "INSERT INTO ops.exception_history VALUES (?, ?, ?, ?, ?, ?, ?)", history
            )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def open_exceptions(con: duckdb.DuckDBPyConnection, entities: tuple[str, ...] | None = None):
    """Open exceptions as a polars frame (optionally only some entities), biggest impact first."""
    where = "resolved_at IS NULL"
    params: list = []
    if entities:
        where += " AND list_contains(?, entity)"
        params.append(list(entities))
    return con.sql(
        f"SELECT * FROM ops.sync_exceptions WHERE {where} ORDER BY impact DESC, rule, record_key",
        params=params,
    ).pl()


# ---------------------------------------------------------------------------------------------
# Summaries per Ometria asset (the checks on ometria/contacts, orders, products, stock)
# ---------------------------------------------------------------------------------------------
@dataclass
class RuleSummary:
    rule: str
    owner: str
    open: int
    impact: float
    rate: float
    outcome: Severity | None
    threshold: str


@dataclass
class AssetSummary:
    asset: str
    population: int
    rules: list[RuleSummary]
    top: object  # polars DataFrame of the 10 open exceptions with the biggest impact
    evaluated: bool

    @property
    def severity(self) -> Severity | None:
        outcomes = {r.outcome for r in self.rules}
        return "ERROR" if "ERROR" in outcomes else "WARN" if "WARN" in outcomes else None

    @property
    def open_total(self) -> int:
        return sum(r.open for r in self.rules)

    def description(self) -> str:
        if not self.evaluated:
            return "Sync exceptions have not been evaluated yet (ops/sync_exceptions)."
        if not self.open_total:
            return f"No open sync exceptions on {self.asset}."
        over = [r for r in self.rules if r.outcome]
        worst = ", ".join(f"{r.rule} {r.open} ({r.outcome})" for r in over) or "none over threshold"
        return (f"{self.open_total} open sync exception(s) on {self.asset} "
                f"({self.population} records); over threshold: {worst}.")


def _threshold_text(t) -> str:
    parts = []
    for name in ("warn_count", "error_count", "warn_rate", "error_rate"):
        value = getattr(t, name)
        if value is not None:
            parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
    return ", ".join(parts) or "none"


def summarise_for_asset(
    con: duckdb.DuckDBPyConnection, asset: str, config: ChecksConfig | None = None
) -> AssetSummary:
    """Open exceptions of the entities an Ometria asset carries, judged against checks.yaml."""
    import polars as pl

    config = config or get_checks_config()
    entities = tuple(e for e, a in ENTITY_ASSET.items() if a == asset)
    if not table_exists(con, "ops", "sync_exceptions"):
        return AssetSummary(asset, 0, [], pl.DataFrame(), evaluated=False)
    population = (con.execute(f"SELECT count(*) FROM ometria.{q(asset)}").fetchall()[0][0]
                  if table_exists(con, "ometria", asset) else 0)
    rows = con.execute("""
        SELECT rule, any_value(owner), count(*), coalesce(sum(impact), 0)
        FROM ops.sync_exceptions
        WHERE resolved_at IS NULL AND list_contains(?, entity)
        GROUP BY rule ORDER BY rule""", [list(entities)]).fetchall()
    thresholds = config.thresholds_for(asset)
    summaries = []
    for rule, owner, n, impact in rows:
        t = thresholds.for_rule(rule)
        summaries.append(RuleSummary(
            rule=rule, owner=owner, open=int(n), impact=float(impact),
            rate=(n / population) if population else 0.0,
            outcome=t.outcome(int(n), int(population)), threshold=_threshold_text(t),
        ))
    top = open_exceptions(con, entities).head(10)
    return AssetSummary(asset, int(population), summaries, top, evaluated=True)
