"""The open sync exceptions per Ometria asset, judged against the thresholds in checks.yaml.

The checks on ometria/contacts, orders, products and stock (defs/ometria/checks.py) call
`summarise_for_asset()`: per rule the open exceptions of the entities that asset carries, their
impact, the rate per record and the outcome (WARN, ERROR or none), plus the ten open exceptions
with the biggest impact. `open_money()` gives the CLI's end summary: open exceptions per
owner, their money grouped by what it means, and the rules to look at first.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl

from sap_ometria_assets.lib.quality.checks_config import ChecksConfig, Severity, get_checks_config
from sap_ometria_assets.lib.sync_exceptions.catalogue import RULES_BY_ID
from sap_ometria_assets.lib.sync_exceptions.register import open_exceptions
from sap_ometria_assets.lib.sync_exceptions.rule import IMPACT_MEANINGS, impact_meaning
from sap_ometria_assets.lib.warehouse.sql import q, table_exists

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


@dataclass
class OpenMoney:
    """The open register for a person: counts per owner, money per owner and meaning, top rules."""

    currency: str
    by_owner: dict[str, int]
    # owner -> meaning label -> money; one meaning per figure, never summed across meanings
    money: dict[str, dict[str, float]]
    # the rules to look at first: rule, owner, open, {meaning label: money}, fix hint; ranked
    # by their biggest single-meaning figure (a rule on mixed records keeps its meanings apart)
    top: list[tuple[str, str, int, dict[str, float], str]]


def open_money(con: duckdb.DuckDBPyConnection, currency: str, top_n: int = 3) -> OpenMoney:
    """Open exceptions per owner with their money grouped by what it means (IMPACT_MEANINGS)."""
    if not table_exists(con, "ops", "sync_exceptions"):
        return OpenMoney(currency, {}, {}, [])
    rows = con.execute("""
        SELECT rule, entity, owner, count(*), coalesce(sum(impact), 0), any_value(fix_hint)
        FROM ops.sync_exceptions WHERE resolved_at IS NULL GROUP BY ALL""").fetchall()
    by_owner: dict[str, int] = {}
    money: dict[str, dict[str, float]] = {}
    per_rule: dict[str, list] = {}
    for rule_id, entity, owner, n, impact, fix in rows:
        rule = RULES_BY_ID.get(rule_id)
        meaning = IMPACT_MEANINGS[impact_meaning(rule.impact if rule else None, entity)][0]
        by_owner[owner] = by_owner.get(owner, 0) + int(n)
        if float(impact):
            owner_money = money.setdefault(owner, {})
            owner_money[meaning] = owner_money.get(meaning, 0.0) + float(impact)
        entry = per_rule.setdefault(rule_id, [rule_id, owner, 0, {}, fix or ""])
        entry[2] += int(n)
        if float(impact):
            entry[3][meaning] = entry[3].get(meaning, 0.0) + float(impact)
    top = sorted(per_rule.values(),
                 key=lambda e: (-max(e[3].values(), default=0.0), -e[2], e[0]))[:top_n]
    return OpenMoney(currency, by_owner, money, [tuple(e) for e in top])
