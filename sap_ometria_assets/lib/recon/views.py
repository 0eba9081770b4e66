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
`differs` otherwise: the recon checks fail only on `differs`. `view_specs` defines the tables;
lib/recon/build.py creates them.
"""

from __future__ import annotations

from sap_ometria_assets.lib.quality.checks_config import ChecksConfig, MappingFacts
from sap_ometria_assets.lib.quality.drift import stale_records_sql
from sap_ometria_assets.lib.quality.sql_fragments import live_document, not_cancellation
from sap_ometria_assets.lib.recon.sent import (
    ORDER_VALUES,
    RefreshSpec,
    ViewSpec,
    ometria_records_spec,
    order_parts,
    sent_orders_spec,
)
from sap_ometria_assets.lib.sync_exceptions.rule_ids import KEEPS_RECORD_FROM_OMETRIA
from sap_ometria_assets.lib.warehouse.sql import lit, text_list

# Compare with what Ometria holds only when the latest read-back reached it (not in dry run).
LATEST_READ_OK = """read_ok AS (
                SELECT coalesce((SELECT available FROM recon.snapshot_runs
                                 ORDER BY fetched_at DESC LIMIT 1), false) AS ok
            )"""


def _sides_joined(key: str) -> str:
    """The end of a status table's `j`: the open exceptions and unacknowledged changes, and the
    SAP, sent and Ometria sides joined to every (key, currency) in `k` (NULL keys match)."""
    return f"""coalesce(exc.n, 0) AS open_exceptions, exc.rules AS exception_rules,
                       coalesce(pend.n, 0) AS unacknowledged
                FROM k CROSS JOIN (SELECT ok AS available FROM read_ok) snap
                LEFT JOIN sap ON sap.{key} IS NOT DISTINCT FROM k.{key}
                     AND sap.currency IS NOT DISTINCT FROM k.currency
                LEFT JOIN sent ON sent.{key} IS NOT DISTINCT FROM k.{key}
                     AND sent.currency IS NOT DISTINCT FROM k.currency
                LEFT JOIN om ON om.{key} IS NOT DISTINCT FROM k.{key}
                     AND om.currency IS NOT DISTINCT FROM k.currency
                LEFT JOIN exc ON exc.{key} IS NOT DISTINCT FROM k.{key}
                LEFT JOIN pend ON pend.{key} IS NOT DISTINCT FROM k.{key}"""


def view_specs(facts: MappingFacts, config: ChecksConfig, ledger_has_payload: bool,
               documents_hashed: bool = False) -> list[ViewSpec]:
    """The recon tables in dependency order. `ledger_has_payload`: the push ledger keeps each
    acknowledged payload; `documents_hashed`: sap_raw.ordr and orin carry the landing's
    `_row_hash`, so recon.sap_documents can be refreshed by it instead of rebuilt."""
    local = lit(facts.local_currency)
    tol = config.recon.money_tolerance
    types = text_list(facts.customer_card_types)
    cancelled = lit(facts.cancelled_status)
    doc_entities = "['order', 'order_line', 'credit_memo', 'credit_memo_line']"
    row_hash = 'd."_row_hash"' if documents_hashed else "NULL::VARCHAR"

    def sap_docs(table: str, sap_object: str, sign: int) -> str:
        return f"""
            SELECT '{sap_object}' AS sap_object, d."DocEntry" AS doc_entry, d."DocNum" AS doc_num,
                   CAST(d."CardCode" AS VARCHAR) AS card_code, CAST(d."DocDate" AS DATE) AS doc_date,
                   d."DocCurrency" AS sap_currency, cm.iso_code AS currency,
                   CASE WHEN coalesce(d."DocCurrency", {local}) = {local} THEN d."DocTotal"
                        ELSE d."DocTotalFc" END AS amount,
                   d."DocTotal" AS amount_local, {sign} AS sign, {row_hash} AS row_hash
            FROM sap_raw.{table} d
            LEFT JOIN recon.currency_map cm ON cm.sap_code = coalesce(d."DocCurrency", {local})
            WHERE {live_document('d')}"""

    documents = sap_docs("ordr", "ORDR", 1) + " UNION ALL " + sap_docs("orin", "ORIN", -1)
    return [
        ViewSpec(
            "sap_documents",
            "SAP side: live sales orders (sign +1) and A/R credit memos (sign -1), cancelled and "
            "cancellation documents excluded. amount = document total in the document currency "
            "(DocTotalFc when not local), amount_local = DocTotal in local currency, currency = "
            "ISO code through the mapping (NULL when unmapped). row_hash = the landed document's "
            "content hash (sap_raw._row_hash).",
            documents,
            needs=("sap_raw.ordr", "sap_raw.orin"),
            # a document's row follows from its landed content (row_hash) and currency mapping
            refresh=RefreshSpec(
                ("sap_object", "doc_entry", "row_hash", "currency"),
                f"SELECT sap_object, doc_entry, row_hash, currency FROM ({documents})",
                lambda rel: f"SELECT d.* FROM ({documents}) d SEMI JOIN {rel} n "
                            "ON n.sap_object = d.sap_object AND n.doc_entry = d.doc_entry",
            ) if documents_hashed else None,
        ),
        sent_orders_spec(ledger_has_payload),
        ViewSpec(
            "ometria_orders",
            "Ometria side: orders read back from Ometria (recon.ometria_snapshot), valued like "
            "recon.sent_orders; sap_object from ometria.orders when the id is known there.",
            f"""
            SELECT id, sap_object, sap_key, {ORDER_VALUES}, fetched_at
            FROM (SELECT s.id, x.sap_object, CAST(x.sap_key AS VARCHAR) AS sap_key,
                         {order_parts("s.payload")}, s.fetched_at
                  FROM recon.ometria_snapshot s
                  LEFT JOIN ometria.orders x ON CAST(x.id AS VARCHAR) = s.id
                  WHERE s.record_type = 'order')""",
            needs=("recon.ometria_snapshot", "ometria.orders"),
        ),
        ometria_records_spec(),
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
            -- one equality per join: duckdb 1.5 plans `entity IN (...) AND key = key` as a nested loop
            LEFT JOIN sap_raw.ordr o ON CAST(o."DocEntry" AS VARCHAR)
                 = CASE WHEN e.entity IN ('order', 'order_line') THEN e.doc_key END
            LEFT JOIN sap_raw.orin m ON CAST(m."DocEntry" AS VARCHAR)
                 = CASE WHEN e.entity IN ('credit_memo', 'credit_memo_line') THEN e.doc_key END""",
            needs=("ops.sync_exceptions", "sap_raw.ordr", "sap_raw.orin"),
        ),
        ViewSpec(
            "unacknowledged_orders",
            "Order records (orders and credit memos) whose current payload Ometria has not "
            "acknowledged yet (never sent, changed since, dry run only, or its request not yet "
            "confirmed): in flight.",
            """
            WITH u AS (
                -- the records first, without their payloads (1 GB at x100, most acknowledged)
                SELECT o.rowid AS rid
                FROM ometria.orders o
                LEFT JOIN ometria_push.ledger g ON g.feed = 'orders' AND g.id = CAST(o.id AS VARCHAR)
                WHERE o.held_back_reason IS NULL
                  AND (g.payload_hash IS DISTINCT FROM o.payload_hash OR coalesce(g.dry_run, false)
                       OR coalesce(g.status, 'accepted') IN ('pending', 'unconfirmed'))
            )
            SELECT id, sap_object, sap_key, _j[1] AS card_code,
                   TRY_CAST(substr(_j[2], 1, 10) AS DATE) AS day, _j[3] AS currency
            FROM (SELECT CAST(o.id AS VARCHAR) AS id, o.sap_object, CAST(o.sap_key AS VARCHAR) AS sap_key,
                         json_extract_string(o.payload, ['$.customer.id', '$.timestamp', '$.currency']) AS _j
                  FROM u JOIN ometria.orders o ON o.rowid = u.rid)""",
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
                       recon.money(coalesce(sap.orders, 0)) AS sap_orders,
                       recon.money(coalesce(sap.credit_memos, 0)) AS sap_credit_memos,
                       recon.money(coalesce(sap.net, 0)) AS sap_net,
                       recon.money(coalesce(sap.net_local, 0)) AS sap_net_local,
                       recon.money(coalesce(sent.net, 0)) AS sent_net,
                       CASE WHEN snap.available THEN recon.money(coalesce(om.net, 0)) END
                         AS ometria_net,
                       {_sides_joined('card_code')}
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
                       recon.money(coalesce(sap.value, 0)) AS sap_value,
                       coalesce(sent.n, 0) AS sent_orders,
                       recon.money(coalesce(sent.value, 0)) AS sent_value,
                       CASE WHEN snap.available THEN coalesce(om.n, 0) END AS ometria_orders,
                       CASE WHEN snap.available THEN recon.money(coalesce(om.value, 0)) END
                         AS ometria_value,
                       {_sides_joined('day')}
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
