"""A short nightly key scan never opts out live customers: a scan that is incomplete or would
delete too much marks nothing, is listed (deletion_scan_refused) and alerts; a person approves;
an opt-out for a real deletion waits until the deletion is a run old."""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import httpx
import polars as pl
import yaml
from faultkit import SYNC, Run, _job, assert_nothing_lost, query

from sap_ometria_assets.defs.automation.jobs import deletion_scan_run_config
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT, get_settings

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
        "host"}


def _sync_with_scan() -> Run:
    """A full sync whose master data is landed with the nightly key scan."""
    instance = dg.DagsterInstance.ephemeral()
    job = _job(SYNC)
    return Run(job.execute_in_process(run_config=deletion_scan_run_config(), instance=instance,
                                      raise_on_error=False), instance)


def _opt_out_mapping(env, monkeypatch) -> None:
    mapping = yaml.safe_load((PROJECT_ROOT / "data" / "mapping.yaml").read_text())
    mapping["contacts"]["on_deleted"] = "opt_out"
    path = env.tmp / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping))
    monkeypatch.setenv("SAP_OMETRIA_MAPPING", str(path))
    get_settings(refresh=True)


def _cutting_proxy(upstream: str, keep: int):
    """Passes everything through, except key-scan pages of BusinessPartners: only their first
    `keep` keys and no next link (a proxy cutting the response, a page cap)."""
    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, *args):  # noqa: D102
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            content = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            resp = httpx.request(self.command, upstream + self.path, headers=headers,
                                 content=content, timeout=10)
            body = resp.content
            if ("BusinessPartners?" in self.path and "select=CardCode&" in self.path + "&"
                    and resp.status_code == 200):
                doc = json.loads(body)
                body = json.dumps({"value": doc["value"][:keep]}).encode()
            self.send_response(resp.status_code)
            for k, v in resp.headers.multi_items():
                if k.lower() not in _HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _opted_out(env) -> set[str]:
    """Customers opted out in Ometria because SAP "deleted" them: the prepared contact is the
    minimal opt-out `on_deleted: opt_out` sends (identity and opt-out only, no store), and
    Ometria holds the contact opted out. Customers who blocked marketing in SAP are opted out
    with their full record and are not counted."""
    minimal = {k for (k,) in query(env.db, """
        SELECT id FROM ometria.contacts
        WHERE json_extract_string(payload, '$.marketing_optin') = 'EXPLICITLY_OPTEDOUT'
          AND json_extract(payload, '$.store_ids') IS NULL""")}
    held = {rid for (_, rid), rec in env.ometria.records("contact").items()
            if rec.get("marketing_optin") == "EXPLICITLY_OPTEDOUT"}
    return minimal & held


def test_a_key_scan_cut_to_20_of_150_keys_marks_nothing_and_opts_nobody_out(
        landed_env, company, monkeypatch):
    env = landed_env
    _opt_out_mapping(env, monkeypatch)
    server = _cutting_proxy(env.sap.url.split("/b1s/")[0], keep=20)
    try:
        monkeypatch.setenv("SAP_B1_SERVICE_LAYER_URL",
                           f"http://127.0.0.1:{server.server_address[1]}/b1s/v2")
        get_settings(refresh=True)
        run = _sync_with_scan()
    finally:
        server.shutdown()
        server.server_close()
    assert run.success, run.failures
    assert query(env.db, "SELECT count(*) FROM sap_raw.ocrd WHERE _deleted_at IS NOT NULL") == [(0,)]
    refused = query(env.db, "SELECT record_key, severity, owner, detail FROM ops.sync_exceptions "
                            "WHERE rule = 'deletion_scan_refused' AND resolved_at IS NULL")
    assert [(k, s, o) for k, s, o, _ in refused] == [("ocrd", "ERROR", "ops")]
    assert "found 20 key(s)" in refused[0][3] and "counts 150" in refused[0][3]
    alerts = query(env.db, "SELECT severity, message FROM ops.alerts WHERE check_name = "
                           "'deletion_scan_refused'")
    assert alerts and alerts[0][0] == "ERROR" and "ocrd" in alerts[0][1]
    assert _opted_out(env) == set()
    assert_nothing_lost(env.db, env.ometria, company)


def test_a_complete_scan_deleting_too_many_waits_for_a_person_then_opts_out_a_run_later(
        landed_env, company, monkeypatch):
    env = landed_env
    _opt_out_mapping(env, monkeypatch)
    ocrd = company.tables["OCRD"]
    customers = ocrd.filter(pl.col("CardType") == "cCustomer")["CardCode"].to_list()
    gone = set(customers[:30])                                   # 20% of the BPs, all customers
    shrunk = dataclasses.replace(company, tables={
        **company.tables, "OCRD": ocrd.filter(~pl.col("CardCode").is_in(list(gone)))})
    env.sap.set_company(shrunk)
    run = _sync_with_scan()
    assert run.success, run.failures
    assert query(env.db, "SELECT count(*) FROM sap_raw.ocrd WHERE _deleted_at IS NOT NULL") == [(0,)]
    (detail,), = query(env.db, "SELECT detail FROM ops.sync_exceptions WHERE rule = "
                               "'deletion_scan_refused' AND resolved_at IS NULL")
    assert "would mark 30 of 150" in detail
    assert _opted_out(env) == set()
    # A person checked SAP: the deletions are real. Approve the next scan.
    monkeypatch.setenv("SAP_B1_ACCEPT_DELETION_SCAN", "ocrd")
    get_settings(refresh=True)
    run = _sync_with_scan()
    assert run.success, run.failures
    marked = {k for (k,) in query(env.db, "SELECT CardCode FROM sap_raw.ocrd "
                                          "WHERE _deleted_at IS NOT NULL")}
    assert marked == gone
    assert query(env.db, "SELECT count(*) FROM ops.sync_exceptions WHERE rule = "
                         "'deletion_scan_refused' AND resolved_at IS NULL") == [(0,)]
    assert _opted_out(env) == set()      # not in the run that first saw the deletion
    monkeypatch.delenv("SAP_B1_ACCEPT_DELETION_SCAN")
    get_settings(refresh=True)
    run = _sync_with_scan()
    assert run.success, run.failures
    assert _opted_out(env) == gone & set(customers)     # a run later: opted out
    # Contacts: an opt-out merges into what Ometria held (faultkit compares whole records, which
    # a merged opt-out is not), so they are checked above; every other feed whole.
    assert_nothing_lost(env.db, env.ometria, shrunk, feeds=("products", "orders", "stock"))
