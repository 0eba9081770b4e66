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
    # source view -> the view a rule reads instead (a document-local rule evaluated on the
    # changed documents only, lib/sync_exceptions/scope.py)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def local(self) -> str:
        return self.facts.local_currency

    def src(self, view: str) -> str:
        """The source view a rule reads, by its name (e.g. "raw_rdr1")."""
        return self.sources.get(view, view)


# What a rule's `impact` (the money at stake, in the company's local currency) means. A rule
# names one meaning; a rule without one (entity "record") flags records of several kinds and
# its impact means, per flagged record, what that record's entity means below.
IMPACT_MEANINGS: dict[str, tuple[str, str]] = {
    "customer_value": ("customers' value held back",
                       "the customer's net revenue in SAP (orders minus credit memos) attached to "
                       "a contact that is held back or wrong in Ometria"),
    "document_value": ("orders and credit memos not reaching Ometria",
                       "the document's total in SAP (DocTotal of the order or credit memo) that "
                       "does not reach Ometria correctly"),
    "line_value": ("document lines not reaching Ometria",
                   "the line's gross total in SAP that does not reach Ometria correctly"),
    "over_credit": ("credited beyond the order",
                    "the amount the credit memos credit beyond the order's total"),
    "stock_value": ("stock committed beyond what is in stock",
                    "the missing quantity valued at the item's Ometria price"),
    "none": ("no money", "none: the rule counts records, its impact is 0"),
}
ENTITY_MEANING: dict[str, str] = {
    "contact": "customer_value", "order": "document_value", "credit_memo": "document_value",
    "order_line": "line_value", "credit_memo_line": "line_value", "stock": "stock_value",
    "product": "none", "record": "none",
}


def impact_meaning(rule_impact: str | None, entity: str) -> str:
    """The meaning key of one flagged record's impact: the rule's, else its entity's."""
    return rule_impact or ENTITY_MEANING.get(entity, "none")


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
    # key of IMPACT_MEANINGS; None: each flagged record's entity decides (rules on "record")
    impact: str | None = None
    # document-local: (entity, header table, child tables) whose DocEntry decides what the rule
    # says about a document, read through `ctx.src` (lib/sync_exceptions/scope.py)
    scope: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        if self.impact is None and self.entity != "record":
            object.__setattr__(self, "impact", ENTITY_MEANING[self.entity])

    @property
    def impact_text(self) -> str:
        """What this rule's money at stake means, in one sentence (part of its description)."""
        if self.impact is not None:
            return f"Money at stake (local currency): {IMPACT_MEANINGS[self.impact][1]}."
        return ("Money at stake (local currency), by the kind of record flagged: for a contact "
                f"{IMPACT_MEANINGS['customer_value'][1]}; for an order or credit memo "
                f"{IMPACT_MEANINGS['document_value'][1]}; 0 for products and other records.")
