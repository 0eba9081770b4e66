"""Drift monitoring: is the data still arriving, at the usual volume, and are problems growing?

- `track_pending_changes`: remembers when each Ometria record's current payload first appeared
  (`recon.payload_versions`), so "changed in SAP but not acknowledged by Ometria for longer than
  N hours" (stale records) can be told apart from a change that is simply in flight.
- `order_volume`: today's orders and revenue so far against the same part of the day over a
  trailing window of days (a band of mean +/- k standard deviations); outside the band is a WARN.
- `exception_trends`: the exception rate per rule per day (from `ops.exception_history`) with a
  rising-trend flag.
- `apply_freshness`: freshness policies for the landed `sap_raw` assets, applied once from
  `definitions.py`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

import dagster as dg
import duckdb

from sap_ometria_assets.lib.ometria.feeds import OMETRIA_FEEDS
from sap_ometria_assets.lib.quality.checks_config import (
    ChecksConfig,
    TrendSettings,
    VolumeSettings,
    get_checks_config,
)
from sap_ometria_assets.lib.quality.sql_fragments import live_document
from sap_ometria_assets.lib.warehouse.refresh import refresh_table
from sap_ometria_assets.lib.warehouse.sql import lit, table_exists, text_list

PAYLOAD_VERSIONS_DDL = """
CREATE TABLE IF NOT EXISTS recon.payload_versions (
    feed VARCHAR NOT NULL,  -- Ometria-ready table of the record
    id VARCHAR NOT NULL,  -- Ometria id of the record
    payload_hash VARCHAR NOT NULL,  -- Hash of the record's current payload
    first_seen TIMESTAMPTZ NOT NULL  -- When this payload version first appeared (UTC): drives recon.stale_records
)"""


def track_pending_changes(con: duckdb.DuckDBPyConnection, now: datetime) -> int:
    """Record the first time each record's current payload hash was seen; returns new versions.

    Only feeds whose Ometria table exists are touched, so a layer not built yet wipes nothing.
    """
    con.execute("CREATE SCHEMA IF NOT EXISTS recon")
    con.execute(PAYLOAD_VERSIONS_DDL)
    con.execute(
        "COMMENT ON TABLE recon.payload_versions IS 'When each Ometria record''s current payload "
        "(payload_hash) first appeared; with the push ledger it tells how long a change has waited "
        "for Ometria''s acknowledgement (see recon.stale_records).'"
    )
    feeds = [f for f in OMETRIA_FEEDS if table_exists(con, "ometria", f)]
    if not feeds:
        return 0
    current = " UNION ALL ".join(
        f"SELECT DISTINCT '{f}' AS feed, CAST(id AS VARCHAR) AS id, payload_hash FROM ometria.\"{f}\" "
        "WHERE payload_hash IS NOT NULL"
        for f in feeds
    )
    # The versions of feeds whose table is missing stay as they are (a layer not built yet
    # wipes nothing): they count as current.
    kept = (f"SELECT feed, id, payload_hash FROM recon.payload_versions "
            f"WHERE NOT list_contains({text_list(feeds)}, feed)")
    # A version is new when its (feed, id) has no other current version left, so a record
    # whose payload changed back and forth keeps one row, dated when its current hash appeared.
    outcome = refresh_table(
        con, "recon.payload_versions", f"{current} UNION ALL {kept}", ("feed", "id", "payload_hash"),
        lambda new: f"""SELECT n.feed, n.id, n.payload_hash, {lit(now.isoformat())}::TIMESTAMPTZ AS first_seen
                        FROM {new} n WHERE NOT EXISTS (SELECT 1 FROM recon.payload_versions p
                                                       WHERE p.feed = n.feed AND p.id = n.id)""")
    return outcome.inserted


def stale_records_sql(now_sql: str, stale_after_hours: float, records: str, ledger: str,
                      versions: str) -> str:
    """Records whose current payload is not acknowledged and first appeared before the cut-off.

    Not acknowledged: the ledger holds another hash (or none), or Ometria has not confirmed the
    request yet (`pending` / `unconfirmed`). `rejected` records have their own exception rule,
    and `dry_run` ones were written to the outbox as asked.

    One query for both the `ometria_stale` exception rule (temp views, a test clock) and the
    `recon.stale_records` view (real tables, now()). `records` is a relation of
    (feed, record_type, id, sap_object, sap_key, payload_hash, held_back_reason).
    """
    return f"""
        SELECT o.feed, o.record_type, o.id, o.sap_object, o.sap_key,
               o.payload_hash AS current_hash, g.payload_hash AS acknowledged_hash,
               g.acknowledged_at, v.first_seen AS changed_at,
               round(epoch({now_sql} - v.first_seen) / 3600, 1) AS hours_waiting
        FROM {records} o
        JOIN {versions} v ON v.feed = o.feed AND v.id = o.id AND v.payload_hash = o.payload_hash
        LEFT JOIN {ledger} g ON g.feed = o.feed AND g.id = o.id
        WHERE o.held_back_reason IS NULL
          AND (g.payload_hash IS DISTINCT FROM o.payload_hash
               OR coalesce(g.status, 'accepted') IN ('pending', 'unconfirmed'))
          AND v.first_seen <= {now_sql} - INTERVAL '{round(stale_after_hours * 3600)} seconds'"""


# ---------------------------------------------------------------------------------------------
# Volume band
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Band:
    value: float
    mean: float
    low: float
    high: float

    @property
    def outside(self) -> bool:
        return self.value < self.low or self.value > self.high


@dataclass(frozen=True)
class VolumeResult:
    day: date
    cutoff: str                  # time of day compared ('HH:MM:SS', company time)
    history_days: int            # days in the trailing window that were compared
    enough_history: bool
    orders: Band | None
    revenue: Band | None

    @property
    def outside(self) -> list[str]:
        out = []
        if self.orders and self.orders.outside:
            out.append("orders")
        if self.revenue and self.revenue.outside:
            out.append("revenue")
        return out


def _band(value: float, history: list[float], settings: VolumeSettings) -> Band:
    n = len(history)
    mean = sum(history) / n
    var = sum((x - mean) ** 2 for x in history) / (n - 1) if n > 1 else 0.0
    half = max(settings.band_sigmas * var ** 0.5, settings.min_band_fraction * mean)
    return Band(value=value, mean=mean, low=max(0.0, mean - half), high=mean + half)


def order_volume(
    con: duckdb.DuckDBPyConnection, as_of: datetime, settings: VolumeSettings | None = None
) -> VolumeResult:
    """Orders and revenue (local currency, cancelled documents excluded) placed on `as_of`'s day
    up to its time of day, against the same cut-off on each of the trailing days.

    `as_of` must be in company time (SAP's DocDate/DocTime carry no offset).
    """
    settings = settings or get_checks_config().volume
    day = as_of.date()
    cutoff = as_of.strftime("%H:%M:%S")
    start = day - timedelta(days=settings.trailing_days)
    if not table_exists(con, "sap_raw", "ordr"):
        return VolumeResult(day, cutoff, 0, False, None, None)
    rows = con.execute(f"""
        WITH days AS (
            SELECT CAST(d AS DATE) AS day FROM generate_series(CAST($start AS DATE), CAST($day AS DATE),
                                                            INTERVAL 1 DAY) t(d)
        ), o AS (
            SELECT CAST("DocDate" AS DATE) AS day, count(*) AS n, sum("DocTotal") AS revenue
            FROM sap_raw.ordr
            WHERE {live_document()}
              AND CAST("DocDate" AS DATE) BETWEEN CAST($start AS DATE) AND CAST($day AS DATE)
              AND coalesce(CAST("DocTime" AS VARCHAR), '00:00:00') <= $cutoff
            GROUP BY 1
        ), first_day AS (
            SELECT min(CAST("DocDate" AS DATE)) AS d FROM sap_raw.ordr
        )
        SELECT days.day, coalesce(o.n, 0), coalesce(o.revenue, 0)
        FROM days LEFT JOIN o USING (day), first_day
        WHERE days.day >= first_day.d
        ORDER BY days.day""", {"start": start, "day": day, "cutoff": cutoff}).fetchall()
    today = [r for r in rows if r[0] == day]
    history = [r for r in rows if r[0] < day]
    n_today = float(today[0][1]) if today else 0.0
    rev_today = float(today[0][2]) if today else 0.0
    enough = len(history) >= settings.min_history_days and any(r[1] for r in history)
    if not enough:
        return VolumeResult(day, cutoff, len(history), False, None, None)
    return VolumeResult(
        day=day, cutoff=cutoff, history_days=len(history), enough_history=True,
        orders=_band(n_today, [float(r[1]) for r in history], settings),
        revenue=_band(rev_today, [float(Decimal(r[2])) for r in history], settings),
    )


# ---------------------------------------------------------------------------------------------
# Exception-rate trend
# ---------------------------------------------------------------------------------------------
_DAILY_RATE_SQL = """
SELECT rule, day, open_count, population,
       CASE WHEN population > 0 THEN open_count / population END AS rate
FROM (
    SELECT rule, CAST(timezone('UTC', run_at) AS DATE) AS day,
           arg_max(open_count, run_at) AS open_count, arg_max(population, run_at) AS population
    FROM ops.exception_history GROUP BY ALL
)"""

_TREND_SQL = """
WITH r AS (
    SELECT rule, day, open_count, coalesce(rate, open_count) AS v
    FROM {daily}
    WHERE day > CAST(timezone('UTC', {now}) AS DATE) - {window}
)
SELECT rule, count(*) AS points,
       arg_min(open_count, day) AS first_open, arg_max(open_count, day) AS last_open,
       arg_min(v, day) AS first_value, arg_max(v, day) AS last_value,
       regr_slope(v, epoch(day) / 86400.0) AS slope_per_day,
       count(*) >= {min_points} AND coalesce(regr_slope(v, epoch(day) / 86400.0), 0) > 0
         AND arg_max(v, day) > arg_min(v, day) * (1 + {min_increase})
         AND arg_max(v, day) > 0 AS rising
FROM r GROUP BY rule ORDER BY rising DESC, rule"""


def create_trend_views(con: duckdb.DuckDBPyConnection, settings: TrendSettings | None = None) -> None:
    """`ops.exception_rate_daily` and `ops.exception_trend`, for SQL users and the trend check."""
    settings = settings or get_checks_config().trend
    con.execute(f"CREATE OR REPLACE VIEW ops.exception_rate_daily AS {_DAILY_RATE_SQL}")
    con.execute(
        "COMMENT ON VIEW ops.exception_rate_daily IS 'Per rule and day (UTC): open exceptions at "
        "the last evaluation of the day, the records the rule looked at, and the rate "
        "(open_count / population).'"
    )
    con.execute("CREATE OR REPLACE VIEW ops.exception_trend AS " + _TREND_SQL.format(
        now="now()", daily="ops.exception_rate_daily", window=settings.window_days, min_points=settings.min_points,
        min_increase=settings.min_increase,
    ))
    con.execute(
        f"COMMENT ON VIEW ops.exception_trend IS 'Per rule over the last {settings.window_days} "
        "days: first and last daily exception rate (open/population, or the open count when "
        "the population is unknown), fitted slope per day, and rising = at least "
        f"{settings.min_points} days, positive slope and growth above "
        f"{settings.min_increase:.0%}.'"
    )


@dataclass(frozen=True)
class Trend:
    rule: str
    points: int
    first_open: int
    last_open: int
    first_value: float
    last_value: float
    slope_per_day: float | None
    rising: bool


def exception_trends(
    con: duckdb.DuckDBPyConnection, now: datetime, settings: TrendSettings | None = None
) -> list[Trend]:
    """The trend per rule as of `now` (tests pass a fake clock)."""
    settings = settings or get_checks_config().trend
    if not table_exists(con, "ops", "exception_history"):
        return []
    rows = con.execute(_TREND_SQL.format(
        now="CAST($now AS TIMESTAMPTZ)", daily=f"({_DAILY_RATE_SQL})", window=settings.window_days,
        min_points=settings.min_points, min_increase=settings.min_increase,
    ), {"now": now}).fetchall()
    return [
        Trend(rule=r[0], points=int(r[1]), first_open=int(r[2]), last_open=int(r[3]),
              first_value=float(r[4]), last_value=float(r[5]),
              slope_per_day=None if r[6] is None else float(r[6]), rising=bool(r[7]))
        for r in rows
    ]


# ---------------------------------------------------------------------------------------------
# Freshness
# ---------------------------------------------------------------------------------------------
def apply_freshness(defs, config: ChecksConfig | None = None):
    """Attach a time-window freshness policy to every `sap_raw` asset (windows from checks.yaml).

    Called once from `definitions.py`: `defs = apply_freshness(defs)`. A policy an asset already
    declares itself is kept.
    """
    windows = (config or get_checks_config()).freshness

    def _with_policy(spec: dg.AssetSpec) -> dg.AssetSpec:
        window = windows.for_table(spec.key.path[-1])
        policy = dg.FreshnessPolicy.time_window(
            fail_window=window.fail_window, warn_window=window.warn_window
        )
        return dg.apply_freshness_policy(spec, policy, overwrite_existing=False)

    # The API the conventions prescribe for cross-cutting policy (as Dagster's own platform does);
    # it is marked preview in 1.13, which is known and accepted here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return defs.map_resolved_asset_specs(
            func=_with_policy, selection=dg.AssetSelection.groups("sap_raw"))
