"""Partitions of the historical backfill: one calendar month of SAP document date (`DocDate`)
per partition, in the company time zone, from a configured first month.

A month is the unit of resumability: each partition lands and pushes the orders and credit
memos dated in that month, and Dagster records per partition whether it succeeded, so a
backfill stopped half way is resumed by launching it again over the missing or failed months.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import dagster as dg


@dataclass(frozen=True)
class DocDateWindow:
    """A half-open window of document dates: start <= DocDate < end."""

    start: date
    end: date

    def odata_filter(self) -> str:
        """The Service Layer `$filter` for documents dated in this window.

        DocDate is a date-only field (its v2 time part is nominal), so quoted ISO dates are
        the literal every Service Layer version accepts."""
        return f"DocDate ge '{self.start.isoformat()}' and DocDate lt '{self.end.isoformat()}'"

    def contains_sql(self, column: str = '"DocDate"') -> str:
        """A DuckDB predicate for the same window (for reading the landed rows back)."""
        return f"{column} >= DATE '{self.start.isoformat()}' AND {column} < DATE '{self.end.isoformat()}'"


def monthly_docdate_partitions(start: date, timezone: str) -> dg.MonthlyPartitionsDefinition:
    """Monthly partitions from the first month of `start` up to the last complete month.

    The current month is not offered: the regular hourly sync covers it, and a month that is
    still being written to would be "complete" in the backfill's history while it is not."""
    first = start.replace(day=1)
    return dg.MonthlyPartitionsDefinition(
        start_date=first.isoformat(), timezone=timezone, fmt="%Y-%m-%d"
    )


def window_for_partition(partition_key: str) -> DocDateWindow:
    """`2024-03-01` -> DocDate in [2024-03-01, 2024-04-01)."""
    start = date.fromisoformat(partition_key)
    if start.day != 1:
        raise ValueError(f"backfill partition key {partition_key!r} is not the first of a month")
    end = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
    return DocDateWindow(start, end)
