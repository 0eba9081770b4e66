"""Reconciliation: does Ometria hold what SAP says, and what we say we sent?

Three sides are compared, each in the document currency (Ometria holds order amounts in the
currency of the order, so that is the only comparison that can agree to the penny; SAP's local
currency total is shown beside it):

- **SAP**: live sales orders minus live A/R credit memos (cancelled documents and cancellation
  documents excluded) from `sap_raw`;
- **sent**: the order payloads the push ledger (`ometria_push.ledger`) says Ometria
  acknowledged, valued the way Ometria values them: valid orders' grand_total minus the
  `refunded` amounts on their lines (negative orders for credit memos count negative);
- **Ometria**: the same valuation of what the Ometria API returns when read back
  (`recon.ometria_snapshot`, filled by the `recon/ometria_snapshot` asset).

The views live in the DuckDB schema `recon`, each with a comment, so a SQL user can run them with
the duckdb CLI (`duckdb data/warehouse.duckdb -c "FROM recon.customer_net_revenue WHERE status
<> 'agrees'"`). A difference is `explained` when an open sync exception (ops.sync_exceptions)
or a change still waiting for Ometria's acknowledgement covers the records behind it, and
`differs` otherwise: the recon checks fail only on `differs`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import duckdb
import orjson
import polars as pl

from sap_ometria_assets.lib.quality.checks_config import ChecksConfig, MappingFacts
from sap_ometria_assets.lib.quality.drift import stale_records_sql
from sap_ometria_assets.lib.quality.sql_fragments import live_document, not_cancellation
from sap_ometria_assets.lib.sync_exceptions.rule_ids import KEEPS_RECORD_FROM_OMETRIA
from sap_ometria_assets.lib.warehouse.sql import lit, table_exists, text_list

SNAPSHOT_DDL = """
CREATE TABLE IF NOT EXISTS recon.ometria_snapshot (
    record_type VARCHAR NOT NULL,
    id VARCHAR NOT NULL,
    payload VARCHAR,
    fetched_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS recon.snapshot_runs (
    fetched_at TIMESTAMPTZ NOT NULL,
    available BOOLEAN NOT NULL,
    note VARCHAR,
    contacts BIGINT,
    orders BIGINT,
    products BIGINT
);
ALTER TABLE recon.snapshot_runs ADD COLUMN IF NOT EXISTS outcome VARCHAR;
"""
# recon.snapshot_runs.outcome: 'read' (Ometria read back whole), 'dry_run' (nothing sent,
# nothing read: by design), 'unavailable' (the read-back failed: an outage, a 404, an API not
# honouring offset; the pushes stand, reconciliation compares SAP with the ledger only).
SNAPSHOT_OUTCOMES = ("read", "dry_run", "unavailable")

READ_BACK_TYPES = ("contact", "order", "product")

# Compare with what Ometria holds only when the latest read-back reached it (not in dry run).
LATEST_READ_OK = """read_ok AS (
                SELECT coalesce((SELECT available FROM recon.snapshot_runs
                                 ORDER BY fetched_at DESC LIMIT 1), false) AS ok
            )"""


# ---------------------------------------------------------------------------------------------
# Read-back snapshot
# ---------------------------------------------------------------------------------------------
def read_back_records(client, collection: str) -> Iterator[tuple[str, str, str]]:
    """Every contact (of our collection), order and product Ometria holds, as
    (record_type, id, payload JSON). The one place that knows the client's read-back API."""
    sources = (
        ("contact", client.iter_contacts(collection)),
        ("order", client.iter_orders()),
        ("product", client.iter_products()),
    )
    for record_type, records in sources:
        for record in records:
            record_id = record.get("id") if isinstance(record, dict) else None
            if record_id is None:
                continue
            yield record_type, str(record_id), orjson.dumps(record).decode()


def write_snapshot(
    con: duckdb.DuckDBPyConnection, records: Iterable[tuple[str, str, str]], fetched_at: datetime,
    available: bool = True, note: str | None = None, outcome: str | None = None,
) -> dict[str, int]:
    """Replace `recon.ometria_snapshot` with `records`; log the read in `recon.snapshot_runs`.

    `available=False` keeps the previous snapshot (it is no longer compared) and records why
    (`note`, `outcome` 'dry_run' or 'unavailable')."""
    outcome = outcome or ("read" if available else "unavailable")
    if outcome not in SNAPSHOT_OUTCOMES:
        raise ValueError(f"outcome must be one of {SNAPSHOT_OUTCOMES}, got {outcome!r}")
    con.execute("CREATE SCHEMA IF NOT EXISTS recon")
    con.execute(SNAPSHOT_DDL)
    types, ids, payloads = [], [], []
    for record_type, record_id, payload in records:
        types.append(record_type)
        ids.append(record_id)
        payloads.append(payload)
    frame = pl.DataFrame(
        {"record_type": types, "id": ids, "payload": payloads},
        schema={"record_type": pl.String, "id": pl.String, "payload": pl.String},
    )
    counts = {t: 0 for t in READ_BACK_TYPES}
    for t, n in frame.group_by("record_type").len().iter_rows():
        counts[t] = int(n)
    con.register("_snapshot_frame", frame)
    con.execute("BEGIN TRANSACTION")
    try:
        if available:
            con.execute("DELETE FROM recon.ometria_snapshot")
            con.execute(
                "INSERT INTO recon.ometria_snapshot SELECT DISTINCT ON (record_type, id) "
                "record_type, id, payload, CAST($at AS TIMESTAMPTZ) FROM _snapshot_frame",
                {"at": fetched_at},
            )
        con.execute(
            "INSERT INTO recon.snapshot_runs (fetched_at, available, note, contacts, orders, "
            "products, outcome) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [fetched_at, available, note, counts["contact"], counts["order"], counts["product"],
             outcome],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_snapshot_frame")
    con.execute(
        "COMMENT ON TABLE recon.ometria_snapshot IS 'What Ometria holds, read back from its API "
        "(contacts of our collection, orders, products): one row per record, payload = the JSON "
        "Ometria returned. Replaced on every read.'"
    )
    return counts


def latest_snapshot_run(con: duckdb.DuckDBPyConnection) -> dict | None:
    """The latest read-back: fetched_at, available, outcome, note (None if never tried)."""
    if not table_exists(con, "recon", "snapshot_runs"):
        return None
    has_outcome = bool(con.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'recon' "
        "AND table_name = 'snapshot_runs' AND column_name = 'outcome'").fetchall()[0][0])
    rows = con.execute(
        f"SELECT fetched_at, available, {'outcome' if has_outcome else 'NULL'}, note "
        "FROM recon.snapshot_runs ORDER BY fetched_at DESC LIMIT 1").fetchall()
    if not rows:
        return None
    fetched_at, available, outcome, note = rows[0]
    if outcome is None:  # a row of an older version
        outcome = "read" if available else ("dry_run" if (note or "").startswith("dry run") else "unavailable")
    return {"fetched_at": fetched_at, "available": bool(available), "outcome": outcome, "note": note}


def snapshot_available(con: duckdb.DuckDBPyConnection) -> bool:
    if not table_exists(con, "recon", "snapshot_runs"):
        return False
    rows = con.execute(
        "SELECT available FROM recon.snapshot_runs ORDER BY fetched_at DESC LIMIT 1"
    ).fetchall()
    return bool(rows and rows[0][0])


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------
def _macros() -> list[str]:
    # How Ometria values an order payload, in one place (the views and SQL users share it).
    return [
        "CREATE OR REPLACE MACRO recon.amount(v) AS TRY_CAST(v AS DECIMAL(19,4))",
        "CREATE OR REPLACE MACRO recon.order_grand_total(p) AS "
        "recon.amount(json_extract_string(p, '$.grand_total'))",
        "CREATE OR REPLACE MACRO recon.order_refunded(p) AS coalesce(list_sum(list_transform("
        "json_extract_string(p, '$.lineitems[*].refunded'), lambda x: recon.amount(x))), 0)",
        "CREATE OR REPLACE MACRO recon.order_is_valid(p) AS "
        "coalesce(json_extract_string(p, '$.is_valid') <> 'false', true)",
        "CREATE OR REPLACE MACRO recon.order_net(p) AS CASE WHEN recon.order_is_valid(p) "
        "THEN recon.order_grand_total(p) - recon.order_refunded(p) ELSE 0 END",
        "CREATE OR REPLACE MACRO recon.order_day(p) AS "
        "TRY_CAST(substr(json_extract_string(p, '$.timestamp'), 1, 10) AS DATE)",
    ]


@dataclass
class ViewSpec:
    name: str
    comment: str
    sql: str
    needs: tuple[str, ...] = ()


def _view_specs(facts: MappingFacts, config: ChecksConfig, ledger_has_payload: bool) -> list[ViewSpec]:
    local = lit(facts.local_currency)
    tol = config.recon.money_tolerance
    types = text_list(facts.customer_card_types)
    cancelled = lit(facts.cancelled_status)
    sent_payload = "g.payload" if ledger_has_payload else "o.payload"
    sent_match = "" if ledger_has_payload else " AND g.payload_hash = o.payload_hash"
    ometria_records = " UNION ALL ".join(
        f"SELECT '{feed}' AS feed, record_type, CAST(id AS VARCHAR) AS id, sap_object, "
        f"CAST(sap_key AS VARCHAR) AS sap_key, payload_hash, held_back_reason FROM ometria.{feed}"
        for feed in ("contacts", "orders", "products", "stock")
    )
    doc_entities = "['order', 'order_line', 'credit_memo', 'credit_memo_line']"

    def sap_docs(table: str, sap_object: str, sign: int) -> str:
        return f"""
            SELECT '{sap_object}' AS sap_object, d."DocEntry" AS doc_entry, d."DocNum" AS doc_num,
                   CAST(d."CardCode" AS VARCHAR) AS card_code, CAST(d."DocDate" AS DATE) AS doc_date,
                   d."DocCurrency" AS sap_currency, cm.iso_code AS currency,
                   CASE WHEN coalesce(d."DocCurrency", {local}) = {local} THEN d."DocTotal"
                        ELSE d."DocTotalFc" END AS amount,
                   d."DocTotal" AS amount_local, {sign} AS sign
            FROM sap_raw.{table} d
            LEFT JOIN recon.currency_map cm ON cm.sap_code = coalesce(d."DocCurrency", {local})
            WHERE {live_document('d')}"""

    return [
        ViewSpec(
            "sap_documents",
            "SAP side: live sales orders (sign +1) and A/R credit memos (sign -1), cancelled and "
            "cancellation documents excluded. amount = document total in the document currency "
            "(DocTotalFc when not local), amount_local = DocTotal in local currency, currency = "
            "ISO code through the mapping (NULL when unmapped).",
            sap_docs("ordr", "ORDR", 1) + " UNION ALL " + sap_docs("orin", "ORIN", -1),
            needs=("sap_raw.ordr", "sap_raw.orin"),
        ),
        ViewSpec(
            "sent_orders",
            "Sent side: order payloads (orders and negative orders for credit memos) that the push "
            "ledger says Ometria accepted (status accepted, not dry run)" + ("" if ledger_has_payload else
            " in their current version (a changed, not yet acknowledged order is left out and "
            "shows in recon.stale_records)") + ". net = how Ometria values it: grand_total - "
            "refunded for valid orders, 0 for invalid (cancelled, fully refunded) ones.",
            f"""
            SELECT o.id, o.sap_object, CAST(o.sap_key AS VARCHAR) AS sap_key,
                   json_extract_string({sent_payload}, '$.customer.id') AS card_code,
                   json_extract_string({sent_payload}, '$.currency') AS currency,
                   json_extract_string({sent_payload}, '$.status') AS status,
                   recon.order_day({sent_payload}) AS day,
                   recon.order_grand_total({sent_payload}) AS grand_total,
                   recon.order_net({sent_payload}) AS net,
                   g.request_id, g.acknowledged_at
            FROM ometria.orders o
            JOIN ometria_push.ledger g ON g.feed = 'orders' AND g.id = CAST(o.id AS VARCHAR)
                 AND NOT coalesce(g.dry_run, false)
                 AND coalesce(g.status, 'accepted') = 'accepted'{sent_match}""",
            needs=("ometria.orders", "ometria_push.ledger"),
        ),
        ViewSpec(
            "ometria_orders",
            "Ometria side: orders read back from Ometria (recon.ometria_snapshot), valued like "
            "recon.sent_orders; sap_object from ometria.orders when the id is known there.",
            """
            SELECT s.id, x.sap_object, CAST(x.sap_key AS VARCHAR) AS sap_key,
                   json_extract_string(s.payload, '$.customer.id') AS card_code,
                   json_extract_string(s.payload, '$.currency') AS currency,
                   json_extract_string(s.payload, '$.status') AS status,
                   recon.order_day(s.payload) AS day,
                   recon.order_grand_total(s.payload) AS grand_total,
                   recon.order_net(s.payload) AS net, s.fetched_at
            FROM recon.ometria_snapshot s
            LEFT JOIN ometria.orders x ON CAST(x.id AS VARCHAR) = s.id
            WHERE s.record_type = 'order'""",
            needs=("recon.ometria_snapshot", "ometria.orders"),
        ),
        ViewSpec(
            "ometria_records",
            "Every Ometria-ready record of the four feeds (contacts, orders, products, stock) with "
            "its SAP source and current payload hash.",
            ometria_records,
            needs=("ometria.contacts", "ometria.orders", "ometria.products", "ometria.stock"),
        ),
        ViewSpec(
            "open_document_exceptions",
            "Open sync exceptions on sales orders, credit memos and their lines, with the "
            "customer (CardCode) and document date they concern. keeps_record_from_ometria: the "
            "exception means Ometria does not hold the document's current version, so it "
            "explains a reconciliation difference.",
            f"""
            WITH e AS (
                SELECT s.*, CASE WHEN s.entity IN ('order_line', 'credit_memo_line')
                                 THEN regexp_replace(s.record_key, '/[^/]*$', '')
                                 ELSE s.record_key END AS doc_key
                FROM ops.sync_exceptions s
                WHERE s.resolved_at IS NULL AND list_contains({doc_entities}, s.entity)
            )
            SELECT e.rule, e.entity, e.record_key, e.impact, e.detail,
                   list_contains({text_list(KEEPS_RECORD_FROM_OMETRIA)}, e.rule)
                     AS keeps_record_from_ometria,
                   CAST(coalesce(o."CardCode", m."CardCode") AS VARCHAR) AS card_code,
                   CAST(coalesce(o."DocDate", m."DocDate") AS DATE) AS doc_date,
                   CASE WHEN o."DocEntry" IS NOT NULL THEN 'ORDR' ELSE 'ORIN' END AS sap_object
            FROM e
            LEFT JOIN sap_raw.ordr o ON e.entity IN ('order', 'order_line')
                 AND CAST(o."DocEntry" AS VARCHAR) = e.doc_key
            LEFT JOIN sap_raw.orin m ON e.entity IN ('credit_memo', 'credit_memo_line')
                 AND CAST(m."DocEntry" AS VARCHAR) = e.doc_key""",
            needs=("ops.sync_exceptions", "sap_raw.ordr", "sap_raw.orin"),
        ),
        ViewSpec(
            "unacknowledged_orders",
            "Order records (orders and credit memos) whose current payload Ometria has not "
            "acknowledged yet (never sent, changed since, dry run only, or its request not yet "
            "confirmed): in flight.",
            """
            SELECT CAST(o.id AS VARCHAR) AS id, o.sap_object, CAST(o.sap_key AS VARCHAR) AS sap_key,
                   json_extract_string(o.payload, '$.customer.id') AS card_code,
                   recon.order_day(o.payload) AS day,
                   json_extract_string(o.payload, '$.currency') AS currency
            FROM ometria.orders o
            LEFT JOIN ometria_push.ledger g ON g.feed = 'orders' AND g.id = CAST(o.id AS VARCHAR)
            WHERE o.held_back_reason IS NULL
              AND (g.payload_hash IS DISTINCT FROM o.payload_hash OR coalesce(g.dry_run, false)
                   OR coalesce(g.status, 'accepted') IN ('pending', 'unconfirmed'))""",
            needs=("ometria.orders", "ometria_push.ledger"),
        ),
        ViewSpec(
            "customer_net_revenue",
            "Per customer (CardCode) and currency: SAP orders minus credit memos (document "
            "currency; sap_net_local in local currency), what the ledger says was sent, and what "
            "Ometria holds read back. status: agrees (to the penny), explained (open sync "
            "exceptions or unacknowledged changes on the customer's documents: see explanation), "
            "differs (nobody knows why: investigate).",
            f"""
            WITH sap AS (
                SELECT card_code, currency,
                       sum(CASE WHEN sign > 0 THEN amount ELSE 0 END) AS orders,
                       sum(CASE WHEN sign < 0 THEN amount ELSE 0 END) AS credit_memos,
                       sum(sign * amount) AS net, sum(sign * amount_local) AS net_local
                FROM recon.sap_documents GROUP BY ALL
            ), sent AS (
                SELECT card_code, currency, sum(net) AS net FROM recon.sent_orders GROUP BY ALL
            ), om AS (
                SELECT card_code, currency, sum(net) AS net FROM recon.ometria_orders GROUP BY ALL
            ), k AS (
                SELECT card_code, currency FROM sap UNION SELECT card_code, currency FROM sent
                UNION SELECT card_code, currency FROM om
            ), exc AS (
                SELECT card_code, count(*) AS n, string_agg(DISTINCT rule, ', ' ORDER BY rule) AS rules
                FROM recon.open_document_exceptions WHERE keeps_record_from_ometria GROUP BY 1
            ), pend AS (
                SELECT card_code, count(*) AS n FROM recon.unacknowledged_orders GROUP BY 1
            ), {LATEST_READ_OK}, j AS (
                SELECT k.card_code, k.currency,
                       CAST(coalesce(sap.orders, 0) AS DECIMAL(19,2)) AS sap_orders,
                       CAST(coalesce(sap.credit_memos, 0) AS DECIMAL(19,2)) AS sap_credit_memos,
                       CAST(coalesce(sap.net, 0) AS DECIMAL(19,2)) AS sap_net,
                       CAST(coalesce(sap.net_local, 0) AS DECIMAL(19,2)) AS sap_net_local,
                       CAST(coalesce(sent.net, 0) AS DECIMAL(19,2)) AS sent_net,
                       CASE WHEN snap.available THEN CAST(coalesce(om.net, 0) AS DECIMAL(19,2)) END
                         AS ometria_net,
                       coalesce(exc.n, 0) AS open_exceptions, exc.rules AS exception_rules,
                       coalesce(pend.n, 0) AS unacknowledged
                FROM k CROSS JOIN (SELECT ok AS available FROM read_ok) snap
                LEFT JOIN sap ON sap.card_code IS NOT DISTINCT FROM k.card_code
                     AND sap.currency IS NOT DISTINCT FROM k.currency
                LEFT JOIN sent ON sent.card_code IS NOT DISTINCT FROM k.card_code
                     AND sent.currency IS NOT DISTINCT FROM k.currency
                LEFT JOIN om ON om.card_code IS NOT DISTINCT FROM k.card_code
                     AND om.currency IS NOT DISTINCT FROM k.currency
                LEFT JOIN exc ON exc.card_code IS NOT DISTINCT FROM k.card_code
                LEFT JOIN pend ON pend.card_code IS NOT DISTINCT FROM k.card_code
            )
            SELECT card_code, currency, sap_orders, sap_credit_memos, sap_net, sap_net_local,
                   sent_net, ometria_net,
                   sent_net - sap_net AS sent_difference,
                   ometria_net - sap_net AS ometria_difference,
                   CASE WHEN abs(sent_net - sap_net) <= {tol}
                             AND (ometria_net IS NULL OR abs(ometria_net - sap_net) <= {tol})
                        THEN 'agrees'
                        WHEN open_exceptions > 0 OR unacknowledged > 0 THEN 'explained'
                        ELSE 'differs' END AS status,
                   concat_ws('; ',
                     CASE WHEN open_exceptions > 0
                          THEN open_exceptions || ' open exception(s): ' || exception_rules END,
                     CASE WHEN unacknowledged > 0
                          THEN unacknowledged || ' order record(s) not yet acknowledged by Ometria' END
                   ) AS explanation
            FROM j""",
            needs=("recon.sap_documents", "recon.sent_orders", "recon.ometria_orders",
                   "recon.open_document_exceptions", "recon.unacknowledged_orders",
                   "recon.snapshot_runs"),
        ),
        ViewSpec(
            "orders_by_day",
            "Per order day (company time) and currency: count and value of sales orders (not "
            "cancelled) in SAP, sent (acknowledged by Ometria) and held by Ometria. Credit memos "
            "are not counted here (see recon.customer_net_revenue). status as in "
            "customer_net_revenue.",
            f"""
            WITH sap AS (
                SELECT doc_date AS day, currency, count(*) AS n, sum(amount) AS value
                FROM recon.sap_documents WHERE sap_object = 'ORDR' GROUP BY ALL
            ), sent AS (
                SELECT day, currency, count(*) AS n, sum(grand_total) AS value
                FROM recon.sent_orders
                WHERE sap_object = 'ORDR' AND coalesce(status, '') <> {cancelled} GROUP BY ALL
            ), om AS (
                SELECT day, currency, count(*) AS n, sum(grand_total) AS value
                FROM recon.ometria_orders
                WHERE coalesce(sap_object, CASE WHEN grand_total < 0 THEN 'ORIN' ELSE 'ORDR' END) = 'ORDR'
                  AND coalesce(status, '') <> {cancelled}
                GROUP BY ALL
            ), k AS (
                SELECT day, currency FROM sap UNION SELECT day, currency FROM sent
                UNION SELECT day, currency FROM om
            ), exc AS (
                SELECT doc_date AS day, count(*) AS n,
                       string_agg(DISTINCT rule, ', ' ORDER BY rule) AS rules
                FROM recon.open_document_exceptions
                WHERE sap_object = 'ORDR' AND keeps_record_from_ometria GROUP BY 1
            ), pend AS (
                SELECT day, count(*) AS n FROM recon.unacknowledged_orders
                WHERE sap_object = 'ORDR' GROUP BY 1
            ), {LATEST_READ_OK}, j AS (
                SELECT k.day, k.currency,
                       coalesce(sap.n, 0) AS sap_orders,
                       CAST(coalesce(sap.value, 0) AS DECIMAL(19,2)) AS sap_value,
                       coalesce(sent.n, 0) AS sent_orders,
                       CAST(coalesce(sent.value, 0) AS DECIMAL(19,2)) AS sent_value,
                       CASE WHEN snap.available THEN coalesce(om.n, 0) END AS ometria_orders,
                       CASE WHEN snap.available THEN CAST(coalesce(om.value, 0) AS DECIMAL(19,2)) END
                         AS ometria_value,
                       coalesce(exc.n, 0) AS open_exceptions, exc.rules AS exception_rules,
                       coalesce(pend.n, 0) AS unacknowledged
                FROM k CROSS JOIN (SELECT ok AS available FROM read_ok) snap
                LEFT JOIN sap ON sap.day IS NOT DISTINCT FROM k.day
                     AND sap.currency IS NOT DISTINCT FROM k.currency
                LEFT JOIN sent ON sent.day IS NOT DISTINCT FROM k.day
                     AND sent.currency IS NOT DISTINCT FROM k.currency
                LEFT JOIN om ON om.day IS NOT DISTINCT FROM k.day
                     AND om.currency IS NOT DISTINCT FROM k.currency
                LEFT JOIN exc ON exc.day IS NOT DISTINCT FROM k.day
                LEFT JOIN pend ON pend.day IS NOT DISTINCT FROM k.day
            )
            SELECT day, currency, sap_orders, sap_value, sent_orders, sent_value,
                   ometria_orders, ometria_value,
                   sent_value - sap_value AS sent_difference,
                   ometria_value - sap_value AS ometria_difference,
                   CASE WHEN sent_orders = sap_orders AND abs(sent_value - sap_value) <= {tol}
                             AND (ometria_orders IS NULL OR (ometria_orders = sap_orders
                                  AND abs(ometria_value - sap_value) <= {tol}))
                        THEN 'agrees'
                        WHEN open_exceptions > 0 OR unacknowledged > 0 THEN 'explained'
                        ELSE 'differs' END AS status,
                   concat_ws('; ',
                     CASE WHEN open_exceptions > 0
                          THEN open_exceptions || ' open exception(s): ' || exception_rules END,
                     CASE WHEN unacknowledged > 0
                          THEN unacknowledged || ' order(s) not yet acknowledged by Ometria' END
                   ) AS explanation
            FROM j ORDER BY day, currency""",
            needs=("recon.sap_documents", "recon.sent_orders", "recon.ometria_orders",
                   "recon.open_document_exceptions", "recon.unacknowledged_orders"),
        ),
        ViewSpec(
            "missing_in_ometria",
            "Records SAP holds that Ometria does not (read back), one row each, with the reason: "
            "'held back' (failed a rule; see ops.sync_exceptions), 'rejected by Ometria', 'not "
            "sent yet', 'dry run only', 'not confirmed yet' (Ometria reported rejections in its "
            "request, not yet which), 'acknowledged but not in Ometria' (investigate), and "
            "'no Ometria-ready record' (the SAP record never became an Ometria record: "
            "investigate). Compared with Ometria only when the latest read-back reached it.",
            f"""
            WITH snap AS (SELECT DISTINCT record_type, id FROM recon.ometria_snapshot),
            {LATEST_READ_OK},
            rec AS (
                SELECT * FROM recon.ometria_records WHERE feed IN ('contacts', 'orders', 'products')
            )
            SELECT r.feed, r.record_type, r.id, r.sap_object, r.sap_key,
                   CASE WHEN r.held_back_reason IS NOT NULL THEN 'held back'
                        WHEN g.status = 'rejected' THEN 'rejected by Ometria'
                        WHEN g.id IS NULL THEN 'not sent yet'
                        WHEN coalesce(g.dry_run, false) THEN 'dry run only'
                        WHEN g.status IN ('pending', 'unconfirmed') THEN 'not confirmed yet'
                        ELSE 'acknowledged but not in Ometria' END AS reason,
                   coalesce(r.held_back_reason, g.error) AS detail,
                   g.acknowledged_at
            FROM rec r
            LEFT JOIN snap s ON s.record_type = r.record_type AND s.id = r.id
            LEFT JOIN ometria_push.ledger g ON g.feed = r.feed AND g.id = r.id
            WHERE s.id IS NULL AND (SELECT ok FROM read_ok)
            UNION ALL
            SELECT 'contacts', 'contact', NULL, 'OCRD', CAST(b."CardCode" AS VARCHAR),
                   'no Ometria-ready record', 'customer ' || coalesce(b."CardName", ''), NULL
            FROM sap_raw.ocrd b
            WHERE list_contains({types}, b."CardType") AND b."_deleted_at" IS NULL
              AND CAST(b."CardCode" AS VARCHAR) NOT IN (
                  SELECT sap_key FROM recon.ometria_records WHERE feed = 'contacts')
            UNION ALL
            SELECT 'orders', 'order', NULL, 'ORDR', CAST(d."DocEntry" AS VARCHAR),
                   'no Ometria-ready record', 'sales order ' || coalesce(CAST(d."DocNum" AS VARCHAR), ''), NULL
            FROM sap_raw.ordr d
            WHERE {not_cancellation('d')} AND CAST(d."DocEntry" AS VARCHAR) NOT IN (
                  SELECT sap_key FROM recon.ometria_records WHERE feed = 'orders' AND sap_object = 'ORDR')
            UNION ALL
            SELECT 'products', 'product', NULL, 'OITM', CAST(i."ItemCode" AS VARCHAR),
                   'no Ometria-ready record', 'item ' || coalesce(i."ItemName", ''), NULL
            FROM sap_raw.oitm i
            WHERE coalesce(i."SalesItem", 'tYES') = 'tYES' AND i."_deleted_at" IS NULL
              AND CAST(i."ItemCode" AS VARCHAR) NOT IN (
                  SELECT sap_key FROM recon.ometria_records WHERE feed = 'products')""",
            needs=("recon.ometria_snapshot", "recon.ometria_records", "ometria_push.ledger",
                   "sap_raw.ocrd", "sap_raw.ordr", "sap_raw.oitm", "recon.snapshot_runs"),
        ),
        ViewSpec(
            "extra_in_ometria",
            "Records Ometria holds (read back) that no current SAP record produces: 'deleted in "
            "SAP' (the business partner or item was deleted; decide whether to remove it in "
            "Ometria) or 'not from SAP' (another source, or an id from an older mapping). Empty when "
            "the latest read-back did not reach Ometria (dry run).",
            f"""
            WITH known AS (
                SELECT DISTINCT record_type, id FROM recon.ometria_records
                WHERE feed IN ('contacts', 'orders', 'products')
            ), {LATEST_READ_OK}
            SELECT s.record_type, s.id, s.fetched_at,
                   CASE WHEN (s.record_type = 'contact' AND EXISTS (
                                 SELECT 1 FROM sap_raw.ocrd b WHERE CAST(b."CardCode" AS VARCHAR) = s.id
                                 AND b."_deleted_at" IS NOT NULL))
                          OR (s.record_type = 'product' AND EXISTS (
                                 SELECT 1 FROM sap_raw.oitm i WHERE CAST(i."ItemCode" AS VARCHAR) = s.id
                                 AND i."_deleted_at" IS NOT NULL))
                        THEN 'deleted in SAP' ELSE 'not from SAP' END AS reason,
                   left(s.payload, 300) AS payload_start
            FROM recon.ometria_snapshot s
            ANTI JOIN known k ON k.record_type = s.record_type AND k.id = s.id
            WHERE (SELECT ok FROM read_ok)""",
            needs=("recon.ometria_snapshot", "recon.ometria_records", "sap_raw.ocrd", "sap_raw.oitm",
                   "recon.snapshot_runs"),
        ),
        ViewSpec(
            "stale_records",
            f"Drift: records whose current payload (SAP changed) Ometria has not acknowledged for "
            f"more than {config.recon.stale_after_hours:g} hours (recon.stale_after_hours in "
            "data/checks.yaml). changed_at = when this version first appeared.",
            stale_records_sql(
                "now()", config.recon.stale_after_hours,
                records="recon.ometria_records", ledger="ometria_push.ledger",
                versions="recon.payload_versions",
            ),
            needs=("recon.ometria_records", "ometria_push.ledger", "recon.payload_versions"),
        ),
    ]


def _relation_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    schema, _, rel = name.partition(".")
    if table_exists(con, schema, rel):
        return True
    return bool(con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE schema_name = ? AND view_name = ?", [schema, rel]
    ).fetchall()[0][0])


def _drop_relation(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop recon.<name> whether an earlier version left it as a view or a table."""
    kinds = con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = 'recon' "
        "AND table_name = ?", [name]).fetchall()
    if kinds:
        con.execute(f"DROP {'VIEW' if kinds[0][0] == 'VIEW' else 'TABLE'} recon.{name}")


def _has_column(con: duckdb.DuckDBPyConnection, schema: str, table: str, column: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "AND column_name = ?", [schema, table, column]).fetchall()[0][0])


@dataclass
class ViewsResult:
    created: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def create_recon_views(
    con: duckdb.DuckDBPyConnection, facts: MappingFacts, config: ChecksConfig
) -> ViewsResult:
    """(Re)create the `recon` macros, currency map and reconciliation tables (in dependency
    order); one whose inputs do not exist yet is skipped (and dropped, so nothing stale
    lingers) with the reason."""
    con.execute("CREATE SCHEMA IF NOT EXISTS recon")
    con.execute(SNAPSHOT_DDL)
    for sql in _macros():
        con.execute(sql)
    _write_currency_map(con, facts)
    ledger_has_payload = (table_exists(con, "ometria_push", "ledger")
                          and _has_column(con, "ometria_push", "ledger", "payload"))
    result = ViewsResult()
    for spec in _view_specs(facts, config, ledger_has_payload):
        missing = [n for n in spec.needs if not _relation_exists(con, n)]
        _drop_relation(con, spec.name)
        if missing:
            result.skipped[spec.name] = "needs " + ", ".join(missing)
            continue
        # Materialised, not a view: the checks and SQL users then read one consistent picture
        # as of this reconciliation, and a 1M-order comparison is computed once, not per query.
        con.execute(f"CREATE TABLE recon.{spec.name} AS {spec.sql}")
        con.execute(f"COMMENT ON TABLE recon.{spec.name} IS {lit(spec.comment)}")
        result.created.append(spec.name)
    return result


def _write_currency_map(con: duckdb.DuckDBPyConnection, facts: MappingFacts) -> None:
    codes = set(facts.currency_map) | {facts.local_currency}
    for table in ("ordr", "orin"):
        if table_exists(con, "sap_raw", table):
            codes |= {r[0] for r in con.execute(
                f'SELECT DISTINCT "DocCurrency" FROM sap_raw.{table} WHERE "DocCurrency" IS NOT NULL'
            ).fetchall()}
    rows = [(code, facts.iso_of(code)) for code in sorted(codes)]
    con.execute("CREATE OR REPLACE TABLE recon.currency_map (sap_code VARCHAR, iso_code VARCHAR)")
    con.executemany("INSERT INTO recon.currency_map VALUES (?, ?)", rows)
    con.execute(
        "COMMENT ON TABLE recon.currency_map IS 'SAP currency code -> ISO 4217 code as the "
        "mapping translates it (iso_code NULL = unmapped: such documents are held back).'"
    )


# ---------------------------------------------------------------------------------------------
# Summaries for the checks
# ---------------------------------------------------------------------------------------------
@dataclass
class ReconSummary:
    view: str
    counts: dict[str, int]
    totals: dict[str, Decimal | None]
    worst: pl.DataFrame

    @property
    def differs(self) -> int:
        return self.counts.get("differs", 0)

    @property
    def explained(self) -> int:
        return self.counts.get("explained", 0)


def summarise_status_view(
    con: duckdb.DuckDBPyConnection, view: str, total_columns: tuple[str, ...],
    order_by: str, limit: int = 10,
) -> ReconSummary:
    counts = dict(con.execute(f"SELECT status, count(*) FROM recon.{view} GROUP BY 1").fetchall())
    sums = ", ".join(f"sum({c})" for c in total_columns)
    row = con.execute(f"SELECT {sums} FROM recon.{view}").fetchall()[0]
    totals = dict(zip(total_columns, row, strict=True))
    worst = con.sql(
        f"SELECT * FROM recon.{view} WHERE status <> 'agrees' "
        f"ORDER BY status = 'differs' DESC, {order_by} LIMIT {int(limit)}"
    ).pl()
    return ReconSummary(view=view, counts={str(k): int(v) for k, v in counts.items()},
                        totals=totals, worst=worst)


def reason_counts(con: duckdb.DuckDBPyConnection, view: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in con.execute(
        f"SELECT reason, count(*) FROM recon.{view} GROUP BY 1 ORDER BY 2 DESC").fetchall()}


def markdown_table(frame: pl.DataFrame, columns: list[str] | None = None, max_chars: int = 120) -> str:
    """A small markdown table for check metadata (cells shortened, pipes escaped)."""
    if columns:
        frame = frame.select([c for c in columns if c in frame.columns])
    if frame.height == 0:
        return "_none_"
    head = "| " + " | ".join(frame.columns) + " |"
    sep = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = []
    for row in frame.iter_rows():
        cells = []
        for v in row:
            text = "" if v is None else str(v)
            text = text.replace("|", "\\|").replace("\n", " ")
            if len(text) > max_chars:
                text = text[: max_chars - 1] + "…"
            cells.append(text)
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])
