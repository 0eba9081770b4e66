"""What the health report shows, read from the warehouse in a handful of SQL queries.

Every section tolerates a table that does not exist yet (a first run, a dry run, a failed
read-back): the section then says "not available" instead of failing the report. Money is in
the company's local currency; amounts of different meanings (a rule's money at stake, a
customer's net revenue) are never added together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from sap_ometria_assets.lib.sync_exceptions.catalogue import RULES_BY_ID
from sap_ometria_assets.lib.warehouse.sql import table_exists

TREND_RUNS = 30


@dataclass
class RuleRow:
    rule: str
    title: str
    owner: str
    severity: str
    open: int
    impact: float
    meaning: str
    fix: str


@dataclass
class Facts:
    generated_at: datetime
    currency: str
    rules: list[RuleRow] = field(default_factory=list)
    owners: list[dict[str, Any]] = field(default_factory=list)
    recon: list[dict[str, Any]] = field(default_factory=list)
    recon_counts: dict[str, int | None] = field(default_factory=dict)
    read_back: dict[str, Any] | None = None
    trend: list[dict[str, Any]] = field(default_factory=list)
    freshness: list[dict[str, Any]] = field(default_factory=list)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _count(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> int | None:
    if not table_exists(con, schema, table):
        return None
    return int(con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchall()[0][0])


def gather(con: duckdb.DuckDBPyConnection, now: datetime, currency: str) -> Facts:
    """Everything the report shows, as of `now`."""
    facts = Facts(generated_at=now, currency=currency)
    if table_exists(con, "ops", "sync_exceptions"):
        for r in _rows(con, """
                SELECT rule, count(*) AS open, coalesce(sum(impact), 0) AS impact
                FROM ops.sync_exceptions WHERE resolved_at IS NULL
                GROUP BY rule ORDER BY impact DESC, open DESC, rule"""):
            rule = RULES_BY_ID.get(r["rule"])
            facts.rules.append(RuleRow(
                rule=r["rule"], title=rule.title if rule else r["rule"],
                owner=rule.owner if rule else "ops", severity=rule.severity if rule else "WARN",
                open=int(r["open"]), impact=float(r["impact"]),
                meaning=rule.description if rule else "", fix=rule.fix_hint if rule else ""))
    by_owner: dict[str, dict[str, Any]] = {}
    for row in facts.rules:
        o = by_owner.setdefault(row.owner, {"owner": row.owner, "open": 0, "rules": 0,
                                            "top": row.rule, "top_impact": row.impact})
        o["open"] += row.open
        o["rules"] += 1
    facts.owners = sorted(by_owner.values(), key=lambda o: (-o["top_impact"], o["owner"]))
    if table_exists(con, "recon", "customer_net_revenue"):
        facts.recon = _rows(con, """
            SELECT currency, count(*) AS customers,
                   sum(sap_net) AS sap_net, sum(sent_net) AS sent_net, sum(ometria_net) AS ometria_net,
                   count(*) FILTER (WHERE status = 'agrees') AS agrees,
                   count(*) FILTER (WHERE status = 'explained') AS explained,
                   count(*) FILTER (WHERE status = 'differs') AS differs
            FROM recon.customer_net_revenue GROUP BY currency ORDER BY currency""")
    facts.recon_counts = {name: _count(con, "recon", name)
                          for name in ("missing_in_ometria", "extra_in_ometria", "stale_records")}
    if table_exists(con, "recon", "snapshot_runs"):
        latest = _rows(con, "SELECT fetched_at, outcome, note FROM recon.snapshot_runs "
                            "ORDER BY fetched_at DESC LIMIT 1")
        facts.read_back = latest[0] if latest else None
    if table_exists(con, "ops", "exception_history"):
        history = _rows(con, f"""
            WITH runs AS (SELECT DISTINCT run_at FROM ops.exception_history
                          ORDER BY run_at DESC LIMIT {TREND_RUNS})
            SELECT h.run_at, h.rule, h.open_count, h.impact
            FROM ops.exception_history h JOIN runs USING (run_at) ORDER BY h.run_at""")
        for h in history:
            rule = RULES_BY_ID.get(h["rule"])
            facts.trend.append({"run_at": h["run_at"], "owner": rule.owner if rule else "ops",
                                "open": int(h["open_count"]), "impact": float(h["impact"] or 0)})
    if table_exists(con, "sap_meta", "watermarks"):
        for r in _rows(con, "SELECT entity, landed_at, rows_landed FROM sap_meta.watermarks "
                            "ORDER BY landed_at NULLS FIRST, entity"):
            age = (now - r["landed_at"]).total_seconds() / 3600 if r["landed_at"] else None
            facts.freshness.append({**r, "hours_ago": age})
    return facts
