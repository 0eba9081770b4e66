"""Many companies on one PostgreSQL-backed Dagster deployment (issue 16's acceptance).

Four companies, each its own code location served by its own `dagster code-server` process, with
the webserver and the daemon as separate processes, on a throwaway PostgreSQL server:

- `north` and `south`: two demo companies with different seeds, each with its own Ometria
  account (two Ometria emulators);
- `east`: a third demo company pushing to the SAME Ometria account as `south`;
- `broken`: a company whose mapping file is invalid.

Full syncs of north, south and east are submitted to the run queue at once. The queue (from
data/dagster_home_pg/dagster.yaml) must start north and south together, hold east until south's
run is over (one run talking to Ometria per account), and every run must succeed, with no record
of one company in another's warehouse, ledger or Ometria account, and the shared account's
observed request rate never above its limit. The broken company's location shows its error in
the UI's workspace while the others load and run.
"""

from __future__ import annotations

import os
import time

import duckdb
import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from sap_ometria_assets.emulators.ometria.server import OmetriaEmulator
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT
from sap_ometria_assets.lib.tenants.companies import ACCOUNT_TAG, COMPANY_TAG
from tests.tenants.deployment import start_deployment
from tests.tenants.postgres import postgres_server

ACCOUNT_LIMIT_PER_S = 8       # what the shared Ometria account allows (the emulator 429s above it)
COMPANY_RATE_PER_S = 5        # each company's own pace: two at once would be 10/s, over the limit
SCALE = 0.05                  # small demo companies: the test is about the deployment, not volume
RUN_TIMEOUT_S = 420.0

COMPANY_FILE = """
display_name: {name}
timezone: Europe/London
warehouse: {warehouse}
demo: {{seed: {seed}, scale: {scale}}}
ometria:
  api_url: {url}
  api_key_env: {key_env}
  account: {account}
  collection: sap_b1_{name}
  rate_limit_per_s: {rate}
{extra}
"""


def _write_company(folder, name, seed, emulator, key_env, account, extra=""):
    (folder / f"{name}.yaml").write_text(COMPANY_FILE.format(
        name=name, warehouse=folder.parent / "warehouses" / name, seed=seed, scale=SCALE,
        url=emulator.url, key_env=key_env, account=account, rate=COMPANY_RATE_PER_S, extra=extra))


def _max_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module")
def deployment(pg_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tenants")
    companies = tmp / "companies"
    companies.mkdir()
    own = OmetriaEmulator(api_key="north-key", known_products_only=True).start()
    shared = OmetriaEmulator(api_key="shared-key", known_products_only=True).start()
    shared.faults.max_rate_per_s = ACCOUNT_LIMIT_PER_S
    _write_company(companies, "north", 101, own, "NORTH_OMETRIA_KEY", "north-account")
    _write_company(companies, "south", 202, shared, "GROUP_OMETRIA_KEY", "group-account")
    # east shares south's account, so it needs order ids and a collection of its own (refused
    # otherwise: lib/tenants/shared_accounts.py)
    east_mapping = (PROJECT_ROOT / "data" / "mapping.yaml").read_text()
    east_mapping = east_mapping.replace('"SO-{DocEntry}"', '"E-SO-{DocEntry}"')
    (tmp / "east_mapping.yaml").write_text(east_mapping.replace('"CN-{DocEntry}"', '"E-CN-{DocEntry}"'))
    _write_company(companies, "east", 303, shared, "GROUP_OMETRIA_KEY", "group-account",
                   extra=f"mapping: {tmp / 'east_mapping.yaml'}")
    (tmp / "broken_mapping.yaml").write_text("contacts:\n  no_such_setting: true\n")
    _write_company(companies, "broken", 404, own, "NORTH_OMETRIA_KEY", "north-account",
                   extra=f"mapping: {tmp / 'broken_mapping.yaml'}")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SAP_B1_", "SAP_OMETRIA_", "OMETRIA_", "DAGSTER_"))}
    env.update({"DAGSTER_PG_URL": pg_url, "SAP_OMETRIA_COMPANIES_DIR": str(companies),
                "NORTH_OMETRIA_KEY": "north-key", "GROUP_OMETRIA_KEY": "shared-key"})
    dep = start_deployment(tmp, ["north", "south", "east", "broken"], env)
    os.environ["DAGSTER_PG_URL"] = pg_url
    try:
        yield dep, own, shared, tmp
    finally:
        dep.close()
        own.stop()
        shared.stop()


@pytest.fixture(scope="module")
def synced(deployment):
    """Full syncs of three companies submitted to the queue at once; their finished runs."""
    dep, own, shared, tmp = deployment
    client = DagsterGraphQLClient("127.0.0.1", port_number=dep.web_port)
    run_ids = {name: client.submit_job_execution("full_sync_job", repository_location_name=name,
                                                  repository_name="__repository__")
               for name in ("north", "south", "east")}
    instance = DagsterInstance.from_config(str(dep.home))
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while True:
            records = {n: instance.get_run_record_by_id(r) for n, r in run_ids.items()}
            if all(rec.dagster_run.is_finished for rec in records.values()):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"runs not finished in {RUN_TIMEOUT_S:.0f} s: "
                            f"{ {n: r.dagster_run.status for n, r in records.items()} }\n{dep.log_tail()}")
            time.sleep(2.0)
        yield records, instance
    finally:
        instance.dispose()


def test_a_broken_company_fails_alone_with_its_error_in_the_ui(deployment):
    dep = deployment[0]
    entries = {e["name"]: e["locationOrLoadError"] for e in dep.locations()}
    assert entries["broken"]["__typename"] == "PythonError"
    shown = " ".join([entries["broken"]["message"], *(c["message"] for c in entries["broken"]["causes"])])
    assert "broken_mapping.yaml" in shown and "no_such_setting" in shown
    for name in ("north", "south", "east"):
        assert entries[name]["__typename"] == "RepositoryLocation", entries[name]
        jobs = {j["name"] for j in entries[name]["repositories"][0]["jobs"]}
        assert "full_sync_job" in jobs


def test_companies_sync_at_the_same_time_and_all_succeed(synced):
    records, _ = synced
    for name, rec in records.items():
        assert rec.dagster_run.status == DagsterRunStatus.SUCCESS, name
        assert rec.dagster_run.tags[COMPANY_TAG] == name
    north, south = records["north"], records["south"]
    # different companies, different accounts: the queue ran them side by side
    assert north.start_time < south.end_time and south.start_time < north.end_time


def test_one_run_at_a_time_per_shared_ometria_account(synced, deployment):
    records, _ = synced
    south, east = records["south"], records["east"]
    assert south.dagster_run.tags[ACCOUNT_TAG] == east.dagster_run.tags[ACCOUNT_TAG] == "group-account"
    assert east.start_time >= south.end_time or south.start_time >= east.end_time
    shared = deployment[2]
    assert len(shared.stats.push_times) > 10  # both companies pushed
    assert _max_in_one_second(shared.stats.push_times) <= ACCOUNT_LIMIT_PER_S
    assert shared.stats.statuses.get(429, 0) == 0  # the account never had to turn a push away


def _ledger_requests(tmp, name) -> set[str]:
    with duckdb.connect(str(tmp / "warehouses" / name / "warehouse.duckdb"), read_only=True) as con:
        return {r[0] for r in con.sql("SELECT DISTINCT request_id FROM ometria_push.ledger "
                                      "WHERE request_id IS NOT NULL").fetchall()}


def _accepted_orders(tmp, name) -> set[str]:
    with duckdb.connect(str(tmp / "warehouses" / name / "warehouse.duckdb"), read_only=True) as con:
        return {r[0] for r in con.sql("SELECT id FROM ometria_push.ledger WHERE feed = 'orders' "
                                      "AND status = 'accepted'").fetchall()}


def _customers(tmp, name) -> set[tuple]:
    with duckdb.connect(str(tmp / "warehouses" / name / "warehouse.duckdb"), read_only=True) as con:
        return set(con.sql('SELECT "CardCode", "CardName", "EmailAddress" FROM sap_raw.ocrd').fetchall())


def test_no_record_of_one_company_in_another(synced, deployment):
    _, own, shared, tmp = deployment
    own_requests = {entry[0] for entry in own.stats.push_log}
    shared_requests = {entry[0] for entry in shared.stats.push_log}
    ledgers = {n: _ledger_requests(tmp, n) for n in ("north", "south", "east")}
    assert ledgers["north"] and ledgers["north"] <= own_requests
    assert not ledgers["north"] & shared_requests
    assert ledgers["south"] <= shared_requests and ledgers["east"] <= shared_requests
    assert not (ledgers["south"] | ledgers["east"]) & own_requests
    assert not ledgers["south"] & ledgers["east"]
    # each account holds its own companies' contacts only (one collection per company)
    assert {c for c, _ in own.records("contact")} == {"sap_b1_north"}
    assert {c for c, _ in shared.records("contact")} == {"sap_b1_south", "sap_b1_east"}
    # the shared account holds both companies' orders, none overwritten by the other's
    south_orders, east_orders = _accepted_orders(tmp, "south"), _accepted_orders(tmp, "east")
    assert south_orders and east_orders and not south_orders & east_orders
    assert all(i.startswith(("E-SO-", "E-CN-")) for i in east_orders)
    assert south_orders | east_orders <= {i for _, i in shared.records("order")}
    # each warehouse holds its own company (different seeds: different customers)
    north, south = _customers(tmp, "north"), _customers(tmp, "south")
    assert north and south and not north & south
