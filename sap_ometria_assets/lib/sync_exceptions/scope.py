"""Evaluating a document-local rule on the documents that changed, not on all of them.

A rule is document-local when whether it flags a sales order or credit memo (and what it says,
and the money at stake) follows from that document's own landed rows only: header, lines,
expenses, and the checks settings. `order_total_mismatch` is one (a 1M-order company spends
0.8 s an hour re-adding every order's lines). Such a rule lists its documents in `Rule.scope`
(entity, header table, child tables).

An evaluation of such a rule reads the documents landed since its previous evaluation
(`_landed_at` after the newest one it saw then: a landing writes a table's rows in one
transaction with one landing time, and the warehouse has one writer at a time), through temp views restricted to them
(`RuleContext.src`), and carries the rule's open exceptions on the other documents over as
they are: their rows did not change, so neither would their verdict. The merge then sees what
a full evaluation would have fired. It is evaluated in full instead when it never was, when
its SQL (the checks settings) changed, when its last full evaluation is older than the full
pass (`SAP_OMETRIA_FULL_PASS_HOURS`, default 24: nightly), or when the register was reset; the
state is in `ops.exception_scope`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import duckdb

from sap_ometria_assets.lib.sap.tables import LANDED_AT
from sap_ometria_assets.lib.sync_exceptions.rule import Rule, RuleContext
from sap_ometria_assets.lib.warehouse.sql import lit

SCOPE_DDL = """
CREATE TABLE IF NOT EXISTS ops.exception_scope (
    rule VARCHAR NOT NULL,  -- Rule id (a document-local rule, see lib/sync_exceptions/scope.py)
    fingerprint VARCHAR NOT NULL,  -- Hash of the rule's SQL as last evaluated (the checks settings it used)
    watermark TIMESTAMPTZ,  -- Newest _landed_at of the rule's tables when it was last evaluated
    full_at TIMESTAMPTZ NOT NULL  -- When it was last evaluated on every document (UTC)
)"""
SCOPE_COMMENT = ("Document-local exception rules evaluated on the documents landed since their "
                 "last evaluation; delete a rule's row to evaluate it on every document next time.")

# The helper views on a header that rules read besides the raw tables.
_LIVE_VIEWS = {"ordr": "x_live_orders", "orin": "x_live_memos"}


@dataclass
class ScopedRun:
    """How a document-local rule is evaluated this time: `keys` None = on every document."""

    fingerprint: str
    watermark: datetime | None
    full_at: datetime
    keys: dict[str, str] | None = None  # entity -> temp table of its changed DocEntries
    reason: str = ""

    @property
    def scoped(self) -> bool:
        return self.keys is not None


def _fingerprint(rule: Rule, ctx: RuleContext) -> str:
    return hashlib.sha256(rule.sql(ctx).encode()).hexdigest()[:16]


def _tables(rule: Rule) -> list[str]:
    return [t for _, header, children in rule.scope for t in (header, *children)]


def plan_run(con: duckdb.DuckDBPyConnection, rule: Rule, ctx: RuleContext, now: datetime,
             full_pass_hours: float | None, register_reset: bool) -> ScopedRun:
    """Decide, and for a scoped run create the temp tables of changed documents and point
    `ctx.sources` at views restricted to them. Call `finish` after the rule ran."""
    con.execute(SCOPE_DDL)
    con.execute(f"COMMENT ON TABLE ops.exception_scope IS {lit(SCOPE_COMMENT)}")
    fingerprint = _fingerprint(rule, ctx)
    # read before the rule runs: a document landed while it runs is caught next time
    watermark = con.execute("SELECT max(w) FROM (" + " UNION ALL ".join(
        f"SELECT max({LANDED_AT}) AS w FROM raw_{t}" for t in _tables(rule)) + ")").fetchall()[0][0]
    full = ScopedRun(fingerprint, watermark, now)
    if register_reset:
        con.execute("DELETE FROM ops.exception_scope WHERE rule = ?", [rule.id])
        return full
    rows = con.execute("SELECT fingerprint, watermark, full_at FROM ops.exception_scope WHERE rule = ?",
                       [rule.id]).fetchall()
    if not rows or rows[0][0] != fingerprint or rows[0][1] is None:
        return full
    _, since, full_at = rows[0]
    if full_pass_hours and (now - full_at).total_seconds() / 3600 >= full_pass_hours:
        return full
    keys: dict[str, str] = {}
    changed = 0
    for entity, header, children in rule.scope:
        temp = f"_scope_{rule.id}_{entity}"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {temp} AS " + " UNION ".join(
            f'SELECT "DocEntry" AS entry FROM raw_{t} WHERE {LANDED_AT} > $since'
            for t in (header, *children)), {"since": since})
        changed += con.execute(f"SELECT count(*) FROM {temp}").fetchall()[0][0]
        keys[entity] = temp
        for t in (header, *children):
            _restrict(con, ctx, f"raw_{t}", temp)
        if header in _LIVE_VIEWS:
            _restrict(con, ctx, _LIVE_VIEWS[header], temp)
    return ScopedRun(fingerprint, watermark, full_at, keys,
                     f"evaluated on the {changed:,} documents landed since its last evaluation "
                     "(every document at the full pass)")


def _restrict(con: duckdb.DuckDBPyConnection, ctx: RuleContext, view: str, keys: str) -> None:
    scoped = f"_scoped_{view}"
    con.execute(f'CREATE OR REPLACE TEMP VIEW {scoped} AS SELECT * FROM {view} '
                f'WHERE "DocEntry" IN (SELECT entry FROM {keys})')
    ctx.sources[view] = scoped


def carry_unchanged(con: duckdb.DuckDBPyConnection, rule: Rule, run: ScopedRun) -> int:
    """Into `_fired`: the rule's open exceptions on documents outside the scope, as stored."""
    if run.keys is None:
        return 0
    outside = " AND ".join(
        f"NOT (s.entity = {lit(entity)} AND TRY_CAST(s.record_key AS BIGINT) IN (SELECT entry FROM {temp}))"
        for entity, temp in run.keys.items())
    return con.execute(f"""
        INSERT INTO _fired SELECT s.rule, s.entity, s.record_key, s.detail, s.impact
        FROM ops.sync_exceptions s
        WHERE s.rule = {lit(rule.id)} AND s.resolved_at IS NULL AND {outside}""").fetchall()[0][0]


def finish(con: duckdb.DuckDBPyConnection, rule: Rule, ctx: RuleContext, run: ScopedRun | None,
           evaluated: bool) -> None:
    """Record the run (evaluated) or forget the rule's state (failed, skipped: full next time),
    and point `ctx` back at the whole tables."""
    ctx.sources.clear()
    if run is None:
        return
    for temp in (run.keys or {}).values():
        con.execute(f"DROP TABLE IF EXISTS temp.{temp}")
    con.execute("DELETE FROM ops.exception_scope WHERE rule = ?", [rule.id])
    if evaluated:
        con.execute("INSERT INTO ops.exception_scope VALUES (?, ?, ?, ?)",
                    [rule.id, run.fingerprint, run.watermark, run.full_at])
