"""Land Service Layer pages into `sap_raw`: typed, merged by key, with watermarks, deletions, history.

One call of `land_table` lands one registry entry (a parent table and its child tables). This
module runs the steps in order, in one DuckDB transaction for the merge and the watermark; each
step lives in its own module of this package: plan.py (targets, watermarks, the incremental
`$filter`), fetch.py (the page fetcher, the private pages folder), stage.py and shape.py
(parsing and typing the pages), rejects.py (bad values), split.py (child tables, hashes),
merge.py (types conformed, rows merged), deletions.py (key scan and its guard), history.py.

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
   the live records may mark anything (deletions.py; `deletion_scan_refused`).
   Watermarks never pass now + SAP_B1_FUTURE_SKEW_MINUTES (company time; `future_update_date`).
6. **History** (`sap_history`: business partners and addresses, items and prices, stock, every
   document's headers, lines and expenses; history.py): SCD type 2, only changed rows make a
   new version. Two validities: `valid_from`/`valid_to`, SAP's change time (UpdateDate +
   UpdateTime in the company time zone; child rows take their header's), and
   `_valid_from`/`_valid_to`/`_is_current`, when this product landed the version. A first load
   writes every first version in one INSERT ... SELECT without comparing anything.
7. `sap_meta.extract_columns` records the columns each extract returned (contract checks).
"""

from __future__ import annotations

import logging
import time as _time
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from sap_ometria_assets.lib.config.settings import Settings
from sap_ometria_assets.lib.landing.deletions import (
    judge_scan,
    key_scan,
    live_count,
    record_verdict,
)
from sap_ometria_assets.lib.landing.fetch import Fetcher, pages_dir
from sap_ometria_assets.lib.landing.merge import merge_all
from sap_ometria_assets.lib.landing.plan import (
    Plan,
    TempNames,
    Watermark,
    future_count,
    future_limit,
    get_watermark,
    incremental_filter,
    key_join,
    latest_not_future,
    parse_time,
    plan_for,
    watermark_key,
)
from sap_ometria_assets.lib.landing.rejects import broken_contract
from sap_ometria_assets.lib.landing.results import LandResult
from sap_ometria_assets.lib.landing.split import Staged
from sap_ometria_assets.lib.landing.stage import stage_pages
from sap_ometria_assets.lib.sap.tables import SapTable
from sap_ometria_assets.lib.warehouse.sql import compression_off, fqn, q, table_columns, transaction

_log = logging.getLogger(__name__)


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


def ensure_meta(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in META_DDL:
        con.execute(ddl)


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
            wm_before.update_date, parse_time(wm_before.update_time)) > limit:
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
    names = TempNames(spec.table)
    with pages_dir(settings, spec.table) as tmp:
        try:
            orderby = plan.entity_key if plan.select else ",".join(spec.key)
            with Fetcher(client, spec.entity_set, Path(tmp), "page", select=plan.select,
                         filter=odata_filter, orderby=orderby, result=result) as fetcher:
                staged = stage_pages(con, client, fetcher, plan, names)
            log.info("%s: read %d page(s) of %s (%s read%s)", spec.table, result.pages,
                     spec.entity_set, result.read, f", filter {odata_filter}" if odata_filter else "")
            scan_keys = None
            verdict = None
            if spec.is_master_data and (deletion_scan or not incremental):
                stored_live = live_count(con, spec.table)
                sap_count = client.count(spec.entity_set, filter=spec.filter) if (
                    stored_live and incremental) else None
                scan_keys = staged.tables[plan.main.table] if not incremental else key_scan(
                    con, client, spec, Path(tmp), names, result, expected=sap_count)
                if stored_live:
                    if sap_count is None:   # a full read: its keys are the scan
                        sap_count = client.count(spec.entity_set, filter=spec.filter)
                    verdict = judge_scan(
                        con, table=spec.table, entity_set=spec.entity_set,
                        stored=fqn("sap_raw", spec.table), scan=q(scan_keys),
                        key_join=key_join("k", "t", spec.key), sap_count=sap_count,
                        settings=settings)
                    if verdict.refused:
                        log.error("%s: %s", spec.table, verdict.reason)
                        result.deletion_refused = verdict.reason
            result.requests = client.requests - requests_before
            broken = broken_contract(con, plan, staged)
            # A full read rewrites its tables (a first load writes every row twice, sap_raw and
            # the history seed): DICT_FSST's analysis is skipped for those bulk writes (same file
            # size for ordr/rdr1 at x10; FSST and dictionary stay on: sap_raw is mostly codes).
            bulk = compression_off(con, "dict_fsst") if result.read == "full" else nullcontext()
            with bulk, transaction(con):
                merge_all(con, plan, staged, result, now,
                          None if verdict is not None and verdict.refused else scan_keys,
                          full_refresh, settings.sap_ometria_timezone)
                if verdict is not None:
                    record_verdict(con, verdict, now)
                wm_after = _advance_watermark(con, plan, staged,
                                              None if full_refresh_wm else wm_before, now,
                                              result, broken, limit)
                result.watermark_after = str(wm_after) if wm_after else None
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


def _advance_watermark(con: duckdb.DuckDBPyConnection, plan: Plan, staged: Staged,
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
        seen = latest_not_future(con, stage, limit)
        if limit is not None and (ahead := future_count(con, stage, limit)):
            _log.warning("%s: %d record(s) carry an UpdateDate after %s (company time); landed, "
                         "listed as future_update_date, and the watermark does not follow them",
                         plan.spec.table, ahead, limit)
        if seen is not None and (before is None or watermark_key(seen) > watermark_key(before)):
            after = seen
    con.execute(
        "INSERT OR REPLACE INTO sap_meta.watermarks VALUES (?, ?, ?, ?, ?)",
        [plan.spec.table, after.update_date if after else None,
         after.update_time if after else None, now, result.rows_landed],
    )
    return after
