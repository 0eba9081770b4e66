"""SQL fragments the sync-exception rules, the drift checks and the reconciliation share.

Which SAP sales documents count (not cancelled, not a cancellation document) and how money and
quantities are shown in messages for people. Plain strings with no knowledge of the rules or the
checks file, so any step can use them.
"""

from __future__ import annotations


def money(expr: str) -> str:
    """An amount as text with two decimals (12.5 -> '12.50')."""
    return f"format('{{:.2f}}', round(CAST({expr} AS DECIMAL(19,6)), 2))"


def qty(expr: str) -> str:
    """A quantity as text without trailing zeros (3 -> '3', 2.5 -> '2.5')."""
    return (f"regexp_replace(CAST(CAST({expr} AS DECIMAL(19,3)) AS VARCHAR), '\\.?0+$', '')")


def live_document(alias: str = "") -> str:
    """Not cancelled and not a cancellation document: the documents that carry money."""
    p = f"{alias}." if alias else ""
    return (
        f"coalesce({p}\"CancelStatus\", 'csNo') NOT IN ('csYes', 'csCancellation') "
        f"AND coalesce({p}\"Cancelled\", 'tNO') <> 'tYES' "
        f"AND NOT coalesce({p}\"_is_cancellation\", false)"
    )


def not_cancellation(alias: str = "") -> str:
    """Not a cancellation document itself (cancelled originals are included)."""
    p = f"{alias}." if alias else ""
    return (
        f"coalesce({p}\"CancelStatus\", 'csNo') <> 'csCancellation' "
        f"AND NOT coalesce({p}\"_is_cancellation\", false)"
    )
