"""SAP's offset-less document date and time (company time) -> UTC and ISO 8601 with the
company zone's offset, as Ometria's `timestamp` wants it; daylight-saving days handled row by row.
"""

from __future__ import annotations

import polars as pl

from sap_ometria_assets.lib.transforms.values import as_date


def _clock_text(col: str) -> tuple[pl.Expr, pl.Expr]:
    """'HH:MM:SS' or 'HH:MM' -> (time of day as a duration, 'HH:MM:SS'); nulls when it is not one."""
    t = pl.col(col).cast(pl.String).str.strip_chars()
    h = t.str.slice(0, 2).cast(pl.Int64, strict=False)
    m = t.str.slice(3, 2).cast(pl.Int64, strict=False)
    short = t.str.len_bytes() == 5
    sec = pl.when(short).then(0).otherwise(t.str.slice(6, 2).cast(pl.Int64, strict=False))
    ok = t.str.contains(r"^\d{2}:\d{2}(:\d{2})?$") & (h < 24) & (m < 60) & (sec < 60)
    duration = pl.when(ok).then(pl.duration(hours=h, minutes=m, seconds=sec, time_unit="us"))
    text_ = pl.when(ok).then(pl.when(short).then(t + ":00").otherwise(t))
    return duration, text_


def _offset_text(offset: pl.Expr) -> pl.Expr:
    minutes = offset.dt.total_minutes()
    sign = pl.when(minutes < 0).then(pl.lit("-")).otherwise(pl.lit("+"))
    a = minutes.abs()
    return pl.concat_str([sign, (a // 60).cast(pl.String).str.pad_start(2, "0"), pl.lit(":"),
                          (a % 60).cast(pl.String).str.pad_start(2, "0")])


def _aware(naive: pl.Expr, zone: str) -> pl.Expr:
    """Wall-clock time in `zone`: a repeated hour takes its first occurrence, a skipped hour
    (spring gap) moves forward by an hour as a wall clock would."""
    first = naive.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
    gap = first.is_null() & naive.is_not_null()
    shifted = pl.when(gap).then(naive + pl.duration(hours=1)).dt.replace_time_zone(
        zone, ambiguous="earliest", non_existent="null")
    return pl.coalesce(first, shifted)


def with_local_time(df: pl.DataFrame, date_col: str, time_col: str | None, zone: str, name: str) -> pl.DataFrame:
    """SAP's offset-less date + 'HH:MM:SS' (company time) -> `name` (UTC datetime) and
    `name`_iso (ISO 8601 with the company zone's offset, e.g. 2024-05-01T14:00:00+01:00).

    A missing or nonsense time counts as midnight. Time-zone rules are looked up once per
    distinct day: on the two days a year whose offset changes, each time is converted on its own
    (the repeated autumn hour takes its first occurrence; a time in the spring gap moves forward
    an hour, as a wall clock would).
    """
    day = as_date(date_col, df.schema[date_col]) if date_col in df.columns else pl.lit(None, pl.Date)
    if time_col is not None and time_col in df.columns:
        clock, clock_text = _clock_text(time_col)
    else:
        clock, clock_text = pl.lit(None, pl.Duration("us")), pl.lit(None, pl.String)
    work = df.with_columns(
        day.alias("_lt_day"),
        clock.fill_null(pl.duration(seconds=0, time_unit="us")).alias("_lt_clock"),
        clock_text.fill_null("00:00:00").alias("_lt_text"),
    )
    midnight = pl.col("_lt_day").cast(pl.Datetime("us"))
    days = work.select(pl.col("_lt_day").unique()).drop_nulls().with_columns(
        _aware(midnight, zone).alias("_a0"),
        (midnight + pl.duration(hours=23, minutes=59, seconds=59)).dt.replace_time_zone(
            zone, ambiguous="latest", non_existent="null").alias("_a1"),
    ).with_columns(
        (pl.col("_a0").dt.base_utc_offset() + pl.col("_a0").dt.dst_offset()).alias("_lt_off"),
        (pl.col("_a1").dt.base_utc_offset() + pl.col("_a1").dt.dst_offset()).alias("_off1"),
    ).select(
        "_lt_day", "_lt_off",
        (pl.col("_lt_off") == pl.col("_off1")).fill_null(False).alias("_lt_steady"),
        pl.col("_lt_day").dt.strftime("%Y-%m-%d").alias("_lt_day_text"),
        _offset_text(pl.col("_lt_off")).alias("_lt_off_text"),
    )
    work = work.join(days, on="_lt_day", how="left")
    naive = midnight + pl.col("_lt_clock")
    steady = pl.col("_lt_steady").fill_null(False)
    # per-row zone conversion only where a day's offset changes (or the zone cannot say)
    slow = _aware(pl.when(~steady).then(naive), zone)
    work = work.with_columns(
        pl.when(steady).then((naive - pl.col("_lt_off")).dt.replace_time_zone("UTC"))
        .otherwise(slow.dt.convert_time_zone("UTC")).alias(name),
        pl.when(steady).then(pl.concat_str([pl.col("_lt_day_text"), pl.lit("T"), pl.col("_lt_text"),
                                            pl.col("_lt_off_text")]))
        .otherwise(slow.dt.strftime("%Y-%m-%dT%H:%M:%S%:z")).alias(f"{name}_iso"),
    )
    return work.drop("_lt_day", "_lt_clock", "_lt_text", "_lt_off", "_lt_steady", "_lt_day_text", "_lt_off_text")
