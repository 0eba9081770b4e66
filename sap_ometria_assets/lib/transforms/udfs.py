"""Mapped SAP user-defined fields (UDFs) -> typed Ometria properties or standard fields.

Each mapped UDF becomes a value of its mapped type (string, integer, number, boolean, date) or
null with a warning (a value SAP does not allow, one that is not of the type, or a JSON object or
array where SAP should hold a single value: landing keeps such a value as its JSON text, which is
not sent; `udf_value_not_allowed` lists it); a mapped UDF the Service Layer does not serve yet is
left out (`udf_not_served`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import polars as pl

from sap_ometria_assets.lib.ometria.mapping import UdfMapping
from sap_ometria_assets.lib.transforms.values import as_date, text

_log = logging.getLogger(__name__)


def json_containers(values: pl.Series) -> pl.Series:
    """Whether each text is a JSON object or array (how landing keeps a non-scalar value SAP
    sent in a scalar UDF column). Only texts that start and end like one are parsed, once each."""
    candidates = values.filter(values.str.contains(r"^[\[{]") & values.str.contains(r"[\]}]$")).unique()
    verdicts = {}
    for text_ in candidates.to_list():
        try:
            verdicts[text_] = isinstance(json.loads(text_), dict | list)
        except ValueError:
            verdicts[text_] = False
    found = [t for t, ok in verdicts.items() if ok]
    return values.is_in(found).fill_null(False) if found else pl.Series(values.name, [False] * len(values))


_TRUE = ["true", "y", "yes", "1", "tyes"]
_FALSE = ["false", "n", "no", "0", "tno"]


def udf_value(m: UdfMapping, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """(typed value for the payload, warning or null) for one mapped UDF column."""
    col = m.sap_field
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        raw = as_date(col, dtype).dt.strftime("%Y-%m-%d")
    else:
        raw = text(col)
    shown = raw.str.slice(0, 60)
    nested = raw.map_batches(json_containers, return_dtype=pl.Boolean)
    warn_nested = pl.when(nested).then(
        pl.concat_str([pl.lit(f"{col}: value '"), shown, pl.lit("' is a JSON object or array, not a single value")])
    )
    raw = pl.when(nested).then(None).otherwise(raw)
    warn_disallowed = None
    if m.allowed_values:
        disallowed = raw.is_not_null() & ~raw.is_in(list(m.allowed_values))
        warn_disallowed = pl.when(disallowed).then(
            pl.concat_str([pl.lit(f"{col}: value '"), shown, pl.lit("' is not an allowed value")])
        )
        raw = pl.when(disallowed).then(None).otherwise(raw)
    if m.value_map:
        keys = list(m.value_map)
        vals = [str(v).lower() if isinstance(v, bool) else str(v) for v in m.value_map.values()]
        raw = raw.replace_strict(keys, vals, default=raw, return_dtype=pl.String)
    if m.type == "string":
        value = raw
    elif m.type == "integer":
        value = raw.cast(pl.Float64, strict=False)
        value = pl.when(value.is_finite() & (value == value.round(0))).then(value).cast(pl.Int64)
    elif m.type == "number":
        value = raw.cast(pl.Float64, strict=False)
        value = pl.when(value.is_finite()).then(value)
    elif m.type == "boolean":
        low = raw.str.to_lowercase()
        value = pl.when(low.is_in(_TRUE)).then(True).when(low.is_in(_FALSE)).then(False)
    else:  # date
        value = raw.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False).dt.strftime("%Y-%m-%d")
    warn_type = pl.when(raw.is_not_null() & value.is_null()).then(
        pl.concat_str([pl.lit(f"{col}: value '"), shown, pl.lit(f"' is not a valid {m.type}")])
    )
    if m.if_empty == "empty_string":
        value = value.fill_null("")
    warning = pl.coalesce([w for w in (warn_nested, warn_disallowed, warn_type) if w is not None])
    return value, warning


def udf_fields(df: pl.DataFrame, mappings: Sequence[UdfMapping], table: str) -> tuple[
    dict[str, pl.Expr], dict[str, pl.Expr], list[pl.Expr]
]:
    """Expressions for mapped UDFs: (properties by name, standard fields by name, warnings).

    A mapped UDF the table does not have is left out (its property is not sent) rather than
    failing the asset: SAP lists a new UDF in UserFieldsMD before the Service Layer serves it
    (until SL restarts), and mapping against SAP's declared UDFs is checked elsewhere
    (mapping.validate_against_cufd). The `udf_not_served` exception rule lists it."""
    props: dict[str, pl.Expr] = {}
    fields: dict[str, pl.Expr] = {}
    warns: list[pl.Expr] = []
    missing = [m.sap_field for m in mappings if m.sap_field not in df.columns]
    if missing:
        _log.warning("%s: mapped UDF(s) %s not served by SAP: left out (udf_not_served)",
                     table, ", ".join(missing))
    for m in mappings:
        if m.sap_field in missing:
            continue
        value, warning = udf_value(m, df.schema[m.sap_field])
        (props if m.ometria_property else fields)[m.target] = value
        warns.append(warning)
    return props, fields, warns
