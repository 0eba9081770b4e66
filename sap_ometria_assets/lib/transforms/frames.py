"""The contract between the landed SAP tables and the transforms: required and optional columns,
and one row per key.

A landed table lacking a column the transform needs fails with `MissingColumnError` (naming the
table and what it has); standard columns outside the landing contract are added as nulls; and
`dedupe_latest` keeps the latest landed row per key, with a `duplicate_sap_key` hold-back reason
(landing keys its tables, so a duplicate means something upstream went wrong).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import polars as pl


class MissingColumnError(KeyError):
    """A landed SAP table lacks a column the transform (or the mapping) needs."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0])


def require_columns(df: pl.DataFrame, table: str, columns: Iterable[str]) -> None:
    missing = sorted(set(columns) - set(df.columns))
    if missing:
        raise MissingColumnError(
            f"sap_raw.{table} has no column(s) {missing}: landed columns are {sorted(df.columns)}"
        )


def with_optional(df: pl.DataFrame, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """Add standard columns that are not part of the landing contract as nulls when absent."""
    missing = {c: t for c, t in columns.items() if c not in df.columns}
    if not missing:
        return df
    return df.with_columns(pl.lit(None, dtype=t).alias(c) for c, t in missing.items())


def dedupe_latest(df: pl.DataFrame, key: Sequence[str]) -> tuple[pl.DataFrame, pl.Expr]:
    """One row per key (the latest landed); returns the frame and a `duplicate_sap_key` reason.

    Landing keys its tables, so duplicates mean something upstream went wrong: the surviving row
    is held back so a person looks at it, rather than guessing which copy is right.
    """
    key = list(key)
    reason = pl.when(pl.col("_dup_count") > 1).then(pl.lit("duplicate_sap_key"))
    if not df.select(pl.struct(key).is_duplicated().any()).item():
        return df.with_columns(pl.lit(1, pl.UInt32).alias("_dup_count")), reason
    counted = df.with_columns(pl.len().over(key).alias("_dup_count"))
    if "_landed_at" in df.columns:
        counted = counted.sort([*key, "_landed_at"], nulls_last=False, maintain_order=True)
    deduped = counted.unique(subset=key, keep="last", maintain_order=True)
    return deduped, reason
