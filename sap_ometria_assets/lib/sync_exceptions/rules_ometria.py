"""Sync-exception rules on the Ometria side: records Ometria does not (yet) hold as SAP has them.

Records over Ometria's size limit, records Ometria rejected or refused, changes Ometria has not
acknowledged in time (drift), and records the transforms held back for any other reason.
"""

from __future__ import annotations

from sap_ometria_assets.lib.quality.drift import stale_records_sql
from sap_ometria_assets.lib.sync_exceptions.rule import Rule, RuleContext
from sap_ometria_assets.lib.sync_exceptions.sources import ANY_OMETRIA, POP_OMETRIA
from sap_ometria_assets.lib.warehouse.sql import lit, text_list

# The Ometria-ready tables say where each record comes from; this names the entity for people.
ENTITY_OF_SAP_OBJECT_SQL = """CASE upper(sap_object)
    WHEN 'OCRD' THEN 'contact' WHEN 'ORDR' THEN 'order' WHEN 'ORIN' THEN 'credit_memo'
    WHEN 'OITM' THEN 'product' WHEN 'OITW' THEN 'stock' ELSE 'record' END"""


def _record_too_large(ctx: RuleContext) -> str:
    limit = int(ctx.config.exceptions.ometria_record_limit_bytes)
    select = f"""
        SELECT {ENTITY_OF_SAP_OBJECT_SQL} AS entity, sap_key AS record_key,
               'The Ometria ' || coalesce(record_type, feed) || ' record ' || id || ' (' || feed ||
               ') is ' || payload_bytes || ' bytes, over Ometria''s limit of {limit} bytes a record,'
               || ' so it cannot be sent' AS detail
        FROM om_all"""
    # Payloads are measured only where the layer did not store their size: one OR filter would
    # read every payload (1.2M, 1 GB at x100) to find two records.
    return (f"{select} WHERE stored_bytes > {limit} UNION ALL "
            f"{select} WHERE stored_bytes IS NULL AND payload_bytes > {limit}")


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
    # Rows already explained by another firing rule are removed by the engine (_covered_filter
    # in register.py).
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


OMETRIA_RULES: tuple[Rule, ...] = (
    Rule(
        id="record_too_large", entity="record", severity="ERROR", owner="ops",
        title="Record over Ometria's size limit",
        description="The Ometria record built from this SAP record is larger than Ometria accepts "
        "(60 KB a record), usually an order with very many lines or very long texts. It cannot "
        "be sent.",
        fix_hint="Split the order in SAP or shorten long free-text fields; tell ops if it is a "
        "legitimate record so the mapping can leave fields out.",
        sql=_record_too_large, requires=(ANY_OMETRIA,), population_sql=POP_OMETRIA,
    ),
    Rule(
        id="ometria_rejected", entity="record", severity="ERROR", owner="ops",
        title="Record rejected by Ometria",
        description="Ometria accepted the push but then rejected this record during its own "
        "validation (reported on its errors endpoint). Ometria does not hold the current version.",
        fix_hint="Read the error message and path: usually a field value Ometria does not accept. "
        "Correct it in SAP (or the mapping) and the next sync re-sends the record.",
        sql=_ometria_rejected, requires=("ometria_push.ledger",), population_sql=POP_OMETRIA,
    ),
    Rule(
        id="ometria_stale", entity="record", severity="WARN", owner="ops",
        title="Change not acknowledged by Ometria (drift)",
        description="A record changed in SAP longer ago than the configured time, but Ometria has "
        "not acknowledged the new version: Ometria shows outdated data for it.",
        fix_hint="Check the last push runs and ometria_push.requests for failures (rate limits, "
        "authentication); re-run the push.",
        sql=_ometria_stale, requires=(ANY_OMETRIA, "recon.payload_versions"),
        population_sql=POP_OMETRIA,
    ),
    Rule(
        id="held_back_other", entity="record", severity="ERROR", owner="ops",
        title="Held back from Ometria for another reason",
        description="The record failed Ometria's rules when it was prepared and was kept back, "
        "for a reason no other rule explains (see detail). It is not in Ometria.",
        fix_hint="Read the reason in detail; correct the record in SAP or the mapping. Tell ops if "
        "the reason is unclear.",
        sql=_held_back_other, requires=(ANY_OMETRIA,), population_sql=POP_OMETRIA,
    ),
)
