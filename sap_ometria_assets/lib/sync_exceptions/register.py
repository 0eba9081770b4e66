"""Evaluating the sync-exception rules and keeping `ops.sync_exceptions` up to date.

`evaluate_exceptions()` runs every rule (lib/sync_exceptions/catalogue.py) over the source views
(lib/sync_exceptions/sources.py) and merges what fired, in one transaction:

- a record the rule flags for the first time gets a row with `first_seen = last_seen = now`;
- a record still flagged keeps its `first_seen` and gets `last_seen = now`;
- a record no longer flagged gets `resolved_at = now`; if it is flagged again later the same row
  reopens (`resolved_at` back to NULL, `first_seen` unchanged).

`impact` is the money at stake in local currency (GBP for the demo company): the customer's net
revenue (orders minus credit memos) for customer rules, the document total for order and credit
memo rules, the line's gross total for line rules, the value of the missing stock for stock rules,
0 where no money applies; each rule's description states its one meaning (`Rule.impact`,
`IMPACT_MEANINGS` in rule.py), and money of different meanings is never added up. Each evaluation also appends one row per rule to
`ops.exception_history`, so a trend per rule can be read over time (see `lib/quality/drift.py`).
A rule whose tables are missing is skipped and one whose SQL fails is reported as failed; neither
touches that rule's open exceptions. A document-local rule may read only the documents landed
since its last evaluation, its other open exceptions carried as they are (lib/sync_exceptions/
scope.py). `open_exceptions()` reads the open ones back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import duckdb

from sap_ometria_assets.lib.quality.checks_config import (
    ChecksConfig,
    MappingFacts,
    get_checks_config,
    mapping_facts,
)
from sap_ometria_assets.lib.quality.drift import track_pending_changes
from sap_ometria_assets.lib.quality.sql_fragments import live_document
from sap_ometria_assets.lib.sync_exceptions.catalogue import RULES, RULES_BY_ID
from sap_ometria_assets.lib.sync_exceptions.rule import NotEvaluable, Rule, RuleContext
from sap_ometria_assets.lib.sync_exceptions.rule_ids import HOLD_BACK_RULES, LAST_RULE
from sap_ometria_assets.lib.sync_exceptions.scope import carry_unchanged, finish, plan_run
from sap_ometria_assets.lib.sync_exceptions.sources import prepare_sources
from sap_ometria_assets.lib.warehouse.sql import lit, table_exists, transaction

# Line and stock keys are "<parent key>/<line>"; the root is the record Ometria receives.
ROOT_ENTITY_SQL = """CASE entity WHEN 'order_line' THEN 'order'
    WHEN 'credit_memo_line' THEN 'credit_memo' ELSE entity END"""
ROOT_KEY_SQL = """CASE WHEN entity IN ('order_line', 'credit_memo_line', 'stock')
    THEN regexp_replace(record_key, '/[^/]*$', '') ELSE record_key END"""

EXCEPTIONS_DDL = """
CREATE TABLE IF NOT EXISTS ops.sync_exceptions (
    rule VARCHAR NOT NULL,  -- Rule id: what is wrong (RULES in lib/sync_exceptions/catalogue.py, explained in docs/operations.md)
    entity VARCHAR NOT NULL,  -- Kind of SAP record: contact, order, order_line, credit_memo, credit_memo_line, product, stock
    record_key VARCHAR NOT NULL,  -- SAP key of the record: CardCode, DocEntry, DocEntry/LineNum, ItemCode, ItemCode/WarehouseCode
    severity VARCHAR NOT NULL,  -- WARN or ERROR
    owner VARCHAR NOT NULL,  -- Who fixes it: marketing, finance or ops
    detail VARCHAR,  -- What is wrong with this record, in words
    impact DECIMAL(19,2) NOT NULL,  -- Money at stake, in currency (what it means is in the rule's description)
    currency VARCHAR NOT NULL,  -- Currency of impact (the company currency)
    first_seen TIMESTAMPTZ NOT NULL,  -- First evaluation that flagged it (UTC)
    last_seen TIMESTAMPTZ NOT NULL,  -- Latest evaluation that flagged it (UTC)
    resolved_at TIMESTAMPTZ,  -- When it stopped firing (empty: still open)
    fix_hint VARCHAR  -- How to fix it, in words
);
CREATE TABLE IF NOT EXISTS ops.exception_history (
    run_at TIMESTAMPTZ NOT NULL,  -- When the rules were evaluated (UTC)
    rule VARCHAR NOT NULL,  -- Rule id
    open_count BIGINT NOT NULL,  -- Open exceptions of the rule after this evaluation
    new_count BIGINT NOT NULL,  -- Exceptions that appeared in this evaluation
    resolved_count BIGINT NOT NULL,  -- Exceptions resolved in this evaluation
    impact DECIMAL(19,2) NOT NULL,  -- Money at stake of the open exceptions, in the company currency
    population BIGINT  -- Records the rule looks at: open_count / population is the exception rate
);
"""

TABLE_COMMENTS = {
    "ops.sync_exceptions": (
        "One row per SAP record a sync rule flags (rule, entity, record_key). Open while "
        "resolved_at IS NULL. impact = money at stake in local currency. See RULES in "
        "sap_ometria_assets/lib/sync_exceptions/catalogue.py or docs for what each rule means and how to fix it."
    ),
    "ops.exception_history": (
        "One row per rule per evaluation: open, new and resolved exceptions and the open impact; "
        "population = records the rule looks at, so open_count/population is the exception rate."
    ),
}


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

def _covered_filter(ctx: RuleContext) -> None:
    """Held-back rows already explained by a hold-back rule firing on the same record are dropped."""
    ctx.con.execute(f"""
        DELETE FROM _fired f
        WHERE f.rule = {lit(LAST_RULE)} AND EXISTS (
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
        -- Each join on one equality (the key, NULL for other entities): with `entity = ... AND
        -- key = key` in ON, duckdb 1.5 plans nested-loop joins (13 s of 20 s at x10, 2,700 rows).
        LEFT JOIN x_customer_net cn ON cn.card_code = CASE WHEN f.entity = 'contact' THEN f.record_key END
        LEFT JOIN raw_ordr o ON CAST(o."DocEntry" AS VARCHAR) = CASE WHEN f.entity = 'order' THEN f.record_key END
        LEFT JOIN raw_orin m ON CAST(m."DocEntry" AS VARCHAR) = CASE WHEN f.entity = 'credit_memo' THEN f.record_key END
        LEFT JOIN ({_flagged_lines('raw_rdr1', 'order_line')}) ol
             ON CAST(ol."DocEntry" AS VARCHAR) || '/' || CAST(ol."LineNum" AS VARCHAR)
             = CASE WHEN f.entity = 'order_line' THEN f.record_key END
        LEFT JOIN ({_flagged_lines('raw_rin1', 'credit_memo_line')}) ml
             ON CAST(ml."DocEntry" AS VARCHAR) || '/' || CAST(ml."LineNum" AS VARCHAR)
             = CASE WHEN f.entity = 'credit_memo_line' THEN f.record_key END
    """)


def _flagged_lines(lines: str, entity: str) -> str:
    # Only the lines of flagged documents get their "<DocEntry>/<LineNum>" key built: building
    # it for all 3.1M order lines cost more than the rest of the impact. A line's key starts
    # with its integer DocEntry, so no line that could match is left out.
    return (f'SELECT "DocEntry", "LineNum", "GrossTotal" FROM {lines} WHERE "DocEntry" IN ('
            f"SELECT TRY_CAST(split_part(record_key, '/', 1) AS BIGINT) FROM _fired "
            f"WHERE entity = {lit(entity)})")


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
    full_pass_hours: float | None = None,
) -> EvaluationResult:
    """Run every rule and bring `ops.sync_exceptions` / `ops.exception_history` up to date.

    With `full_pass_hours`, a document-local rule (`Rule.scope`) is evaluated on the documents
    landed since its previous evaluation, and on every document when its last full evaluation
    is that old (lib/sync_exceptions/scope.py); without, every rule reads everything.

    `now` is passed in (never read from the clock here) so tests control time. A rule whose
    tables are missing is skipped and a rule whose SQL fails is reported as failed; neither
    touches the state of that rule's existing exceptions.
    """
    config = config or get_checks_config()
    facts = facts or mapping_facts()
    register_reset = not table_exists(con, "ops", "sync_exceptions")
    ensure_tables(con)
    track_pending_changes(con, now)
    present = prepare_sources(con, facts)
    ctx = RuleContext(con=con, config=config, facts=facts, now=now, present=present)
    con.execute(_FIRED_DDL)

    outcomes: dict[str, RuleOutcome] = {}
    populations: dict[str, int] = {}
    ordered = [r for r in rules if r.id != LAST_RULE] + [r for r in rules if r.id == LAST_RULE]
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
        run = None
        try:
            if rule.scope and full_pass_hours is not None:
                run = plan_run(con, rule, ctx, now, full_pass_hours, register_reset)
            fired = _run_rule(ctx, rule)
            if run is not None and run.scoped:
                fired += carry_unchanged(con, rule, run)
            if rule.id == LAST_RULE:
                _covered_filter(ctx)
                fired = con.execute(
                    "SELECT count(*) FROM _fired WHERE rule = ?", [rule.id]
                ).fetchall()[0][0]
            population = None
            if rule.population_sql:
                if rule.population_sql not in populations:
                    populations[rule.population_sql] = con.execute(rule.population_sql).fetchall()[0][0]
                population = populations[rule.population_sql]
            outcomes[rule.id] = RuleOutcome(rule.id, "evaluated", fired=fired, population=population,
                                            reason=run.reason if run is not None and run.scoped else None)
        except NotEvaluable as exc:
            outcomes[rule.id] = RuleOutcome(rule.id, "skipped", reason=str(exc))
        except duckdb.Error as exc:
            con.execute("DELETE FROM _fired WHERE rule = ?", [rule.id])
            outcomes[rule.id] = RuleOutcome(
                rule.id, "failed", reason=f"{type(exc).__name__}: {_one_line(str(exc))}"
            )
        finally:
            finish(con, rule, ctx, run, outcomes.get(rule.id, RuleOutcome(rule.id, "failed")).status
                   == "evaluated")

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
    with transaction(con):
        new_counts = dict(con.execute("""
            SELECT f.rule, count(*) FROM _fired_final f
            LEFT JOIN ops.sync_exceptions s
                   ON s.rule = f.rule AND s.entity = f.entity AND s.record_key = f.record_key
            WHERE s.rule IS NULL OR s.resolved_at IS NOT NULL
            GROUP BY 1""").fetchall())
        # last_seen on every row still flagged, the other columns only where they change: an
        # UPDATE rewrites each column it sets, and rewriting eight columns of every open
        # exception cost 0.33 s a sync at x100 (25,000 rows) for a few that change.
        con.execute("""
            UPDATE ops.sync_exceptions AS s SET last_seen = $now FROM _fired_final f
            WHERE s.rule = f.rule AND s.entity = f.entity AND s.record_key = f.record_key""",
            {"now": now})
        con.execute("""
            UPDATE ops.sync_exceptions AS s
            SET resolved_at = NULL, detail = f.detail, impact = f.impact,
                currency = $cur, severity = f.severity, owner = f.owner, fix_hint = f.fix_hint
            FROM (SELECT f.*, m.severity, m.owner, m.fix_hint
                  FROM _fired_final f JOIN _rule_meta m ON m.rule = f.rule) AS f
            WHERE s.rule = f.rule AND s.entity = f.entity AND s.record_key = f.record_key
              AND (s.resolved_at IS NOT NULL OR s.detail IS DISTINCT FROM f.detail
                   OR s.impact IS DISTINCT FROM f.impact OR s.currency IS DISTINCT FROM $cur
                   OR s.severity IS DISTINCT FROM f.severity OR s.owner IS DISTINCT FROM f.owner
                   OR s.fix_hint IS DISTINCT FROM f.fix_hint)""",
            {"cur": local})
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
