"""What a sync-exception rule is: its id, owner, severity, plain-language texts and its query.

`Rule.sql` builds one DuckDB query from a `RuleContext` (the connection, the checks file, the
mapping facts, the evaluation time and which source tables exist) returning the flagged records
as rows of (record_key, detail[, entity][, impact]). A rule that cannot be evaluated now raises
`NotEvaluable`; its open exceptions are then left as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import duckdb

from sap_ometria_assets.lib.quality.checks_config import ChecksConfig, MappingFacts, Owner, Severity

Entity = Literal[
    "contact", "order", "order_line", "credit_memo", "credit_memo_line", "product", "stock",
    "record",
]


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
