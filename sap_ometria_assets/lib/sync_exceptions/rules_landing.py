"""Sync-exception rules on how SAP's data arrives (landing), not on one business object.

User-defined fields SAP declares but the Service Layer does not serve yet, UDF values outside
the values SAP allows, deletion scans refused for a person to confirm, and records dated in the
future (the incremental watermark does not follow them).
"""

from __future__ import annotations

from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.landing.plan import future_limit
from sap_ometria_assets.lib.ometria.mapping import MappingError, load_mapping, mapped_udfs
from sap_ometria_assets.lib.quality.sql_fragments import not_cancellation
from sap_ometria_assets.lib.sap.tables import SAP_TABLES, TABLES_BY_NAME, table_key
from sap_ometria_assets.lib.sync_exceptions.rule import NotEvaluable, Rule, RuleContext
from sap_ometria_assets.lib.sync_exceptions.sources import POP_CUSTOMERS
from sap_ometria_assets.lib.warehouse.sql import lit, q, table_columns, table_exists


_UDF_ENTITY = {
    "ocrd": "contact", "ordr": "order", "rdr1": "order_line", "orin": "credit_memo",
    "rin1": "credit_memo_line", "oitm": "product", "oitw": "stock",
}


def _udf_not_served(ctx: RuleContext) -> str:
    """Mapped UDFs SAP declares (CUFD) that the landed table does not have: SAP lists a new
    UDF in UserFieldsMD before the Service Layer serves it (until SL restarts)."""
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
    parts += _udf_json_containers(ctx, set(declared))
    if not parts:
        return "SELECT NULL::VARCHAR AS entity, NULL::VARCHAR AS record_key, NULL::VARCHAR AS detail WHERE false"
    return " UNION ALL ".join(parts)


def _udf_json_containers(ctx: RuleContext, declared: set) -> list[str]:
    """A JSON object or array in a UDF without valid values: the transforms leave it out of the
    record (transforms/udfs.py), so it is listed here."""
    con, parts = ctx.con, []
    for sap_table, name in con.execute(
            'SELECT DISTINCT "TableName", "Name" FROM raw_cufd WHERE "Name" IS NOT NULL ORDER BY ALL').fetchall():
        table, column = str(sap_table).lower(), f"U_{name}"
        if ((sap_table, name) in declared or table not in _UDF_ENTITY or f"sap_raw.{table}" not in ctx.present
                or column.lower() not in {c.lower() for c in table_columns(con, "sap_raw", table)}):
            continue
        v = f"trim(CAST(t.{q(column)} AS VARCHAR))"
        key_expr = " || '/' || ".join(f'CAST(t.{q(k)} AS VARCHAR)' for k in table_key(table))
        cancelled = (f" AND {not_cancellation('t')}"
                     if table in TABLES_BY_NAME and TABLES_BY_NAME[table].is_document else "")
        parts.append(f"""SELECT '{_UDF_ENTITY[table]}' AS entity, {key_expr} AS record_key,
               '{table.upper()}.{column} holds a JSON object or array, not a single value: it is not sent' AS detail
        FROM raw_{table} t WHERE t."_deleted_at" IS NULL{cancelled} AND left({v}, 1) IN ('{{', '[') AND json_valid({v})""")
    return parts


def _deletion_scan_refused(ctx: RuleContext) -> str:
    if not table_exists(ctx.con, "sap_meta", "deletion_scan_refusals"):
        return "SELECT NULL AS record_key, NULL AS detail WHERE false"
    return """
        SELECT 'record' AS entity, table_name AS record_key,
               'Deletion scan of ' || entity_set || ' (sap_raw.' || table_name || ') refused on ' ||
               strftime(refused_at, '%Y-%m-%d %H:%M') || ': ' || reason AS detail
        FROM sap_meta.deletion_scan_refusals"""


def _future_update_date(ctx: RuleContext) -> str:
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


LANDING_RULES: tuple[Rule, ...] = (
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
        sql=_udf_value_not_allowed, requires=("sap_raw.cufd",), population_sql=POP_CUSTOMERS,
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
)
