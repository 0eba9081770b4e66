"""(Re)building the `recon` schema: the macros, the currency map and every reconciliation table.

`create_recon_views` creates the tables `view_specs` (lib/recon/views.py) defines, in dependency
order, each materialised with its comment; one whose inputs do not exist yet is skipped (and
dropped, so nothing stale lingers) with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import duckdb

from sap_ometria_assets.lib.quality.checks_config import ChecksConfig, MappingFacts
from sap_ometria_assets.lib.recon.snapshot import SNAPSHOT_DDL
from sap_ometria_assets.lib.recon.sent import ViewSpec
from sap_ometria_assets.lib.recon.views import view_specs
from sap_ometria_assets.lib.warehouse.refresh import (
    Refresh,
    definition_hash,
    full_pass_due,
    record_build,
    refresh_table,
)
from sap_ometria_assets.lib.warehouse.sql import has_column, lit, table_exists

def _macros() -> list[str]:
    # How Ometria values an order payload, in one place (the views and SQL users share it).
    return [
        # DECIMAL(18,4) first: duckdb 1.5 parses text into DECIMAL(19,4) (128-bit) ~50x slower
        # (5 s for 1M order totals); a value out of 18 digits falls through to the wide cast, so
        # every result is the same as TRY_CAST(v AS DECIMAL(19,4)).
        "CREATE OR REPLACE MACRO recon.amount(v) AS coalesce(CAST(TRY_CAST(v AS DECIMAL(18,4)) "
        "AS DECIMAL(19,4)), TRY_CAST(v AS DECIMAL(19,4)))",
        # A sum rounded to money, DECIMAL(19,2): through DECIMAL(18,6) first, since duckdb 1.5
        # rounds a 128-bit DECIMAL(38,x) sum to DECIMAL(19,2) ~40x slower (1.2 s of the 1.3 s
        # customer_net_revenue took at x100); a sum beyond 12 digits takes the direct cast, so
        # every result is CAST(v AS DECIMAL(19,2)).
        "CREATE OR REPLACE MACRO recon.money(v) AS coalesce(CAST(TRY_CAST(v AS DECIMAL(18,6)) "
        "AS DECIMAL(19,2)), CAST(v AS DECIMAL(19,2)))",
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



def _drop_relation(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop recon.<name> whether an earlier version left it as a view or a table."""
    kinds = con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = 'recon' "
        "AND table_name = ?", [name]).fetchall()
    if kinds:
        con.execute(f"DROP {'VIEW' if kinds[0][0] == 'VIEW' else 'TABLE'} recon.{name}")



@dataclass
class ViewsResult:
    created: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    # how each refreshable table was brought up to date (full build or refresh, rows changed)
    refreshes: dict[str, Refresh] = field(default_factory=dict)


def create_recon_views(
    con: duckdb.DuckDBPyConnection, facts: MappingFacts, config: ChecksConfig,
    now: datetime | None = None, full_pass_hours: float | None = None,
) -> ViewsResult:
    """(Re)create the `recon` macros, currency map and reconciliation tables (in dependency
    order); one whose inputs do not exist yet is skipped (and dropped, so nothing stale
    lingers) with the reason. The large tables with a refresh spec (lib/recon/sent.py) are
    refreshed by their differences unless a full pass is due (`full_pass_hours`)."""
    now = now or datetime.now(timezone.utc)
    con.execute("CREATE SCHEMA IF NOT EXISTS recon")
    con.execute(SNAPSHOT_DDL)
    for sql in _macros():
        con.execute(sql)
    _write_currency_map(con, facts)
    ledger_has_payload = (table_exists(con, "ometria_push", "ledger")
                          and has_column(con, "ometria_push", "ledger", "payload"))
    documents_hashed = all(has_column(con, "sap_raw", t, "_row_hash") for t in ("ordr", "orin"))
    result = ViewsResult()
    for spec in view_specs(facts, config, ledger_has_payload, documents_hashed):
        missing = [n for n in spec.needs if not table_exists(con, *n.split(".", 1))]
        if missing:
            _drop_relation(con, spec.name)
            result.skipped[spec.name] = "needs " + ", ".join(missing)
            continue
        if spec.refresh is not None:
            result.refreshes[spec.name] = _refresh_or_build(con, spec, now, full_pass_hours)
        else:
            _build(con, spec)
        result.created.append(spec.name)
    return result


def _build(con: duckdb.DuckDBPyConnection, spec: ViewSpec) -> int:
    _drop_relation(con, spec.name)
    # Materialised, not a view: the checks and SQL users then read one consistent picture
    # as of this reconciliation, and a 1M-order comparison is computed once, not per query.
    con.execute(f"CREATE TABLE recon.{spec.name} AS {spec.sql}")
    con.execute(f"COMMENT ON TABLE recon.{spec.name} IS {lit(spec.comment)}")
    return int(con.execute(f"SELECT count(*) FROM recon.{spec.name}").fetchall()[0][0])


def _refresh_or_build(con: duckdb.DuckDBPyConnection, spec: ViewSpec, now: datetime,
                      full_pass_hours: float | None) -> Refresh:
    refresh = spec.refresh
    assert refresh is not None
    definition = definition_hash(spec.sql, refresh.identity_sql, refresh.rows_sql("_r"),
                                 ",".join(refresh.identity))
    reason = full_pass_due(con, "recon", spec.name, definition, now, full_pass_hours)
    if reason is None:
        outcome = refresh_table(con, f"recon.{spec.name}", refresh.identity_sql,
                                refresh.identity, refresh.rows_sql)
    else:
        outcome = Refresh("full", None, _build(con, spec), reason)
    record_build(con, "recon", spec.name, definition, now, outcome)
    return outcome


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

