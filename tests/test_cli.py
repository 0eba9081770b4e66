"""The `sap-ometria` command behind `make demo` / `make sync`: what an operator sees."""

from __future__ import annotations

import os

import subprocess
import sys
import time
from pathlib import Path

from sap_ometria_assets import cli
from sap_ometria_assets.console import run as console_run
from sap_ometria_assets.console.summary import exception_lines, object_lines
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT, get_settings
from sap_ometria_assets.lib.sync_exceptions.summaries import OpenMoney


def test_invalid_setting_stops_before_any_work_and_names_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("SAP_B1_PAGE_SIZE", "many")
    called = []
    monkeypatch.setattr(console_run, "run_full_sync", lambda *a, **kw: called.append(kw))
    try:
        assert cli.main(["sync"]) == 2
    finally:
        monkeypatch.delenv("SAP_B1_PAGE_SIZE")
        get_settings(refresh=True)
    assert called == []
    assert "SAP_B1_PAGE_SIZE" in capsys.readouterr().err


def test_invalid_secret_is_named_but_never_echoed(monkeypatch, capsys):
    monkeypatch.setenv("SAP_B1_SERVICE_LAYER_URL", "sap.example.com:50000")  # no scheme
    monkeypatch.setenv("SAP_B1_PASSWORD", "Hunter2-Secret")
    try:
        assert cli.main(["sync"]) == 2
    finally:
        monkeypatch.delenv("SAP_B1_SERVICE_LAYER_URL")
        get_settings(refresh=True)
    err = capsys.readouterr().err
    assert "SAP_B1_SERVICE_LAYER_URL" in err
    assert "Hunter2-Secret" not in err


def test_demo_ignores_real_system_variables(monkeypatch):
    """`make demo` must never push the demo company into a real Ometria account."""
    monkeypatch.setenv("OMETRIA_API_URL", "https://api.ometria.com/v2")
    monkeypatch.setenv("OMETRIA_API_KEY", "live-key")
    monkeypatch.setenv("SAP_B1_SERVICE_LAYER_URL", "https://sap.example.com:50000/b1s/v2")
    seen = {}

    def fake_sync(log_dir, tags=None, verbose=False, console=None):
        s = get_settings()
        seen.update(sap=s.uses_embedded_sap, ometria=s.uses_embedded_ometria, key=s.ometria_api_key,
                    warehouse=s.duckdb_path, outbox=s.outbox_dir, home=os.environ["DAGSTER_HOME"])
        return console_run.SyncOutcome(False, {}, 0.1, "run", log_dir / "run.log",
                                       failed_step="x", cause="stopped by the test")

    monkeypatch.setattr(console_run, "run_full_sync", fake_sync)
    production = get_settings(refresh=True)
    # cmd_demo rewrites os.environ; let monkeypatch restore every variable it touches
    for name in ("SAP_OMETRIA_DUCKDB_PATH", "SAP_OMETRIA_OUTBOX_DIR", "DAGSTER_HOME"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    assert cli.main(["demo"]) == 1
    for name in ("OMETRIA_API_URL", "OMETRIA_API_KEY", "SAP_B1_SERVICE_LAYER_URL"):
        monkeypatch.delenv(name)
    get_settings(refresh=True)
    assert (seen["sap"], seen["ometria"], seen["key"]) == (True, True, None)
    # the production warehouse (watermarks, ledger) and outbox are left alone
    assert seen["warehouse"] != production.duckdb_path
    assert seen["outbox"] != production.outbox_dir
    assert seen["warehouse"].is_relative_to(production.demo_dir)
    # and its own Dagster instance, apart from `make ui`'s (data/dagster_home)
    assert Path(seen["home"]).is_relative_to(production.demo_dir)


def test_summary_speaks_in_business_objects_and_money_with_its_meaning():
    lines = object_lines({
        "ometria/contacts": {"dagster/row_count": 1848},
        "ometria_push/contacts": {"records_sent": 3, "skipped_unchanged": 1836, "held_back": 9},
        "ometria/refunds": {"dagster/row_count": 1010, "by_mode_applied": {"negative_order": 990}},
    })
    customers = next(line for line in lines if line.startswith("customers"))
    assert customers.split()[1:] == ["1,848", "3", "1,836", "9"]
    assert "990 go with the orders" in next(line for line in lines if line.startswith("credit memos"))
    money = OpenMoney(
        "GBP", {"finance": 5, "marketing": 2},
        {"finance": {"orders and credit memos not reaching Ometria": 1234.5},
         "marketing": {"customers' value held back": 99.0}},
        [("order_total_mismatch", "finance", 5,
          {"orders and credit memos not reaching Ometria": 1234.5}, "Fix the total in SAP.")])
    out = "\n".join(exception_lines(money))
    assert "Open exceptions: 7 (finance 5, marketing 2)" in out
    assert "orders and credit memos not reaching Ometria: GBP 1,234.50" in out
    assert "customers' value held back: GBP 99.00" in out
    assert "1. order_total_mismatch" in out and "Fix the total in SAP." in out
    assert "GBP 1,333.50" not in out  # never one sum over two meanings


def _demo(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("SAP_OMETRIA_", "OMETRIA_", "SAP_B1_", "DAGSTER_"))}
    environ.update(SAP_OMETRIA_DEMO_DIR=str(tmp_path / "demo"), SAP_OMETRIA_DEMO_SCALE="0.02",
                   COLUMNS="120", **env)
    return subprocess.run([sys.executable, "-m", "sap_ometria_assets.cli", "demo"], cwd=PROJECT_ROOT,
                          env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)


def test_failed_sync_ends_with_failed_the_cause_and_no_finished(tmp_path):
    """A SQL session holding the warehouse: the sync says FAILED, who holds it and what to do."""
    warehouse = tmp_path / "demo" / "warehouse.duckdb"
    warehouse.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('holding', flush=True); time.sleep(300)", str(warehouse)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        proc = _demo(tmp_path, SAP_OMETRIA_DUCKDB_LOCK_WAIT_S="0.2")
    finally:
        holder.kill()
        holder.wait()
    out = proc.stdout
    assert proc.returncode != 0, out
    assert "finished" not in out.lower(), out
    last = out.strip().splitlines()[-2:]
    assert last[0].startswith("FAILED"), out
    assert "locked by another process" in last[0] and f"PID {holder.pid}" in last[0], out
    assert "close that process" in last[0], out
    assert last[1].startswith("Log: ") and (PROJECT_ROOT / last[1][5:]).exists(), out
    assert time.monotonic() - started < 300
