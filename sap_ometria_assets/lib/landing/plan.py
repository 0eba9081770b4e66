"""What one landing of a registry entry reads and writes, decided before any page is fetched.

- **Targets** (`plan_for`): the sap_raw tables one read fills, the parent and its child tables
  (collections such as `DocumentLines`), with their keys, contract columns and UDF table; `oitw`
  is read as a collection of another entity set (`COLLECTION_TABLES`).
- **Watermarks**: the newest (UpdateDate, UpdateTime) landed per table (`sap_meta.watermarks`),
  the incremental `$filter` read from it (`incremental_filter`, built by `changed_since_filter`,
  which the SAP change sensor uses for its `$count`s too), and the future limit a watermark may
  never pass (`future_limit`: now in the company time zone plus SAP_B1_FUTURE_SKEW_MINUTES).
- **Temp tables**: the names of one landing's DuckDB temp tables (`TempNames`) and the key
  joins every step writes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import duckdb

from sap_ometria_assets.lib.config.settings import Settings
from sap_ometria_assets.lib.sap.tables import SAP_TABLES, ChildTable, SapTable
from sap_ometria_assets.lib.warehouse.sql import q


# Tables read from a collection of another entity set (registry note on oitw): table ->
# (collection property, entity key property). The entity is read with `$select=key,collection`.
COLLECTION_TABLES: dict[str, tuple[str, str]] = {"oitw": ("ItemWarehouseInfoCollection", "ItemCode")}


@dataclass(frozen=True)
class Watermark:
    update_date: date | None
    update_time: str | None

    def __str__(self) -> str:
        if self.update_date is None:
            return "none"
        return f"{self.update_date.isoformat()} {self.update_time or '00:00:00'}"


def get_watermark(con: duckdb.DuckDBPyConnection, entity: str) -> Watermark | None:
    row = con.execute(
        "SELECT update_date, update_time FROM sap_meta.watermarks WHERE entity = ?", [entity]
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return Watermark(row[0], row[1])


def parse_time(text: str | None) -> time:
    """SL times: 'HH:MM:SS' (also 'HH:MM', 'HHMMSS', 'HHMM'); anything else reads as midnight."""
    if not text:
        return time(0)
    digits = text.replace(":", "").strip()
    if not digits.isdigit() or len(digits) not in (3, 4, 5, 6):
        return time(0)
    digits = digits.zfill(6 if len(digits) > 4 else 4).ljust(6, "0")
    hh, mm, ss = int(digits[:2]), int(digits[2:4]), int(digits[4:6])
    if hh > 23 or mm > 59 or ss > 59:
        return time(0)
    return time(hh, mm, ss)


def changed_since_filter(day: date, minute: time) -> str:
    """Records updated at or after a minute: `(UpdateDate gt 'D') or (UpdateDate eq 'D' and
    UpdateTime ge 'HH:MM')`. The Service Layer compares times to the minute, so minutes are the
    unit. The naive `UpdateDate ge D and UpdateTime ge T` loses later-day rows with an earlier
    clock time; this form does not. The landing's incremental reads and the SAP change sensor's
    `$count`s both ask with it."""
    hhmm = minute.strftime("%H:%M")
    return f"(UpdateDate gt '{day.isoformat()}') or (UpdateDate eq '{day.isoformat()}' and UpdateTime ge '{hhmm}')"


def incremental_filter(watermark: Watermark, overlap_minutes: int) -> str:
    """`changed_since_filter` for the watermark minus the overlap, floored to the minute (an
    overlap crossing midnight moves the day back)."""
    assert watermark.update_date is not None
    start = datetime.combine(watermark.update_date, parse_time(watermark.update_time))
    start = (start - timedelta(minutes=overlap_minutes)).replace(second=0, microsecond=0)
    return changed_since_filter(start.date(), start.time())


def future_limit(settings: Settings, now: datetime) -> datetime:
    """The latest UpdateDate/UpdateTime a watermark may take: now in the company time zone (SAP
    stamps local wall-clock time) plus `SAP_B1_FUTURE_SKEW_MINUTES`, as a naive local time."""
    local = now.astimezone(settings.zone).replace(tzinfo=None, microsecond=0)
    return local + timedelta(minutes=settings.sap_b1_future_skew_minutes)


def watermark_key(wm: Watermark) -> tuple[date, time]:
    return (wm.update_date or date.min, parse_time(wm.update_time))


def latest_not_future(con: duckdb.DuckDBPyConnection, stage: str,
                      limit: datetime | None) -> Watermark | None:
    """The latest (UpdateDate, UpdateTime) of the stage not after `limit`: a record dated in the
    future (a typo, a wrong server clock) lands but must not move the watermark, or every later
    change would be filtered out of the next reads."""
    day_cap = f" AND \"UpdateDate\" <= $day" if limit is not None else ""
    params = {"day": limit.date()} if limit is not None else {}
    rows = con.execute(
        f"SELECT \"UpdateDate\", \"UpdateTime\" FROM {q(stage)} WHERE \"UpdateDate\" IS NOT NULL"
        f"{day_cap} ORDER BY 1 DESC, 2 DESC NULLS LAST LIMIT 1", params).fetchone()
    if rows is None or not isinstance(rows[0], date):
        return None
    if limit is None or rows[0] < limit.date():
        return Watermark(rows[0], rows[1])
    # The limit's own day: its times (one day's changes at most) decide, parsed like the filter.
    times = con.execute(f"SELECT DISTINCT \"UpdateTime\" FROM {q(stage)} WHERE \"UpdateDate\" = $day",
                        {"day": limit.date()}).fetchall()
    ok = [t for (t,) in times if parse_time(t) <= limit.time()]
    if ok:
        return Watermark(limit.date(), max(ok, key=parse_time))
    earlier = con.execute(
        f"SELECT \"UpdateDate\", \"UpdateTime\" FROM {q(stage)} WHERE \"UpdateDate\" < $day "
        "ORDER BY 1 DESC, 2 DESC NULLS LAST LIMIT 1", {"day": limit.date()}).fetchone()
    return Watermark(earlier[0], earlier[1]) if earlier else None


def future_count(con: duckdb.DuckDBPyConnection, stage: str, limit: datetime) -> int:
    """How many staged records are dated after `limit`."""
    return con.execute(
        f"SELECT count(*) FROM {q(stage)} WHERE \"UpdateDate\" > $day OR (\"UpdateDate\" = $day "
        f"AND coalesce(\"UpdateTime\", '') > $hms)",
        {"day": limit.date(), "hms": limit.strftime("%H:%M:%S")}).fetchone()[0]


@dataclass(frozen=True)
class Target:
    """One sap_raw table produced by a read."""

    table: str
    key: tuple[str, ...]
    contract: dict[str, str]
    udf_table: str | None
    collection: str | None = None          # None: the entities themselves
    parent_key_column: str | None = None   # child column holding the parent key
    master_data: bool = False
    is_document: bool = False
    history: bool = False


@dataclass(frozen=True)
class Plan:
    spec: SapTable
    main: Target
    children: tuple[Target, ...]
    entity_key: str | None                 # entity key property (single) for child injection
    select: str | None
    foreign_collections: frozenset[str]    # collections landed by another registry entry

    @property
    def targets(self) -> tuple[Target, ...]:
        return (self.main, *self.children)


def _child_target(child: ChildTable, parent: SapTable) -> Target:
    return Target(
        table=child.table, key=child.key, contract=child.columns, udf_table=child.udf_table,
        collection=child.collection, parent_key_column=child.parent_key_column,
        master_data=parent.is_master_data,
        history=parent.history,
    )


def plan_for(spec: SapTable) -> Plan:
    others = {
        COLLECTION_TABLES[t.table][0]
        for t in SAP_TABLES
        if t.table in COLLECTION_TABLES and t.entity_set == spec.entity_set and t.table != spec.table
    }
    if spec.table in COLLECTION_TABLES:
        collection, entity_key = COLLECTION_TABLES[spec.table]
        main = Target(
            table=spec.table, key=spec.key, contract=spec.columns, udf_table=spec.udf_table,
            collection=collection, parent_key_column=entity_key, history=spec.history,
        )
        return Plan(spec, main, (), entity_key, f"{entity_key},{collection}", frozenset())
    if spec.children and len(spec.key) != 1:
        raise ValueError(f"{spec.table}: child tables need a single-column parent key")
    main = Target(
        table=spec.table, key=spec.key, contract=spec.columns, udf_table=spec.udf_table,
        master_data=spec.is_master_data, is_document=spec.is_document, history=spec.history,
    )
    children = tuple(_child_target(c, spec) for c in spec.children)
    return Plan(spec, main, children, spec.key[0] if spec.children else None, None,
                frozenset(others))


def contract_read_type(registry_type: str) -> str:
    return "VARCHAR" if registry_type.upper() in ("TEXT",) else registry_type


def keys_present(keys: Iterable[str], prefix: str = "") -> str:
    return " AND ".join(f"{prefix}{q(k)} IS NOT NULL" for k in keys)


def key_join(left: str, right: str, keys: Iterable[str]) -> str:
    return " AND ".join(f"{left}.{q(k)} = {right}.{q(k)}" for k in keys)


class TempNames:
    """Temp table names of one landing (unique per call, dropped at the end)."""

    _counter = itertools.count(1)

    def __init__(self, table: str) -> None:
        self.prefix = f"_land_{table}_{next(self._counter)}"
        self.created: list[str] = []

    def __call__(self, what: str) -> str:
        name = f"{self.prefix}_{what}"
        if name not in self.created:
            self.created.append(name)
        return name

    def drop_all(self, con: duckdb.DuckDBPyConnection) -> None:
        for name in reversed(self.created):
            try:
                con.execute(f"DROP TABLE IF EXISTS temp.{q(name)}")
            except duckdb.Error:  # pragma: no cover - best effort cleanup
                pass
