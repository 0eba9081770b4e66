"""Value-level building blocks of the SAP -> Ometria transforms (pure polars expressions).

Money is carried as Int64 **cents** (half away from zero from SAP's Decimal(19,6)), so sums are
exact and a payload's parts add up to its total to the penny; it becomes a JSON number with two
decimals only in the payload (`money`) and a Decimal(18,2) in the typed columns (`money_out`).
Here too: trimmed text, SAP yes/no flags, quantities, dates, currency codes through the mapping,
Ometria ids from templates, implausible document dates, slugs, and the joining of hold-back reasons
("; ") and warnings.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from sap_ometria_assets.lib.ometria.mapping import Mapping
from sap_ometria_assets.lib.ometria.models import ISO_4217_CODES

DEC = pl.Decimal(38, 6)
OUT_AMOUNT = pl.Decimal(18, 2)


def text(col: str | pl.Expr) -> pl.Expr:
    """Trimmed text; blank becomes null."""
    e = pl.col(col) if isinstance(col, str) else col
    e = e.cast(pl.String).str.strip_chars()
    return pl.when(e.str.len_chars() > 0).then(e)


def yes(col: str) -> pl.Expr:
    """SAP BoYesNoEnum 'tYES' (null and anything else are not yes)."""
    return (pl.col(col).cast(pl.String) == "tYES").fill_null(False)


def cents(col: str | pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Money as Int64 cents, rounded half away from zero; null when missing or not a finite number."""
    e = pl.col(col) if isinstance(col, str) else col
    if dtype.is_decimal():
        return (e.cast(DEC).round(2, mode="half_away_from_zero") * 100).cast(pl.Int64)
    if dtype.is_integer():
        return e.cast(pl.Int64) * 100
    if dtype.is_float():
        f = (e.cast(pl.Float64) * 100).round(0, mode="half_away_from_zero")
        return pl.when(f.is_finite() & (f.abs() < 9e15)).then(f).cast(pl.Int64)
    if dtype == pl.String:
        d = e.str.strip_chars().cast(DEC, strict=False)
        return (d.round(2, mode="half_away_from_zero") * 100).cast(pl.Int64)
    return pl.lit(None, dtype=pl.Int64)


def decimal(col: str | pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A quantity as Decimal(38,6); null when missing or not a finite number."""
    e = pl.col(col) if isinstance(col, str) else col
    if dtype.is_decimal() or dtype.is_integer():
        return e.cast(DEC)
    if dtype.is_float():
        f = e.cast(pl.Float64)
        return pl.when(f.is_finite() & (f.abs() < 1e12)).then(f).cast(DEC, strict=False)
    if dtype == pl.String:
        return e.str.strip_chars().cast(DEC, strict=False)
    return pl.lit(None, dtype=DEC)


def bad_number(col: str, dtype: pl.DataType) -> pl.Expr:
    """True where a value is present but is not a usable finite number."""
    return pl.col(col).is_not_null() & decimal(col, dtype).is_null()


def money(cents_expr: pl.Expr) -> pl.Expr:
    """Cents -> float with two decimals, for the JSON payload.

    Through Decimal on purpose: polars computes `x / 100.0` as `x * 0.01`, which gives the
    neighbouring double for many values (19.990000000000002); Decimal -> Float64 is exact.
    """
    return (cents_expr.cast(pl.Decimal(38, 2)) / 100).cast(pl.Float64)


def money_out(cents_expr: pl.Expr) -> pl.Expr:
    """Cents -> Decimal(18,2), for the typed columns SQL users read."""
    return (cents_expr.cast(pl.Decimal(38, 2)) / 100).cast(OUT_AMOUNT)


def as_date(col: str, dtype: pl.DataType) -> pl.Expr:
    e = pl.col(col)
    if dtype == pl.Date:
        return e
    if isinstance(dtype, pl.Datetime):
        return e.dt.date()
    if dtype == pl.String:
        return e.str.strip_chars().str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    return pl.lit(None, dtype=pl.Date)


def currency_iso(sap_code: pl.Expr, mapping: Mapping) -> pl.Expr:
    """SAP currency code -> ISO 4217 through the mapping (null when unmapped)."""
    code = sap_code.cast(pl.String).str.strip_chars()
    table = dict(mapping.currencies.map)
    mapped = code.replace_strict(list(table), list(table.values()), default=None, return_dtype=pl.String)
    if mapping.currencies.pass_through_iso_codes:
        mapped = pl.coalesce(mapped, pl.when(code.is_in(sorted(ISO_4217_CODES))).then(code))
    return mapped


def currency_reason(sap_code: pl.Expr, iso: pl.Expr) -> pl.Expr:
    code = sap_code.cast(pl.String).str.strip_chars()
    return (
        pl.when(code.is_null() | (code == ""))
        .then(pl.lit("missing_currency"))
        .when(iso.is_null())
        .then(pl.lit("unmapped_currency:") + code)
    )


def id_from_template(template: str, key: pl.Expr) -> pl.Expr:
    prefix, _, suffix = template.partition("{DocEntry}")
    return pl.concat_str([pl.lit(prefix), key.cast(pl.String), pl.lit(suffix)])


EARLIEST_DOC_DATE = dt.date(1990, 1, 1)


def implausible_doc_date(doc_date: pl.Expr, today: dt.date | None = None) -> pl.Expr:
    """'implausible_doc_date' for a document dated before 1990 (1899-12-30 is the OLE zero date
    a cleared field leaves) or more than a year after today; null otherwise."""
    today = today or dt.date.today()
    try:
        latest = today.replace(year=today.year + 1)
    except ValueError:  # 29 February
        latest = today.replace(year=today.year + 1, day=28)
    d = doc_date.cast(pl.Date, strict=False)
    return pl.when((d < EARLIEST_DOC_DATE) | (d > latest)).then(pl.lit("implausible_doc_date"))


def join_reasons(*exprs: pl.Expr) -> pl.Expr:
    joined = pl.concat_str(list(exprs), separator="; ", ignore_nulls=True)
    return pl.when(joined.str.len_chars() > 0).then(joined)


def warnings_list(*exprs: pl.Expr) -> pl.Expr:
    if not exprs:
        return pl.lit([], dtype=pl.List(pl.String))
    return pl.concat_list([e.cast(pl.String) for e in exprs]).list.drop_nulls()


def slug(expr: pl.Expr) -> pl.Expr:
    s = expr.str.to_lowercase().str.replace_all(r"[^\p{L}\p{N}]+", "-").str.strip_chars("-")
    return pl.when(s.str.len_chars() > 0).then(s).otherwise(expr.str.to_lowercase())
