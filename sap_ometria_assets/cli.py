"""`sap-ometria`: the commands behind `make demo`, `make sync` and `make advance`.

A sync is one Dagster run of every asset (landing, Ometria-ready, push, checks, exceptions,
reconciliation) executed in this process against the instance in `DAGSTER_HOME`, so it shows
in the UI's run history like a scheduled run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from sap_ometria_assets.emulators.sap_b1.embedded import advance_demo_clock
from sap_ometria_assets.lib.automation.alerts import make_alert
from sap_ometria_assets.lib.automation.spool import raise_alerts
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT, SettingsError, get_settings
from sap_ometria_assets.lib.warehouse.db import WarehouseUnusableError, check_usable

# Variables that would point the demo at real systems; `demo` blanks them (an empty value
# beats a `.env` file) so the demo always runs on the embedded emulators.
_REAL_SYSTEM_VARS = (
    "SAP_B1_SERVICE_LAYER_URL",
    "OMETRIA_API_URL",
    "OMETRIA_API_KEY",
)


# Dagster and the definitions are imported when a run starts, not when the module loads: the
# `demo` command first blanks the real-system variables, and `--help` or a settings error should
# not wait two seconds for Dagster to import.
def _instance():
    import dagster as dg

    home = os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "data" / "dagster_home"))
    Path(home).mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.get()


def run_full_sync(tags: dict[str, str] | None = None) -> tuple[bool, dict[str, dict], float]:
    """Materialise every asset once; returns (success, metadata by asset key, seconds)."""
    from sap_ometria_assets.definitions import defs as build_defs

    defs = build_defs()
    job = defs.resolve_job_def("full_sync_job")
    started = time.perf_counter()
    with _instance() as instance:
        result = job.execute_in_process(instance=instance, tags=tags or {}, raise_on_error=False)
        # the same alerts the run-failure sensor raises under `make ui`, so a cron'd
        # `make sync` pages someone too
        from sap_ometria_assets.defs.automation.alerting import raise_run_alerts

        try:
            raise_run_alerts(instance, result.dagster_run)
        except Exception as exc:  # the run's own report (summary, exit code) must still come
            print(f"ALERTS NOT RAISED: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
    elapsed = time.perf_counter() - started
    metadata: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization  # type: ignore[union-attr]
        metadata[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                err = event.event_specific_data.error  # type: ignore[union-attr]
                print(f"FAILED {event.step_key}: {err.message.strip() if err else ''}", file=sys.stderr)
    return result.success, metadata, elapsed


def _cell(md: dict, *names: str) -> str:
    for name in names:
        if name in md and md[name] is not None:
            return str(md[name])
    return ""


def print_summary(metadata: dict[str, dict], elapsed: float) -> None:
    """One line per asset: what this run read/sent, what changed, what the table now holds."""
    settings = get_settings()
    print()
    print(f"Sync finished in {elapsed:.1f}s  (warehouse: {settings.duckdb_path})")
    print(f"{'asset':30} {'read/sent':>10} {'changed':>8} {'skipped':>8} {'requests':>8} {'rows':>9}")
    for key in sorted(metadata):
        md = metadata[key]
        print(
            f"{key:30} {_cell(md, 'rows_landed', 'records_sent'):>10} "
            f"{_cell(md, 'rows_changed', 'new_exceptions'):>8} "
            f"{_cell(md, 'skipped_unchanged'):>8} {_cell(md, 'requests'):>8} "
            f"{_cell(md, 'dagster/row_count'):>9}"
        )
    snapshot = metadata.get("recon/ometria_snapshot", {})
    if snapshot.get("outcome") == "unavailable":
        print(
            f"\nReconciliation with Ometria UNAVAILABLE: {snapshot.get('note', 'read-back failed')}. "
            "The pushes and exceptions of this run stand; recon compares SAP with the ledger "
            "only (see recon.snapshot_runs, alert in ops.alerts)."
        )
    exceptions = metadata.get("ops/sync_exceptions", {})
    if exceptions:
        print(
            f"\nOpen exceptions: {exceptions.get('open_exceptions', 0)} "
            f"(by owner: {exceptions.get('open_by_owner', {})}), money at stake "
            f"{exceptions.get('open_impact', 0)}. Details: ops.sync_exceptions, docs/operations.md."
        )


def cmd_sync(args: argparse.Namespace) -> int:
    try:
        settings = get_settings(refresh=True)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    where = "embedded demo company" if settings.uses_embedded_sap else settings.sap_b1_service_layer_url
    target = (
        "embedded Ometria emulator" if settings.uses_embedded_ometria
        else ("dry run -> " + str(settings.outbox_dir)) if settings.ometria_is_dry_run
        else settings.ometria_api_url
    )
    print(f"SAP B1: {where}\nOmetria: {target}")
    refused = _refuse_unusable_warehouse(settings)
    if refused is not None:
        return refused
    ok, metadata, elapsed = run_full_sync(tags={"sap_ometria/trigger": args.command})
    print_summary(metadata, elapsed)
    return 0 if ok else 1


def _refuse_unusable_warehouse(settings) -> int | None:
    """Check the warehouse before any step writes into it (see warehouse.check_usable): a bad
    one stops the sync with its cause, an alert and exit code 3."""
    try:
        check_usable(settings.duckdb_path)
    except WarehouseUnusableError as exc:
        cause = str(exc)
    else:
        return None
    print(f"SYNC REFUSED: {cause}", file=sys.stderr)
    alert = make_alert("run_failure", severity="ERROR", job_name="full_sync_job",
                       message=f"sync refused before any step ran: {cause}",
                       asset_key=str(settings.duckdb_path))
    try:
        outcome = raise_alerts([alert], duckdb_path=settings.duckdb_path,
                               webhook=settings.sap_ometria_alert_webhook, lock_wait_s=1.0,
                               write_warehouse=False)
        delivered = outcome.delivered
    except Exception as exc:
        print(f"ALERT NOT RAISED: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
        delivered = 0
    print(f"\nSync refused: nothing read or written (warehouse: {settings.duckdb_path}). "
          f"1 alert raised, {delivered} sent to the webhook.")
    return 3


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        configured = get_settings(refresh=True)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not (configured.uses_embedded_sap and configured.uses_embedded_ometria):
        # This machine is set up for real systems: keep the demo company out of the production
        # warehouse (its watermarks and ledger) and out of the production outbox.
        demo_dir = configured.demo_dir
        os.environ["SAP_OMETRIA_DUCKDB_PATH"] = str(demo_dir / "warehouse.duckdb")
        os.environ["SAP_OMETRIA_OUTBOX_DIR"] = str(demo_dir / "outbox")
        print(f"Real systems are configured: the demo uses its own warehouse under {demo_dir}.")
    for name in _REAL_SYSTEM_VARS:
        os.environ[name] = ""
    return cmd_sync(args)


def cmd_advance(args: argparse.Namespace) -> int:
    ticks = advance_demo_clock(get_settings(refresh=True), ticks=args.ticks)
    print(f"Demo company clock advanced to tick {ticks}: run `make demo` to sync the changes.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sap-ometria", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="full sync on the embedded demo company").set_defaults(func=cmd_demo)
    sub.add_parser("sync", help="full sync against the configured systems").set_defaults(func=cmd_sync)
    adv = sub.add_parser("advance", help="advance the demo company's clock")
    adv.add_argument("--ticks", type=int, default=1)
    adv.set_defaults(func=cmd_advance)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
