"""The operator-facing knobs of the automation (cron strings, sensor interval, backfill start
and pace, whether schedules start switched on), gathered from the settings in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sap_ometria_assets.lib.config.settings import get_settings


@dataclass(frozen=True)
class AutomationConfig:
    timezone: str
    cron_stock: str
    cron_sync: str
    cron_deletion_scan: str
    cron_reconcile: str
    change_sensor_interval_s: int
    backfill_start: date
    backfill_rate_limit_per_s: float
    automation_enabled: bool
    ui_url: str


def automation_config() -> AutomationConfig:
    s = get_settings()
    return AutomationConfig(
        timezone=s.sap_ometria_timezone,
        cron_stock=s.sap_ometria_cron_stock,
        cron_sync=s.sap_ometria_cron_sync,
        cron_deletion_scan=s.sap_ometria_cron_deletion_scan,
        cron_reconcile=s.sap_ometria_cron_reconcile,
        change_sensor_interval_s=s.sap_ometria_change_sensor_interval_s,
        backfill_start=s.sap_ometria_backfill_start,
        backfill_rate_limit_per_s=s.sap_ometria_backfill_rate_limit_per_s,
        automation_enabled=s.sap_ometria_automation_enabled,
        ui_url=s.sap_ometria_ui_url,
    )
