"""Ometria faults during the push (429 + Retry-After, 5xx, timeouts, a refused key, record
rejections), from a landed warehouse. Each ends with nothing lost (faultkit.assert_nothing_lost)."""

from __future__ import annotations

import pytest
from faultkit import PUSH, assert_nothing_lost, query, run_sync

from sap_ometria_assets.lib.config.settings import get_settings


def test_throttling_with_retry_after_is_waited_out(push_env):
    env = push_env
    env.ometria.faults.throttle(2, retry_after=7)
    run = run_sync(PUSH)
    assert run.success, run.failures
    assert env.sleeps.count(7.0) == 2  # Retry-After honoured, in seconds, once per 429
    assert env.ometria.stats.statuses[429] == 2
    assert_nothing_lost(env.db, env.ometria)


def test_a_5xx_burst_mid_push_is_retried_without_duplicates(push_env):
    env = push_env
    env.ometria.faults.fail_next(3, status=502)
    run = run_sync(PUSH)
    assert run.success, run.failures
    assert env.ometria.stats.statuses[502] == 3
    attempts = query(env.db, "SELECT max(attempts) FROM ometria_push.requests WHERE http_status = 202")[0][0]
    assert attempts == 4
    assert_nothing_lost(env.db, env.ometria)


def test_timeouts_past_the_retries_fail_the_push_clearly_and_the_rerun_completes(push_env, monkeypatch):
    env = push_env
    monkeypatch.setenv("OMETRIA_TIMEOUT_S", "0.3")
    monkeypatch.setenv("OMETRIA_MAX_RETRIES", "1")
    get_settings(refresh=True)
    env.ometria.faults.delay_s = 0.6
    run = run_sync(PUSH)
    assert not run.success
    message = "\n".join(run.failures.values())
    assert "failed after 2 attempts: timed out" in message and "the next run resumes" in message
    assert query(env.db, "SELECT count(*) FROM ometria_push.ledger WHERE status = 'accepted'") == [(0,)]

    env.ometria.faults.delay_s = 0.0
    rerun = run_sync(PUSH)
    assert rerun.success, rerun.failures
    assert_nothing_lost(env.db, env.ometria)


def test_a_refused_key_stops_with_an_auth_message_and_nothing_is_marked_sent(push_env, monkeypatch):
    env = push_env
    monkeypatch.setenv("OMETRIA_API_KEY", "revoked-key-0000")
    get_settings(refresh=True)
    run = run_sync(PUSH)
    assert not run.success
    message = "\n".join(run.failures.values())
    assert "Ometria refused the API key (HTTP 403" in message and "OMETRIA_API_KEY" in message
    assert "revoked-key-0000" not in message
    assert env.ometria.stats.statuses[403] >= 1 and env.ometria.records("order") == {}
    assert query(env.db, "SELECT count(*) FROM ometria_push.ledger WHERE NOT dry_run") == [(0,)]

    monkeypatch.setenv("OMETRIA_API_KEY", env.vars()["OMETRIA_API_KEY"])
    get_settings(refresh=True)
    rerun = run_sync(PUSH)
    assert rerun.success, rerun.failures
    assert_nothing_lost(env.db, env.ometria)


def test_rejected_records_are_listed_as_exceptions_and_the_rest_arrive(push_env):
    env = push_env
    order_ids, contact_ids = (
        [r[0] for r in query(env.db, f"SELECT id FROM ometria.{t} WHERE held_back_reason IS NULL ORDER BY id LIMIT 3")]
        for t in ("orders", "contacts"))
    env.ometria.faults.reject(ids=order_ids + contact_ids)
    run = run_sync(PUSH)
    assert run.success, run.failures
    report = assert_nothing_lost(env.db, env.ometria)
    assert set(order_ids) <= report.excepted["orders"] and set(contact_ids) <= report.excepted["contacts"]
    keys = query(env.db, "SELECT sap_key FROM ometria.orders WHERE id IN (SELECT unnest(?::VARCHAR[]))", [order_ids])
    assert {k for (k,) in keys} <= report.exceptions["ometria_rejected"]
    assert query(env.db, "SELECT count(*) FROM ometria_push.ledger WHERE status = 'rejected'") == [(6,)]


def test_the_nothing_lost_assertion_catches_a_record_ometria_dropped(push_env):
    """The shared assertion is not a formality: a record Ometria lost is reported."""
    env = push_env
    assert run_sync(PUSH).success
    order_id = query(env.db, "SELECT id FROM ometria.orders WHERE held_back_reason IS NULL LIMIT 1")[0][0]
    with env.ometria._lock:
        env.ometria._store.db.execute("DELETE FROM records WHERE type = 'order' AND id = ?", (order_id,))
    with pytest.raises(AssertionError, match=f"orders {order_id} .* lost: Ometria does not hold it"):
        assert_nothing_lost(env.db, env.ometria)
