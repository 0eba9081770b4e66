"""Which published tables a run may have written, from the assets it materialised.

The publish looks only at those (and at tables the lake does not have yet), so a stock run
every 15 minutes compares the stock tables, not the whole warehouse. A landed SAP table writes
its `sap_raw` table, its `sap_history` table and the landing bookkeeping (`sap_meta`); an Ometria-ready asset its `ometria` table;
the push, exception and reconciliation assets write several tables of their schema (ledger,
requests, sent records...; exceptions and their history; the recon tables), so their whole
schema is a candidate (`(schema, "*")`). An asset this map does not know (the backfill writes
all layers) makes every table a candidate (None).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

WHOLE_SCHEMA = "*"
_SCHEMA_WIDE = {"ometria_push": ("ometria_push",), "ops": ("ops",), "recon": ("recon",)}


class _Key(Protocol):
    path: list[str]


def tables_written(asset_keys: Iterable[_Key]) -> set[tuple[str, str]] | None:
    """(schema, table) pairs, with (schema, "*") for a whole schema; None = everything."""
    tables: set[tuple[str, str]] = set()
    for key in asset_keys:
        path = list(key.path)
        if len(path) != 2:
            return None
        group, name = path
        if group == "sap_raw":
            tables |= {("sap_raw", name), ("sap_history", name), ("sap_meta", WHOLE_SCHEMA)}
        elif group == "ometria":
            tables.add(("ometria", name))
        elif group in _SCHEMA_WIDE:
            tables |= {(schema, WHOLE_SCHEMA) for schema in _SCHEMA_WIDE[group]}
        elif group == "snapshots":
            continue
        else:
            return None
    return tables


def is_candidate(key: tuple[str, str], candidates: set[tuple[str, str]] | None) -> bool:
    return candidates is None or key in candidates or (key[0], WHOLE_SCHEMA) in candidates
