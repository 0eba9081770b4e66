"""Column contracts of the landed SAP tables: is this extract safe to build on?

The expected columns and types come from the one registry, `lib/sap/tables.py`
(`contract_columns(table)`). What SAP actually sent comes from `sap_meta.extract_columns`
(written by the landing for every extract) and, for what downstream assets will read, from the
`sap_raw` table itself.

- An *essential* contract column missing, or of another kind of type, is a **breaking**
  change: the contract check fails with ERROR and, being blocking, stops what is downstream of
  that table (its transforms, their push) so nothing is sent from a broken extract; assets that
  do not read the table go on.
- An *optional* contract column (`optional` in the registry: no downstream asset needs it)
  missing or of another type only **warns**, naming it: the landing keeps the column, NULL,
  and every reader treats it as NULL. Nothing is blocked.
  The landing casts contract columns to their registry type, so when SAP starts sending
  another kind of value (text in DocTotal) the values land NULL and are kept in
  `sap_meta.rejected_values`: when most values of a contract column in the latest extract were
  unreadable (`contracts.type_change_min_share`, at least `type_change_min_rows`), that is a
  type change too. A few unreadable values are bad records, not a broken extract: they are
  reported by the drift check and never block.
- A column beyond the contract that SAP starts sending (a new UDF, say; the landing adds it
  and records it in `sap_meta.schema_changes`) is **drift**: a separate non-blocking check
  warns, naming it, for `contracts.new_column_warn_days` after it appeared. Columns the landing
  had to widen are reported the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb

from sap_ometria_assets.lib.sap.tables import contract_columns, optional_columns
from sap_ometria_assets.lib.warehouse.sql import table_columns, table_exists

# ---------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------
_ALIASES = {
    "INT": "INTEGER", "INT4": "INTEGER", "INT32": "INTEGER", "SIGNED": "INTEGER",
    "INT8": "BIGINT", "INT64": "BIGINT", "LONG": "BIGINT",
    "INT2": "SMALLINT", "INT16": "SMALLINT", "SHORT": "SMALLINT", "INT1": "TINYINT",
    "TEXT": "VARCHAR", "STRING": "VARCHAR", "CHAR": "VARCHAR", "BPCHAR": "VARCHAR", "STR": "VARCHAR",
    "BOOL": "BOOLEAN", "LOGICAL": "BOOLEAN",
    "FLOAT8": "DOUBLE", "FLOAT64": "DOUBLE", "NUMBER": "DOUBLE",
    "FLOAT4": "FLOAT", "REAL": "FLOAT", "FLOAT32": "FLOAT",
    "NUMERIC": "DECIMAL(18,3)", "DECIMAL": "DECIMAL(18,3)",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ", "DATETIME": "TIMESTAMP",
    "TIMESTAMP WITHOUT TIME ZONE": "TIMESTAMP",
}
_FAMILIES = {
    "integer": {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                "UINTEGER", "UBIGINT", "UHUGEINT"},
    "float": {"FLOAT", "DOUBLE"},
    "text": {"VARCHAR", "UUID"},
    "date": {"DATE"},
    "timestamp": {"TIMESTAMP", "TIMESTAMPTZ", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"},
    "boolean": {"BOOLEAN"},
    "json": {"JSON"},
    "time": {"TIME", "TIMETZ"},
}
_UNKNOWN = {"", "NULL", '"NULL"', "UNKNOWN", "SQLNULL"}  # an all-null column says nothing
_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")


def normalise_type(dtype: str | None) -> str:
    t = re.sub(r"\s+", " ", (dtype or "").strip().upper())
    if t.startswith("VARCHAR(") or t.startswith("CHAR("):
        return "VARCHAR"
    t = _ALIASES.get(t, t)
    m = _DECIMAL.match(t)
    return f"DECIMAL({m.group(1)},{m.group(2)})" if m else t


def type_family(dtype: str) -> str:
    t = normalise_type(dtype)
    if _DECIMAL.match(t):
        return "decimal"
    if t.endswith("[]") or t.startswith(("STRUCT", "MAP", "LIST")):
        return "nested"
    for family, members in _FAMILIES.items():
        if t in members:
            return family
    return t


def types_compatible(expected: str, observed: str | None) -> bool:
    """Can a column SAP sent as `observed` be read as the contract's `expected` type unchanged?

    The rule is "same kind of value": any integer width for an integer, an integer or a decimal
    that fits for a decimal (never a float: amounts must not pass through binary floating point),
    a timestamp for a date (v2 sends dates with a nominal time), text or nested JSON for JSON.
    Text where a number was, a number where text was, a float where a decimal was: changed.
    """
    e, o = normalise_type(expected), normalise_type(observed)
    if o in _UNKNOWN or e == o:
        return True
    fe, fo = type_family(e), type_family(o)
    if fe == "decimal":
        if fo == "integer":
            return True
        if fo == "decimal":
            pe, se = map(int, _DECIMAL.match(e).groups())  # type: ignore[union-attr]
            po, so = map(int, _DECIMAL.match(o).groups())  # type: ignore[union-attr]
            return so <= se and (po - so) <= (pe - se)
        return False
    if fe == "date":
        return fo in ("date", "timestamp")
    if fe == "json":
        return fo in ("json", "text", "nested")
    return fe == fo


# ---------------------------------------------------------------------------------------------
# Observations
# ---------------------------------------------------------------------------------------------
def _is_meta(column: str) -> bool:
    return column.startswith("_")


@dataclass(frozen=True)
class Observed:
    source: str                       # human description of where the columns were read
    columns: dict[str, str]           # name -> type
    seen_at: datetime | None = None


def latest_extract_columns(con: duckdb.DuckDBPyConnection, table: str) -> Observed | None:
    """The columns the most recent extract of `table` returned (sap_meta.extract_columns)."""
    if not table_exists(con, "sap_meta", "extract_columns"):
        return None
    rows = con.execute("""
        SELECT column_name, column_type, seen_at FROM sap_meta.extract_columns
        WHERE lower(table_name) = lower(?)
          AND seen_at = (SELECT max(seen_at) FROM sap_meta.extract_columns
                         WHERE lower(table_name) = lower(?))""", [table, table]).fetchall()
    if not rows:
        return None
    seen_at = rows[0][2]
    return Observed(
        source=f"sap_meta.extract_columns (extract of {seen_at})",
        columns={name: str(dtype) for name, dtype, _ in rows if not _is_meta(name)},
        seen_at=seen_at,
    )


def landed_table_columns(con: duckdb.DuckDBPyConnection, table: str) -> Observed | None:
    columns = table_columns(con, "sap_raw", table)
    if not columns:
        return None
    return Observed(source=f"sap_raw.{table}",
                    columns={n: t for n, t in columns.items() if not _is_meta(n)})


# ---------------------------------------------------------------------------------------------
# Contract (blocking)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TypeChange:
    column: str
    expected: str
    observed: str
    where: str


@dataclass
class ContractReport:
    table: str
    sources: list[str] = field(default_factory=list)
    missing_table: bool = False
    removed: dict[str, str] = field(default_factory=dict)     # column -> where it is missing
    retyped: list[TypeChange] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)      # beyond the contract -> type
    # contract column -> (records with an unreadable value, records landed, example): too few
    # to call the column changed; reported, not blocking
    unreadable: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    # optional contract columns (no downstream asset needs them): warned about, never blocking
    optional_removed: dict[str, str] = field(default_factory=dict)
    optional_retyped: list[TypeChange] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_table or self.removed or self.retyped)

    @property
    def degraded(self) -> bool:
        """An optional contract column is missing or changed: a warning, nothing blocked."""
        return bool(self.optional_removed or self.optional_retyped)

    def optional_summary(self) -> str:
        return (f"optional contract column(s) of sap_raw.{self.table} "
                f"{_changes(self.optional_removed, self.optional_retyped)}: landed as NULL and "
                "read as NULL downstream; nothing is blocked.")

    def summary(self) -> str:
        if self.missing_table:
            return f"sap_raw.{self.table} does not exist: nothing was landed."
        if self.ok and self.degraded:
            return "SAP changed the " + self.optional_summary()
        if self.ok:
            return (f"All {len(contract_columns(self.table))} contract columns of sap_raw."
                    f"{self.table} present with their contract types.")
        text = (f"sap_raw.{self.table} breaks its contract; {_changes(self.removed, self.retyped)}. "
                "The assets downstream of it will not run until the extract matches the contract "
                "in lib/sap/tables.py; the others go on.")
        return text + (" Also, " + self.optional_summary() if self.degraded else "")


def _changes(removed: dict[str, str], retyped: list[TypeChange]) -> str:
    """`missing: A (where); type changed: B X -> Y (where)`."""
    parts = []
    if removed:
        parts.append("missing: " + ", ".join(f"{c} ({w})" for c, w in sorted(removed.items())))
    if retyped:
        parts.append("type changed: " + ", ".join(
            f"{t.column} {t.expected} -> {t.observed} ({t.where})" for t in retyped))
    return "; ".join(parts)


def unreadable_values(con: duckdb.DuckDBPyConnection, table: str,
                      seen_at: datetime | None) -> dict[str, tuple[int, int, str]]:
    """Contract columns with values the latest extract could not read as their type:
    column -> (records with an unreadable value, records landed by that extract, an example)."""
    if seen_at is None or not table_exists(con, "sap_meta", "rejected_values"):
        return {}
    rows = con.execute("""
        SELECT column_name, count(DISTINCT record_key), any_value(raw_value)
        FROM sap_meta.rejected_values
        WHERE lower(table_name) = lower(?) AND seen_at = ? GROUP BY 1""", [table, seen_at]).fetchall()
    if not rows:
        return {}
    landed = 0
    if "_landed_at" in {c.lower() for c in _table_column_names(con, table)}:
        landed = con.execute(
            f'SELECT count(*) FROM sap_raw."{table}" WHERE "_landed_at" = ?', [seen_at]
        ).fetchall()[0][0]
    contract = {c.lower() for c in contract_columns(table)}
    return {
        col: (int(n), max(int(landed), int(n)), str(example))
        for col, n, example in rows if col.lower() in contract
    }


def _table_column_names(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return list(table_columns(con, "sap_raw", table))


def check_contract(con: duckdb.DuckDBPyConnection, table: str, min_share: float = 0.5,
                   min_rows: int = 5) -> ContractReport:
    """Compare the latest extract and the landed table with the registry's contract columns.

    Unreadable values count as a type change when at least `min_rows` records and `min_share`
    of the records the extract landed had one in the same contract column. Optional columns
    are reported apart (`optional_removed`, `optional_retyped`): they never make it fail."""
    report = _compare(con, table, min_share, min_rows)
    optional = optional_columns(table)
    for column in [c for c in report.removed if c in optional]:
        report.optional_removed[column] = report.removed.pop(column)
    report.optional_retyped = [t for t in report.retyped if t.column in optional]
    report.retyped = [t for t in report.retyped if t.column not in optional]
    return report


def _compare(con: duckdb.DuckDBPyConnection, table: str, min_share: float,
             min_rows: int) -> ContractReport:
    expected = contract_columns(table)
    report = ContractReport(table=table)
    landed = landed_table_columns(con, table)
    extract = latest_extract_columns(con, table)
    if landed is None:
        report.missing_table = True
        return report
    observations = [o for o in (extract, landed) if o is not None]
    report.sources = [o.source for o in observations]
    for obs in observations:
        by_lower = {c.lower(): c for c in obs.columns}
        for column, dtype in expected.items():
            actual_name = by_lower.get(column.lower())
            if actual_name is None:
                report.removed.setdefault(column, f"absent from {obs.source}")
                continue
            observed = obs.columns[actual_name]
            if not types_compatible(dtype, observed) and not any(
                t.column == column for t in report.retyped
            ):
                report.retyped.append(TypeChange(column, dtype, normalise_type(observed), obs.source))
        for column, dtype in obs.columns.items():
            if column.lower() not in {c.lower() for c in expected}:
                report.extra.setdefault(column, normalise_type(dtype))
    by_lower = {c.lower(): c for c in expected}
    for column, (bad, landed, example) in unreadable_values(
            con, table, extract.seen_at if extract else None).items():
        name = by_lower[column.lower()]
        if bad >= min_rows and bad >= min_share * landed and not any(
                t.column == name for t in report.retyped):
            report.retyped.append(TypeChange(
                name, expected[name], f"values like {example!r} ({bad} of {landed} records)",
                "sap_meta.rejected_values"))
        else:
            report.unreadable[name] = (bad, landed, example)
    return report


# ---------------------------------------------------------------------------------------------
# Drift beyond the contract (non-blocking)
# ---------------------------------------------------------------------------------------------
@dataclass
class DriftReport:
    table: str
    new: dict[str, str] = field(default_factory=dict)                  # column -> type
    widened: dict[str, tuple[str, str]] = field(default_factory=dict)  # column -> (old, new)
    unreadable: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    recorded: bool = True  # False: the landing has not recorded schema changes (yet)

    @property
    def has_drift(self) -> bool:
        return bool(self.new or self.widened or self.unreadable)

    def summary(self) -> str:
        if not self.has_drift:
            if not self.recorded:
                return f"No schema changes recorded for sap_raw.{self.table} yet."
            return f"No new or changed columns beyond the contract in sap_raw.{self.table}."
        parts = []
        if self.new:
            parts.append("new column(s) " + ", ".join(f"{c} ({t})" for c, t in sorted(self.new.items())))
        if self.widened:
            parts.append("type widened " + ", ".join(
                f"{c} {a} -> {b}" for c, (a, b) in sorted(self.widened.items())))
        if self.unreadable:
            parts.append("unreadable values in " + ", ".join(
                f"{c} ({n} of {m} records, e.g. {ex!r})"
                for c, (n, m, ex) in sorted(self.unreadable.items())))
        return (f"SAP's extract of {self.table.upper()} changed: " + "; ".join(parts)
                + ". New columns are landed in sap_raw but reach Ometria only if data/mapping.yaml "
                "maps them; unreadable values are in sap_meta.rejected_values.")


def schema_drift(con: duckdb.DuckDBPyConnection, table: str, now: datetime,
                 warn_days: float) -> DriftReport:
    """Columns beyond the contract that the landing added or widened in the last `warn_days`
    (sap_meta.schema_changes), and contract columns with a few unreadable values."""
    report = DriftReport(table=table)
    contract = {c.lower() for c in contract_columns(table)}
    if table_exists(con, "sap_meta", "schema_changes"):
        since = now - timedelta(days=warn_days)
        for column, change, old, new in con.execute("""
                SELECT column_name, change, arg_max(old_type, seen_at), arg_max(new_type, seen_at)
                FROM sap_meta.schema_changes
                WHERE lower(table_name) = lower(?) AND seen_at >= ?
                GROUP BY ALL ORDER BY 1""", [table, since]).fetchall():
            if column.lower() in contract or _is_meta(column):
                continue
            if change == "added":
                report.new[column] = normalise_type(new)
            elif change == "type_changed":
                report.widened[column] = (normalise_type(old), normalise_type(new))
    else:
        report.recorded = False
    extract = latest_extract_columns(con, table)
    for column, stats in unreadable_values(con, table, extract.seen_at if extract else None).items():
        report.unreadable[column] = stats
    return report
