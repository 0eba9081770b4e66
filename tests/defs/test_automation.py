"""Schedules, the push-after-landing sensor, the SAP change sensor and the alert sensors,
each evaluated with its own context.

The sensors only care about runs, check evaluations and materialisation metadata, so the
landing runs here are runs of the real jobs (`land_sap_job`...) over stand-in assets with the
product's asset keys: a blocking contract check can be made to fail on demand, and a step can
be made to crash, without a SAP company.
"""


import json
import subprocess
import sys

import dagster as dg
import duckdb
import pytest

from sap_ometria_assets.defs.automation import alerting, jobs, schedules, sensors
from sap_ometria_assets.defs.automation.config import automation_config
from sap_ometria_assets.lib.sap.tables import all_table_names
from sap_ometria_assets.lib.config.settings import SettingsError, get_settings
from sap_ometria_assets.defs.resources import WarehouseResource
from sap_ometria_assets.defs.snapshots.assets import published
from sap_ometria_assets.lib.automation.spool import AlertSpool, spool_dir_for
from sap_ometria_assets.lib.snapshots.lake import Lake, open_reader
from tests.fakes.webhook import WebhookReceiver

BREAK_CONTRACT = "test/break_contract"
WARN_CHECK_FAILS = "test/error_check_fails"
CRASH = "test/crash"


# --------------------------------------------------------------------------------------------
# Stand-in assets with the product's keys and groups
# --------------------------------------------------------------------------------------------

SAP_KEYS = [dg.AssetKey(["sap_raw", t]) for t in all_table_names()]


@dg.multi_asset(
    specs=[dg.AssetSpec(k, group_name="sap_raw") for k in SAP_KEYS],
    check_specs=[
        dg.AssetCheckSpec("ocrd_contract", asset=["sap_raw", "ocrd"], blocking=True),
        dg.AssetCheckSpec("ordr_row_count", asset=["sap_raw", "ordr"]),
    ],
    can_subset=True,
)
def stand_in_landing(context: dg.AssetExecutionContext):
    tags = context.run.tags
    if tags.get(CRASH) == "1":
        raise RuntimeError("SapServiceLayerError: HTTP 503 from Orders after 4 attempts")
    for key in sorted(context.selected_asset_keys):
        yield dg.MaterializeResult(asset_key=key, metadata={"rows_landed": 1})
    selected_checks = context.selected_asset_check_keys
    if dg.AssetCheckKey(dg.AssetKey(["sap_raw", "ocrd"]), "ocrd_contract") in selected_checks:
        yield dg.AssetCheckResult(
            asset_key=["sap_raw", "ocrd"], check_name="ocrd_contract",
            passed=tags.get(BREAK_CONTRACT) != "1", metadata={"removed_columns": "CardType"},
        )
    if dg.AssetCheckKey(dg.AssetKey(["sap_raw", "ordr"]), "ordr_row_count") in selected_checks:
        yield dg.AssetCheckResult(
            asset_key=["sap_raw", "ordr"], check_name="ordr_row_count",
            passed=tags.get(WARN_CHECK_FAILS) != "1", severity=dg.AssetCheckSeverity.ERROR,
            description="no orders landed today",
        )


def _downstream(key: list[str], group: str, deps: list[list[str]]):
    @dg.asset(key=key, group_name=group, deps=deps)
    def _a():
        return dg.MaterializeResult()

    return _a


STAND_INS = [
    stand_in_landing,
    _downstream(["ometria", "contacts"], "ometria", [["sap_raw", "ocrd"]]),
    _downstream(["ometria", "products"], "ometria", [["sap_raw", "oitm"]]),
    _downstream(["ometria", "stock"], "ometria", [["sap_raw", "oitw"], ["sap_raw", "owhs"]]),
    _downstream(["ometria_push", "contacts"], "ometria_push", [["ometria", "contacts"]]),
    _downstream(["ometria_push", "products"], "ometria_push", [["ometria", "products"]]),
    _downstream(["ometria_push", "stock"], "ometria_push", [["ometria", "stock"]]),
    _downstream(["ops", "sync_exceptions"], "ops", [["ometria", "contacts"]]),
    _downstream(["recon", "net_revenue"], "recon", [["ometria_push", "contacts"]]),
]
# the publish ends every job (defs/snapshots): after everything above
STAND_INS.append(_downstream(
    ["snapshots", "published"], "snapshots",
    [k.path for a in STAND_INS for k in a.keys]))


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SAP_OMETRIA_DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.delenv("SAP_OMETRIA_ALERT_WEBHOOK", raising=False)
    get_settings(refresh=True)
    yield tmp_path
    get_settings(refresh=True)


@pytest.fixture(scope="module")
def defs():
    return dg.Definitions(
        assets=STAND_INS,
        jobs=[jobs.land_sap_job, jobs.sync_stock_job, jobs.push_ometria_job, jobs.reconcile_job],
        sensors=[sensors.push_after_landing, sensors.push_after_blocked_landing, alerting.alert_on_run_failure,
                 alerting.alert_on_failed_checks],
        resources={"warehouse": WarehouseResource()},
    )


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="module")
def landing_runs(defs):
    """One landing run per situation, shared by the sensor tests (the sensors only read them)."""
    situations = {
        "clean": {},
        "broken_contract": {BREAK_CONTRACT: "1"},
        "crash": {CRASH: "1"},
        "error_check_fails": {WARN_CHECK_FAILS: "1"},
    }
    with dg.instance_for_test() as inst:
        job = defs.resolve_job_def("land_sap_job")
        yield inst, {
            name: job.execute_in_process(instance=inst, tags=tags, raise_on_error=False)
            for name, tags in situations.items()
        }


# --------------------------------------------------------------------------------------------
# Jobs and schedules
# --------------------------------------------------------------------------------------------

def test_jobs_select_the_right_layers(defs):
    def keys(name):
        selected = {k.to_user_string() for k in defs.resolve_job_def(name).asset_layer.selected_asset_keys}
        assert "snapshots/published" in selected, name  # every job publishes last
        return selected - {"snapshots/published"}

    assert keys("sync_stock_job") == {"sap_raw/oitw", "sap_raw/owhs", "ometria/stock", "ometria_push/stock"}
    landing = keys("land_sap_job")
    assert {"sap_raw/ocrd", "sap_raw/ordr", "sap_raw/orin", "sap_raw/rin1", "sap_raw/oitm"} <= landing
    assert not landing & {"sap_raw/oitw", "sap_raw/owhs"}
    assert all(k.startswith("sap_raw/") for k in landing)
    assert keys("push_ometria_job") == {"ometria/contacts", "ometria_push/contacts", "ometria/products",
                                        "ometria_push/products", "ops/sync_exceptions"}
    assert keys("reconcile_job") == {"recon/net_revenue"}


def test_schedules_default_cron_and_company_time_zone(env):
    by_name = {s.name: s for s in schedules.build_schedules(automation_config())}
    expected = {
        "sync_stock_job_schedule": ("*/15 * * * *", "sync_stock_job"),
        "land_sap_job_schedule": ("5 * * * *", "land_sap_job"),
        "nightly_deletion_scan_job_schedule": ("30 2 * * *", "nightly_deletion_scan_job"),
        "reconcile_job_schedule": ("0 6 * * *", "reconcile_job"),
    }
    assert {n: (s.cron_schedule, s.job_name) for n, s in by_name.items()} == expected
    assert {s.execution_timezone for s in by_name.values()} == {"Europe/London"}
    assert {s.default_status for s in by_name.values()} == {dg.DefaultScheduleStatus.RUNNING}


def test_cron_time_zone_and_switch_come_from_the_environment(env, monkeypatch):
    monkeypatch.setenv("SAP_OMETRIA_CRON_STOCK", "*/5 6-22 * * *")
    monkeypatch.setenv("SAP_OMETRIA_TIMEZONE", "Europe/Dublin")
    monkeypatch.setenv("SAP_OMETRIA_AUTOMATION_ENABLED", "false")
    get_settings(refresh=True)
    stock = {s.name: s for s in schedules.build_schedules(automation_config())}["sync_stock_job_schedule"]
    assert stock.cron_schedule == "*/5 6-22 * * *"
    assert stock.execution_timezone == "Europe/Dublin"
    assert stock.default_status == dg.DefaultScheduleStatus.STOPPED


def test_invalid_cron_names_the_variable(env, monkeypatch):
    monkeypatch.setenv("SAP_OMETRIA_CRON_RECONCILE", "every morning")
    get_settings(refresh=True)
    with pytest.raises(SettingsError, match="SAP_OMETRIA_CRON_RECONCILE"):
        schedules.build_schedules(automation_config())


def test_stock_schedule_tick_requests_a_stock_run(defs):
    schedule = {s.name: s for s in schedules.build_schedules(automation_config())}["sync_stock_job_schedule"]
    result = schedule.evaluate_tick(dg.build_schedule_context())
    assert len(result.run_requests) == 1
    assert result.run_requests[0].tags.get(jobs.LANE_TAG, "sync") == "sync"


# --------------------------------------------------------------------------------------------
# push_after_landing
# --------------------------------------------------------------------------------------------

def _status_context(sensor_name, result, instance, event, resources=None):
    return dg.build_run_status_sensor_context(
        sensor_name=sensor_name, dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=event, resources=resources,
    )


def test_push_requested_after_a_successful_landing(landing_runs):
    instance, runs = landing_runs
    result = runs["clean"]
    assert result.success
    request = sensors.push_after_landing(
        _status_context("push_after_landing", result, instance, result.get_run_success_event())
    )
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == f"push-after-{result.run_id}"
    assert request.tags[sensors.LANDING_RUN_TAG] == result.run_id
    assert sensors.push_after_landing.job_name == "push_ometria_job"


def test_no_push_after_a_blocking_check_failure(landing_runs):
    instance, runs = landing_runs
    result = runs["broken_contract"]
    # The failed blocking check fails the landing run (so a SUCCESS sensor never sees it) ...
    assert not result.success
    assert result.dagster_run.status == dg.DagsterRunStatus.FAILURE
    # ... and were it handed that run anyway, it refuses to push from the broken extract.
    outcome = sensors.push_after_landing(
        _status_context("push_after_landing", result, instance, result.get_run_failure_event())
    )
    assert isinstance(outcome, dg.SkipReason)  # (no asset graph given: nothing is pushed)
    assert "sap_raw/ocrd:ocrd_contract" in outcome.skip_message


def test_a_blocking_check_failure_holds_back_only_what_is_downstream_of_its_table(defs, landing_runs):
    instance, runs = landing_runs
    result = runs["broken_contract"]
    context = dg.build_run_status_sensor_context(
        sensor_name="push_after_blocked_landing", dagster_instance=instance,
        dagster_run=result.dagster_run, dagster_event=result.get_run_failure_event(),
        repository_def=defs.get_repository_def())
    request = sensors.push_after_blocked_landing(context)
    assert isinstance(request, dg.RunRequest)
    assert {k.to_user_string() for k in request.asset_selection} == {
        "ometria/products", "ometria_push/products", "ops/sync_exceptions", "snapshots/published"}
    assert request.tags[sensors.HELD_BACK_TAG] == "ometria/contacts,ometria_push/contacts"
    assert request.run_key == f"push-after-{result.run_id}"


def test_no_push_after_a_landing_that_failed_for_another_reason(defs, landing_runs):
    instance, runs = landing_runs
    result = runs["crash"]
    context = dg.build_run_status_sensor_context(
        sensor_name="push_after_blocked_landing", dagster_instance=instance,
        dagster_run=result.dagster_run, dagster_event=result.get_run_failure_event(),
        repository_def=defs.get_repository_def())
    outcome = sensors.push_after_blocked_landing(context)
    assert isinstance(outcome, dg.SkipReason)
    assert "nothing is pushed until a landing succeeds" in outcome.skip_message


# --------------------------------------------------------------------------------------------
# Alert sensors
# --------------------------------------------------------------------------------------------

@pytest.fixture
def webhook(env, monkeypatch):
    receiver = WebhookReceiver("/hooks/secret-token")
    monkeypatch.setenv("SAP_OMETRIA_ALERT_WEBHOOK", receiver.url)
    get_settings(refresh=True)
    yield receiver
    receiver.close()


def _alerts(env, database="warehouse"):
    """ops.alerts of the working warehouse, or of the latest published snapshot ("lake")."""
    sql = ("SELECT kind, job_name, run_id, asset_key, check_name, severity, message, delivered "
           "FROM ops.alerts ORDER BY kind DESC")
    if database == "lake":
        with open_reader(Lake.for_warehouse(env / "warehouse.duckdb")) as reader:
            return reader.execute(sql).fetchall()
    con = duckdb.connect(str(env / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _next_run_publishes(env):
    """The publish step of the next run (what moves the sensors' spool into ops.alerts)."""
    result = dg.materialize([published], resources={"warehouse": WarehouseResource()}, raise_on_error=False)
    assert result.success
    assert _alerts(env) == _alerts(env, "lake")
    return _alerts(env)


def _sensor_tick(name, result, instance, env):
    """One alert sensor tick: the webhook has the alert at once, the warehouse is not opened."""
    if name == "alert_on_run_failure":
        outcome = alerting.alert_on_run_failure(_status_context(
            name, result, instance, result.get_run_failure_event(),
            resources={"warehouse": WarehouseResource()}).for_run_failure())
    else:
        outcome = alerting.alert_on_failed_checks(_status_context(
            name, result, instance, result.get_run_success_event(), resources={"warehouse": WarehouseResource()}))
    assert not isinstance(outcome, dg.SkipReason)
    assert not (env / "warehouse.duckdb").exists()  # only the spool beside it was written
    assert AlertSpool(spool_dir_for(env / "warehouse.duckdb")).pending()


def test_failed_run_posts_an_alert_at_once_and_the_next_run_records_it(landing_runs, env, webhook):
    instance, runs = landing_runs
    result = runs["crash"]
    assert not result.success
    _sensor_tick("alert_on_run_failure", result, instance, env)
    assert len(webhook.bodies) == 1
    assert "land_sap_job" in webhook.bodies[0]["text"]
    assert any(result.run_id in json.dumps(b) for b in webhook.bodies[0]["blocks"])
    rows = _next_run_publishes(env)
    assert len(rows) == 1
    kind, job, run_id, asset, check, severity, message, delivered = rows[0]
    assert (kind, job, run_id, severity, delivered) == ("run_failure", "land_sap_job", result.run_id, "ERROR", True)
    assert "HTTP 503 from Orders" in message
    assert len(webhook.bodies) == 1  # nobody is paged twice
    assert not AlertSpool(spool_dir_for(env / "warehouse.duckdb")).pending()


def test_blocking_check_failure_alerts_the_run_and_the_check(landing_runs, env, webhook):
    instance, runs = landing_runs
    _sensor_tick("alert_on_run_failure", runs["broken_contract"], instance, env)
    assert len(webhook.bodies) == 1 and len(webhook.bodies[0]["blocks"]) == 4  # header, 2 alerts, footer
    rows = {r[0]: r for r in _next_run_publishes(env)}
    assert set(rows) == {"run_failure", "check_failure"}
    check = rows["check_failure"]
    assert check[3:6] == ("sap_raw/ocrd", "ocrd_contract", "ERROR")
    assert "blocking" in check[6] and "removed_columns: CardType" in check[6]


def test_failed_error_check_in_a_successful_run_alerts(landing_runs, env, webhook):
    instance, runs = landing_runs
    result = runs["error_check_fails"]
    assert result.success  # non-blocking: the run goes on
    _sensor_tick("alert_on_failed_checks", result, instance, env)
    assert len(webhook.bodies) == 1
    rows = _next_run_publishes(env)
    assert [(r[0], r[3], r[4]) for r in rows] == [("check_failure", "sap_raw/ordr", "ordr_row_count")]
    assert "no orders landed today" in rows[0][6]


def test_alert_sensors_do_not_wait_for_a_warehouse_another_process_holds(landing_runs, env, webhook):
    """A sync (or a reader) holding the DuckDB file does not delay or fail an alert."""
    instance, runs = landing_runs
    path = env / "warehouse.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(600)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        outcome = alerting.alert_on_run_failure(_status_context(
            "alert_on_run_failure", runs["crash"], instance, runs["crash"].get_run_failure_event(),
            resources={"warehouse": WarehouseResource()}).for_run_failure())
        assert outcome is None
        assert len(webhook.bodies) == 1
        assert isinstance(alerting.flush_alert_queue(dg.build_sensor_context(
            instance=instance, resources={"warehouse": WarehouseResource()})), dg.SkipReason)
        assert len(webhook.bodies) == 1
    finally:
        holder.kill()
        holder.wait()
    assert [r[0] for r in _next_run_publishes(env)] == ["run_failure"]


def test_runs_executed_in_process_raise_the_same_alerts(landing_runs, env, webhook):
    """`make sync` runs in-process, where run-status sensors do not look: the CLI calls this
    after the run, and records the alerts at once."""
    instance, runs = landing_runs
    outcome = alerting.raise_run_alerts(instance, runs["broken_contract"].dagster_run)
    assert outcome.written == 2 and outcome.delivered == 2
    assert {r[0] for r in _alerts(env)} == {"run_failure", "check_failure"}
    assert alerting.raise_run_alerts(instance, runs["clean"].dagster_run) is None


def test_clean_successful_run_raises_nothing(landing_runs, env, webhook):
    instance, runs = landing_runs
    result = runs["clean"]
    outcome = alerting.alert_on_failed_checks(
        _status_context("alert_on_failed_checks", result, instance, result.get_run_success_event(),
                        resources={"warehouse": WarehouseResource()})
    )
    assert isinstance(outcome, dg.SkipReason)
    assert webhook.bodies == []
    assert not (env / "warehouse.duckdb").exists()  # nothing to write: the warehouse is not opened


# --------------------------------------------------------------------------------------------
# sap_change_sensor
# --------------------------------------------------------------------------------------------

from pydantic import SecretStr  # noqa: E402

from sap_ometria_assets.lib.sap.client import SapB1Client  # noqa: E402
from sap_ometria_assets.defs.resources import SapB1Resource  # noqa: E402
from tests.fakes.service_layer import FAKE_PASSWORD  # noqa: E402

_IN_MEMORY: dict[str, object] = {}


class InMemorySapB1(SapB1Resource):
    """The real resource and client, talking to the fake Service Layer without sockets."""

    def _build_client(self, logger=None) -> SapB1Client:
        fake = _IN_MEMORY["fake"]
        return SapB1Client(fake.base_url, fake.company, fake.username, SecretStr(FAKE_PASSWORD),
                           transport=fake.transport(), logger=logger)

WATCHED_SETS = {t.table: t.entity_set for t in sensors.WATCHED}


def _bp(code, day, clock):
    return {"CardCode": code, "UpdateDate": f"{day}T00:00:00Z", "UpdateTime": clock}


def _doc(entry, day, clock):
    return {"DocEntry": entry, "UpdateDate": f"{day}T00:00:00Z", "UpdateTime": clock}


@pytest.fixture
def sap(make_fake_sl, monkeypatch, env):
    """A Service Layer over HTTP where every watched entity set has records up to 2026-03-02 10:15:20."""
    monkeypatch.setenv("SAP_B1_PASSWORD", FAKE_PASSWORD)
    get_settings(refresh=True)
    fake = make_fake_sl({
        "BusinessPartners": [_bp("C1", "2026-03-01", "09:00:00"), _bp("C2", "2026-03-02", "10:15:20")],
        "Orders": [_doc(1, "2026-03-02", "08:00:00"), _doc(2, "2026-03-02", "10:15:20")],
        "DeliveryNotes": [_doc(1, "2026-03-02", "10:15:20")],
        "Invoices": [_doc(1, "2026-03-02", "10:15:20")],
        "CreditNotes": [_doc(1, "2026-02-27", "16:00:00"), _doc(2, "2026-03-02", "10:15:20")],
        "Items": [{"ItemCode": "A", "UpdateDate": "2026-03-02T00:00:00Z", "UpdateTime": "10:15:20"}],
    })
    with fake.serve() as url:
        _IN_MEMORY["fake"] = fake
        yield fake, url
        _IN_MEMORY.clear()


def _landed(instance, watermark="2026-03-02 10:15:20", tables=None):
    for table in tables or WATCHED_SETS:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=["sap_raw", table], metadata={"watermark_after": watermark})
        )


def _tick(instance, url, cursor=None, over_http=False):
    resource = SapB1Resource(service_layer_url=url) if over_http else InMemorySapB1()
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"sap_b1": resource}) as context:
        return sensors.sap_change_sensor.evaluate_tick(context)


def test_change_sensor_quiet_when_nothing_changed(sap, instance, env):
    fake, url = sap
    _landed(instance)
    result = _tick(instance, url, over_http=True)
    assert result.run_requests == [] and "no change" in result.skip_message
    # Cheap: one login, `$count` requests only, a logout; and the warehouse was never opened.
    data_paths = {r.path.rsplit("/", 2)[-2:][-1] for r in fake.requests if r.method == "GET"}
    assert data_paths == {"$count"}
    assert fake.logins == 1 and fake.logouts == 1
    assert not (env / "warehouse.duckdb").exists()
    second = _tick(instance, url, result.cursor)
    assert second.run_requests == []


def test_change_sensor_fires_on_a_later_change_once(sap, instance):
    fake, url = sap
    _landed(instance)
    quiet = _tick(instance, url)
    fake.entities["Orders"].append(_doc(3, "2026-03-02", "11:40:00"))
    fired = _tick(instance, url, quiet.cursor)
    assert len(fired.run_requests) == 1
    request = fired.run_requests[0]
    assert request.tags[sensors.CHANGED_TAG] == "ordr"
    assert request.tags[sensors.TRIGGER_TAG] == "sap_change_sensor"
    assert sensors.sap_change_sensor.job_name == "land_sap_job"
    again = _tick(instance, url, fired.cursor)
    assert again.run_requests[0].run_key == request.run_key  # Dagster launches it once
    # After the landing moved the watermark past the change, the sensor is quiet again.
    _landed(instance, "2026-03-02 11:40:00", ["ordr"])
    assert _tick(instance, url, again.cursor).run_requests == []


def test_change_sensor_sees_a_change_within_the_watermark_minute(sap, instance):
    fake, url = sap
    _landed(instance)
    quiet = _tick(instance, url)
    fake.entities["BusinessPartners"].append(_bp("C3", "2026-03-02", "10:15:55"))
    fired = _tick(instance, url, quiet.cursor)
    assert [r.tags[sensors.CHANGED_TAG] for r in fired.run_requests] == ["ocrd"]


def test_change_sensor_requests_the_first_landing(sap, instance):
    _, url = sap
    _landed(instance, tables=["ocrd", "ordr"])  # the others never landed
    fired = _tick(instance, url)
    changed = set(fired.run_requests[0].tags[sensors.CHANGED_TAG].split(","))
    assert changed == {"odln", "oinv", "orin", "oitm"}


def test_change_sensor_waits_while_a_landing_is_in_flight(sap, instance, defs):
    fake, url = sap
    _landed(instance)
    fake.entities["Orders"].append(_doc(3, "2026-03-03", "07:00:00"))
    instance.create_run_for_job(defs.resolve_job_def("land_sap_job"), status=dg.DagsterRunStatus.STARTED)
    result = _tick(instance, url)
    assert result.run_requests == [] and "already queued or running" in result.skip_message
    assert fake.logins == 0  # did not even ask SAP


def test_change_sensor_on_the_demo_company_fires_only_on_change(instance, monkeypatch):
    """Against the SAP B1 emulator and the real landing: quiet after a landing, fires when the
    company's clock moves on (new and edited records), quiet again once they are landed."""
    from sap_ometria_assets.emulators.sap_b1.company import generate_company
    from sap_ometria_assets.emulators.sap_b1.server import SapB1Emulator
    from sap_ometria_assets.lib.warehouse import db as warehouse
    from sap_ometria_assets.lib.landing.land import land_table

    monkeypatch.setenv("SAP_B1_PASSWORD", "demo-password")
    settings = get_settings(refresh=True)
    emulator = SapB1Emulator(generate_company(0.02, 7, 0), password="demo-password").start()
    try:
        resource = SapB1Resource(service_layer_url=emulator.url)

        def land_all():
            with resource.client() as client, warehouse.connect(settings.duckdb_path) as con:
                for spec in sensors.WATCHED:
                    result = land_table(con, client, spec, settings=settings)
                    instance.report_runless_asset_event(dg.AssetMaterialization(
                        asset_key=["sap_raw", spec.table],
                        metadata={"watermark_after": result.watermark_after or "none"}))
            resource.close()

        def tick(cursor):
            return _tick(instance, emulator.url, cursor, over_http=True)

        land_all()
        quiet = tick(None)
        assert quiet.run_requests == [], quiet.skip_message
        emulator.advance(3)
        fired = tick(quiet.cursor)
        assert len(fired.run_requests) == 1
        changed = set(fired.run_requests[0].tags[sensors.CHANGED_TAG].split(","))
        assert {"ocrd", "ordr"} <= changed
        land_all()
        assert tick(fired.cursor).run_requests == []
    finally:
        emulator.stop()
