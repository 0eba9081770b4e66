"""The sync process SIGKILLed mid-landing and mid-push, then run again; the DuckDB file held by
another process. Nothing lost, no order twice in Ometria, and a clear message about the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faultkit import PUSH, SYNC, assert_nothing_lost, query, run_sync

from sap_ometria_assets.lib.ometria.client import MAX_RECORDS_PER_REQUEST
from sap_ometria_assets.lib.warehouse.db import WarehouseLockedError, connect

HERE = Path(__file__).resolve().parent
# The same runs as in-process, in a child process that is killed part way.
CHILD = "import sys; from faultkit import run_sync; sys.exit(0 if run_sync(tuple(sys.argv[1:])).success else 1)"


def _start(env, groups) -> subprocess.Popen:
    child_env = {**os.environ, **env.vars(), "PYTHONPATH": str(HERE), "DAGSTER_HOME": str(env.tmp / "dagster")}
    (env.tmp / "dagster").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", CHILD, *groups], env=child_env, cwd=env.tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(proc: subprocess.Popen, reached, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not reached():
        if proc.poll() is not None:
            pytest.fail(f"the sync finished (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def test_killed_mid_landing_then_rerun_loses_nothing(env, company):
    env.sap.faults.delay_s = 0.05  # slow enough to be caught in the middle of paging
    proc = _start(env, SYNC)
    _kill_when(proc, lambda: sum(env.sap.stats.snapshot()["pages"].values()) >= 12, "12 pages were served")
    assert env.ometria.stats.push_requests == 0

    env.sap.faults.delay_s = 0.0
    rerun = run_sync()
    assert rerun.success, rerun.failures
    assert_nothing_lost(env.db, env.ometria, company)


def test_killed_mid_push_then_rerun_resends_at_most_one_group_of_acknowledgements(push_env):
    env = push_env
    env.ometria.faults.delay_s = 0.15
    proc = _start(env, PUSH)
    _kill_when(proc, lambda: env.ometria.stats.push_ok >= 3, "3 batches were acknowledged")
    # recorded by the killed process: in the ledger, in the acknowledgements it had not yet
    # merged into it (ometria_push.acks), or only in its journal (both settled by the next push)
    acknowledged = query(env.db, "SELECT (SELECT count(*) FROM ometria_push.ledger WHERE status = 'accepted') "
                                 "+ (SELECT count(*) FROM ometria_push.acks WHERE status = 'accepted')")[0][0]
    journal = env.db.parent / ".push_journal" / env.db.name
    journalled = sum(len(f.read_bytes().splitlines()) for f in journal.glob("*.ndjson"))
    assert 0 < acknowledged or journalled  # what Ometria confirmed before the kill is remembered...

    env.ometria.faults.delay_s = 0.0
    rerun = run_sync(PUSH)
    assert rerun.success, rerun.failures
    assert_nothing_lost(env.db, env.ometria)
    sent = [rid for _, kind, ids in env.ometria.stats.push_log for rid in ids]
    twice = len(sent) - len(set(sent))
    # ...and what it confirmed but had not yet journalled is sent once more: at most the batch
    # in flight (lib/push/journal.py), whatever OMETRIA_ACK_EVERY_REQUESTS groups
    assert twice <= MAX_RECORDS_PER_REQUEST, f"{twice} records sent twice: more than the batch in flight"


def test_a_warehouse_held_by_another_process_is_named_then_waited_for(push_env):
    env = push_env
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('held', flush=True); time.sleep(float(sys.argv[2]))", str(env.db), "3"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WarehouseLockedError) as caught:
            with connect(env.db, wait_s=0.3):
                pass
        assert str(env.db) in str(caught.value) and "locked by another process" in str(caught.value)
        assert f"PID {holder.pid}" in str(caught.value)  # ops can find the holder
        run = run_sync(PUSH)  # waits for the holder to let go, then proceeds
        assert holder.poll() is not None  # it really was held until the holder left
    finally:
        holder.kill()
        holder.wait(5)
    assert run.success, run.failures
    assert_nothing_lost(env.db, env.ometria)
