"""Alert sensors: every failed run, and every failed ERROR-severity asset check (in a failed
run or a successful one), becomes a Slack-compatible message at once (when
`SAP_OMETRIA_ALERT_WEBHOOK` is set) and a row in `ops.alerts` after the next run. WARN checks
do not page: they show in the UI and in the exception register.

The sensors run in the daemon while a sync or a reader may hold the DuckDB file, so they never
open it: an alert is written to the spool of `lib/automation/spool.py` and posted to the
webhook; the next run's publish step moves the spool into `ops.alerts` (and so into the
published snapshot). `flush_alert_queue` re-posts, every minute, queued alerts the webhook has
not accepted yet.
"""


import dagster as dg

from sap_ometria_assets.defs.automation.config import automation_config
from sap_ometria_assets.lib.automation.alerts import Alert, make_alert
from sap_ometria_assets.lib.automation.spool import AlertSpool, flush_alerts, raise_alerts, spool_dir_for
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.defs.resources import WarehouseResource

# Seconds a sensor waits for the warehouse lock before leaving alerts queued.
ALERT_LOCK_WAIT_S = 5.0
_MAX_MESSAGE_CHARS = 2_000

_cfg = automation_config()
DEFAULT_SENSOR_STATUS = (
    dg.DefaultSensorStatus.RUNNING if _cfg.automation_enabled else dg.DefaultSensorStatus.STOPPED
)


def failed_check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    """Check evaluations of one run that did not pass (any severity, blocking or not)."""
    failed = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data if entry.dagster_event else None
        if isinstance(evaluation, dg.AssetCheckEvaluation) and not evaluation.passed:
            failed.append(evaluation)
    return failed


def _metadata_summary(evaluation: dg.AssetCheckEvaluation) -> str:
    parts = []
    for key, value in (evaluation.metadata or {}).items():
        raw = getattr(value, "value", value)
        if isinstance(raw, (str, int, float, bool)) and len(str(raw)) <= 200 and "\n" not in str(raw):
            parts.append(f"{key}: {raw}")
    return "; ".join(parts[:8])


def check_alerts(evaluations: list[dg.AssetCheckEvaluation], run: dg.DagsterRun) -> list[Alert]:
    """One alert per failed ERROR check."""
    alerts = []
    for evaluation in evaluations:
        if evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        asset = evaluation.asset_key.to_user_string()
        lines = [
            f"{asset}: check {evaluation.check_name} failed"
            + (" (blocking: nothing downstream of it ran)" if evaluation.blocking else "")
            + "."
        ]
        if evaluation.description:
            lines.append(evaluation.description)
        summary = _metadata_summary(evaluation)
        if summary:
            lines.append(summary)
        alerts.append(
            make_alert(
                "check_failure",
                severity=evaluation.severity.value,
                job_name=run.job_name,
                run_id=run.run_id,
                asset_key=asset,
                check_name=evaluation.check_name,
                message="\n".join(lines)[:_MAX_MESSAGE_CHARS],
            )
        )
    return alerts


def run_failure_alert(instance: dg.DagsterInstance, run: dg.DagsterRun) -> Alert:
    """The alert for a failed run: which steps failed and why (first lines of the cause)."""
    lines = []
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        # Dagster wraps the asset's exception ("Error occurred while executing op ..."): the
        # innermost cause names the real problem. Its first lines are enough; the stack trace
        # stays in the run's logs.
        while error is not None and error.cause is not None:
            error = error.cause
        text = " ".join(error.message.strip().splitlines()[:3]) if error and error.message else "failed"
        lines.append(f"Step {event.step_key if event else '?'}: {text}")
    if not lines:
        failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        message = failures[-1].dagster_event.message if failures and failures[-1].dagster_event else None
        lines.append((message or "Run failed before any step ran (see the run's logs).").strip())
    return make_alert(
        "run_failure",
        severity="ERROR",
        job_name=run.job_name,
        run_id=run.run_id,
        message="\n".join(lines)[:_MAX_MESSAGE_CHARS],
    )


def alerts_for_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[Alert]:
    """Every alert a finished run deserves: the run failure (if it failed) and each failed
    ERROR check. Used by the sensors, and by the CLI for runs it executes in-process (those are
    not seen by run-status sensors)."""
    alerts = [run_failure_alert(instance, run)] if run.status == dg.DagsterRunStatus.FAILURE else []
    return alerts + check_alerts(failed_check_evaluations(instance, run.run_id), run)


def raise_run_alerts(instance: dg.DagsterInstance, run: dg.DagsterRun, *,
                     lock_wait_s: float = ALERT_LOCK_WAIT_S):
    """Record and send the alerts of a finished run (see `alerts_for_run`); None if none."""
    alerts = alerts_for_run(instance, run)
    if not alerts:
        return None
    return raise_alerts(
        alerts,
        duckdb_path=get_settings().duckdb_path,
        webhook=get_settings().sap_ometria_alert_webhook,
        ui_url=automation_config().ui_url,
        lock_wait_s=lock_wait_s,
    )


def _deliver(context, alerts: list[Alert], warehouse: WarehouseResource) -> None:
    settings = get_settings()
    outcome = raise_alerts(
        alerts,
        duckdb_path=warehouse.path,
        webhook=settings.sap_ometria_alert_webhook,
        ui_url=automation_config().ui_url,
        write_warehouse=False,
        echo_stderr=False,
    )
    context.log.info(
        f"{len(alerts)} alert(s) raised: {outcome.delivered} sent to the webhook, {outcome.pending} "
        "queued for ops.alerts (the next run's publish writes them)"
        + (f"; webhook problem: {outcome.delivery_errors[0]}" if outcome.delivery_errors else "")
    )


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    description="Any failed run of this code location: a webhook message at once and an ops.alerts "
    "row after the next run, plus one per failed ERROR check in that run.",
    default_status=DEFAULT_SENSOR_STATUS,
)
def alert_on_run_failure(context: dg.RunFailureSensorContext, warehouse: WarehouseResource):
    run = context.dagster_run
    alerts = [run_failure_alert(context.instance, run)]
    alerts += check_alerts(failed_check_evaluations(context.instance, run.run_id), run)
    _deliver(context, alerts, warehouse)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="alert_on_failed_checks",
    description="Runs that succeeded but had a failed ERROR-severity check (a non-blocking one): "
    "a webhook message at once and an ops.alerts row after the next run, per check.",
    default_status=DEFAULT_SENSOR_STATUS,
)
def alert_on_failed_checks(context: dg.RunStatusSensorContext, warehouse: WarehouseResource):
    run = context.dagster_run
    alerts = check_alerts(failed_check_evaluations(context.instance, run.run_id), run)
    if not alerts:
        return dg.SkipReason(f"run {run.run_id} had no failed ERROR check")
    _deliver(context, alerts, warehouse)


@dg.sensor(
    name="flush_alert_queue",
    description="Re-posts queued alerts the webhook has not accepted yet (ops.alerts is written by "
    "the next run's publish).",
    minimum_interval_seconds=60,
    default_status=DEFAULT_SENSOR_STATUS,
)
def flush_alert_queue(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    if not AlertSpool(spool_dir_for(warehouse.path)).pending():
        return dg.SkipReason("no queued alerts")
    outcome = flush_alerts(
        duckdb_path=warehouse.path,
        webhook=get_settings().sap_ometria_alert_webhook,
        ui_url=automation_config().ui_url,
        write_warehouse=False,
        echo_stderr=False,
    )
    return dg.SkipReason(
        f"{outcome.delivered} queued alert(s) sent to the webhook; {outcome.pending} wait for the next "
        "run's publish to reach ops.alerts"
    )
