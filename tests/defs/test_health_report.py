"""The health report page: what marketing and finance open in a browser after a run.

Built over the small warehouse of the checks tests (a customer with a broken email, orders,
credit memos, a read-back of Ometria), through the real assets; rendered in a real headless
Chromium where one is installed (.ci/run installs Debian's `chromium`, so CI always renders it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from sap_ometria_assets.defs.ops.assets import ops_sync_exceptions
from sap_ometria_assets.defs.ops.report import health_report
from sap_ometria_assets.defs.recon.assets import ometria_snapshot, recon_views
from sap_ometria_assets.defs.resources import WarehouseResource
from sap_ometria_assets.lib.report.facts import Facts
from sap_ometria_assets.lib.report.render import write_report
from tests.defs.test_checks import FakeOmetria, _snapshot_records, stub_contacts, stub_orders, world_file


def _build_reports(tmp_path: Path, runs: int = 2) -> Path:
    db = world_file(tmp_path)
    con = duckdb.connect(db)
    con.execute("UPDATE sap_raw.ocrd SET EmailAddress = 'bob@@example' WHERE CardCode = 'C002'")
    con.close()
    assets = [ops_sync_exceptions, ometria_snapshot, recon_views, stub_contacts, stub_orders, health_report]
    with dg.instance_for_test() as instance:
        for _ in range(runs):
            result = dg.materialize(assets, instance=instance, resources={
                "warehouse": WarehouseResource(duckdb_path=db),
                "ometria": FakeOmetria(snapshot_json=_snapshot_records(db))})
            assert result.success
            [meta] = [e.materialization.metadata for e in result.get_asset_materialization_events()
                      if e.asset_key == dg.AssetKey(["ops", "health_report"])]
            assert meta["report"].value.startswith("file://")
    return Path(db).parent / "reports"


def test_the_report_lists_exceptions_with_money_and_fixes_and_draws_charts(tmp_path):
    reports = _build_reports(tmp_path)
    html = (reports / "latest.html").read_text()
    assert len(list(reports.glob("health_*.html"))) == 2           # one file per run, plus latest
    assert 'id="exceptions"' in html and "contact_invalid_email" in html
    assert "Correct the email" in html                               # the rule's fix, for the owner
    assert "GBP" in html                                             # money always with its currency
    assert 'id="reconciliation"' in html and 'id="freshness"' in html
    assert len(re.findall(r"<svg", html)) >= 2                       # money by rule, trend, recon
    # self-contained: nothing fetched from a CDN or the internet, no script needed to read it
    assert "<script" not in html
    assert not re.search(r'(src|href)="https?://', html)


def test_only_the_last_runs_reports_are_kept(tmp_path):
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    for i in range(4):
        write_report(f"<p>{i}</p>", tmp_path, Facts(generated_at=now + timedelta(hours=i), currency="GBP"), keep=2)
    assert sorted(p.name for p in tmp_path.glob("health_*.html")) == [
        "health_20261201T020000.html", "health_20261201T030000.html"]
    assert (tmp_path / "latest.html").read_text() == "<p>3</p>"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_report_renders_in_a_real_browser_without_errors(tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs it so CI renders the report")
        pytest.skip("chromium not installed here (apt-get install chromium); CI runs this test")
    page = (_build_reports(tmp_path, runs=1) / "latest.html").resolve()
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    console_errors = [line for line in done.stderr.splitlines()
                      if "CONSOLE" in line and ("error" in line.lower() or "Uncaught" in line)]
    assert console_errors == []
    table = re.search(r'<table id="exceptions">.*?</table>', dom, re.S)
    assert table and table.group(0).count("<tr>") >= 2               # header + at least one rule
    charts = re.findall(r'<div class="chart" id="chart-(\w+)">(.*?)</div>', dom, re.S)
    drawn = [name for name, svg in charts if "<svg" in svg and ("<path" in svg or "<rect" in svg)]
    assert len(drawn) >= 2, drawn


def test_a_first_run_with_nothing_built_yet_still_gets_a_report(tmp_path):
    """No exceptions, no reconciliation, no history: the page says so instead of failing the run."""
    db = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(db)).close()
    with dg.instance_for_test() as instance:
        result = dg.materialize([health_report], instance=instance,
                                resources={"warehouse": WarehouseResource(duckdb_path=str(db))})
    assert result.success
    html = (tmp_path / "reports" / "latest.html").read_text()
    assert "No open exceptions." in html and "Reconciliation not available yet." in html
    assert "No exception history yet." in html and "Nothing landed yet." in html
