"""Summaries of the reconciliation tables for the recon checks and their metadata.

`summarise_status_view` counts the rows of a status table (agrees / explained / differs), sums
its value columns and keeps the worst rows; `reason_counts` counts the rows per reason of the
missing/extra tables; `markdown_table` renders a few rows as a markdown table for the Dagster UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import duckdb
import polars as pl

@dataclass
class ReconSummary:
    view: str
    counts: dict[str, int]
    totals: dict[str, Decimal | None]
    worst: pl.DataFrame

    @property
    def differs(self) -> int:
        return self.counts.get("differs", 0)

    @property
    def explained(self) -> int:
        return self.counts.get("explained", 0)


def summarise_status_view(
    con: duckdb.DuckDBPyConnection, view: str, total_columns: tuple[str, ...],
    order_by: str, limit: int = 10,
) -> ReconSummary:
    counts = dict(con.execute(f"SELECT status, count(*) FROM recon.{view} GROUP BY 1").fetchall())
    sums = ", ".join(f"sum({c})" for c in total_columns)
    row = con.execute(f"SELECT {sums} FROM recon.{view}").fetchall()[0]
    totals = dict(zip(total_columns, row, strict=True))
    worst = con.sql(
        f"SELECT * FROM recon.{view} WHERE status <> 'agrees' "
        f"ORDER BY status = 'differs' DESC, {order_by} LIMIT {int(limit)}"
    ).pl()
    return ReconSummary(view=view, counts={str(k): int(v) for k, v in counts.items()},
                        totals=totals, worst=worst)


def reason_counts(con: duckdb.DuckDBPyConnection, view: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in con.execute(
        f"SELECT reason, count(*) FROM recon.{view} GROUP BY 1 ORDER BY 2 DESC").fetchall()}


def markdown_table(frame: pl.DataFrame, columns: list[str] | None = None, max_chars: int = 120) -> str:
    """A small markdown table for check metadata (cells shortened, pipes escaped)."""
    if columns:
        frame = frame.select([c for c in columns if c in frame.columns])
    if frame.height == 0:
        return "_none_"
    head = "| " + " | ".join(frame.columns) + " |"
    sep = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = []
    for row in frame.iter_rows():
        cells = []
        for v in row:
            text = "" if v is None else str(v)
            text = text.replace("|", "\\|").replace("\n", " ")
            if len(text) > max_chars:
                text = text[: max_chars - 1] + "…"
            cells.append(text)
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])
