"""The columns of `sap_history` and the SQL that reads SAP's change time of a version.

SAP stores UpdateDate (a date) and UpdateTS (an integer HHMMSS) without an offset, in the
company's wall-clock time; the Service Layer sends them as `UpdateDate` and `UpdateTime`
('14:35:12'; also seen as '143512', '14:35' or an integer). `sap_time_sql` turns them into a
TIMESTAMPTZ in the company time zone with DuckDB's own time-zone rules, vectorised (no Python
per row). On the two clock-change days a year: a time in the spring gap moves forward an hour,
as a wall clock would; the repeated autumn hour reads as its second occurrence.
"""

from __future__ import annotations

from sap_ometria_assets.lib.landing.plan import Plan, Target
from sap_ometria_assets.lib.warehouse.sql import lit

VALID_FROM, VALID_TO, IS_CURRENT = "_valid_from", "_valid_to", "_is_current"
SAP_FROM, SAP_TO, SOURCE = "valid_from", "valid_to", "valid_from_source"
SAP_COLUMNS = ((SAP_FROM, "TIMESTAMPTZ"), (SAP_TO, "TIMESTAMPTZ"), (SOURCE, "VARCHAR"))


def sap_time_sql(alias: str, zone: str, has_time: bool = True) -> tuple[str, str]:
    """(TIMESTAMPTZ, source) SQL for the SAP change time of the row `alias`: UpdateDate plus
    UpdateTime (read as lib/landing/plan.py `parse_time` reads it) in company time. A missing or
    unreadable time is the start of the day (source 'sap_day'); no UpdateDate gives NULLs."""
    day = f"TRY_CAST({alias}.\"UpdateDate\" AS DATE)"
    midnight = f"CAST({day} AS TIMESTAMP)"
    if has_time:
        digits = f"replace(trim(CAST({alias}.\"UpdateTime\" AS VARCHAR)), ':', '')"
        hms = (f"CASE WHEN length({digits}) > 4 THEN lpad({digits}, 6, '0') "
               f"ELSE rpad(lpad({digits}, 4, '0'), 6, '0') END")
        clock = (f"CASE WHEN regexp_full_match({digits}, '[0-9]{{3,6}}') THEN try_strptime("
                 f"strftime({day}, '%Y-%m-%d') || ' ' || {hms}, '%Y-%m-%d %H%M%S') END")
    else:
        clock = "NULL::TIMESTAMP"
    ts = f"timezone({lit(zone)}, coalesce({clock}, {midnight}))"
    source = f"CASE WHEN {day} IS NULL THEN NULL WHEN {clock} IS NULL THEN 'sap_day' ELSE 'sap' END"
    return ts, source


def own_time(cols: dict[str, str], alias: str, zone: str) -> tuple[str, str]:
    """(time, source) SQL of a table's own UpdateDate/UpdateTime (`cols`: its columns); NULLs
    when it has none (stock per warehouse), which the callers read as the landing time."""
    if "UpdateDate" not in cols:
        return "NULL::TIMESTAMPTZ", "NULL"
    return sap_time_sql(alias, zone, has_time="UpdateTime" in cols)


def parent_of(plan: Plan, target: Target) -> Target | None:
    """The parent whose change time a child row (line, address, price) takes; None: its own."""
    if target is plan.main or target.collection is None or not plan.main.history:
        return None
    return plan.main
