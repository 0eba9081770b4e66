"""Land Service Layer pages into `sap_raw`: typed, merged by key, with watermarks, deletions, history.

One call of `land_table` lands one registry entry (a parent table and its child tables):

1. **Read.** Incremental entities are read with
   `(UpdateDate gt 'D') or (UpdateDate eq 'D' and UpdateTime ge 'HH:MM')`, where D/HH:MM is the
   stored watermark minus `SAP_B1_OVERLAP_MINUTES` (floored to the minute, the granularity SL
   honours; an overlap crossing midnight moves D back a day). No watermark yet, or
   `full_refresh`, means a full read. Full-mode tables (`cufd`, `ocrg`, `owhs`, `oitw`) are read
   whole every time. Pages are ordered on the key, so `$skip` paging stays stable.
   No `$select` is sent (except for `oitw`, whose registry note asks for
   `ItemCode,ItemWarehouseInfoCollection`): every property the Service Layer returns lands, so
   each company's own `U_*` fields arrive without configuration. The price is page weight; a
   `$select` list would have to be maintained per company and would silently drop new UDFs.
2. **Parse.** A background thread fetches the pages into temporary files (in a private 0700
   folder `.sap_pages/<table>` beside the warehouse, never the shared TMPDIR: pages hold names
   and addresses; removed at the end and, after a killed run, at the next start) while
   DuckDB's `read_json` parses the pages already there, a batch at a time (unnesting the `value`
   array), with an explicit column type built from the first page and the stored table: no
   Python object is built per record, and the Service Layer's latency hides behind the parsing.
   Once every page is in, the type is checked against a few pages sampled over the whole read;
   in the rare case they disagree (a property only later pages fill) every page is read again
   with the sampled type, so the outcome never depends on the batching. A page DuckDB finds
   damaged (the client checks only the ends of a page, where truncation shows) is located,
   fetched again and validated whole, and the read repeated.
   Types: contract columns as the registry says (amounts `DECIMAL(19,6)` read straight from the
   JSON text, so no binary float ever touches them; dates `DATE` from `...T00:00:00Z` or
   `YYYY-MM-DD`; times stay `'HH:MM:SS'` text); UDF columns from `sap_raw.cufd` (db_Float ->
   DECIMAL(19,6), db_Numeric -> BIGINT, db_Date -> DATE, db_Date/st_Time -> text, else
   VARCHAR); other properties as the JSON says: JSON integers BIGINT, JSON reals DECIMAL(19,6)
   (never DOUBLE), date strings DATE when every value is a plain date, other text as sent,
   nested collections that are not registered child tables as JSON text. A column keeps its
   stored type while the values fit; when they stop fitting (an integer property starts
   carrying fractions or text) the column widens (DECIMAL(38,6), else VARCHAR), is recorded in
   `sap_meta.schema_changes`, and the rows carrying it land once more. OData annotations
   (`@odata.etag`) are not landed.
3. **Bad values.** A contract or UDF value that cannot be read as its type (DocTotal `"abc"`)
   does not stop the run and does not disappear: its row lands with that column NULL and the raw
   text is kept in `sap_meta.rejected_values(table_name, record_key, column_name, raw_value,
   seen_at)` (record_key: key values joined by `|`, e.g. `DocEntry|LineNum`). A record whose
   *key* is unreadable cannot be merged; it is listed there and not landed. Entries of records
   read again are replaced, so the table shows what is wrong now.
4. **Merge** (one DuckDB transaction per call, together with the watermark): de-duplicate by
   key (latest UpdateDate/UpdateTime wins), compare a content hash (`_row_hash`: XOR of
   per-property hashes over the non-null properties, so a property that appears empty changes
   nothing; a parent's hash folds in its children's) with what is stored, and replace only
   changed keys (delete + insert BY NAME); unchanged rows keep their `_landed_at`. New
   properties are added with `ALTER TABLE ADD COLUMN` and recorded in `sap_meta.schema_changes`.
   Child rows of a changed parent are replaced as a set (an edited order can lose lines); the
   parent key is injected when the collection lacks it (ItemPrices carry no ItemCode); a
   collection the Service Layer did not send at all leaves its table untouched. Full-mode
   tables drop rows SAP no longer returns (never all of them: an empty full read is refused).
   The hash is DuckDB's `hash()` (20x cheaper than md5 over text): a DuckDB upgrade that changed
   it would re-land the rows read again, once.
5. **Deletions** (master data): SAP leaves no tombstone, so a key scan (`$select=<key>`, paged),
   run when asked or implied by a full read, sets `_deleted_at` on keys it no longer finds (and
   clears it when a key comes back). Nothing is deleted from `sap_raw`. Only a scan whose key
   count equals the collection's `$count` and that deletes at most SAP_B1_DELETION_MAX_SHARE of
   the live records may mark anything (lib/landing/deletions.py; `deletion_scan_refused`).
   Watermarks never pass now + SAP_B1_FUTURE_SKEW_MINUTES (company time; `future_update_date`).
6. **History** (`sap_history.ocrd`, `.ordr`, `.rdr1`): SCD type 2 with `_row_hash`,
   `_valid_from`, `_valid_to` (NULL = current) and `_is_current`; only changed rows make a new
   version. Validity is landing time (when this product learnt the version); SAP's own
   UpdateDate/UpdateTime are in the row. A first load (nothing stored, nothing superseded)
   writes the rows and their first versions without comparing anything.
7. `sap_meta.extract_columns` records the columns each extract returned (contract checks).
"""

from __future__ import annotations

import itertools
import logging
import re
import os
import shutil
import threading
import time as _time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import duckdb

from sap_ometria_assets.lib.landing.deletions import judge_scan, record_verdict
from sap_ometria_assets.lib.sap.tables import (
    DELETED_AT,
    IS_CANCELLATION,
    LANDED_AT,
    ChildTable,
    SapTable,
    optional_columns,
)
from sap_ometria_assets.lib.config.settings import Settings
from sap_ometria_assets.lib.warehouse.sql import table_columns

_log = logging.getLogger(__name__)

ROW_HASH = "_row_hash"
VALID_FROM, VALID_TO, IS_CURRENT = "_valid_from", "_valid_to", "_is_current"

# Tables read from a collection of another entity set (registry note on oitw): table ->
# (collection property, entity key property). The entity is read with `$select=key,collection`.
COLLECTION_TABLES: dict[str, tuple[str, str]] = {"oitw": ("ItemWarehouseInfoCollection", "ItemCode")}

_SAMPLE_FILES = 8             # pages sampled (spread over the read) to infer the JSON structure
_KEY_SCAN_PAGE_SIZE = 5000    # key-only pages are tiny: fewer requests
_DATE_RE = r"\d{4}-\d{2}-\d{2}([T ]00:00:00(\.0+)?(Z|[+-]00:?00)?)?"
_NUMERIC_IDS = {"tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint",
                "uinteger", "ubigint", "uhugeint", "float", "double", "decimal"}
_DATELIKE_IDS = {"date", "timestamp", "timestamp with time zone", "timestamp_ns", "timestamp_ms",
                 "timestamp_s"}
_WIDE_DECIMAL = "DECIMAL(38,6)"
_AMOUNT = "DECIMAL(19,6)"

META_DDL = (
    "CREATE SCHEMA IF NOT EXISTS sap_raw",
    "CREATE SCHEMA IF NOT EXISTS sap_history",
    "CREATE SCHEMA IF NOT EXISTS sap_meta",
    """CREATE TABLE IF NOT EXISTS sap_meta.watermarks (
        entity VARCHAR PRIMARY KEY, update_date DATE, update_time VARCHAR,
        landed_at TIMESTAMPTZ, rows_landed BIGINT)""",
    """CREATE TABLE IF NOT EXISTS sap_meta.extract_columns (
        table_name VARCHAR, column_name VARCHAR, column_type VARCHAR, seen_at TIMESTAMPTZ)""",
    """CREATE TABLE IF NOT EXISTS sap_meta.rejected_values (
        table_name VARCHAR, record_key VARCHAR, column_name VARCHAR, raw_value VARCHAR,
        seen_at TIMESTAMPTZ)""",
    """CREATE TABLE IF NOT EXISTS sap_meta.schema_changes (
        table_name VARCHAR, column_name VARCHAR, change VARCHAR, old_type VARCHAR,
        new_type VARCHAR, seen_at TIMESTAMPTZ)""",
)


class LandingError(RuntimeError):
    """Landing refused or failed for a reason a person must look at; the message says which."""


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
@dataclass
class TableCounts:
    """What one landing did to one sap_raw table."""

    rows_landed: int = 0       # rows in the extract (after de-duplication by key)
    rows_changed: int = 0      # new or changed rows written
    rows_unchanged: int = 0    # rows whose content hash matched what was stored
    rows_removed: int = 0      # full-mode tables: rows SAP no longer returns
    rows_total: int = 0        # rows in the table afterwards
    keys_marked_deleted: int = 0
    keys_restored: int = 0
    columns_added: list[str] = field(default_factory=list)
    rejected_values: int = 0


@dataclass
class LandResult:
    """Outcome of `land_table` for one registry entry (parent and children)."""

    table: str
    entity_set: str
    read: str                              # "incremental" | "full"
    filter: str | None
    pages: int = 0
    requests: int = 0
    bytes_read: int = 0
    watermark_before: str | None = None
    watermark_after: str | None = None
    duration_s: float = 0.0
    deletion_refused: str | None = None    # why a key scan was not allowed to mark deletions
    tables: dict[str, TableCounts] = field(default_factory=dict)

    @property
    def main(self) -> TableCounts:
        return self.tables[self.table]

    @property
    def rows_landed(self) -> int:
        return self.main.rows_landed

    @property
    def rows_changed(self) -> int:
        return self.main.rows_changed

    @property
    def rows_unchanged(self) -> int:
        return self.main.rows_unchanged

    @property
    def keys_marked_deleted(self) -> int:
        return self.main.keys_marked_deleted

    @property
    def columns_added(self) -> dict[str, list[str]]:
        return {t: c.columns_added for t, c in self.tables.items() if c.columns_added}

    @property
    def rejected_values(self) -> int:
        return sum(c.rejected_values for c in self.tables.values())


@dataclass(frozen=True)
class Watermark:
    update_date: date | None
    update_time: str | None

    def __str__(self) -> str:
        if self.update_date is None:
            return "none"
        return f"{self.update_date.isoformat()} {self.update_time or '00:00:00'}"


# ---------------------------------------------------------------------------------------------
# SQL helpers
# ---------------------------------------------------------------------------------------------
def q(name: str) -> str:
    """A quoted identifier (SL property names keep their case)."""
    return '"' + name.replace('"', '""') + '"'


def lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _fqn(schema: str, table: str) -> str:
    return f"{q(schema)}.{q(table)}"


def ensure_meta(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in META_DDL:
        con.execute(ddl)


# ---------------------------------------------------------------------------------------------
# watermark and filter
# ---------------------------------------------------------------------------------------------
def get_watermark(con: duckdb.DuckDBPyConnection, entity: str) -> Watermark | None:
    row = con.execute(
        "SELECT update_date, update_time FROM sap_meta.watermarks WHERE entity = ?", [entity]
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return Watermark(row[0], row[1])


def _parse_time(text: str | None) -> time:
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


def incremental_filter(watermark: Watermark, overlap_minutes: int) -> str:
    """`(UpdateDate gt 'D') or (UpdateDate eq 'D' and UpdateTime ge 'HH:MM')` for the watermark
    minus the overlap. The naive `UpdateDate ge D and UpdateTime ge T` loses later-day rows with an
    earlier clock time; this form does not."""
    assert watermark.update_date is not None
    start = datetime.combine(watermark.update_date, _parse_time(watermark.update_time))
    start = (start - timedelta(minutes=overlap_minutes)).replace(second=0, microsecond=0)
    day, hhmm = start.date().isoformat(), start.strftime("%H:%M")
    return f"(UpdateDate gt '{day}') or (UpdateDate eq '{day}' and UpdateTime ge '{hhmm}')"


# ---------------------------------------------------------------------------------------------
# what a registry entry lands
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Target:
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
class _Plan:
    spec: SapTable
    main: _Target
    children: tuple[_Target, ...]
    entity_key: str | None                 # entity key property (single) for child injection
    select: str | None
    foreign_collections: frozenset[str]    # collections landed by another registry entry

    @property
    def targets(self) -> tuple[_Target, ...]:
        return (self.main, *self.children)


def _child_target(child: ChildTable, parent: SapTable) -> _Target:
    return _Target(
        table=child.table, key=child.key, contract=child.columns, udf_table=child.udf_table,
        collection=child.collection, parent_key_column=child.parent_key_column,
        master_data=parent.is_master_data,
        history=parent.history and child.collection == "DocumentLines",
    )


def plan_for(spec: SapTable) -> _Plan:
    from sap_ometria_assets.lib.sap.tables import SAP_TABLES

    others = {
        COLLECTION_TABLES[t.table][0]
        for t in SAP_TABLES
        if t.table in COLLECTION_TABLES and t.entity_set == spec.entity_set and t.table != spec.table
    }
    if spec.table in COLLECTION_TABLES:
        collection, entity_key = COLLECTION_TABLES[spec.table]
        main = _Target(
            table=spec.table, key=spec.key, contract=spec.columns, udf_table=spec.udf_table,
            collection=collection, parent_key_column=entity_key,
        )
        return _Plan(spec, main, (), entity_key, f"{entity_key},{collection}", frozenset())
    if spec.children and len(spec.key) != 1:
        raise ValueError(f"{spec.table}: child tables need a single-column parent key")
    main = _Target(
        table=spec.table, key=spec.key, contract=spec.columns, udf_table=spec.udf_table,
        master_data=spec.is_master_data, is_document=spec.is_document, history=spec.history,
    )
    children = tuple(_child_target(c, spec) for c in spec.children)
    return _Plan(spec, main, children, spec.key[0] if spec.children else None, None,
                 frozenset(others))


def _contract_read_type(registry_type: str) -> str:
    return "VARCHAR" if registry_type.upper() in ("TEXT",) else registry_type


def udf_types(con: duckdb.DuckDBPyConnection, udf_table: str | None) -> dict[str, str]:
    """DuckDB types of a table's UDFs (`U_<Name>`) from the landed `sap_raw.cufd`."""
    if not udf_table or not table_columns(con, "sap_raw", "cufd"):
        return {}
    cols = table_columns(con, "sap_raw", "cufd")
    if not {"TableName", "Name", "Type"} <= cols.keys():
        return {}
    sub = "SubType" if "SubType" in cols else "NULL"
    rows = con.execute(
        f"SELECT Name, Type, {sub} FROM sap_raw.cufd WHERE TableName = ? AND Name IS NOT NULL",
        [udf_table],
    ).fetchall()
    out: dict[str, str] = {}
    for name, ftype, subtype in rows:
        if ftype == "db_Float":
            out[f"U_{name}"] = _AMOUNT
        elif ftype == "db_Numeric":
            out[f"U_{name}"] = "BIGINT"
        elif ftype == "db_Date" and subtype != "st_Time":
            out[f"U_{name}"] = "DATE"
        else:
            out[f"U_{name}"] = "VARCHAR"
    return out


# ---------------------------------------------------------------------------------------------
# column typing
# ---------------------------------------------------------------------------------------------
@dataclass
class _Col:
    name: str
    read_type: str                 # type read_json produces
    kind: str                      # forced | number | datelike | text | bool | json
    final_type: str | None = None  # type in sap_raw (decided by _conform)

    def cast(self, src: str) -> str:
        """SQL turning the staged value `src` into `final_type`."""
        target = self.final_type or self.read_type
        if self.kind == "datelike" and target.upper() == "DATE":
            return f"CAST(substr({src}, 1, 10) AS DATE)"
        if target.upper() == self.read_type.upper():
            return src
        if self.kind in ("number", "integer") and target.upper() == "VARCHAR":
            # the number as SL wrote it (5, 5.5), not DECIMAL's padding (5.000000)
            return f"rtrim(rtrim(CAST({src} AS VARCHAR), '0'), '.')"
        return f"CAST({src} AS {target})"


def _is_annotation(name: str) -> bool:
    return "@" in name or name.startswith("odata.")


def _classify(dtype: duckdb.typing.DuckDBPyType) -> tuple[str, str]:
    """(read type, kind) for a property that no contract or UDF types."""
    tid = dtype.id
    if str(dtype) == "JSON":
        return "VARCHAR", "text"
    if tid in ("struct", "list", "map", "array", "union"):
        return "JSON", "json"
    if tid in _NUMERIC_IDS:
        # Read exactly as DECIMAL(38,6) whatever the JSON; JSON integers (ids, codes) become
        # BIGINT, JSON reals (SL writes Edm.Double as 0.0) DECIMAL(19,6), never DOUBLE.
        kind = "number" if tid in ("float", "double", "decimal") else "integer"
        return _WIDE_DECIMAL, kind
    if tid == "boolean":
        return "BOOLEAN", "bool"
    if tid in _DATELIKE_IDS:
        return "VARCHAR", "datelike"
    return "VARCHAR", "text"


def _struct(fields: Iterable[tuple[str, str]]) -> str:
    return "STRUCT(" + ", ".join(f"{q(n)} {t}" for n, t in fields) + ")"


@dataclass
class _Shape:
    """Read types of one target's properties (in SL order) plus its child collections."""

    cols: list[_Col]
    # collection property -> element columns (None: the sample held no element to learn from)
    collections: dict[str, list[_Col] | None] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)   # child tables whose collection SL omitted


def _from_stored(stored: str) -> tuple[str, str]:
    """(read type, kind) for a property the sample only saw empty but the table already types."""
    s = stored.upper()
    if _is_numeric_type(s):
        return _WIDE_DECIMAL, "integer" if s in ("BIGINT", "INTEGER", "HUGEINT") else "number"
    if s == "DATE":
        return "VARCHAR", "datelike"
    if s == "BOOLEAN":
        return "BOOLEAN", "bool"
    if s == "JSON":
        return "JSON", "json"
    return "VARCHAR", "text"


def _columns_for(fields: list[tuple[str, Any]], forced: dict[str, str], exclude: set[str],
                 stored: dict[str, str], prefer_stored: bool) -> list[_Col]:
    """Read types: contract/UDF types; else, for a column sap_raw already has, the kind of its
    stored type (so reads, and hashes, do not flip with what a sample happened to see); else what
    the JSON shows. The lenient re-read after a failed read ignores stored types, so a property
    whose values really changed kind widens its column instead of being rejected."""
    cols = []
    for name, dtype in fields:
        if _is_annotation(name) or name in exclude:
            continue
        if name in forced:
            cols.append(_Col(name, _contract_read_type(forced[name]), "forced"))
        elif name in stored and (prefer_stored or dtype.id == "null"):
            cols.append(_Col(name, *_from_stored(stored[name])))
        else:
            cols.append(_Col(name, *_classify(dtype)))
    return cols


def _element_fields(dtype: Any) -> list[tuple[str, Any]] | None:
    if dtype.id == "list" and dtype.child.id == "struct":
        return list(dtype.child.children)
    return None


# ---------------------------------------------------------------------------------------------
# the landing
# ---------------------------------------------------------------------------------------------
class _Names:
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


PAGES_DIR = ".sap_pages"


@contextmanager
def pages_dir(settings: Settings, table: str) -> Iterator[Path]:
    """A private folder (0700) for one table's raw pages (customer names, addresses) beside the
    warehouse, never the shared system temp dir. A folder a killed run left behind is removed
    first; the folder goes at the end of the landing, whatever happened."""
    root = settings.duckdb_path.parent / PAGES_DIR
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    folder = root / table
    if folder.exists():
        _log.warning("%s: removing raw pages a killed run left in %s", table, folder)
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700)
    os.chmod(folder, 0o700)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def land_table(
    con: duckdb.DuckDBPyConnection,
    client: Any,
    spec: SapTable,
    *,
    settings: Settings,
    now: datetime | None = None,
    deletion_scan: bool = False,
    full_refresh: bool = False,
    logger: Any = None,
) -> LandResult:
    """Land one registry entry (parent and child tables) from the Service Layer into sap_raw."""
    log = logger or _log
    started = _time.perf_counter()
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("`now` must be timezone-aware")
    ensure_meta(con)
    plan = plan_for(spec)
    wm_before = get_watermark(con, spec.table)
    limit = future_limit(settings, now)
    if wm_before is not None and wm_before.update_date is not None and datetime.combine(
            wm_before.update_date, _parse_time(wm_before.update_time)) > limit:
        # A watermark in the future (set by a future-dated record before this guard existed)
        # would filter out every later change: read everything once to catch up.
        log.warning("%s: the stored watermark %s is in the future (now %s in %s); reading the "
                    "whole table once", spec.table, wm_before, limit, settings.sap_ometria_timezone)
        full_refresh_wm = True
    else:
        full_refresh_wm = False
    # A watermark without its table (dropped by hand) must not turn into a partial reload.
    incremental = (spec.read_mode == "incremental" and not full_refresh and not full_refresh_wm
                   and wm_before is not None
                   and bool(table_columns(con, "sap_raw", spec.table)))
    filters = [spec.filter] if spec.filter else []
    if incremental and wm_before is not None:
        filters.append(incremental_filter(wm_before, settings.sap_b1_overlap_minutes))
    odata_filter = " and ".join(f"({f})" for f in filters) if len(filters) > 1 else (
        filters[0] if filters else None)
    result = LandResult(
        table=spec.table, entity_set=spec.entity_set, read="incremental" if incremental else "full",
        filter=odata_filter, watermark_before=str(wm_before) if wm_before else None,
    )
    requests_before = client.requests
    names = _Names(spec.table)
    with pages_dir(settings, spec.table) as tmp:
        try:
            orderby = plan.entity_key if plan.select else ",".join(spec.key)
            with _Fetcher(client, spec.entity_set, Path(tmp), "page", select=plan.select,
                          filter=odata_filter, orderby=orderby, result=result) as fetcher:
                staged = _stage_pages(con, client, fetcher, plan, names)
            log.info("%s: read %d page(s) of %s (%s read%s)", spec.table, result.pages,
                     spec.entity_set, result.read, f", filter {odata_filter}" if odata_filter else "")
            scan_keys = None
            verdict = None
            if spec.is_master_data and (deletion_scan or not incremental):
                stored_live = _live_count(con, spec.table)
                sap_count = client.count(spec.entity_set, filter=spec.filter) if (
                    stored_live and incremental) else None
                scan_keys = staged.tables[plan.main.table] if not incremental else _key_scan(
                    con, client, spec, Path(tmp), names, result, expected=sap_count)
                if stored_live:
                    if sap_count is None:   # a full read: its keys are the scan
                        sap_count = client.count(spec.entity_set, filter=spec.filter)
                    verdict = judge_scan(
                        con, table=spec.table, entity_set=spec.entity_set,
                        stored=_fqn("sap_raw", spec.table), scan=q(scan_keys),
                        key_join=_key_join("k", "t", spec.key), sap_count=sap_count,
                        settings=settings)
                    if verdict.refused:
                        log.error("%s: %s", spec.table, verdict.reason)
                        result.deletion_refused = verdict.reason
            result.requests = client.requests - requests_before
            broken = _broken_contract(con, plan, staged)
            con.execute("BEGIN TRANSACTION")
            try:
                _merge_all(con, plan, staged, result, now,
                           None if verdict is not None and verdict.refused else scan_keys,
                           full_refresh)
                if verdict is not None:
                    record_verdict(con, verdict, now)
                wm_after = _advance_watermark(con, plan, staged,
                                              None if full_refresh_wm else wm_before, now,
                                              result, broken, limit)
                result.watermark_after = str(wm_after) if wm_after else None
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            names.drop_all(con)
    result.duration_s = _time.perf_counter() - started
    log.info(
        "%s: %d row(s) in the extract, %d changed, %d unchanged, %d marked deleted, %d rejected "
        "value(s); %d page(s), %d request(s), %.2fs", spec.table, result.rows_landed,
        result.rows_changed, result.rows_unchanged, result.keys_marked_deleted,
        result.rejected_values, result.pages, result.requests, result.duration_s,
    )
    return result


# ---------------------------------------------------------------------------------------------
# fetch
# ---------------------------------------------------------------------------------------------
class _Fetcher:
    """The pages of one read, fetched by a background thread into files, so HTTP (the Service
    Layer's latency, our client's work) overlaps DuckDB parsing the pages already fetched
    (DuckDB releases the GIL while it runs). The client is used by one thread at a time: the
    fetching thread until the read ends, the caller only after `wait_all` (for `refetch`).
    A fetch error is raised in the caller at its next call; leaving the `with` block stops the
    thread (after the page in flight) before the temporary folder goes."""

    def __init__(self, client: Any, entity_set: str, folder: Path, stem: str, *,
                 select: str | None, filter: str | None, orderby: str,  # noqa: A002
                 result: LandResult | None, page_size: int | None = None,
                 max_pages: int | None = None) -> None:
        self.client = client
        self.files: list[str] = []
        self.pages: list[Any] = []   # sap_client.Page without its body, per file
        self._folder, self._stem, self._result = folder, stem, result
        self._args = {"select": select, "filter": filter, "orderby": orderby,
                      "page_size": page_size}
        if max_pages is not None:
            self._args["max_pages"] = max_pages
        self._entity_set = entity_set
        self._cond = threading.Condition()
        self._taken = 0
        self._done = False
        self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"sap-fetch-{entity_set}",
                                        daemon=True)
        self._thread.start()

    def __enter__(self) -> _Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()

    def _run(self) -> None:
        try:
            pages = self.client.pages(self._entity_set, **self._args)
            try:
                for page in pages:
                    if self._stop:
                        break
                    path = self._folder / f"{self._stem}_{page.number:07d}.json"
                    path.write_bytes(page.body)
                    with self._cond:
                        self.files.append(str(path))
                        self.pages.append(replace(page, body=b""))
                        if self._result is not None:
                            self._result.pages += 1
                            self._result.bytes_read += len(page.body)
                        self._cond.notify_all()
            finally:
                pages.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def next_batch(self, at_least: int = 1, at_most: int | None = None) -> list[str]:
        """Files not handed out yet: waits until `at_least` are there (or the read ended);
        [] once every page has been handed out."""
        with self._cond:
            self._cond.wait_for(lambda: self._done or self._error is not None
                                or len(self.files) - self._taken >= at_least)
            if self._error is not None:
                raise self._error
            end = len(self.files) if at_most is None else min(len(self.files),
                                                              self._taken + at_most)
            batch = self.files[self._taken:end]
            self._taken = end
            return batch

    def wait_all(self) -> list[str]:
        """Every page's file, once the read has ended (raises what the fetching raised)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return list(self.files)

    def repair(self) -> int:
        """Validate every fetched page whole; fetch the damaged ones again (validated whole:
        `SapB1Error` names a page that stays damaged). Returns how many were replaced."""
        files = self.wait_all()
        repaired = 0
        for path, page in zip(files, self.pages, strict=True):
            problem = self.client.page_problem(Path(path).read_bytes())
            if not problem:
                continue
            self.client.log.warning("SAP B1 %s page %d: %s; fetching it again", page.entity_set,
                                    page.number, problem)
            Path(path).write_bytes(self.client.refetch(page).body)
            repaired += 1
        return repaired


def _read_repairing(con: duckdb.DuckDBPyConnection, fetcher: _Fetcher, names: _Names,
                    read: Any) -> Any:
    """`read()` (DuckDB reading the fetched pages); when DuckDB finds a page malformed, the
    damaged pages are fetched again and the read repeated once."""
    try:
        return read()
    except duckdb.InvalidInputException as exc:
        if "Malformed JSON" not in str(exc):
            raise
        if not fetcher.repair():
            raise
        names.drop_all(con)
        return read()


# ---------------------------------------------------------------------------------------------
# parse and stage
# ---------------------------------------------------------------------------------------------
@dataclass
class _Staged:
    """Per target: the temp table (deduplicated, raw read types, `_row_hash`) and its columns.
    Rows whose key could not be read stay in the stage (for the reject report) and are skipped
    by the merge."""

    tables: dict[str, str]
    cols: dict[str, list[_Col]]
    rejects: str | None                    # temp table of rejected values (or None)
    empty: bool
    names: _Names
    hashes: dict[str, str] = field(default_factory=dict)  # target -> (key, _row_hash) table
    absent: set[str] = field(default_factory=set)         # child tables left untouched


def _read_json_sql(files_param: str, value_type: str, *, ignore_errors: bool = False) -> str:
    return (
        f"read_json({files_param}, columns={{'value': {lit(value_type)}}}, format='unstructured', "
        f"records=true, filename=true{', ignore_errors=true' if ignore_errors else ''})"
    )


def _entities_sql(value_type: str, *, ignore_errors: bool = False) -> str:
    """One row per entity: page file, position in the page, then every property as a column."""
    return (
        "SELECT _page, _pos, unnest(_e) FROM (SELECT filename AS _page, generate_subscripts(value, "
        f"1) AS _pos, unnest(value) AS _e FROM {_read_json_sql('$files', value_type, ignore_errors=ignore_errors)})"
    )


def _sample(files: list[str]) -> list[str]:
    """Pages spread over the read (first, last, between): up to 8, one in thirty, at least 2.
    Inferring a page's structure costs about 3x reading it, so the sample stays small: the
    Service Layer sends every property of an entity set on every record (nulls included), and
    properties sap_raw already has are read with their stored types anyway."""
    n = min(_SAMPLE_FILES, max(2, len(files) // 30))
    if len(files) <= n:
        return files
    step = (len(files) - 1) / (n - 1)
    return sorted({files[round(i * step)] for i in range(n)})


def _infer(con: duckdb.DuckDBPyConnection, files: list[str]) -> Any | None:
    """The inferred type of `value` elements over `files` (every record of them), or None."""
    rel = con.sql(
        "SELECT * FROM read_json($files, format='unstructured', records=true, sample_size=-1, "
        "maximum_sample_files=-1) LIMIT 0", params={"files": files},
    )
    for name, dtype in zip(rel.columns, rel.types, strict=True):
        if name == "value":
            return dtype.child if dtype.id == "list" else None
    return None


def _entity_count(con: duckdb.DuckDBPyConnection, files: list[str]) -> int:
    row = con.execute(
        "SELECT coalesce(sum(len(value)), 0) FROM " + _read_json_sql("$files", "JSON[]"),
        {"files": files},
    ).fetchone()
    return int(row[0]) if row else 0


def _shape(plan: _Plan, element: Any, forced: dict[str, dict[str, str]],
           stored: dict[str, dict[str, str]], prefer_stored: bool = True) -> _Shape:
    """Read types for the entity struct (main target columns plus registered collections)."""
    fields = list(element.children)
    by_name = dict(fields)
    if plan.main.collection:  # oitw: entities are (ItemCode, collection)
        key_type = _contract_read_type(plan.main.contract.get(plan.entity_key, "VARCHAR"))  # type: ignore[arg-type]
        shape = _Shape(cols=[_Col(plan.entity_key, key_type, "forced")])  # type: ignore[arg-type]
        colls = [(plan.main.collection, plan.main.table)]
    else:
        exclude = {c.collection for c in plan.children} | set(plan.foreign_collections)
        shape = _Shape(cols=_columns_for(fields, forced[plan.main.table], exclude,  # type: ignore[arg-type]
                                         stored[plan.main.table], prefer_stored))
        colls = [(c.collection, c.table) for c in plan.children]
    for coll, table in colls:
        dtype = by_name.get(coll)  # type: ignore[arg-type]
        if dtype is None:
            shape.absent.add(table)  # SL did not send the collection: its rows are unknown
            continue
        el = _element_fields(dtype)
        shape.collections[coll] = (  # type: ignore[index]
            _columns_for(el, forced[table], set(), stored[table], prefer_stored)
            if el is not None else None
        )
    return shape


def _value_type(shape: _Shape, *, as_text: set[str] | None = None) -> str:
    """The STRUCT(...)[] type for read_json; `as_text` reads those properties as VARCHAR."""
    def t(col: _Col) -> str:
        return "VARCHAR" if as_text is not None and col.name in as_text else col.read_type

    fields = [(c.name, t(c)) for c in shape.cols]
    for coll, cols in shape.collections.items():
        if cols is None:
            fields.append((coll, "JSON"))
        else:
            fields.append((coll, _struct((c.name, t(c)) for c in cols) + "[]"))
    return _struct(fields) + "[]"


def _entity_key(plan: _Plan) -> tuple[str, ...]:
    return plan.main.key if plan.main.collection is None else (plan.entity_key,)  # type: ignore[return-value]


# A streamed read_json takes every page fetched so far, at least this many while the read goes
# on: DuckDB parses the files of one statement in parallel, and each statement has a fixed cost
# (on 2 cores, 200 pages in 8 statements of 25 cost about 40% more than in one).
_BATCH_MIN = 8


def _known_types(con: duckdb.DuckDBPyConnection, plan: _Plan) -> tuple[dict, dict]:
    forced = {t.table: {**udf_types(con, t.udf_table), **t.contract} for t in plan.targets}
    stored = {t.table: table_columns(con, "sap_raw", t.table) for t in plan.targets}
    return forced, stored


def _stage_pages(con: duckdb.DuckDBPyConnection, client: Any, fetcher: _Fetcher, plan: _Plan,
                 names: _Names) -> _Staged:
    """Stage the pages while they arrive; anything unusual (values that do not fit, a damaged
    page, a type the first page could not tell) goes to the whole read of every page."""
    try:
        staged = _stage_streaming(con, fetcher, plan, names)
        if staged is not None:
            return staged
    except (duckdb.InvalidInputException, duckdb.ConversionException) as exc:
        _log.info("%s: streamed read stopped (%s); reading every page again", plan.spec.table,
                  str(exc).splitlines()[0][:200])
    files = fetcher.wait_all()
    names.drop_all(con)
    return _read_repairing(con, fetcher, names, lambda: _stage(con, files, plan, names))


def _stage_streaming(con: duckdb.DuckDBPyConnection, fetcher: _Fetcher, plan: _Plan,
                     names: _Names) -> _Staged | None:
    """Parse batches of pages as they are fetched, typed from the first page; None when the
    whole read must decide (no struct to learn from, or the sample over every page disagrees)."""
    first = fetcher.next_batch(1)
    if not first:
        return None
    forced, stored = _known_types(con, plan)
    element = _infer(con, first[:1])
    if element is None or element.id != "struct":
        return None
    shape = _shape(plan, element, forced, stored)
    value_type = _value_type(shape)
    ent = names("entities")
    select = _entities_sql(value_type)
    batch = first + fetcher.next_batch(_BATCH_MIN - 1)
    con.execute(f"CREATE TEMP TABLE {q(ent)} AS {select}", {"files": batch})
    while batch := fetcher.next_batch(_BATCH_MIN):
        con.execute(f"INSERT INTO {q(ent)} {select}", {"files": batch})
    files = fetcher.wait_all()
    sampled = _infer(con, _sample(files))
    if (sampled is None or sampled.id != "struct"
            or _value_type(_shape(plan, sampled, forced, stored)) != value_type):
        _log.info("%s: pages sampled over the whole read type some property differently from "
                  "the first page; reading every page again", plan.spec.table)
        return None
    if _numeric_booleans(con, files, shape):
        return None
    return _finish_stage(con, plan, shape, ent, names, None, forced)


def _stage(con: duckdb.DuckDBPyConnection, files: list[str], plan: _Plan, names: _Names) -> _Staged:
    """The whole read: every page in one statement, typed from a sample over all of them, with
    the lenient re-read when values do not fit."""
    forced, stored = _known_types(con, plan)
    if not files:
        return _empty_stage(con, plan, names)
    element = _infer(con, _sample(files))
    if element is None or element.id != "struct":
        if _entity_count(con, files) == 0:
            return _empty_stage(con, plan, names)
        element = _infer(con, files)
        if element is None or element.id != "struct":
            raise LandingError(
                f"{plan.spec.table}: the Service Layer returned `value` entries that are not "
                f"objects ({element}); cannot land {plan.spec.entity_set}"
            )
    shape = _shape(plan, element, forced, stored)
    ent = names("entities")
    rejects = None
    try:
        con.execute(f"CREATE TEMP TABLE {q(ent)} AS {_entities_sql(_value_type(shape))}",
                    {"files": files})
        if _numeric_booleans(con, files, shape):
            raise duckdb.ConversionException("Could not convert: a JSON boolean in a number column")
    except (duckdb.InvalidInputException, duckdb.ConversionException) as exc:
        text = str(exc)
        if not any(s in text for s in ("JSON transform error", "Failed to cast", "Could not convert")):
            raise
        _log.warning("%s: some values do not fit the expected types (%s); reading again "
                     "leniently: other properties widen their column, contract and UDF values "
                     "that do not fit land as NULL and are listed in sap_meta.rejected_values",
                     plan.spec.table, text.splitlines()[0][:300])
        full = _infer(con, files)
        shape = _shape(plan, full, forced, stored, prefer_stored=False)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {q(ent)} AS "
                    f"{_entities_sql(_value_type(shape), ignore_errors=True)}", {"files": files})
        rejects = _find_rejects(con, files, plan, shape, ent, names)
    return _finish_stage(con, plan, shape, ent, names, rejects, forced)


def _numeric_booleans(con: duckdb.DuckDBPyConnection, files: list[str], shape: _Shape) -> bool:
    """Whether any page holds a JSON true/false for a column read as a number: DuckDB's JSON
    reader turns those into 1/0 without a word, so such a read goes the lenient way, where
    they are rejected instead (`_find_rejects`). One regex scan of the page text."""
    numeric = sorted({c.name for c in shape.cols if _is_numeric_type(c.read_type)})
    if not numeric or not files:
        return False
    pattern = '"(' + "|".join(re.escape(n) for n in numeric) + ')"\\s*:\\s*(true|false)\\b'
    row = con.execute("SELECT count(*) FROM read_text($files) WHERE regexp_matches(content, $p)",
                      {"files": files, "p": pattern}).fetchone()
    return bool(row and row[0])


NULL_KEY_PREFIX = "(null key) "


def _reject_null_keys(con: duckdb.DuckDBPyConnection, plan: _Plan, ent: str, names: _Names,
                      rejects: str | None) -> str | None:
    """Records SAP sent with a null key cannot land (nothing to merge on): each is listed in
    sap_meta.rejected_values as '(null key) record N of the extract' instead of vanishing."""
    keys = _entity_key(plan)
    missing = " OR ".join(f"{q(k)} IS NULL" for k in keys)
    n = con.execute(f"SELECT count(*) FROM {q(ent)} WHERE {missing}").fetchone()[0]
    if not n:
        return rejects
    if rejects is not None and con.execute(
            f"SELECT count(*) FROM {q(rejects)} WHERE column_name IN "
            f"({', '.join(lit(k) for k in keys)})").fetchone()[0]:
        return rejects  # the lenient read listed unreadable keys with their raw text already
    if rejects is None:
        rejects = names("rejects")
        con.execute(f"CREATE TEMP TABLE {q(rejects)} (table_name VARCHAR, record_key VARCHAR, "
                    "column_name VARCHAR, raw_value VARCHAR)")
    con.execute(
        f"INSERT INTO {q(rejects)} SELECT {lit(plan.main.table)}, {lit(NULL_KEY_PREFIX)} || "
        f"'record ' || pos || ' of the extract', {lit(', '.join(keys))}, NULL FROM ("
        f"SELECT row_number() OVER (ORDER BY _page, _pos) AS pos, {missing} AS bad FROM {q(ent)}) "
        "WHERE bad")
    _log.warning("%s: %d record(s) with a null key (%s) listed in sap_meta.rejected_values",
                 plan.main.table, n, ", ".join(keys))
    return rejects


def _finish_stage(con: duckdb.DuckDBPyConnection, plan: _Plan, shape: _Shape, ent: str,
                  names: _Names, rejects: str | None, forced: dict[str, dict[str, str]]) -> _Staged:
    rejects = _reject_null_keys(con, plan, ent, names, rejects)
    _dedupe(con, ent, _entity_key(plan), _dedupe_order(c.name for c in shape.cols))
    for coll, cols in list(shape.collections.items()):
        if cols is None:
            shape.collections[coll] = _learn_collection(con, plan, ent, coll, forced)
    return _split(con, plan, shape, ent, names, rejects)


def _dedupe(con: duckdb.DuckDBPyConnection, table: str, keys: tuple[str, ...], order: str) -> int:
    """Keep one row per key (the latest version): `$skip` paging without a snapshot can return a
    record twice when rows move during the read. Checked first, since it is rare."""
    cols = ", ".join(q(k) for k in keys)
    present = _keys_present(keys)
    total, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT ({cols})) FROM {q(table)} WHERE {present}"
    ).fetchone()
    if total == distinct:
        return 0
    removed = con.execute(
        f"DELETE FROM {q(table)} WHERE (_page, _pos) IN (SELECT (_page, _pos) FROM {q(table)} "
        f"WHERE {present} QUALIFY row_number() OVER (PARTITION BY {cols} ORDER BY {order}) > 1)"
    ).fetchone()[0]
    _log.info("%s: %d duplicate record(s) from paging dropped (latest version kept)", table, removed)
    return int(removed)


def _learn_collection(con: duckdb.DuckDBPyConnection, plan: _Plan, ent: str, coll: str,
                      forced: dict[str, dict[str, str]]) -> list[_Col] | None:
    """A registered collection that was empty in every sampled page was read as JSON text: learn
    its element structure from the non-empty ones (if any) and convert it to typed rows."""
    nonempty = f"{q(coll)} IS NOT NULL AND {q(coll)}::VARCHAR NOT IN ('[]', 'null')"
    if not con.execute(f"SELECT count(*) FROM {q(ent)} WHERE {nonempty}").fetchone()[0]:
        return None
    table = next(t.table for t in plan.targets if t.collection == coll)
    structure = con.execute(
        f"SELECT json_group_structure(j) FROM (SELECT unnest(CAST({q(coll)} AS JSON[])) AS j "
        f"FROM {q(ent)} WHERE {nonempty})"
    ).fetchone()[0]
    import json as _json

    learnt = _json.loads(structure) if structure else {}
    if not isinstance(learnt, dict):
        raise LandingError(f"{table}: `{coll}` holds entries that are not objects")
    cols: list[_Col] = []
    for name, jtype in learnt.items():
        if _is_annotation(name):
            continue
        if name in forced[table]:
            cols.append(_Col(name, _contract_read_type(forced[table][name]), "forced"))
        elif isinstance(jtype, dict | list) or jtype == "JSON":
            cols.append(_Col(name, "JSON", "json"))
        elif jtype in ("UBIGINT", "BIGINT", "HUGEINT"):
            cols.append(_Col(name, _WIDE_DECIMAL, "integer"))
        elif jtype == "DOUBLE":
            cols.append(_Col(name, _WIDE_DECIMAL, "number"))
        elif jtype == "BOOLEAN":
            cols.append(_Col(name, "BOOLEAN", "bool"))
        else:
            cols.append(_Col(name, "VARCHAR", "text"))
    target = "[" + _json.dumps({c.name: c.read_type for c in cols}) + "]"
    try:
        con.execute(f"UPDATE {q(ent)} SET {q(coll)} = NULL WHERE NOT ({nonempty})")
        con.execute(f"ALTER TABLE {q(ent)} ALTER COLUMN {q(coll)} SET DATA TYPE "
                    f"{_struct((c.name, c.read_type) for c in cols)}[] USING "
                    f"json_transform_strict({q(coll)}, {lit(target)})")
    except duckdb.Error as exc:
        raise LandingError(
            f"{table}: `{coll}` holds values that do not fit their column type: "
            f"{str(exc).splitlines()[0][:300]}"
        ) from None
    return cols


def _empty_stage(con: duckdb.DuckDBPyConnection, plan: _Plan, names: _Names) -> _Staged:
    tables, cols = {}, {}
    for target in plan.targets:
        tcols = [_Col(n, _contract_read_type(t), "forced") for n, t in target.contract.items()]
        name = names(f"t_{target.table}")
        defs = ", ".join(f"{q(c.name)} {c.read_type}" for c in tcols)
        con.execute(f"CREATE TEMP TABLE {q(name)} ({defs}, {ROW_HASH} VARCHAR)")
        tables[target.table], cols[target.table] = name, tcols
    return _Staged(tables, cols, None, True, names)


def _find_rejects(con: duckdb.DuckDBPyConnection, files: list[str], plan: _Plan, shape: _Shape,
                  ent: str, names: _Names) -> str:
    """Compare the lenient typed read with a text read of the same pages: values present as text
    but NULL once typed did not fit their column."""
    typed = {c.name for c in shape.cols if c.read_type != "VARCHAR"} | {
        c.name for cols in shape.collections.values() if cols for c in cols if c.read_type != "VARCHAR"}
    shadow = names("shadow")
    con.execute(
        f"CREATE TEMP TABLE {q(shadow)} AS SELECT filename AS _page, generate_subscripts(value, 1) "
        f"AS _pos, unnest(value) AS _e FROM "
        + _read_json_sql("$files", _value_type(shape, as_text=typed)), {"files": files},
    )
    n_read = con.execute(
        "SELECT count(*) FROM (" + _entities_sql(_value_type(shape), ignore_errors=True) + ")",
        {"files": files},
    ).fetchone()[0]
    n_shadow = con.execute(f"SELECT count(*) FROM {q(shadow)}").fetchone()[0]
    if n_read != n_shadow:
        raise LandingError(
            f"{plan.spec.table}: the lenient read of {plan.spec.entity_set} kept {n_read} of "
            f"{n_shadow} records; refusing to land a partial extract"
        )
    rejects = names("rejects")
    con.execute(f"CREATE TEMP TABLE {q(rejects)} (table_name VARCHAR, record_key VARCHAR, "
                "column_name VARCHAR, raw_value VARCHAR)")
    main = plan.main
    if main.collection is None:
        key_txt = " || '|' || ".join(f"coalesce(s._e.{q(k)}::VARCHAR, '')" for k in main.key)
        for col in shape.cols:
            if col.read_type == "VARCHAR":
                continue
            # a JSON true/false read as a number is 1/0: rejected too, and set to NULL
            boolean = (f"s._e.{q(col.name)} IN ('true', 'false')"
                       if _is_numeric_type(col.read_type) else "false")
            con.execute(
                f"INSERT INTO {q(rejects)} SELECT {lit(main.table)}, {key_txt}, {lit(col.name)}, "
                f"s._e.{q(col.name)} FROM {q(ent)} r JOIN {q(shadow)} s USING (_page, _pos) "
                f"WHERE s._e.{q(col.name)} IS NOT NULL AND (r.{q(col.name)} IS NULL OR {boolean})"
            )
            if boolean != "false":
                con.execute(
                    f"UPDATE {q(ent)} r SET {q(col.name)} = NULL FROM {q(shadow)} s "
                    f"WHERE r._page = s._page AND r._pos = s._pos AND {boolean}"
                )
    targets = [main] if main.collection else list(plan.children)
    for target in targets:
        cols = shape.collections.get(target.collection)  # type: ignore[arg-type]
        if not cols:
            continue
        key_txt = " || '|' || ".join(
            f"coalesce(s._c.{q(k)}::VARCHAR, s._pk::VARCHAR, '')" if k == target.parent_key_column
            else f"coalesce(s._c.{q(k)}::VARCHAR, '')" for k in target.key
        )
        coll = q(target.collection)  # type: ignore[arg-type]
        unnest_r = (f"SELECT _page, _pos, generate_subscripts({coll}, 1) AS _cpos, "
                    f"unnest({coll}) AS _c FROM {q(ent)}")
        unnest_s = (f"SELECT _page, _pos, _e.{q(plan.entity_key)}::VARCHAR AS _pk, "  # type: ignore[arg-type]
                    f"generate_subscripts(_e.{coll}, 1) AS _cpos, unnest(_e.{coll}) AS _c "
                    f"FROM {q(shadow)}")
        for col in cols:
            if col.read_type == "VARCHAR":
                continue
            con.execute(
                f"INSERT INTO {q(rejects)} SELECT {lit(target.table)}, {key_txt}, {lit(col.name)}, "
                f"s._c.{q(col.name)} FROM ({unnest_r}) r JOIN ({unnest_s}) s "
                f"USING (_page, _pos, _cpos) WHERE s._c.{q(col.name)} IS NOT NULL "
                f"AND r._c.{q(col.name)} IS NULL"
            )
    return rejects


def _hash_expr(columns: Iterable[str], prefix: str = "") -> str:
    """Content hash of a row: XOR of hash(name, value) over the non-null columns. Order-free and
    blind to NULLs, so a property that appears empty (a new UDF nobody filled) changes nothing.
    DuckDB's hash is fast (about 20x md5 over text) but only stable within a DuckDB release: after
    an upgrade that changes it, re-read rows are re-landed once."""
    terms = [f"CASE WHEN {prefix}{q(c)} IS NULL THEN 0::UBIGINT ELSE hash({lit(c)}, {prefix}{q(c)}) END"
             for c in sorted(columns)]
    return _xor_all(terms)


def _xor_all(terms: list[str]) -> str:
    """XOR of many terms as a balanced tree: a 350-deep chain costs DuckDB a second to plan."""
    if not terms:
        return "0::UBIGINT"
    while len(terms) > 1:
        terms = [f"xor({terms[i]}, {terms[i + 1]})" if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


def _hex(expr: str) -> str:
    return f"printf('%016x', {expr})"


def _dedupe_order(cols: Iterable[str]) -> str:
    names_ = set(cols)
    order = [f"{q(c)} DESC NULLS LAST" for c in ("UpdateDate", "UpdateTime") if c in names_]
    return ", ".join(order + ["_page DESC", "_pos DESC"])


def _split(con: duckdb.DuckDBPyConnection, plan: _Plan, shape: _Shape, ent: str, names: _Names,
           rejects: str | None) -> _Staged:
    """Per-target stages. The main table's stage is the entity table itself; child rows are
    unnested from it (parent key injected). Hashes: own columns, and a parent's hash also folds
    in its children's (XOR), so an order whose lines changed counts as changed."""
    tables: dict[str, str] = {}
    cols_by: dict[str, list[_Col]] = {}
    hashes: dict[str, str] = {}
    main = plan.main
    entity_keys = _entity_key(plan)
    if main.collection is None:
        tables[main.table], cols_by[main.table] = ent, shape.cols
        children = list(plan.children)
    else:
        children = [main]
    for child in children:
        ccols = shape.collections.get(child.collection)  # type: ignore[arg-type]
        cname = names(f"t_{child.table}")
        pk = child.parent_key_column
        if ccols is None:
            ccols = [_Col(n, _contract_read_type(t), "forced") for n, t in child.contract.items()]
            defs = ", ".join(f"{q(c.name)} {c.read_type}" for c in ccols)
            con.execute(f"CREATE TEMP TABLE {q(cname)} ({defs}, _page VARCHAR, _pos BIGINT, "
                        f"_h UBIGINT, {ROW_HASH} VARCHAR)")
            tables[child.table], cols_by[child.table] = cname, ccols
            continue
        present = {c.name for c in ccols}
        select = []
        for c in ccols:
            if c.name == pk:
                select.append(f"coalesce(_c.{q(c.name)}, CAST(_pk AS {c.read_type})) AS {q(c.name)}")
            else:
                select.append(f"_c.{q(c.name)} AS {q(c.name)}")
        if pk not in present:
            pk_type = _contract_read_type(child.contract.get(pk, "VARCHAR"))  # type: ignore[arg-type]
            select.insert(0, f"CAST(_pk AS {pk_type}) AS {q(pk)}")  # type: ignore[arg-type]
            ccols = [_Col(pk, pk_type, "forced"), *ccols]  # type: ignore[arg-type]
        con.execute(
            f"CREATE TEMP TABLE {q(cname)} AS SELECT *, {_hex('_h')} AS {ROW_HASH} FROM (SELECT *, "
            f"{_hash_expr(c.name for c in ccols)} AS _h FROM (SELECT {', '.join(select)}, _page, "
            f"_pos * 100000 + _cpos AS _pos FROM (SELECT _page, _pos, {q(plan.entity_key)} AS _pk, "  # type: ignore[arg-type]
            f"generate_subscripts({q(child.collection)}, 1) AS _cpos, "  # type: ignore[arg-type]
            f"unnest({q(child.collection)}) AS _c FROM {q(ent)} "  # type: ignore[arg-type]
            f"WHERE {_keys_present(entity_keys)})))"
        )
        _dedupe(con, cname, child.key, "_page DESC, _pos DESC")
        tables[child.table], cols_by[child.table] = cname, ccols
    if main.collection is None:
        # The parent's hash folds in its children's (XOR), so changed lines change the order.
        hname = names("hash")
        joins, terms = [], [_hash_expr((c.name for c in shape.cols), prefix="e.")]
        for i, child in enumerate(plan.children):
            joins.append(
                f"LEFT JOIN (SELECT {q(child.parent_key_column)} AS pk, bit_xor(_h) AS h FROM "  # type: ignore[arg-type]
                f"{q(tables[child.table])} GROUP BY ALL) c{i} ON e.{q(plan.entity_key)} = c{i}.pk"  # type: ignore[arg-type]
            )
            terms.append(f"coalesce(c{i}.h, 0::UBIGINT)")
        combined = _xor_all(terms)
        con.execute(
            f"CREATE TEMP TABLE {q(hname)} AS SELECT {', '.join(f'e.{q(k)}' for k in main.key)}, "
            f"{_hex(combined)} AS {ROW_HASH} FROM {q(ent)} e {' '.join(joins)} "
            f"WHERE {_keys_present(main.key, 'e.')}"
        )
        hashes[main.table] = hname
    return _Staged(tables, cols_by, rejects, False, names, hashes, shape.absent)


# ---------------------------------------------------------------------------------------------
# conform types with the stored table
# ---------------------------------------------------------------------------------------------
def _is_numeric_type(dtype: str) -> bool:
    d = dtype.upper()
    return d.startswith("DECIMAL") or d in ("BIGINT", "INTEGER", "HUGEINT", "SMALLINT",
                                            "TINYINT", "DOUBLE", "FLOAT", "UBIGINT")


def _decimal_width(dtype: str) -> int:
    m = re.match(r"DECIMAL\((\d+),", dtype.upper())
    return int(m.group(1)) if m else 0


def _conform(con: duckdb.DuckDBPyConnection, target: _Target, stage: str, cols: list[_Col],
             now: datetime) -> None:
    """Decide every column's type in sap_raw, evolving the stored table (and its history) when
    the extract brings a value the stored type cannot hold. Never narrows, never loses a value."""
    existing = table_columns(con, "sap_raw", target.table)
    stats = _stats(con, stage, [c for c in cols if c.kind in ("number", "integer", "datelike")])
    for col in cols:
        stat = stats.get(col.name)
        desired = _desired_type(col, stat)
        stored = existing.get(col.name)
        if stored is None or _fits(col, stat, stored):
            col.final_type = stored or desired
        elif col.kind in ("number", "integer") and _is_numeric_type(stored):
            col.final_type = _WIDE_DECIMAL
        elif col.kind == "forced" and _table_casts(con, target.table, col.name, desired):
            col.final_type = desired
        else:
            col.final_type = "VARCHAR"
        if stored is not None and stored.upper() != col.final_type.upper():
            _alter_type(con, target, col.name, stored, col.final_type, now)


def _stats(con: duckdb.DuckDBPyConnection, stage: str, cols: list[_Col]) -> dict[str, tuple]:
    """Per column: numbers (all integral, max |x|); date-like text (all plain dates)."""
    if not cols:
        return {}
    exprs = []
    for c in cols:
        if c.kind in ("number", "integer"):
            exprs.append(f"bool_and({q(c.name)} = trunc({q(c.name)}))")
            exprs.append(f"max(abs({q(c.name)}))")
        else:
            exprs.append(f"bool_and(regexp_full_match({q(c.name)}, {lit(_DATE_RE)}))")
            exprs.append("NULL")
    row = con.execute(f"SELECT {', '.join(exprs)} FROM {q(stage)}").fetchone()
    return {c.name: (row[2 * i], row[2 * i + 1]) for i, c in enumerate(cols)}


def _desired_type(col: _Col, stat: tuple | None) -> str:
    if col.kind in ("number", "integer"):
        integral, biggest = stat or (None, None)
        if col.kind == "integer" and (biggest is None or (integral and biggest < 2**62)):
            return "BIGINT"
        return _AMOUNT if biggest is None or biggest < 10**13 else _WIDE_DECIMAL
    if col.kind == "datelike":
        return "DATE" if (stat is None or stat[0] is not False) else "VARCHAR"
    return col.read_type


def _fits(col: _Col, stat: tuple | None, stored: str) -> bool:
    """Can every staged value be stored, unchanged, in a column of type `stored`?"""
    s, r = stored.upper(), col.read_type.upper()
    if s == r:
        return True
    if col.kind == "forced":
        return False
    if s == "VARCHAR":
        return True
    if col.kind in ("number", "integer") and _is_numeric_type(s):
        integral, biggest = stat or (None, None)
        if biggest is None:
            return True
        if s == "BIGINT":
            return bool(integral) and biggest < 2**62
        if s == "INTEGER":
            return bool(integral) and biggest < 2**31
        if s.startswith("DECIMAL") and s.endswith(",6)"):
            return biggest < 10 ** (_decimal_width(s) - 6)
        return False
    if col.kind == "datelike" and s == "DATE":
        return stat is None or stat[0] is not False
    return False


def _table_casts(con: duckdb.DuckDBPyConnection, table: str, column: str, target: str) -> bool:
    bad = con.execute(
        f"SELECT count(*) FROM {_fqn('sap_raw', table)} WHERE {q(column)} IS NOT NULL AND "
        f"TRY_CAST({q(column)} AS {target}) IS NULL"
    ).fetchone()[0]
    return bad == 0


def _alter_type(con: duckdb.DuckDBPyConnection, target: _Target, column: str, old: str, new: str,
                now: datetime) -> None:
    for schema in ("sap_raw", "sap_history"):
        if column in table_columns(con, schema, target.table):
            con.execute(f"ALTER TABLE {_fqn(schema, target.table)} ALTER COLUMN {q(column)} "
                        f"SET DATA TYPE {new}")
    con.execute("INSERT INTO sap_meta.schema_changes VALUES (?, ?, 'type_changed', ?, ?, ?)",
                [target.table, column, old, new, now])
    _log.warning("%s.%s: values no longer fit %s; column widened to %s", target.table, column,
                 old, new)


# ---------------------------------------------------------------------------------------------
# merge
# ---------------------------------------------------------------------------------------------
def _metadata_columns(target: _Target) -> list[tuple[str, str]]:
    cols = [(ROW_HASH, "VARCHAR"), (LANDED_AT, "TIMESTAMPTZ")]
    if target.master_data:
        cols.append((DELETED_AT, "TIMESTAMPTZ"))
    if target.is_document:
        cols.append((IS_CANCELLATION, "BOOLEAN"))
    return cols


def _ordered(target: _Target, cols: list[_Col]) -> list[_Col]:
    """Contract columns first, in registry order, then the rest as the Service Layer sent them."""
    order = {name: i for i, name in enumerate(target.contract)}
    return sorted(cols, key=lambda c: order.get(c.name, len(order)))


def _ensure_table(con: duckdb.DuckDBPyConnection, target: _Target, cols: list[_Col],
                  now: datetime, counts: TableCounts) -> None:
    """Create the sap_raw table, or add the columns this extract brings for the first time."""
    fqn = _fqn("sap_raw", target.table)
    existing = table_columns(con, "sap_raw", target.table)
    wanted = [(c.name, c.final_type) for c in _ordered(target, cols)]
    present = {c.name for c in cols}
    wanted += [(n, _contract_read_type(t)) for n, t in target.contract.items() if n not in present]
    wanted += _metadata_columns(target)
    if not existing:
        con.execute(f"CREATE TABLE {fqn} ({', '.join(f'{q(n)} {t}' for n, t in wanted)})")
        return
    for name, dtype in wanted:
        if name not in existing:
            con.execute(f"ALTER TABLE {fqn} ADD COLUMN {q(name)} {dtype}")
            counts.columns_added.append(name)
            con.execute("INSERT INTO sap_meta.schema_changes VALUES (?, ?, 'added', NULL, ?, ?)",
                        [target.table, name, dtype, now])


def _ensure_history(con: duckdb.DuckDBPyConnection, target: _Target) -> str:
    fqn = _fqn("sap_history", target.table)
    raw_cols = table_columns(con, "sap_raw", target.table)
    hist = table_columns(con, "sap_history", target.table)
    if not hist:
        defs = [f"{q(n)} {t}" for n, t in raw_cols.items()]
        defs += [f"{VALID_FROM} TIMESTAMPTZ", f"{VALID_TO} TIMESTAMPTZ", f"{IS_CURRENT} BOOLEAN"]
        con.execute(f"CREATE TABLE {fqn} ({', '.join(defs)})")
    else:
        for name, dtype in raw_cols.items():
            if name not in hist:
                con.execute(f"ALTER TABLE {fqn} ADD COLUMN {q(name)} {dtype}")
            elif hist[name] != dtype:
                con.execute(f"ALTER TABLE {fqn} ALTER COLUMN {q(name)} SET DATA TYPE {dtype}")
    return fqn


def _keys_present(keys: Iterable[str], prefix: str = "") -> str:
    return " AND ".join(f"{prefix}{q(k)} IS NOT NULL" for k in keys)


def _key_join(left: str, right: str, keys: Iterable[str]) -> str:
    return " AND ".join(f"{left}.{q(k)} = {right}.{q(k)}" for k in keys)


def _merge_all(con: duckdb.DuckDBPyConnection, plan: _Plan, staged: _Staged, result: LandResult,
               now: datetime, scan_keys: str | None, full_refresh: bool) -> None:
    main = plan.main
    changed = staged.names("changed")
    empty_before: set[str] = set()   # tables this landing writes from scratch
    for target in plan.targets:
        counts = result.tables.setdefault(target.table, TableCounts())
        stage, cols = staged.tables[target.table], staged.cols[target.table]
        _conform(con, target, stage, cols, now)
        _ensure_table(con, target, cols, now, counts)
        if not con.execute(f"SELECT count(*) FROM {_fqn('sap_raw', target.table)}").fetchone()[0]:
            empty_before.add(target.table)
        counts.rows_landed = con.execute(
            f"SELECT count(*) FROM {q(stage)} WHERE {_keys_present(target.key)}").fetchone()[0]
    main_stage = staged.tables[main.table]
    fqn = _fqn("sap_raw", main.table)
    full_mode = plan.spec.read_mode == "full"
    main_counts = result.tables[main.table]
    if full_mode and main_counts.rows_landed == 0 and not full_refresh:
        stored = con.execute(f"SELECT count(*) FROM {fqn}").fetchone()[0]
        if stored:
            raise LandingError(
                f"{main.table}: the Service Layer returned no {plan.spec.entity_set} at all while "
                f"{stored} row(s) are stored; not replacing the table with nothing. If SAP really "
                "holds none now, run with full_refresh to accept it."
            )
    # Keys whose content changed (or is new): compare hashes with what is stored.
    con.execute(
        f"CREATE TEMP TABLE {q(changed)} AS SELECT {', '.join(f's.{q(k)}' for k in main.key)} "
        f"FROM {q(staged.hashes.get(main.table, main_stage))} s LEFT JOIN {fqn} t ON "
        f"{_key_join('s', 't', main.key)} "
        f"WHERE {_keys_present(main.key, 's.')} AND t.{ROW_HASH} IS DISTINCT FROM s.{ROW_HASH}"
    )
    # Every staged key new or changed (a first load): no row to compare, keep or filter.
    n_changed = con.execute(f"SELECT count(*) FROM {q(changed)}").fetchone()[0]
    every = n_changed == main_counts.rows_landed
    _replace_rows(con, main, staged, changed, main.key, now, main_counts, every=every)
    parent_key = plan.entity_key
    for child in plan.children:
        counts = result.tables[child.table]
        if child.table in staged.absent:
            log_absent = f"{child.table}: the Service Layer sent no `{child.collection}`; left as is"
            _log.warning(log_absent)
            continue
        _replace_rows(con, child, staged, changed, (child.parent_key_column,), now, counts,
                      parent_key=parent_key, every=every)
    if full_mode:
        removed = con.execute(
            f"DELETE FROM {fqn} t WHERE NOT EXISTS (SELECT 1 FROM {q(main_stage)} s WHERE "
            f"{_key_join('s', 't', main.key)})"
        ).fetchone()
        main_counts.rows_removed = int(removed[0]) if removed else 0
    # Deletions and restorations (master data).
    if main.master_data:
        _mark_deletions(con, plan, staged, scan_keys, now, result)
    # History after everything else, from the rows as stored.
    for target in plan.targets:
        if target.history:
            _history(con, plan, target, changed, now, every=target.table in empty_before)
    _clear_rejects(con, plan, staged, full_read=result.read == "full")
    if staged.rejects:
        _record_rejects(con, plan, staged, now, result)
    for target in plan.targets:
        counts = result.tables[target.table]
        counts.rows_total = con.execute(f"SELECT count(*) FROM {_fqn('sap_raw', target.table)}").fetchone()[0]
        if not staged.empty and counts.rows_landed:
            con.execute("DELETE FROM sap_meta.extract_columns WHERE table_name = ?", [target.table])
            cols = staged.cols[target.table]
            con.execute(
                "INSERT INTO sap_meta.extract_columns SELECT ?, unnest(?::VARCHAR[]), "
                "unnest(?::VARCHAR[]), ?",
                [target.table, [c.name for c in cols], [c.final_type for c in cols], now],
            )


def _replace_rows(con: duckdb.DuckDBPyConnection, target: _Target, staged: _Staged, changed: str,
                  link: tuple[str | None, ...], now: datetime, counts: TableCounts,
                  parent_key: str | None = None, every: bool = False) -> None:
    """Delete and re-insert (BY NAME) the rows of changed keys; children: of changed parents.
    `every`: every staged key changed, so every staged row is inserted without a lookup."""
    fqn = _fqn("sap_raw", target.table)
    stage = staged.tables[target.table]
    cols = staged.cols[target.table]
    if parent_key is None:
        match_t = _key_join("t", "c", target.key)
        match_s = _key_join("s", "c", target.key)
    else:
        pk = link[0]
        match_t = f"t.{q(pk)} = c.{q(parent_key)}"  # type: ignore[arg-type]
        match_s = f"s.{q(pk)} = c.{q(parent_key)}"  # type: ignore[arg-type]
    if not every or con.execute(f"SELECT count(*) FROM {fqn}").fetchone()[0]:
        con.execute(f"DELETE FROM {fqn} t WHERE EXISTS (SELECT 1 FROM {q(changed)} c WHERE {match_t})")
    source = f"{q(stage)} s"
    hash_ref = f"s.{ROW_HASH}"
    if target.table in staged.hashes:
        source += (f" JOIN {q(staged.hashes[target.table])} h ON "
                   f"{_key_join('s', 'h', target.key)}")
        hash_ref = f"h.{ROW_HASH}"
    meta = [f"{hash_ref} AS {ROW_HASH}", f"$now::TIMESTAMPTZ AS {LANDED_AT}"]
    if target.master_data:
        meta.append(f"NULL::TIMESTAMPTZ AS {DELETED_AT}")
    if target.is_document:
        flag = "s.\"CancelStatus\" = 'csCancellation'" if any(c.name == "CancelStatus" for c in cols) else "NULL"
        meta.append(f"coalesce({flag}, false) AS {IS_CANCELLATION}")
    select = [f"{c.cast(f's.{q(c.name)}')} AS {q(c.name)}" for c in cols]
    scope = "" if every else f" AND EXISTS (SELECT 1 FROM {q(changed)} c WHERE {match_s})"
    inserted = con.execute(
        f"INSERT INTO {fqn} BY NAME SELECT {', '.join(select + meta)} FROM {source} "
        f"WHERE {_keys_present(target.key, 's.')}{scope}", {"now": now},
    ).fetchone()
    counts.rows_changed = int(inserted[0]) if inserted else 0
    counts.rows_unchanged = counts.rows_landed - counts.rows_changed if parent_key is None or every \
        else con.execute(f"SELECT count(*) FROM {q(stage)} s WHERE {_keys_present(target.key, 's.')} "
                    f"AND NOT EXISTS (SELECT 1 FROM {q(changed)} c WHERE {match_s})").fetchone()[0]


def _mark_deletions(con: duckdb.DuckDBPyConnection, plan: _Plan, staged: _Staged,
                    scan_keys: str | None, now: datetime, result: LandResult) -> None:
    """`_deleted_at` for keys the scan no longer finds; cleared for keys that came back."""
    main = plan.main
    fqn = _fqn("sap_raw", main.table)
    counts = result.tables[main.table]
    key = main.key
    keys_sql = ", ".join(f"t.{q(k)}" for k in key)
    seen = [staged.tables[main.table]] + ([scan_keys] if scan_keys else [])
    present = " OR ".join(
        f"EXISTS (SELECT 1 FROM {q(s)} k WHERE {_key_join('k', 't', key)})" for s in seen
    )
    restored = con.execute(
        f"UPDATE {fqn} t SET {DELETED_AT} = NULL WHERE {DELETED_AT} IS NOT NULL AND ({present}) "
        f"RETURNING {keys_sql}"
    ).fetchall()
    counts.keys_restored = len(restored)
    marked: list[tuple] = []
    if scan_keys:
        live = con.execute(f"SELECT count(*) FROM {fqn} WHERE {DELETED_AT} IS NULL").fetchone()[0]
        found = con.execute(f"SELECT count(*) FROM {q(scan_keys)}").fetchone()[0]
        if found == 0 and live > 0:
            raise LandingError(
                f"{main.table}: the key scan of {plan.spec.entity_set} found no keys at all while "
                f"{live} are stored; refusing to mark every record deleted (check the SAP user's "
                "permissions on this object)"
            )
        marked = con.execute(
            f"UPDATE {fqn} t SET {DELETED_AT} = $now WHERE {DELETED_AT} IS NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {q(scan_keys)} k WHERE {_key_join('k', 't', key)}) RETURNING {keys_sql}",
            {"now": now},
        ).fetchall()
        counts.keys_marked_deleted = len(marked)
    if not marked and not restored:
        return
    # Children follow their parent's mark.
    for child in plan.children:
        cfqn = _fqn("sap_raw", child.table)
        pk, pkey = q(child.parent_key_column), q(plan.entity_key)  # type: ignore[arg-type]
        con.execute(
            f"UPDATE {cfqn} c SET {DELETED_AT} = p.{DELETED_AT} FROM {fqn} p WHERE c.{pk} = "
            f"p.{pkey} AND c.{DELETED_AT} IS DISTINCT FROM p.{DELETED_AT}"
        )
        result.tables[child.table].keys_marked_deleted = con.execute(
            f"SELECT count(*) FROM {cfqn} WHERE {DELETED_AT} = $now", {"now": now}
        ).fetchone()[0]
    if main.history:
        hist = _ensure_history(con, main)
        # A deleted record has no current version; one that came back gets a new version.
        con.execute(
            f"UPDATE {hist} h SET {VALID_TO} = $now, {IS_CURRENT} = false FROM {fqn} t WHERE "
            f"h.{IS_CURRENT} AND {_key_join('h', 't', key)} AND t.{DELETED_AT} = $now",
            {"now": now},
        )
        if restored:
            back = staged.names("restored")
            con.execute(f"CREATE TEMP TABLE {q(back)} AS SELECT {keys_sql} FROM {fqn} t LIMIT 0")
            con.executemany(f"INSERT INTO {q(back)} VALUES ({', '.join('?' for _ in key)})",
                            [list(r) for r in restored])
            con.execute(
                f"INSERT INTO {hist} BY NAME SELECT t.*, $now::TIMESTAMPTZ AS {VALID_FROM}, "
                f"NULL::TIMESTAMPTZ AS {VALID_TO}, true AS {IS_CURRENT} FROM {fqn} t WHERE EXISTS "
                f"(SELECT 1 FROM {q(back)} b WHERE {_key_join('b', 't', key)}) AND NOT EXISTS "
                f"(SELECT 1 FROM {hist} h WHERE h.{IS_CURRENT} AND {_key_join('h', 't', key)})",
                {"now": now},
            )


def _history(con: duckdb.DuckDBPyConnection, plan: _Plan, target: _Target, changed: str,
             now: datetime, every: bool = False) -> None:
    """SCD2: close the current version of changed rows and add the new one. A first load (no
    history yet) only inserts; `every` (the table held nothing before this landing, so each of
    its rows was just written) needs no scope either."""
    hist = _ensure_history(con, target)
    fqn = _fqn("sap_raw", target.table)
    if not con.execute(f"SELECT count(*) FROM {hist}").fetchone()[0]:
        scope = "" if every else (
            f" WHERE EXISTS (SELECT 1 FROM {q(changed)} c WHERE {_key_join('c', 't', target.key)})"
            if target.parent_key_column is None or target.collection is None else
            f" WHERE EXISTS (SELECT 1 FROM {q(changed)} c WHERE "
            f"c.{q(plan.entity_key)} = t.{q(target.parent_key_column)})")  # type: ignore[arg-type]
        con.execute(
            f"INSERT INTO {hist} BY NAME SELECT t.*, $now::TIMESTAMPTZ AS {VALID_FROM}, "
            f"NULL::TIMESTAMPTZ AS {VALID_TO}, true AS {IS_CURRENT} FROM {fqn} t{scope}",
            {"now": now},
        )
        return
    if target.parent_key_column is None or target.collection is None:
        scope_t = f"EXISTS (SELECT 1 FROM {q(changed)} c WHERE {_key_join('c', 't', target.key)})"
        scope_h = f"EXISTS (SELECT 1 FROM {q(changed)} c WHERE {_key_join('c', 'h', target.key)})"
    else:
        pk, pkey = q(target.parent_key_column), q(plan.entity_key)  # type: ignore[arg-type]
        scope_t = f"EXISTS (SELECT 1 FROM {q(changed)} c WHERE c.{pkey} = t.{pk})"
        scope_h = f"EXISTS (SELECT 1 FROM {q(changed)} c WHERE c.{pkey} = h.{pk})"
    same = f"{_key_join('h', 't', target.key)} AND h.{ROW_HASH} = t.{ROW_HASH}"
    con.execute(
        f"UPDATE {hist} h SET {VALID_TO} = $now, {IS_CURRENT} = false WHERE h.{IS_CURRENT} AND "
        f"{scope_h} AND NOT EXISTS (SELECT 1 FROM {fqn} t WHERE {same})", {"now": now},
    )
    con.execute(
        f"INSERT INTO {hist} BY NAME SELECT t.*, $now::TIMESTAMPTZ AS {VALID_FROM}, "
        f"NULL::TIMESTAMPTZ AS {VALID_TO}, true AS {IS_CURRENT} FROM {fqn} t WHERE {scope_t} "
        f"AND NOT EXISTS (SELECT 1 FROM {hist} h WHERE h.{IS_CURRENT} AND {same})", {"now": now},
    )


def _clear_rejects(con: duckdb.DuckDBPyConnection, plan: _Plan, staged: _Staged,
                   full_read: bool = True) -> None:
    """Records read again lose their old reject entries (SAP may have fixed the value)."""
    for target in plan.targets:
        if not con.execute("SELECT count(*) FROM sap_meta.rejected_values WHERE table_name = ?",
                           [target.table]).fetchone()[0]:
            continue
        # null-key records have no identity: each full read lists the ones it still sees
        relisted = bool(staged.rejects) and con.execute(
            f"SELECT count(*) FROM {q(staged.rejects)} WHERE table_name = ? AND "  # type: ignore[arg-type]
            "starts_with(record_key, ?)", [target.table, NULL_KEY_PREFIX]).fetchone()[0] > 0
        if full_read or relisted:
            con.execute("DELETE FROM sap_meta.rejected_values WHERE table_name = ? AND "
                        "starts_with(record_key, ?)", [target.table, NULL_KEY_PREFIX])
        key_txt = " || '|' || ".join(f"coalesce(CAST({q(k)} AS VARCHAR), '')" for k in target.key)
        con.execute(
            f"DELETE FROM sap_meta.rejected_values WHERE table_name = ? AND record_key IN "
            f"(SELECT {key_txt} FROM {q(staged.tables[target.table])})", [target.table],
        )


def _record_rejects(con: duckdb.DuckDBPyConnection, plan: _Plan, staged: _Staged, now: datetime,
                    result: LandResult) -> None:
    rej = q(staged.rejects)  # type: ignore[arg-type]
    con.execute(f"INSERT INTO sap_meta.rejected_values SELECT table_name, record_key, column_name, "
                f"raw_value, $now FROM {rej}", {"now": now})
    for table, n in con.execute(f"SELECT table_name, count(*) FROM {rej} GROUP BY ALL").fetchall():
        result.tables.setdefault(table, TableCounts()).rejected_values = int(n)


def _broken_contract(con: duckdb.DuckDBPyConnection, plan: _Plan, staged: _Staged) -> list[str]:
    """Contract columns this extract did not deliver: sent by the previous extract but absent
    now (removed or renamed in SAP), or unreadable in most of its records (a type change).
    Rows landed from such an extract hold NULL there. Call before the merge replaces
    `sap_meta.extract_columns`."""
    if staged.empty:
        return []
    broken: list[str] = []
    for target in plan.targets:
        if target.table in staged.absent:
            continue
        before = {r[0].lower() for r in con.execute(
            "SELECT column_name FROM sap_meta.extract_columns WHERE table_name = ?", [target.table]
        ).fetchall()}
        sent = {c.name.lower() for c in staged.cols[target.table]}
        optional = optional_columns(target.table)  # absent: NULL, and the watermark moves on
        broken += [f"{target.table}.{c}" for c in target.contract
                   if c.lower() in before - sent and c not in optional]
    if staged.rejects:
        for table, column, records in con.execute(
                f"SELECT table_name, column_name, count(DISTINCT record_key) FROM {q(staged.rejects)} "
                "GROUP BY ALL").fetchall():
            target = next((t for t in plan.targets if t.table == table), None)
            if (target is None or column not in target.contract or records < 5
                    or column in optional_columns(table)):
                continue
            landed = con.execute(f"SELECT count(*) FROM {q(staged.tables[table])}").fetchone()[0]
            if records * 2 >= landed:
                broken.append(f"{table}.{column}")
    return broken


def future_limit(settings: Settings, now: datetime) -> datetime:
    """The latest UpdateDate/UpdateTime a watermark may take: now in the company time zone (SAP
    stamps local wall-clock time) plus `SAP_B1_FUTURE_SKEW_MINUTES`, as a naive local time."""
    local = now.astimezone(settings.zone).replace(tzinfo=None, microsecond=0)
    return local + timedelta(minutes=settings.sap_b1_future_skew_minutes)


def _wm_key(wm: Watermark) -> tuple[date, time]:
    return (wm.update_date or date.min, _parse_time(wm.update_time))


def _latest_not_future(con: duckdb.DuckDBPyConnection, stage: str,
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
    ok = [t for (t,) in times if _parse_time(t) <= limit.time()]
    if ok:
        return Watermark(limit.date(), max(ok, key=_parse_time))
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


def _advance_watermark(con: duckdb.DuckDBPyConnection, plan: _Plan, staged: _Staged,
                       before: Watermark | None, now: datetime, result: LandResult,
                       broken: list[str] | None = None,
                       limit: datetime | None = None) -> Watermark | None:
    stage = staged.tables[plan.main.table]
    names_ = {c.name for c in staged.cols[plan.main.table]}
    after = before
    if broken:
        # The contract check stops what is downstream of this extract; once SAP is fixed the
        # same records must be read again (they carry no new UpdateDate), so the watermark stays.
        _log.warning("%s: the extract lacks contract column(s) %s; watermark kept at %s so the "
                     "next read lands these records again", plan.spec.table, ", ".join(broken),
                     before or "none")
        names_ = set()
    if {"UpdateDate", "UpdateTime"} <= names_:
        seen = _latest_not_future(con, stage, limit)
        if limit is not None and (ahead := future_count(con, stage, limit)):
            _log.warning("%s: %d record(s) carry an UpdateDate after %s (company time); landed, "
                         "listed as future_update_date, and the watermark does not follow them",
                         plan.spec.table, ahead, limit)
        if seen is not None and (before is None or _wm_key(seen) > _wm_key(before)):
            after = seen
    con.execute(
        "INSERT OR REPLACE INTO sap_meta.watermarks VALUES (?, ?, ?, ?, ?)",
        [plan.spec.table, after.update_date if after else None,
         after.update_time if after else None, now, result.rows_landed],
    )
    return after


# ---------------------------------------------------------------------------------------------
# key scan
# ---------------------------------------------------------------------------------------------
def _live_count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Stored records not marked deleted (0 when the table does not exist yet)."""
    if DELETED_AT not in {c.lower() for c in table_columns(con, "sap_raw", table)}:
        return 0
    return con.execute(f"SELECT count(*) FROM {_fqn('sap_raw', table)} WHERE {DELETED_AT} IS NULL"
                       ).fetchone()[0]


def _key_scan(con: duckdb.DuckDBPyConnection, client: Any, spec: SapTable, folder: Path,
              names: _Names, result: LandResult, expected: int | None = None) -> str:
    """Every key SAP holds now (`$select=<key>`, paged), as a temp table typed like sap_raw.
    `expected` (the collection's `$count`) bounds the pages the scan may take."""
    keys = spec.key
    size = max(_KEY_SCAN_PAGE_SIZE, client.page_size)
    with _Fetcher(client, spec.entity_set, folder, "keys", select=",".join(keys),
                  filter=spec.filter, orderby=",".join(keys), result=None,
                  page_size=size,
                  # every page but the last brings at least one key: never more pages than
                  # keys (SL may serve smaller pages than asked)
                  max_pages=None if expected is None else expected + 3) as fetcher:
        files = fetcher.wait_all()
        name = names("keys")
        types = [(k, _contract_read_type(spec.columns.get(k, "VARCHAR"))) for k in keys]
        if not files:
            con.execute(f"CREATE TEMP TABLE {q(name)} ({', '.join(f'{q(k)} {t}' for k, t in types)})")
            return name
        _read_repairing(con, fetcher, _Names("scan"), lambda: con.execute(
            f"CREATE OR REPLACE TEMP TABLE {q(name)} AS SELECT DISTINCT unnest(_e) FROM (SELECT "
            f"unnest(value) AS _e FROM {_read_json_sql('$files', _struct(types) + '[]')}) WHERE "
            + " AND ".join(f"_e.{q(k)} IS NOT NULL" for k in keys), {"files": files},
        ))
    return name
