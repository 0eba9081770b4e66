"""`sap-ometria`: the commands behind `make demo`, `make sync` and `make advance`, and
`sap-ometria sql` / `snapshots` on the published snapshots (console/snapshots.py).

A sync is one Dagster run of every asset (landing, Ometria-ready, push, checks, exceptions,
reconciliation) executed in this process against the instance in `DAGSTER_HOME`, so it shows
in that instance's run history like a scheduled run (console/run.py). The terminal shows one
progress line per phase and a summary in business objects (console/summary.py); Dagster's
event log goes to logs/<run id>.log beside the warehouse (data/logs/, data/demo/logs/ for the
demo), and also to the terminal with `--verbose`. The demo
runs in its own instance and warehouse under data/demo/, apart from `make ui`'s.
"""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from sap_ometria_assets.console.snapshots import run_list, run_sql
from sap_ometria_assets.emulators.sap_b1.embedded import advance_demo_clock
from sap_ometria_assets.lib.automation.alerts import make_alert
from sap_ometria_assets.lib.automation.spool import raise_alerts
from sap_ometria_assets.lib.config.settings import SettingsError, get_settings
from sap_ometria_assets.lib.warehouse.db import WarehouseUnusableError, check_usable

# Variables that would point the demo at real systems; `demo` blanks them (an empty value
# beats a `.env` file) so the demo always runs on the embedded emulators.
_REAL_SYSTEM_VARS = (
    "SAP_B1_SERVICE_LAYER_URL",
    "OMETRIA_API_URL",
    "OMETRIA_API_KEY",
)


def _console() -> Console:
    # no markup: fix hints and SAP values may hold [brackets]; no wrapping in a log file
    return Console(markup=False, highlight=False)


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
    # Imported here, not at the top: the run module loads Dagster and the definitions (two
    # seconds), which `--help` and a settings error should not wait for, and the definitions
    # read the environment that `demo` rewrites first.
    from sap_ometria_assets.console.run import run_full_sync
    from sap_ometria_assets.console.summary import print_failure, print_summary

    console = _console()
    # the run's event log sits beside its warehouse: data/logs/, data/demo/logs/ for the demo
    outcome = run_full_sync(settings.duckdb_path.parent / "logs",
                            tags={"sap_ometria/trigger": args.command}, verbose=args.verbose,
                            console=console)
    if outcome.success:
        print_summary(outcome, settings.duckdb_path, console)
        return 0
    print_failure(outcome, console)
    return 1


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
    print(f"\nFAILED. Sync refused: nothing read or written (warehouse: {settings.duckdb_path}). "
          f"1 alert raised, {delivered} sent to the webhook.")
    return 3


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        configured = get_settings(refresh=True)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    # The demo company lives apart from everything else: its own warehouse, outbox and Dagster
    # instance under data/demo/, so it never touches a production warehouse's watermarks and
    # ledger, and never collides with the runs that `make ui`'s schedules and sensors start on
    # data/warehouse.duckdb (DuckDB has one writer per file).
    demo_dir = configured.demo_dir
    os.environ["SAP_OMETRIA_DUCKDB_PATH"] = str(demo_dir / "warehouse.duckdb")
    os.environ["SAP_OMETRIA_OUTBOX_DIR"] = str(demo_dir / "outbox")
    os.environ["DAGSTER_HOME"] = str(demo_dir / "dagster_home")
    for name in _REAL_SYSTEM_VARS:
        os.environ[name] = ""
    return cmd_sync(args)


def cmd_advance(args: argparse.Namespace) -> int:
    ticks = advance_demo_clock(get_settings(refresh=True), ticks=args.ticks)
    print(f"Demo company clock advanced to tick {ticks}: run `make demo` to sync the changes.")
    return 0


def _warehouse_of(args: argparse.Namespace):
    settings = get_settings(refresh=True)
    return settings.demo_dir / "warehouse.duckdb" if args.demo else settings.duckdb_path


def _on_lake(args: argparse.Namespace, command) -> int:
    """Run `command(warehouse)`; settings that cannot be read are a message and exit 2."""
    try:
        warehouse = _warehouse_of(args)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    return command(warehouse)


def cmd_sql(args: argparse.Namespace) -> int:
    return _on_lake(args, lambda warehouse: run_sql(warehouse, args.query, args.as_of, args.tsv,
                                                    console=_console()))


def cmd_snapshots(args: argparse.Namespace) -> int:
    return _on_lake(args, lambda warehouse: run_list(warehouse, args.tsv, console=_console()))


def _add_lake_commands(sub) -> None:
    """`sql` and `snapshots`: read the published snapshots (console/snapshots.py)."""
    sql = sub.add_parser("sql", help="read-only SQL on a published snapshot (latest by default)")
    sql.add_argument("query", help='e.g. "SELECT count(*) FROM ometria.orders"')
    sql.add_argument("--as-of", help="snapshot id or timestamp (UTC unless an offset is given)")
    snaps = sub.add_parser("snapshots", help="list the published snapshots, newest first")
    for cmd, func in ((sql, cmd_sql), (snaps, cmd_snapshots)):
        cmd.add_argument("--tsv", action="store_true", help="tab-separated output for scripts")
        cmd.add_argument("--demo", action="store_true",
                         help="the demo's snapshots (data/demo/lake) instead of the warehouse's")
        cmd.set_defaults(func=func)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sap-ometria", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (("demo", cmd_demo, "full sync on the embedded demo company"),
                             ("sync", cmd_sync, "full sync against the configured systems")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--verbose", action="store_true",
                         help="also print Dagster's event log (always in logs/<run id>.log beside the warehouse)")
        cmd.set_defaults(func=func)
    adv = sub.add_parser("advance", help="advance the demo company's clock")
    adv.add_argument("--ticks", type=int, default=1)
    adv.set_defaults(func=cmd_advance)
    _add_lake_commands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
