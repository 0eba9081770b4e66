"""A many-company deployment as docs/deployment.md describes it, started for the tests: one
`dagster code-server` process per company, the webserver and the daemon as separate processes,
all on the PostgreSQL-backed instance of `data/dagster_home_pg/dagster.yaml`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from sap_ometria_assets.lib.config.settings import PROJECT_ROOT
from tests.tenants.postgres import free_port

STARTUP_TIMEOUT_S = 240.0

WORKSPACE_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message causes { message } }
      ... on RepositoryLocation { repositories { jobs { name } } } } } } } }
"""


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else shutil.which(name) or name


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # each runs its children (run workers) in its group
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class Deployment:
    home: Path
    env: dict[str, str]
    logs: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    graphql_url: str = ""
    web_port: int = 0

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.logs.glob("*.log")))

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(self.graphql_url, json={"query": query, "variables": variables or {}},
                              timeout=60)
        response.raise_for_status()
        return response.json()

    def locations(self) -> list[dict]:
        return self.graphql(WORKSPACE_QUERY)["data"]["workspaceOrError"]["locationEntries"]

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)


def start_deployment(tmp: Path, companies: list[str], env: dict[str, str]) -> Deployment:
    """Code servers, webserver and daemon; returns once every location has loaded (or failed)."""
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "data" / "dagster_home_pg" / "dagster.yaml", home / "dagster.yaml")
    logs = tmp / "logs"
    logs.mkdir()
    dep = Deployment(home=home, env={**env, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1"},
                     logs=logs)
    lines = ["load_from:"]
    for name in companies:
        port = free_port()
        dep.spawn(f"code_server_{name}", [
            _bin("dagster"), "code-server", "start", "-m", "sap_ometria_assets.tenants", "-a", name,
            "-h", "127.0.0.1", "-p", str(port), "--location-name", name])
        lines += ["  - grpc_server:", "      host: 127.0.0.1", f"      port: {port}",
                  f"      location_name: {name}"]
    workspace = tmp / "workspace.yaml"
    workspace.write_text("\n".join(lines) + "\n")
    dep.web_port = free_port()
    dep.graphql_url = f"http://127.0.0.1:{dep.web_port}/graphql"
    dep.spawn("webserver", [_bin("dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1",
                            "-p", str(dep.web_port)])
    dep.spawn("daemon", [_bin("dagster-daemon"), "run", "-w", str(workspace)])
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            for proc in dep.procs:
                if proc.poll() is not None:
                    pytest.fail(f"{proc.args[:4]} exited with {proc.returncode}:\n{dep.log_tail()}")
            try:
                entries = dep.locations()
                settled = (len(entries) == len(companies) and all(
                    e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries))
                # a location whose code server is still starting shows as an error: wait for it
                if settled and all("UNAVAILABLE" not in (e["locationOrLoadError"].get("message") or "")
                                   for e in entries):
                    return dep
            except (httpx.HTTPError, KeyError, TypeError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"deployment did not load in {STARTUP_TIMEOUT_S:.0f} s:\n{dep.log_tail()}")
            time.sleep(1.0)
    except BaseException:
        dep.close()
        raise
