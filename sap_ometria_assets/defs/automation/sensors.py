"""Sensors that move data: the push after each landing, and the SAP change sensor.

One mechanism decides when Ometria is pushed: `push_after_landing`, a run-status sensor on the
landing jobs, with its twin `push_after_blocked_landing` for landing runs that failed only
because a blocking contract check failed. (No declarative automation conditions are set on the
push assets, so the two can never disagree.) A failed blocking check holds back only what is
downstream of the table it checks (`push_scope.py`): a broken extract of OITM holds back the
products feed, and contacts and orders are pushed as usual. The sensor reads the run's check
evaluations, not the run status, so a check that is blocking but did not fail the step (a
custom check job, a future severity change) cannot let a broken extract through either. A
landing run that failed for another reason (a read that crashed) is never pushed from.
"""


import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import dagster as dg

from sap_ometria_assets.defs.automation.alerting import DEFAULT_SENSOR_STATUS
from sap_ometria_assets.defs.automation.config import automation_config
from sap_ometria_assets.defs.automation.jobs import (
    land_sap_job,
    nightly_deletion_scan_job,
    push_ometria_job,
)
from sap_ometria_assets.defs.automation.push_scope import failed_other_than_blocking_checks, push_scope
from sap_ometria_assets.defs.resources import SapB1Resource
from sap_ometria_assets.lib.landing.plan import changed_since_filter
from sap_ometria_assets.lib.sap.tables import SAP_TABLES

LANDING_RUN_TAG = "sap_ometria/landing_run"
HELD_BACK_TAG = "sap_ometria/held_back"  # assets a push leaves out (downstream of a broken table)
TRIGGER_TAG = "sap_ometria/trigger"
CHANGED_TAG = "sap_ometria/changed_entities"

# Entities read incrementally by the landing: the only ones a cheap count can watch. Full-mode
# tables (stock, warehouses, groups, UDF definitions) are snapshots on their own schedules.
WATCHED = tuple(t for t in SAP_TABLES if t.read_mode == "incremental")
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _push_request(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    scope = push_scope(context.instance, run.run_id, context.repository_def)
    if scope.nothing_left:
        return dg.SkipReason(
            f"landing run {run.run_id} had failed blocking checks ({', '.join(scope.blocked_checks)}): "
            "nothing is pushed from a broken extract"
        )
    tags = {LANDING_RUN_TAG: run.run_id}
    if scope.blocked_checks:
        tags[HELD_BACK_TAG] = ",".join(k.to_user_string() for k in scope.held_back)
        context.log.warning(
            "landing run %s had failed blocking checks (%s): held back %s; the rest is pushed",
            run.run_id, ", ".join(scope.blocked_checks), tags[HELD_BACK_TAG])
    return dg.RunRequest(run_key=f"push-after-{run.run_id}", tags=tags,
                         asset_selection=scope.selection)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="push_after_landing",
    description="After each successful landing (land_sap_job, nightly_deletion_scan_job), run "
    "push_ometria_job, less what is downstream of a table whose blocking check failed.",
    monitored_jobs=[land_sap_job, nightly_deletion_scan_job],
    request_job=push_ometria_job,
    default_status=DEFAULT_SENSOR_STATUS,
)
def push_after_landing(context: dg.RunStatusSensorContext):
    return _push_request(context)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.FAILURE,
    name="push_after_blocked_landing",
    description="After a landing run that failed only because blocking contract checks failed, "
    "run push_ometria_job for everything not downstream of the broken tables. A landing run "
    "that failed for another reason is not pushed from.",
    monitored_jobs=[land_sap_job, nightly_deletion_scan_job],
    request_job=push_ometria_job,
    default_status=DEFAULT_SENSOR_STATUS,
)
def push_after_blocked_landing(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    other = failed_other_than_blocking_checks(context.instance, run.run_id)
    if other:
        return dg.SkipReason(f"landing run {run.run_id} failed ({', '.join(sorted(other))}): "
                             "nothing is pushed until a landing succeeds")
    return _push_request(context)


# --------------------------------------------------------------------------------------------
# sap_change_sensor
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mark:
    """A landing watermark: the newest (UpdateDate, UpdateTime) landed for an entity."""

    day: date
    clock: time

    @classmethod
    def parse(cls, text: object) -> "Mark | None":
        """`2026-03-01 10:15:30` (the landing's `watermark` metadata); None when absent."""
        if not isinstance(text, str) or not text or text == "none":
            return None
        day_text, _, clock_text = text.replace("T", " ").partition(" ")
        try:
            day = date.fromisoformat(day_text)
            clock = time.fromisoformat(clock_text) if clock_text else time(0)
        except ValueError:
            return None
        return cls(day, clock.replace(microsecond=0, tzinfo=None))

    def __str__(self) -> str:
        return f"{self.day.isoformat()} {self.clock.isoformat()}"


def _minute_after(mark: Mark) -> tuple[date, time]:
    nxt = datetime.combine(mark.day, mark.clock.replace(second=0)) + timedelta(minutes=1)
    return nxt.date(), nxt.time()


def landed_watermark(instance: dg.DagsterInstance, table: str) -> Mark | None:
    """The watermark the last landing of `sap_raw/<table>` reported in its metadata (the
    Dagster event log: the warehouse file is never opened here)."""
    event = instance.get_latest_materialization_event(dg.AssetKey(["sap_raw", table]))
    if event is None or event.asset_materialization is None:
        return None
    metadata = event.asset_materialization.metadata
    for key in ("watermark", "watermark_after"):
        if key in metadata:
            return Mark.parse(getattr(metadata[key], "value", metadata[key]))
    return None


def evaluate_changes(
    marks: dict[str, Mark | None], counter, cursor: dict
) -> tuple[list[str], dict, dict[str, str]]:
    """Which watched entities changed since their watermark.

    For each entity with a watermark M (minute m), two counts:
    - `after`: records updated in a later minute than m. More than zero is a change, always.
    - `at`: records updated in minute m or later. The landing already holds some of minute m
      (that is where M comes from), so the first value seen for a watermark is the baseline,
      and only a rise above it is a change. (A change inside minute m made between the landing
      and the first look is seen with the next change, or by the hourly landing.)
    An entity never landed (no watermark) is a change: it needs its first landing.
    Returns (changed tables, new cursor, reasons)."""
    changed: list[str] = []
    reasons: dict[str, str] = {}
    new_cursor: dict = {}
    for spec in WATCHED:
        mark = marks.get(spec.table)
        if mark is None:
            changed.append(spec.table)
            reasons[spec.table] = "never landed"
            continue
        previous = cursor.get(spec.table, {})
        baseline = previous.get("in_minute") if previous.get("watermark") == str(mark) else None
        after = counter(spec.entity_set, changed_since_filter(*_minute_after(mark)))
        if after > 0:
            # A change for certain; the minute count can wait for the next watermark.
            new_cursor[spec.table] = {"watermark": str(mark), "in_minute": baseline}
            changed.append(spec.table)
            reasons[spec.table] = f"{after} record(s) updated after {mark}"
            continue
        in_minute = counter(spec.entity_set, changed_since_filter(mark.day, mark.clock.replace(second=0)))
        if baseline is None or in_minute < baseline:
            baseline = in_minute  # first look at this watermark (or records went away)
        new_cursor[spec.table] = {"watermark": str(mark), "in_minute": baseline}
        if in_minute > baseline:
            changed.append(spec.table)
            reasons[spec.table] = f"{in_minute - baseline} more record(s) updated in the minute of {mark}"
    return changed, new_cursor, reasons


@dg.sensor(
    name="sap_change_sensor",
    job=land_sap_job,
    minimum_interval_seconds=automation_config().change_sensor_interval_s,
    default_status=DEFAULT_SENSOR_STATUS,
    description="Asks the SAP Service Layer, with `$count` requests only, whether business "
    "partners, orders, deliveries, invoices, credit memos or items changed since the last "
    "landing's watermark, and starts land_sap_job when they did. Reads the watermarks from the "
    "landing's materialisation metadata, never from the warehouse file (a run may hold it).",
)
def sap_change_sensor(context: dg.SensorEvaluationContext, sap_b1: SapB1Resource):
    in_flight = context.instance.get_run_records(
        dg.RunsFilter(job_name=land_sap_job.name, statuses=IN_FLIGHT), limit=1
    )
    if in_flight:
        return dg.SkipReason(f"land_sap_job run {in_flight[0].dagster_run.run_id} is already queued or running")
    marks = {spec.table: landed_watermark(context.instance, spec.table) for spec in WATCHED}
    cursor = json.loads(context.cursor) if context.cursor else {}
    try:
        with sap_b1.client(context.log) as client:
            changed, new_cursor, reasons = evaluate_changes(marks, client.count, cursor)
    finally:
        sap_b1.close()  # one short session per tick: log out, free the licence
    context.update_cursor(json.dumps(new_cursor, sort_keys=True))
    if not changed:
        return dg.SkipReason("no change in SAP since the last landing")
    # Same watermarks and the same counts: the same request, which Dagster runs only once.
    identity = json.dumps({t: [str(marks[t]), reasons[t]] for t in changed}, sort_keys=True)
    return dg.RunRequest(
        run_key="sap-change-" + hashlib.sha256(identity.encode()).hexdigest()[:16],
        tags={TRIGGER_TAG: "sap_change_sensor", CHANGED_TAG: ",".join(changed)},
    )
