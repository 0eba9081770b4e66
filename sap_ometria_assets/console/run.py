"""Running one full sync in this process, quietly: the Dagster run behind `sap-ometria sync`.

`run_full_sync()` materialises every asset once (`full_sync_job`) against the instance in
`DAGSTER_HOME`, so the run shows in that instance's history like a scheduled one. Its event log
goes to `<log_dir>/<run id>.log` instead of the terminal (see progress.py); what comes back is a
`SyncOutcome`: success, each asset's metadata, the time taken, the log's path and, for a failed
run, the first failing step and its cause in one sentence.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from rich.console import Console

from sap_ometria_assets.console.progress import PhaseProgress, run_logger, step_phases
from sap_ometria_assets.defs.automation.alerting import raise_run_alerts
from sap_ometria_assets.definitions import defs as build_defs
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT

LOCK_ADVICE = ("close that process (a duckdb CLI or notebook session, or another sync: "
               "`make ui` runs its own on a schedule) or wait for it to finish, then run again")


@dataclass
class SyncOutcome:
    success: bool
    metadata: dict[str, dict]
    elapsed: float
    run_id: str
    log_path: Path
    failed_step: str | None = None
    cause: str | None = None


# An instance folder the product creates (the demo's, data/demo/dagster_home) gets this file:
# without one Dagster prints a notice and a telemetry banner on every run.
INSTANCE_YAML = """# Dagster instance created by `sap-ometria` (see data/dagster_home/dagster.yaml).
telemetry:
  enabled: false
"""


def _instance() -> dg.DagsterInstance:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "data" / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(INSTANCE_YAML, encoding="utf-8")
    return dg.DagsterInstance.get()


def one_sentence_cause(error) -> str:
    """The error a step raised (under Dagster's wrappers) as one sentence; for a lock, what to do."""
    while (error.cls_name or "").startswith("Dagster") and error.cause is not None:
        error = error.cause
    text = " ".join((error.message or "").split())
    if error.cls_name and text.startswith(f"{error.cls_name}: "):
        text = text[len(error.cls_name) + 2:]
    if error.cls_name == "WarehouseLockedError":
        return f"{text.rstrip('.')}: {LOCK_ADVICE}."
    return f"{error.cls_name}: {text}" if error.cls_name else text


def run_full_sync(log_dir: Path, tags: dict[str, str] | None = None, verbose: bool = False,
                  console: Console | None = None) -> SyncOutcome:
    """Materialise every asset once, showing one progress line per phase."""
    console = console or Console()
    defs = build_defs()
    job = defs.resolve_job_def("full_sync_job")
    run_id = str(uuid.uuid4())  # a Dagster run id is a UUID4 string
    log_path = log_dir / f"{run_id}.log"
    progress = PhaseProgress(step_phases(defs, job), console=console,
                             live=console.is_terminal and not verbose)
    quiet_job = job.with_logger_defs({"run_log": run_logger(log_path, progress, verbose)})
    started = time.perf_counter()
    with _instance() as instance, progress:
        result = quiet_job.execute_in_process(
            instance=instance, tags=tags or {}, raise_on_error=False, run_id=run_id,
            run_config={"loggers": {"run_log": {}}})
        progress.print_unfinished()
        # the same alerts the run-failure sensor raises under `make ui`, so a cron'd
        # `make sync` pages someone too
        try:
            raise_run_alerts(instance, result.dagster_run)
        except Exception as exc:  # the run's own report (summary, exit code) must still come
            print(f"ALERTS NOT RAISED: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
    outcome = SyncOutcome(result.success, {}, time.perf_counter() - started, run_id, log_path)
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization  # type: ignore[union-attr]
        outcome.metadata[mat.asset_key.to_user_string()] = {
            k: v.value for k, v in mat.metadata.items()}
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                outcome.failed_step = event.step_key
                err = event.event_specific_data.error  # type: ignore[union-attr]
                outcome.cause = one_sentence_cause(err) if err else "no error was recorded"
                break
        if outcome.failed_step is None:
            outcome.cause = "the run failed before any step finished (see the log)"
    return outcome
