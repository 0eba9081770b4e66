"""Failures that must not lose their own report: an unusable data directory, a corrupt or
truncated warehouse. The operator still gets the cause, the alert and a non-zero exit."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from sap_ometria_assets import cli
from sap_ometria_assets.lib.automation.alerts import make_alert
from sap_ometria_assets.lib.automation.spool import fallback_spool_dir_for, raise_alerts
from sap_ometria_assets.lib.config.settings import get_settings
from tests.fakes.webhook import WebhookReceiver


def _alert():
    return make_alert("run_failure", severity="ERROR", job_name="full_sync_job", run_id="r-1",
                      message="step sap_raw/ocrd failed")


def test_alerts_still_go_out_when_the_data_directory_is_a_file(tmp_path, capsys):
    data = tmp_path / "data"
    data.write_text("not a folder")
    db = data / "warehouse.duckdb"
    with WebhookReceiver() as hook:
        outcome = raise_alerts([_alert()], duckdb_path=db, webhook=SecretStr(hook.url),
                               lock_wait_s=0.1)
    assert outcome.delivered == 1 and len(hook.bodies) == 1       # paged
    assert outcome.pending == 1                                   # kept, not lost
    spool = fallback_spool_dir_for(db)
    try:
        assert len(list(spool.glob("*.json"))) == 1
        assert (spool.parent.stat().st_mode & 0o077) == 0         # private
    finally:
        for f in spool.rglob("*"):
            f.unlink() if f.is_file() else None
    err = capsys.readouterr().err
    assert "step sap_ometria" not in err and "step sap_raw/ocrd failed" in err
    assert str(data) in err


@pytest.fixture
def cli_env(env, monkeypatch):
    with WebhookReceiver() as hook:
        monkeypatch.setenv("SAP_OMETRIA_ALERT_WEBHOOK", hook.url)
        get_settings(refresh=True)
        yield env, hook
    get_settings(refresh=True)


def test_a_data_directory_that_is_a_file_stops_the_sync_with_cause_alert_and_exit_code(
        cli_env, monkeypatch, tmp_path, capsys):
    env, hook = cli_env
    data = tmp_path / "datafile"
    data.write_text("oops")
    monkeypatch.setenv("SAP_OMETRIA_DUCKDB_PATH", str(data / "warehouse.duckdb"))
    get_settings(refresh=True)
    code = cli.main(["sync"])
    out = capsys.readouterr()
    assert code == 3
    assert f"warehouse folder {data} is a file" in out.err
    assert "Sync refused" in out.out                               # the summary still comes
    assert len(hook.bodies) == 1                                   # and the page
    spool = fallback_spool_dir_for(data / "warehouse.duckdb")
    for f in spool.rglob("*.json"):
        f.unlink()


@pytest.mark.parametrize("damage", ["truncated", "not_duckdb"])
def test_a_damaged_warehouse_is_refused_before_any_step_writes(cli_env, landed_baseline,
                                                               damage, capsys):
    env, hook = cli_env
    data = landed_baseline.read_bytes()
    if damage == "truncated":
        env.db.write_bytes(data[: len(data) - 40_000])  # a partial copy / full disk
    else:
        env.db.write_bytes(b"PK\x03\x04 this is a zip, not a warehouse" * 1000)
    before = env.db.read_bytes()
    code = cli.main(["sync"])
    out = capsys.readouterr()
    assert code == 3
    assert str(env.db) in out.err and "restore" in out.err
    assert "Traceback" not in out.err
    assert env.db.read_bytes() == before                           # nothing wrote into it
    assert len(hook.bodies) == 1
    assert str(env.db) in json.dumps(hook.bodies[0])
