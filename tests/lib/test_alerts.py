"""Alerts reach `ops.alerts` and the webhook, survive a locked warehouse, never leak the URL."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import UTC, datetime

import duckdb
import pytest
from pydantic import SecretStr

from sap_ometria_assets.lib.automation import alerts as alerts_lib
from sap_ometria_assets.lib.automation.alerts import make_alert, slack_message
from sap_ometria_assets.lib.automation.spool import AlertSpool, flush_alerts, raise_alerts, spool_dir_for

from tests.fakes.webhook import WebhookReceiver

SECRET_PATH = "/services/T000/B000/s3cr3t-t0ken"


@pytest.fixture
def warehouse_path(tmp_path):
    return tmp_path / "warehouse.duckdb"


def _rows(path):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(
            "SELECT alert_id, kind, job_name, run_id, asset_key, check_name, severity, message, "
            "delivered FROM ops.alerts ORDER BY raised_at"
        ).fetchall()
    finally:
        con.close()


def _run_failure(run_id="run-1"):
    return make_alert(
        "run_failure", severity="ERROR", job_name="land_sap_job", run_id=run_id,
        message="Step sap_raw__ordr failed: SapServiceLayerError: HTTP 500 from Orders",
    )


def test_slack_message_is_slack_compatible_and_links_the_run():
    alert = make_alert(
        "check_failure", severity="ERROR", job_name="land_sap_job", run_id="abcdef12-3456",
        asset_key="sap_raw/ocrd", check_name="ocrd_contract", message="column CardType removed",
    )
    message = slack_message([alert], ui_url="http://127.0.0.1:3000/")
    assert isinstance(message["text"], str) and "column CardType removed" in message["text"]
    assert message["blocks"][0]["type"] == "header"
    section = message["blocks"][1]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert "<http://127.0.0.1:3000/runs/abcdef12-3456|abcdef12>" in section["text"]["text"]
    assert "`ocrd_contract`" in section["text"]["text"]
    json.dumps(message)  # serialisable as the webhook body


def test_alert_is_written_and_posted(warehouse_path):
    alert = _run_failure()
    with WebhookReceiver(SECRET_PATH) as receiver:
        outcome = raise_alerts([alert], duckdb_path=warehouse_path, webhook=receiver.secret_url)
    assert (outcome.written, outcome.pending, outcome.delivered) == (1, 0, 1)
    assert len(receiver.bodies) == 1 and receiver.paths == [SECRET_PATH]
    assert "land_sap_job" in receiver.bodies[0]["text"]
    rows = _rows(warehouse_path)
    assert rows == [(alert.alert_id, "run_failure", "land_sap_job", "run-1", None, None, "ERROR",
                     alert.message, True)]
    assert not list(spool_dir_for(warehouse_path).glob("*.json"))


def test_without_webhook_the_alert_is_recorded_undelivered(warehouse_path):
    outcome = raise_alerts([_run_failure()], duckdb_path=warehouse_path, webhook=None)
    assert outcome.written == 1 and outcome.delivered == 0
    assert _rows(warehouse_path)[0][-1] is False


def test_same_failure_raised_twice_is_one_row_and_one_page(warehouse_path):
    with WebhookReceiver(SECRET_PATH) as receiver:
        raise_alerts([_run_failure()], duckdb_path=warehouse_path, webhook=receiver.secret_url)
        raise_alerts([_run_failure()], duckdb_path=warehouse_path, webhook=receiver.secret_url)
    assert len(_rows(warehouse_path)) == 1
    assert len(receiver.bodies) == 1
    ids = {make_alert("run_failure", severity="ERROR", job_name="land_sap_job", run_id="run-1",
                      message="other text").alert_id}
    assert ids == {_rows(warehouse_path)[0][0]}


def test_locked_warehouse_queues_the_alert_and_a_later_flush_writes_it(warehouse_path):
    # Create the file, then let another process hold it, as a running sync would.
    duckdb.connect(str(warehouse_path)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
         "sys.stdin.read()", str(warehouse_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with WebhookReceiver(SECRET_PATH) as receiver:
            outcome = raise_alerts([_run_failure()], duckdb_path=warehouse_path,
                                   webhook=receiver.secret_url, lock_wait_s=0.2)
            assert (outcome.written, outcome.pending, outcome.delivered) == (0, 1, 1)
            assert len(receiver.bodies) == 1  # people are told at once, lock or not
            queued = AlertSpool(spool_dir_for(warehouse_path)).pending()
            assert [a.delivered for a in queued] == [True]
        holder.stdin.close()
        holder.wait(timeout=10)
        with WebhookReceiver(SECRET_PATH) as receiver:
            later = flush_alerts(duckdb_path=warehouse_path, webhook=receiver.secret_url)
            assert receiver.bodies == []  # not paged twice
        assert (later.written, later.pending) == (1, 0)
        assert _rows(warehouse_path)[0][-1] is True
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_webhook_errors_are_bounded_and_never_show_the_url(warehouse_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(alerts_lib, "WEBHOOK_BACKOFF_S", 0.01)
    with WebhookReceiver(SECRET_PATH, statuses=[500, 500, 500]) as receiver:
        outcome = raise_alerts([_run_failure()], duckdb_path=warehouse_path, webhook=receiver.secret_url)
    assert len(receiver.bodies) == 3  # bounded retries
    assert outcome.delivered == 0 and outcome.written == 1
    assert outcome.delivery_errors and "HTTP 500" in outcome.delivery_errors[0]
    assert _rows(warehouse_path)[0][-1] is False
    for text in (caplog.text, " ".join(outcome.delivery_errors), repr(_rows(warehouse_path))):
        assert "s3cr3t" not in text


def test_unreachable_webhook_error_does_not_leak_the_url():
    with pytest.raises(alerts_lib.WebhookError) as err:
        alerts_lib.post_webhook(SecretStr("http://127.0.0.1:9" + SECRET_PATH), {"text": "x"},
                                timeout_s=1, attempts=1)
    assert "s3cr3t" not in str(err.value) and "unreachable" in str(err.value)
    assert err.value.__cause__ is None


def test_spool_files_hold_no_secret_and_bad_files_do_not_block(tmp_path):
    spool = AlertSpool(tmp_path / "spool")
    spool.put(_run_failure("r1"))
    (tmp_path / "spool" / "broken.json").write_text("{not json")
    pending = spool.pending()
    assert [a.run_id for a in pending] == ["r1"]
    assert (tmp_path / "spool" / "broken.unreadable").exists()
    assert pending[0].raised_at.tzinfo is not None and pending[0].raised_at <= datetime.now(UTC)
