"""Drift: order volume against a trailing band, the exception-rate trend, freshness policies."""

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import dagster as dg
import duckdb
import pytest
from checks_fixtures import create_sap_table, insert

from sap_ometria_assets.lib.quality.checks_config import (
    ChecksConfig,
    ChecksConfigError,
    TrendSettings,
    VolumeSettings,
    load_checks_config,
)
from sap_ometria_assets.lib.quality.drift import apply_freshness, create_trend_views, exception_trends, order_volume
from sap_ometria_assets.lib.sync_exceptions.register import ensure_tables

LONDON = timezone(timedelta(hours=1))


@pytest.fixture
def con():
    c = duckdb.connect()
    c.execute("CREATE SCHEMA sap_raw")
    c.execute("CREATE SCHEMA ops")
    create_sap_table(c, "ordr")
    yield c
    c.close()


def orders_per_day(con, start: date, counts: list[int], value=Decimal("50"), time="09:00:00"):
    rows, entry = [], con.execute('SELECT coalesce(max("DocEntry"), 0) FROM sap_raw.ordr').fetchall()[0][0]
    for offset, n in enumerate(counts):
        for _ in range(n):
            entry += 1
            rows.append({"DocEntry": entry, "DocDate": start + timedelta(days=offset), "DocTime": time,
                         "DocTotal": value, "CancelStatus": "csNo", "Cancelled": "tNO"})
    insert(con, "sap_raw", "ordr", rows)


def test_volume_inside_the_band(con):
    orders_per_day(con, date(2024, 4, 1), [10, 12, 9, 11, 10, 10, 12, 11, 9, 10] + [10])
    result = order_volume(con, datetime(2024, 4, 11, 18, 0, tzinfo=LONDON), VolumeSettings())
    assert result.enough_history and result.history_days == 10
    assert result.orders.value == 10 and result.outside == []
    assert result.revenue.value == 500.0


def test_volume_collapse_and_spike_warn(con):
    orders_per_day(con, date(2024, 4, 1), [10, 12, 9, 11, 10, 10, 12, 11, 9, 10] + [1])
    low = order_volume(con, datetime(2024, 4, 11, 18, 0, tzinfo=LONDON), VolumeSettings())
    assert low.outside == ["orders", "revenue"] and low.orders.value == 1
    con.execute("DELETE FROM sap_raw.ordr WHERE \"DocDate\" = DATE '2024-04-11'")
    orders_per_day(con, date(2024, 4, 11), [40])
    high = order_volume(con, datetime(2024, 4, 11, 18, 0, tzinfo=LONDON), VolumeSettings())
    assert high.outside == ["orders", "revenue"] and high.orders.value > high.orders.high


def test_volume_compares_the_same_part_of_the_day(con):
    # every day: 10 orders in the morning, 10 in the evening
    orders_per_day(con, date(2024, 4, 1), [10] * 11, time="09:00:00")
    orders_per_day(con, date(2024, 4, 1), [10] * 10, time="20:00:00")
    noon = order_volume(con, datetime(2024, 4, 11, 12, 0, tzinfo=LONDON), VolumeSettings())
    assert noon.orders.mean == 10 and noon.outside == []  # the evening has not happened yet


def test_cancelled_orders_do_not_count_and_short_history_is_not_judged(con):
    orders_per_day(con, date(2024, 4, 1), [10, 10, 10])
    con.execute("UPDATE sap_raw.ordr SET \"Cancelled\" = 'tYES', \"CancelStatus\" = 'csYes' "
                "WHERE \"DocDate\" = DATE '2024-04-03'")
    result = order_volume(con, datetime(2024, 4, 3, 23, 0, tzinfo=LONDON), VolumeSettings())
    assert not result.enough_history and result.orders is None


def history(con, rule, points: list[tuple[int, int]], start=datetime(2024, 5, 1, tzinfo=timezone.utc)):
    ensure_tables(con)
    con.executemany("INSERT INTO ops.exception_history VALUES (?, ?, ?, 0, 0, 0, ?)",
                    [[start + timedelta(days=i), rule, open_, pop] for i, (open_, pop) in enumerate(points)])


def test_rising_exception_rate_is_flagged(con):
    history(con, "contact_invalid_email", [(10, 1000), (12, 1000), (15, 1000), (20, 1000)])
    history(con, "order_total_mismatch", [(5, 100), (5, 100), (4, 100), (5, 100)])
    # a growing population with a flat rate is not a rising problem
    history(con, "contact_missing_email", [(10, 100), (20, 200), (30, 300), (40, 400)])
    trends = {t.rule: t for t in exception_trends(con, datetime(2024, 5, 5, tzinfo=timezone.utc),
                                                  TrendSettings())}
    assert trends["contact_invalid_email"].rising
    assert trends["contact_invalid_email"].first_open == 10 and trends["contact_invalid_email"].last_open == 20
    assert not trends["order_total_mismatch"].rising
    assert not trends["contact_missing_email"].rising


def test_trend_uses_the_last_evaluation_of_each_day_and_needs_enough_days(con):
    start = datetime(2024, 5, 1, 8, tzinfo=timezone.utc)
    history(con, "x", [(50, 100), (1, 100)], start=start)  # day 1 at 08:00 and day 2 at 08:00
    history(con, "x", [(2, 100)], start=start + timedelta(hours=10))  # day 1, later: counts
    trends = {t.rule: t for t in exception_trends(con, datetime(2024, 5, 3, tzinfo=timezone.utc),
                                                  TrendSettings(min_points=2))}
    assert trends["x"].points == 2 and trends["x"].first_open == 2
    assert not exception_trends(con, datetime(2024, 5, 3, tzinfo=timezone.utc), TrendSettings())[0].rising


def test_trend_views_for_sql_users(con):
    # the views read the real clock: recent history
    recent = datetime.now(timezone.utc).replace(hour=6, minute=0) - timedelta(days=2)
    history(con, "contact_invalid_email", [(10, 1000), (20, 1000)], start=recent)
    create_trend_views(con, TrendSettings())
    daily = con.execute("SELECT rule, open_count, rate FROM ops.exception_rate_daily ORDER BY day").fetchall()
    assert daily == [("contact_invalid_email", 10, 0.01), ("contact_invalid_email", 20, 0.02)]
    assert con.execute("SELECT rule, points FROM ops.exception_trend").fetchall() == [
        ("contact_invalid_email", 2)]


def test_apply_freshness_sets_policies_on_landed_assets_only():
    @dg.asset(key=["sap_raw", "oitw"], group_name="sap_raw")
    def oitw(): ...

    @dg.asset(key=["sap_raw", "ocrd"], group_name="sap_raw")
    def ocrd(): ...

    @dg.asset(key=["ometria", "contacts"], group_name="ometria")
    def contacts(): ...

    config = ChecksConfig.model_validate({"freshness": {
        "default": {"warn_hours": 6, "fail_hours": 26},
        "tables": {"oitw": {"warn_hours": 1, "fail_hours": 4}}}})
    defs = apply_freshness(dg.Definitions(assets=[oitw, ocrd, contacts]), config)
    graph = defs.resolve_asset_graph()
    policy = {k.to_user_string(): graph.get(k).freshness_policy for k in graph.get_all_asset_keys()}
    assert policy["sap_raw/oitw"].fail_window.to_timedelta() == timedelta(hours=4)
    assert policy["sap_raw/oitw"].warn_window.to_timedelta() == timedelta(hours=1)
    assert policy["sap_raw/ocrd"].fail_window.to_timedelta() == timedelta(hours=26)
    assert policy["ometria/contacts"] is None


def test_shipped_checks_file_is_valid_and_bad_values_name_the_key(tmp_path):
    config = load_checks_config()
    assert config.freshness.for_table("oitw").fail_hours < config.freshness.default.fail_hours
    bad = tmp_path / "checks.yaml"
    bad.write_text("thresholds:\n  contacts:\n    rules:\n      no_such_rule: {warn_count: 1}\n")
    with pytest.raises(ChecksConfigError, match="no_such_rule"):
        load_checks_config(bad)
    bad.write_text("recon:\n  stale_after_hours: -3\n")
    with pytest.raises(ChecksConfigError, match=r"recon\.stale_after_hours.*-3"):
        load_checks_config(bad)
    bad.write_text("freshness:\n  tables:\n    nope: {fail_hours: 1}\n")
    with pytest.raises(ChecksConfigError, match="nope"):
        load_checks_config(bad)
