"""The `sap-ometria` command behind `make demo` / `make sync`: what an operator sees."""

from __future__ import annotations

import os

from sap_ometria_assets import cli
from sap_ometria_assets.lib.config.settings import get_settings


def test_invalid_setting_stops_before_any_work_and_names_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("SAP_B1_PAGE_SIZE", "many")
    called = []
    monkeypatch.setattr(cli, "run_full_sync", lambda **kw: called.append(kw))
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

    def fake_sync(tags=None):
        s = get_settings()
        seen.update(sap=s.uses_embedded_sap, ometria=s.uses_embedded_ometria, key=s.ometria_api_key,
                    warehouse=s.duckdb_path, outbox=s.outbox_dir)
        return True, {}, 0.1

    monkeypatch.setattr(cli, "run_full_sync", fake_sync)
    production = get_settings(refresh=True)
    # cmd_demo rewrites os.environ; let monkeypatch restore every variable it touches
    for name in ("SAP_OMETRIA_DUCKDB_PATH", "SAP_OMETRIA_OUTBOX_DIR"):
        monkeypatch.setenv(name, os.environ[name])
    assert cli.main(["demo"]) == 0
    for name in ("OMETRIA_API_URL", "OMETRIA_API_KEY", "SAP_B1_SERVICE_LAYER_URL"):
        monkeypatch.delenv(name)
    get_settings(refresh=True)
    assert (seen["sap"], seen["ometria"], seen["key"]) == (True, True, None)
    # the production warehouse (watermarks, ledger) and outbox are left alone
    assert seen["warehouse"] != production.duckdb_path
    assert seen["outbox"] != production.outbox_dir
    assert seen["warehouse"].is_relative_to(production.demo_dir)


def test_summary_shows_read_changed_sent_and_exceptions(capsys):
    cli.print_summary(
        {
            "sap_raw/ocrd": {"rows_landed": 12, "rows_changed": 3, "dagster/row_count": 2000},
            "ometria_push/contacts": {"records_sent": 3, "skipped_unchanged": 1838,
                                      "requests": 1, "dagster/row_count": 1841},
            "ops/sync_exceptions": {"open_exceptions": 5, "open_by_owner": {"finance": 5},
                                    "open_impact": 123.45, "new_exceptions": 0},
        },
        4.2,
    )
    out = capsys.readouterr().out
    ocrd = next(line for line in out.splitlines() if line.startswith("sap_raw/ocrd"))
    assert ocrd.split()[1:] == ["12", "3", "2000"]
    push = next(line for line in out.splitlines() if line.startswith("ometria_push/contacts"))
    assert push.split()[1:] == ["3", "1838", "1", "1841"]
    assert "Open exceptions: 5" in out and "123.45" in out
