"""Schedules, in the company time zone (`SAP_OMETRIA_TIMEZONE`), cron strings from the
environment (defaults: stock every 15 minutes, the SAP landing hourly at :05, the deletion scan
at 02:30, reconciliation at 06:00 once the night's work is done).

They start switched on (`SAP_OMETRIA_AUTOMATION_ENABLED=true`, the default) so `make ui`
really runs the product; set it to false for a UI that only runs what you launch by hand.
"""

from __future__ import annotations

import dagster as dg

from sap_ometria_assets.defs.automation.config import AutomationConfig, automation_config
from sap_ometria_assets.defs.automation.jobs import (
    land_sap_job,
    nightly_deletion_scan_job,
    reconcile_job,
    sync_stock_job,
)
from sap_ometria_assets.lib.config.settings import SettingsError


def _schedule(name: str, job, cron: str, env_var: str, cfg: AutomationConfig,
              description: str) -> dg.ScheduleDefinition:
    try:
        return dg.ScheduleDefinition(
            name=name,
            job=job,
            cron_schedule=cron,
            execution_timezone=cfg.timezone,
            default_status=(
                dg.DefaultScheduleStatus.RUNNING if cfg.automation_enabled
                else dg.DefaultScheduleStatus.STOPPED
            ),
            description=f"{description} (cron `{cron}`, {cfg.timezone}; set {env_var} to change).",
        )
    except dg.DagsterInvalidDefinitionError as exc:
        raise SettingsError(f"Invalid configuration: {env_var}: {exc}") from None


def build_schedules(cfg: AutomationConfig) -> list[dg.ScheduleDefinition]:
    return [
        _schedule("sync_stock_job_schedule", sync_stock_job, cfg.cron_stock,
                  "SAP_OMETRIA_CRON_STOCK", cfg,
                  "Stock levels to Ometria in-stock flags"),
        _schedule("land_sap_job_schedule", land_sap_job, cfg.cron_sync,
                  "SAP_OMETRIA_CRON_SYNC", cfg,
                  "Customers, orders and credit memos from SAP; the push follows each success"),
        _schedule("nightly_deletion_scan_job_schedule", nightly_deletion_scan_job,
                  cfg.cron_deletion_scan, "SAP_OMETRIA_CRON_DELETION_SCAN", cfg,
                  "Full key scan of business partners and items to mark deletions"),
        _schedule("reconcile_job_schedule", reconcile_job, cfg.cron_reconcile,
                  "SAP_OMETRIA_CRON_RECONCILE", cfg,
                  "Reconciliation of SAP, the push ledger and Ometria"),
    ]


schedules = build_schedules(automation_config())
