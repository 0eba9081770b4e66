"""The real `dagster-webserver` loads this code location and serves the asset graph, the
schedules and the sensors over GraphQL, as `make ui` does."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sap_ometria_assets.lib.config.settings import PROJECT_ROOT

# Generous: the webserver imports dagster and spawns a code server that imports the project.
STARTUP_TIMEOUT_S = 120.0

QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
        }
      }
    }
  }
  assetNodes {
    assetKey { path }
    groupName
    description
    dependencyKeys { path }
  }
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        schedules { name cronSchedule executionTimezone pipelineName scheduleState { status } }
        sensors { name targets { pipelineName } sensorState { status } }
        jobs { name }
      }
    }
  }
}
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _webserver_bin() -> str:
    candidate = Path(sys.executable).with_name("dagster-webserver")
    return str(candidate) if candidate.exists() else shutil.which("dagster-webserver") or "dagster-webserver"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    # The webserver runs its code server as a child: signal the whole process group.
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    data = tmp_path_factory.mktemp("data")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SAP_OMETRIA_DUCKDB_PATH": str(data / "warehouse.duckdb"),
        "SAP_OMETRIA_DEMO_DIR": str(data / "demo"),
        "SAP_OMETRIA_OUTBOX_DIR": str(data / "outbox"),
        "PYTHONUNBUFFERED": "1",
    }
    log_path = data / "webserver.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [_webserver_bin(), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}/graphql"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        data_out = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                response = httpx.post(url, json={"query": QUERY}, timeout=30)
            except httpx.TransportError:
                time.sleep(0.5)
                continue
            if response.status_code == 200:
                body = response.json()
                entries = (body.get("data") or {}).get("workspaceOrError", {}).get("locationEntries") or []
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    data_out = body["data"]
                    break
            time.sleep(0.5)
        if data_out is None:
            pytest.fail(f"webserver not ready within {STARTUP_TIMEOUT_S:.0f}s:\n{log_path.read_text()[-4000:]}")
        yield data_out
    finally:
        _stop(proc)


def test_code_location_loads_without_error(graph):
    entries = graph["workspaceOrError"]["locationEntries"]
    assert [e["name"] for e in entries] == ["sap_ometria_assets"]
    error = entries[0]["locationOrLoadError"]
    assert error["__typename"] == "RepositoryLocation", error.get("message")


def test_asset_graph_lineage_runs_sap_raw_to_ometria_to_push(graph):
    nodes = {"/".join(n["assetKey"]["path"]): n for n in graph["assetNodes"]}
    groups = {key: n["groupName"] for key, n in nodes.items()}
    for key, group in groups.items():
        assert key.split("/")[0] == group or group in ("ops", "recon", "backfill"), (key, group)

    def deps(key: str) -> set[str]:
        return {"/".join(d["path"]) for d in nodes[key]["dependencyKeys"]}

    def upstream_closure(key: str) -> set[str]:
        seen, todo = set(), [key]
        while todo:
            for dep in deps(todo.pop()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    for feed in ("contacts", "orders", "products", "stock"):
        push = f"ometria_push/{feed}"
        assert f"ometria/{feed}" in deps(push), f"{push} does not read ometria/{feed}"
        assert any(d.startswith("sap_raw/") for d in deps(f"ometria/{feed}")), feed
    assert {"sap_raw/ocrd"} <= upstream_closure("ometria_push/contacts")
    assert {"sap_raw/ordr", "sap_raw/rdr1", "sap_raw/orin"} <= upstream_closure("ometria_push/orders")
    assert {"sap_raw/oitw"} <= upstream_closure("ometria_push/stock")
    # Analysts read the SAP object name in the UI.
    assert nodes["sap_raw/ocrd"]["description"].startswith("OCRD")


def test_schedules_and_sensors_are_served(graph):
    repos = graph["repositoriesOrError"]["nodes"]
    assert len(repos) == 1
    repo = repos[0]
    schedules = {s["name"]: s for s in repo["schedules"]}
    assert {n: (s["cronSchedule"], s["executionTimezone"], s["pipelineName"]) for n, s in schedules.items()} == {
        "sync_stock_job_schedule": ("*/15 * * * *", "Europe/London", "sync_stock_job"),
        "land_sap_job_schedule": ("5 * * * *", "Europe/London", "land_sap_job"),
        "nightly_deletion_scan_job_schedule": ("30 2 * * *", "Europe/London", "nightly_deletion_scan_job"),
        "reconcile_job_schedule": ("0 6 * * *", "Europe/London", "reconcile_job"),
    }
    # Switched on by default: with the daemon (`make ui`) they tick.
    assert {s["scheduleState"]["status"] for s in schedules.values()} == {"RUNNING"}
    sensors = {s["name"]: s for s in repo["sensors"]}
    assert {"push_after_landing", "sap_change_sensor", "alert_on_run_failure",
            "alert_on_failed_checks", "flush_alert_queue"} <= set(sensors)
    assert [t["pipelineName"] for t in sensors["push_after_landing"]["targets"]] == ["push_ometria_job"]
    assert [t["pipelineName"] for t in sensors["sap_change_sensor"]["targets"]] == ["land_sap_job"]
    assert {s["sensorState"]["status"] for s in sensors.values()} == {"RUNNING"}
    jobs = {j["name"] for j in repo["jobs"]}
    assert {"sync_stock_job", "land_sap_job", "push_ometria_job", "nightly_deletion_scan_job",
            "reconcile_job", "backfill_documents_job"} <= jobs
