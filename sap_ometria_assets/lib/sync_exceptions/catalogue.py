"""The registry of sync-exception rules: every rule once, in the order of `RULE_IDS`.

`RULES` gathers the rules of each business object (rules_contacts, rules_documents,
rules_products, rules_landing, rules_ometria); `RULES_BY_ID` finds one by id and
`rules_markdown()` renders the registry (owner, severity, meaning, fix) for the docs. Every
rule's description ends with what its money at stake (`impact`) means.
"""

from __future__ import annotations

import dataclasses

from sap_ometria_assets.lib.sync_exceptions.rule import Rule
from sap_ometria_assets.lib.sync_exceptions.rule_ids import RULE_IDS
from sap_ometria_assets.lib.sync_exceptions.rules_contacts import CONTACT_RULES
from sap_ometria_assets.lib.sync_exceptions.rules_documents import DOCUMENT_RULES
from sap_ometria_assets.lib.sync_exceptions.rules_landing import LANDING_RULES
from sap_ometria_assets.lib.sync_exceptions.rules_ometria import OMETRIA_RULES
from sap_ometria_assets.lib.sync_exceptions.rules_products import PRODUCT_RULES

_DEFINED = (*CONTACT_RULES, *DOCUMENT_RULES, *PRODUCT_RULES, *LANDING_RULES, *OMETRIA_RULES)
if sorted(r.id for r in _DEFINED) != sorted(RULE_IDS):  # each rule once, none unnamed
    raise RuntimeError("the rules defined differ from RULE_IDS in lib/sync_exceptions/rule_ids.py")

# Each description ends with what the rule's money at stake means (Rule.impact_text).
RULES: tuple[Rule, ...] = tuple(
    dataclasses.replace(r, description=f"{r.description} {r.impact_text}")
    for r in ({r.id: r for r in _DEFINED}[rule_id] for rule_id in RULE_IDS)
)
RULES_BY_ID: dict[str, Rule] = {r.id: r for r in RULES}


def rules_markdown() -> str:
    """The rule registry as a markdown table (for README/docs)."""
    lines = [
        "| Rule | Owner | Severity | What it means | How to fix it |",
        "|---|---|---|---|---|",
    ]
    for r in RULES:
        lines.append(
            f"| `{r.id}` ({r.title}) | {r.owner} | {r.severity} | {r.description} | {r.fix_hint} |"
        )
    return "\n".join(lines)
