"""Ometria failures that used to pass quietly (issue 11, Ometria side): a 200 that is not
Ometria's answer, a key that leaks when it ends in a line break or is echoed back, a non-ASCII
key, orders carrying a lead's or supplier's identity, a read-back that loops or answers 404.
Each ends with nothing lost (faultkit.assert_nothing_lost) and, where secrets are involved,
nothing leaked in any form."""

from __future__ import annotations

import json
from functools import cache
from urllib.parse import quote, quote_plus

from pathlib import Path

import dagster as dg
import duckdb
import pytest
from faultkit import OMETRIA_KEY, PUSH, SAP_PASSWORD, Run, _defs, assert_nothing_lost, query, run_sync
from ometria_proxy import OmetriaProxy

from rich.console import Console

from sap_ometria_assets import cli
from sap_ometria_assets.console.run import SyncOutcome
from sap_ometria_assets.console.summary import print_summary
from sap_ometria_assets.defs.automation.alerting import alerts_for_run
from sap_ometria_assets.lib.config import settings as settings_module
from sap_ometria_assets.lib.config.settings import get_settings


@pytest.fixture
def proxied(push_env, monkeypatch):
    """push_env with Ometria reached through a proxy that can misbehave."""
    with OmetriaProxy(push_env.ometria.url) as proxy:
        monkeypatch.setenv("OMETRIA_API_URL", proxy.url)
        get_settings(refresh=True)
        yield push_env, proxy


@cache
def _push_and_reconcile_job() -> dg.JobDefinition:
    selection = (dg.AssetSelection.groups("ometria_push").without_checks()
                 | dg.AssetSelection.groups("ops", "recon"))
    job = dg.define_asset_job("faults_push_ops_recon", selection=selection)
    return dg.Definitions.merge(_defs(), dg.Definitions(jobs=[job])).resolve_job_def(job.name)


def _print_summary(run: Run, env) -> None:
    """The end of `make sync` for this run (console/summary.py)."""
    outcome = SyncOutcome(True, {"recon/ometria_snapshot": run.metadata("recon/ometria_snapshot")},
                          1.0, "run", Path(env.db).parent / "logs" / "run.log")
    print_summary(outcome, Path(env.db), Console(markup=False, highlight=False))


def push_and_reconcile() -> Run:
    instance = dg.DagsterInstance.ephemeral()
    return Run(_push_and_reconcile_job().execute_in_process(instance=instance, raise_on_error=False),
               instance)


def _secret_forms() -> list[str]:
    """How the test's secrets may show up: as they are, URL-encoded, escaped (written out here,
    independently of the product's scrub)."""
    out = []
    for s in (OMETRIA_KEY, SAP_PASSWORD):
        out += [s, quote(s, safe=""), quote_plus(s), quote(s, safe="").lower(), json.dumps(s)[1:-1]]
    return sorted(set(out))


def _warehouse_leaks(db) -> list[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cols = con.execute("SELECT table_schema, table_name, column_name FROM information_schema.columns "
                           "WHERE data_type IN ('VARCHAR', 'JSON')").fetchall()
        found = []
        for schema, table, column in cols:
            for form in _secret_forms():
                if con.execute(f'SELECT count(*) FROM "{schema}"."{table}" WHERE CAST("{column}" AS VARCHAR) '
                               "LIKE '%' || ? || '%'", [form]).fetchall()[0][0]:
                    found.append(f"{schema}.{table}.{column}: {form!r}")
        return found
    finally:
        con.close()


def _text_leaks(texts) -> list[str]:
    return [f for f in _secret_forms() for t in texts if f in t]


# ---------------------------------------------------------------------------------------------
# 3. a 200 that is not Ometria's answer
# ---------------------------------------------------------------------------------------------
def test_a_200_with_an_html_page_is_unconfirmed_not_delivered_and_resent(proxied):
    env, proxy = proxied
    page = b"<!DOCTYPE html><html><head><title>Maintenance</title></head><body>Back soon</body></html>"
    proxy.hooks.append(lambda m, p, q, b: (200, "text/html", page) if m == "POST" and p.endswith("/push") else None)
    run = run_sync(PUSH)
    assert not run.success  # never "exit 0, all fine"
    message = "\n".join(run.failures.values())
    assert "does not confirm it" in message and "not JSON" in message and "text/html" in message
    assert "sent again on the next run" in message
    assert env.ometria.records("order") == {} and env.ometria.records("contact") == {}
    # nothing counted as delivered; the batch is on record as unconfirmed, with the reason
    assert query(env.db, "SELECT count(*) FROM ometria_push.ledger WHERE status = 'accepted'") == [(0,)]
    # each feed stopped at its first unconfirmed batch (whoever answers so answers every batch so)
    audit = query(env.db, "SELECT feed, http_status, record_count, error FROM ometria_push.requests "
                          "WHERE error LIKE 'unconfirmed:%' ORDER BY feed")
    assert [(f, s) for f, s, _, _ in audit] == [("contacts", 200), ("products", 200)]
    assert all("not JSON" in e and "Maintenance" in e for *_, e in audit)
    assert query(env.db, "SELECT count(*) FROM ometria_push.ledger WHERE status = 'unconfirmed'") == [
        (sum(n for _, _, n, _ in audit),)]

    proxy.hooks.clear()
    rerun = run_sync(PUSH)
    assert rerun.success, rerun.failures
    assert_nothing_lost(env.db, env.ometria)


# ---------------------------------------------------------------------------------------------
# 4. secrets in every form
# ---------------------------------------------------------------------------------------------
def test_a_key_read_from_a_secret_file_with_its_line_break_works_and_never_leaks(push_env, monkeypatch):
    env = push_env
    monkeypatch.setenv("OMETRIA_API_KEY", OMETRIA_KEY + "\r\n")
    get_settings(refresh=True)
    run = run_sync(PUSH)
    assert run.success, run.failures
    assert not _text_leaks(run.messages() + list(run.failures.values()))
    assert not _warehouse_leaks(env.db)
    assert_nothing_lost(env.db, env.ometria)


def test_a_non_ascii_key_is_a_settings_error_naming_the_variable(push_env, monkeypatch, capsys):
    env = push_env
    bad = "omkey-ünïcode-Giraffe"
    monkeypatch.setenv("OMETRIA_API_KEY", bad)
    settings_module._cached.cache_clear()  # as a fresh process: the run reads the environment
    run = run_sync(PUSH)
    assert not run.success
    message = "\n".join(run.failures.values())
    assert "OMETRIA_API_KEY" in message and "non-ASCII" in message
    assert "UnicodeEncodeError" not in message and bad not in message
    assert env.ometria.stats.push_requests == 0
    assert cli.main(["sync"]) == 2
    err = capsys.readouterr().err
    assert "OMETRIA_API_KEY" in err and bad not in err

    monkeypatch.setenv("OMETRIA_API_KEY", OMETRIA_KEY)
    get_settings(refresh=True)
    assert run_sync(PUSH).success
    assert_nothing_lost(env.db, env.ometria)


def test_secrets_echoed_back_by_ometrias_error_list_are_not_stored(proxied):
    env, proxy = proxied
    order_ids = [r[0] for r in query(env.db, "SELECT id FROM ometria.orders WHERE held_back_reason IS NULL "
                                             "ORDER BY id LIMIT 2")]
    env.ometria.faults.reject(ids=order_ids)
    echo = (f"not a valid value (X-Ometria-Auth: {OMETRIA_KEY}; seen in "
            f"https://example.invalid/?k={quote(OMETRIA_KEY, safe='')}&p={quote(SAP_PASSWORD, safe='')}; "
            f"raw {json.dumps(SAP_PASSWORD)})")

    def rewrite(path: str, body: bytes) -> bytes:
        if not path.endswith("/push/_errors"):
            return body
        entries = json.loads(body)
        for e in entries:
            e["message"]["error_message"] = echo
            e["record"]["note"] = f"auth={OMETRIA_KEY}"
        return json.dumps(entries).encode()

    proxy.rewrite_body = rewrite
    run = run_sync(PUSH)
    assert run.success, run.failures
    details = query(env.db, "SELECT detail FROM ops.sync_exceptions WHERE rule = 'ometria_rejected'")
    assert len(details) == 2 and all("not a valid value" in d and "**********" in d for (d,) in details)
    assert not _warehouse_leaks(env.db)
    assert not _text_leaks(run.messages())
    report = assert_nothing_lost(env.db, env.ometria)
    assert set(order_ids) <= report.excepted["orders"]


# ---------------------------------------------------------------------------------------------
# 5. orders of leads and suppliers carry no identity
# ---------------------------------------------------------------------------------------------
def test_orders_of_leads_and_suppliers_carry_the_customer_id_alone(push_env):
    env = push_env
    run = run_sync(PUSH)
    assert run.success, run.failures
    others = query(env.db, """
        SELECT o.id, b."CardCode", b."CardType" FROM ometria.orders o
        JOIN sap_raw.ocrd b ON CAST(b."CardCode" AS VARCHAR) = o.customer_id
        WHERE b."CardType" IN ('cLid', 'cSupplier') AND o.held_back_reason IS NULL""")
    assert {t for _, _, t in others} == {"cLid", "cSupplier"}
    stored = env.ometria.records("order")
    for order_id, card_code, _ in others:
        assert stored[("", order_id)]["customer"] == {"id": card_code}
    customers = query(env.db, """
        SELECT o.id FROM ometria.orders o JOIN sap_raw.ocrd b ON CAST(b."CardCode" AS VARCHAR) = o.customer_id
        WHERE b."CardType" = 'cCustomer' AND b."EmailAddress" LIKE '%@%.%' AND o.held_back_reason IS NULL LIMIT 5""")
    assert customers and all("email" in stored[("", i)]["customer"] for (i,) in customers)
    assert_nothing_lost(env.db, env.ometria)


# ---------------------------------------------------------------------------------------------
# 8 and 11. read-back: an API ignoring offset, a 404
# ---------------------------------------------------------------------------------------------
def _read_back_unavailable(run: Run, env, expect: str) -> None:
    assert run.success, run.failures  # the pushes succeeded: the run did not fail for the read-back
    latest = query(env.db, "SELECT available, outcome, note FROM recon.snapshot_runs ORDER BY fetched_at DESC LIMIT 1")
    assert latest[0][:2] == (False, "unavailable") and expect in latest[0][2]
    check = run.checks()["ometria_snapshot/ometria_read_back_available"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    alerts = alerts_for_run(run.instance, run.result.dagster_run)
    assert [a.check_name for a in alerts] == ["ometria_read_back_available"]
    assert query(env.db, "SELECT count(*) FROM ometria_push.ledger WHERE status = 'accepted'")[0][0] > 300
    assert query(env.db, "SELECT count(*) FROM ops.sync_exceptions")[0][0] > 0


def test_a_read_back_ignoring_offset_stops_on_the_repeated_page(proxied, capsys):
    env, proxy = proxied
    proxy.drop_query = {"offset"}
    gets = {"n": 0}

    def give_up(method, path, query_, body):  # bounds the test if the read-back loops
        if method == "GET" and path.endswith("/orders"):
            gets["n"] += 1
            if gets["n"] > 200:
                return 503, "text/plain", b"proxy gave up"
        return None

    proxy.hooks.append(give_up)
    run = push_and_reconcile()
    _read_back_unavailable(run, env, "not honouring `offset`")
    assert gets["n"] == 2  # the first page, and its repeat
    _print_summary(run, env)
    assert "Reconciliation with Ometria UNAVAILABLE" in capsys.readouterr().out
    assert_nothing_lost(env.db, env.ometria)


def test_a_read_back_answering_404_leaves_the_pushes_and_marks_recon_unavailable(proxied, capsys):
    env, proxy = proxied
    proxy.hooks.append(lambda m, p, q, b: (404, "application/json", b'{"status":"ERROR","message":"Not found"}')
                       if m == "GET" and p.endswith("/orders") else None)
    run = push_and_reconcile()
    _read_back_unavailable(run, env, "HTTP 404")
    views = run.metadata("recon/views")
    assert views["ometria_read_back"] is False
    _print_summary(run, env)
    out = capsys.readouterr().out
    assert "Reconciliation with Ometria UNAVAILABLE" in out and "HTTP 404" in out

    proxy.hooks.clear()
    again = push_and_reconcile()
    assert again.success and again.checks()["ometria_snapshot/ometria_read_back_available"].passed
    assert query(env.db, "SELECT outcome FROM recon.snapshot_runs ORDER BY fetched_at DESC LIMIT 1") == [("read",)]
    assert_nothing_lost(env.db, env.ometria)
