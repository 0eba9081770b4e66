"""Published snapshots end to end on the demo company (issue 13's acceptance): readers of the
lake never block a sync and never see half of one; `sap-ometria sql --as-of` reproduces a
past sync's figures exactly; `sap-ometria snapshots` lists them.

One module-scoped story keeps it to two small syncs: sync 1 (its screen is what `make demo`
prints, checked here too); then, with a reader holding a connection open and a poller reading
every 100 ms in other processes, the demo company's clock advances and sync 2 (incremental)
publishes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sap_ometria_assets import cli
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT, get_settings
from sap_ometria_assets.lib.snapshots.lake import Lake, open_reader

NET_REVENUE = ("SELECT card_code, currency, sap_net, sent_net FROM recon.customer_net_revenue "
               "ORDER BY card_code, currency")
FIGURES = ("SELECT (SELECT count(*) FROM ometria.orders), (SELECT count(*) FROM ops.sync_exceptions), "
           "(SELECT * FROM lake.current_snapshot())")

# A reader in its own process: attaches the latest snapshot read-only, prints what it sees,
# keeps the connection (and an open transaction) until told, then prints again.
HOLDER = textwrap.dedent("""
    import json, sys
    from sap_ometria_assets.lib.snapshots.lake import Lake, open_reader
    from sap_ometria_assets.lib.snapshots.catalog import list_snapshots
    lake = Lake(__import__("pathlib").Path(sys.argv[1]))
    latest = list_snapshots(lake)[0].snapshot_id
    query = "SELECT (SELECT count(*) FROM ometria.orders), (SELECT sum(sap_net)::VARCHAR FROM recon.customer_net_revenue)"
    with open_reader(lake, snapshot_version=latest) as con:
        con.execute("BEGIN")
        print(json.dumps([latest, con.execute(query).fetchall()[0]]), flush=True)
        sys.stdin.readline()
        print(json.dumps([latest, con.execute(query).fetchall()[0]]), flush=True)
        con.execute("COMMIT")
""")

# A poller in its own process: the latest snapshot every 100 ms, one query per read.
POLLER = textwrap.dedent("""
    import json, sys, time, pathlib
    from sap_ometria_assets.lib.snapshots.lake import Lake, open_reader
    lake, stop, out = Lake(pathlib.Path(sys.argv[1])), pathlib.Path(sys.argv[2]), open(sys.argv[3], "w")
    with open_reader(lake) as con:
        while not stop.exists():
            try:
                out.write(json.dumps({"ok": con.execute(sys.argv[4]).fetchall()[0]}) + "\\n")
            except Exception as exc:
                out.write(json.dumps({"error": str(exc)}) + "\\n")
            out.flush()
            time.sleep(0.1)
""")


def _env(demo_dir: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("SAP_OMETRIA_", "OMETRIA_", "SAP_B1_", "DAGSTER_"))}
    # a sync that had to wait for the warehouse would fail fast: nothing may hold it
    environ.update(SAP_OMETRIA_DEMO_DIR=str(demo_dir), SAP_OMETRIA_DEMO_SCALE="0.02",
                   SAP_OMETRIA_DUCKDB_LOCK_WAIT_S="2", COLUMNS="120")
    return environ


def _cli(demo_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sap_ometria_assets.cli", *args], cwd=PROJECT_ROOT,
                          env=_env(demo_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=600)


def _tsv(demo_dir: Path, query: str, *args: str) -> list[str]:
    proc = _cli(demo_dir, "sql", "--demo", "--tsv", *args, query)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    demo_dir = tmp_path_factory.mktemp("snapshots") / "demo"
    first = _cli(demo_dir, "demo")
    assert first.returncode == 0, first.stdout + first.stderr
    lake = Lake.for_warehouse(demo_dir / "warehouse.duckdb")
    first_revenue = _tsv(demo_dir, NET_REVENUE)
    first_id = int(_cli(demo_dir, "snapshots", "--demo", "--tsv").stdout.split("\t")[0])

    env = _env(demo_dir)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lake.root)], cwd=PROJECT_ROOT, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    held_before = json.loads(holder.stdout.readline())
    stop, polls = demo_dir / "stop-polling", demo_dir / "polls.jsonl"
    poller = subprocess.Popen([sys.executable, "-c", POLLER, str(lake.root), str(stop), str(polls), FIGURES],
                              cwd=PROJECT_ROOT, env=env)
    try:
        while not polls.exists() or not polls.read_text():
            time.sleep(0.1)
        advanced = _cli(demo_dir, "advance", "--ticks", "3")
        incremental = _cli(demo_dir, "demo")
        stop.touch()
        poller.wait(timeout=60)
        holder.stdin.write("again\n")
        holder.stdin.flush()
        held_after = json.loads(holder.stdout.readline())
        holder.wait(timeout=60)
    finally:
        for proc in (holder, poller):
            if proc.poll() is None:
                proc.kill()
    return {
        "demo_dir": demo_dir, "lake": lake, "first_id": first_id, "first_revenue": first_revenue,
        "first": first,
        "syncs": (advanced, incremental), "held": (held_before, held_after),
        "polls": [json.loads(line) for line in polls.read_text().splitlines()],
    }


def test_demo_prints_a_short_summary_with_money_in_the_company_currency(story):
    """`make demo` as a marketing lead reads it: one line per phase, money in GBP, what to look
    at first; Dagster's own event log goes to the file it names, not the screen."""
    out = story["first"].stdout
    lines = out.strip().splitlines()
    assert len(lines) <= 40, out
    assert "DEBUG" not in out and "finished" not in out.lower()
    phases = ("landing", "building", "pushing", "checking", "reconciling", "publishing")
    shown = [line.split()[0] for line in lines if line.split() and line.split()[0] in phases]
    assert tuple(shown) == phases, out  # one line per phase, in phase order
    assert all(" done " in line for line in lines if line.split() and line.split()[0] in phases)
    assert "GBP " in out and "Look at these first:" in out
    log = next(line for line in lines if "Log: " in line).split("Log: ")[1].split(";")[0]
    logged = (PROJECT_ROOT / log).read_text()  # relative to the project, or absolute
    assert "DEBUG" in logged and "STEP_SUCCESS" in logged  # Dagster's event log is in the file


def test_a_reader_holding_a_snapshot_open_never_blocks_a_sync_and_keeps_its_view(story):
    for proc in story["syncs"]:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    before, after = story["held"]
    assert before == after  # the same snapshot, the same figures, hours or syncs later
    snapshots = _cli(story["demo_dir"], "snapshots", "--demo", "--tsv").stdout.splitlines()
    assert len(snapshots) >= 2  # the incremental sync published a new one meanwhile


def test_a_poller_during_syncs_sees_no_error_and_always_one_whole_sync(story):
    polls = story["polls"]
    assert polls and [p for p in polls if "error" in p] == []
    seen = {tuple(p["ok"]) for p in polls}
    with open_reader(story["lake"]) as con:
        for orders, exceptions, snapshot_id in seen:
            published = con.execute(
                f"SELECT (SELECT count(*) FROM ometria.orders AT (VERSION => {snapshot_id})), "
                f"(SELECT count(*) FROM ops.sync_exceptions AT (VERSION => {snapshot_id}))").fetchall()[0]
            assert (orders, exceptions) == published, snapshot_id
    assert len({s for _, _, s in seen}) >= 2  # it saw the incremental sync arrive


def test_as_of_the_first_sync_returns_its_net_revenue_exactly(story):
    demo_dir, first_id = story["demo_dir"], story["first_id"]
    assert _tsv(demo_dir, NET_REVENUE, "--as-of", str(first_id)) == story["first_revenue"]
    latest = _tsv(demo_dir, NET_REVENUE)
    assert latest[0] == story["first_revenue"][0] == "card_code\tcurrency\tsap_net\tsent_net"
    assert latest != story["first_revenue"]  # the incremental sync changed some customers


def test_snapshots_tsv_lists_newest_first_with_the_id_first(story):
    lines = _cli(story["demo_dir"], "snapshots", "--demo", "--tsv").stdout.splitlines()
    ids = [int(line.split("\t")[0]) for line in lines]
    assert ids == sorted(ids, reverse=True) and story["first_id"] in ids
    fields = lines[-1].split("\t")
    assert len(fields) == 4 and fields[1].endswith("+00:00")  # id, UTC time, run id, what changed
    assert "ometria.orders" in fields[3].split(",")


@pytest.mark.parametrize("args, message", [
    (("sql", "--demo", "SELEC nonsense"), "query failed"),
    (("sql", "--demo", "--as-of", "999999", "SELECT 1"), "unknown snapshot 999999"),
    (("sql", "--demo", "--as-of", "last tuesday", "SELECT 1"), "neither a snapshot id nor a timestamp"),
])
def test_bad_queries_and_snapshots_are_one_clear_line_and_a_failure(story, monkeypatch, capsys, args, message):
    monkeypatch.setenv("SAP_OMETRIA_DEMO_DIR", str(story["demo_dir"]))
    get_settings(refresh=True)
    try:
        assert cli.main(list(args)) == 1
    finally:
        monkeypatch.undo()
        get_settings(refresh=True)
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_no_lake_yet_is_a_clear_message_and_a_failure(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAP_OMETRIA_DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    get_settings(refresh=True)
    try:
        assert cli.main(["sql", "SELECT 1"]) == 1
        assert cli.main(["snapshots", "--tsv"]) == 1
    finally:
        monkeypatch.undo()
        get_settings(refresh=True)
    err = capsys.readouterr().err
    assert err.count("no published snapshot yet") == 2 and "Traceback" not in err
