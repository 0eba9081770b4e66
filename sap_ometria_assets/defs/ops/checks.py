"""Check on the exception trend: `ops/exception_history` warns when a rule's exception rate
keeps rising."""

from datetime import datetime, timezone

import dagster as dg
import polars as pl

from sap_ometria_assets.defs.resources import WarehouseResource
from sap_ometria_assets.lib.quality.checks_config import get_checks_config
from sap_ometria_assets.lib.quality.drift import exception_trends
from sap_ometria_assets.lib.recon.summaries import markdown_table
from sap_ometria_assets.lib.warehouse.sql import table_exists

EXCEPTION_HISTORY = dg.AssetKey(["ops", "exception_history"])


def trend_result(con, now: datetime) -> dg.AssetCheckResult:
    settings = get_checks_config().trend
    if not table_exists(con, "ops", "exception_history"):
        return dg.AssetCheckResult(passed=True, description="No exception history yet.")
    trends = exception_trends(con, now, settings)
    rising = [t for t in trends if t.rising]
    table = pl.DataFrame(
        [{"rule": t.rule, "days": t.points, "open_first": t.first_open, "open_last": t.last_open,
          "rate_first": f"{t.first_value:.4g}", "rate_last": f"{t.last_value:.4g}",
          "slope_per_day": "" if t.slope_per_day is None else f"{t.slope_per_day:.3g}",
          "rising": t.rising} for t in trends],
        schema={"rule": pl.String, "days": pl.Int64, "open_first": pl.Int64, "open_last": pl.Int64,
                "rate_first": pl.String, "rate_last": pl.String, "slope_per_day": pl.String,
                "rising": pl.Boolean},
    )
    return dg.AssetCheckResult(
        passed=not rising,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"rising_rules": dg.MetadataValue.json([t.rule for t in rising]),
                  "trend": dg.MetadataValue.md(markdown_table(table))},
        description=(f"Exception rate rising over the last {settings.window_days} days for: "
                     + ", ".join(t.rule for t in rising)) if rising else
                    f"No rule's exception rate is rising over the last {settings.window_days} days.",
    )


@dg.asset_check(asset=EXCEPTION_HISTORY, name="exception_rate_not_rising", pool="duckdb",
                description="WARN when a rule's exception rate (open exceptions per record it "
                "checks) has been rising over the trend window (data/checks.yaml: trend).")
def exception_rate_not_rising(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return trend_result(con, datetime.now(timezone.utc))
