"""Secrets and personal data: the SAP password and the Ometria key never leave the process's
memory (logs, run events and metadata, every DuckDB text column, the outbox, error messages,
the Dagster instance's files); TLS verification is on by default; the UI binds 127.0.0.1; only
documented Ometria fields and mapped properties leave for Ometria."""

from __future__ import annotations

import json
import logging
import re
import ssl
from pathlib import Path

import dagster as dg
import duckdb
from faultkit import OMETRIA_KEY, PUSH, SAP_PASSWORD, SYNC, assert_nothing_lost, run_sync

from sap_ometria_assets.lib.ometria import models as ometria_models
from sap_ometria_assets.lib.ometria.mapping import load_mapping
from sap_ometria_assets.lib.ometria.client import OmetriaClient
from sap_ometria_assets.defs.resources import OmetriaResource
from sap_ometria_assets.lib.sap.client import SapB1Client, settings_kwargs
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT, Settings, get_settings

SECRETS = (SAP_PASSWORD, OMETRIA_KEY)


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def _duckdb_leaks(db: Path) -> list[str]:
    found = []
    con = duckdb.connect(str(db), read_only=True)
    try:
        columns = con.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE data_type IN ('VARCHAR', 'JSON') OR data_type LIKE '%[]' OR data_type LIKE 'STRUCT%'"
        ).fetchall()
        for schema, table, column in columns:
            for secret in SECRETS:
                n = con.execute(f'SELECT count(*) FROM "{schema}"."{table}" '
                                f'WHERE CAST("{column}" AS VARCHAR) LIKE ?', [f"%{secret}%"]).fetchall()[0][0]
                if n:
                    found.append(f"{schema}.{table}.{column}")
        assert len(columns) > 50  # really searched the warehouse
    finally:
        con.close()
    return found


def test_no_secret_in_logs_events_metadata_warehouse_outbox_or_errors(env, monkeypatch, caplog, capfd, tmp_path):
    caplog.set_level(logging.DEBUG)
    home = tmp_path / "dagster_home"
    home.mkdir()
    texts: list[str] = []
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        # 1. a full sync in dry run (outbox), through a session expiry (a second login) and 503s
        monkeypatch.setenv("OMETRIA_DRY_RUN", "1")
        get_settings(refresh=True)
        env.sap.faults.fail_next(2, status=503)
        env.sap.faults.expire_sessions_after(6)
        dry = run_sync(SYNC, instance=instance)
        assert dry.success, dry.failures
        assert env.sap.stats.logins == 2
        outbox = sorted((env.tmp / "outbox").glob("*.ndjson"))
        assert outbox and sum(len(p.read_text().splitlines()) for p in outbox) > 5
        # 2. real pushes: Ometria failing past the retries (error messages), rejecting records
        monkeypatch.setenv("OMETRIA_DRY_RUN", "0")
        get_settings(refresh=True)
        env.ometria.faults.fail_next(10, status=500)
        failed = run_sync(PUSH, instance=instance)
        assert not failed.success
        env.ometria.faults.fail_next(0)
        env.ometria.faults.reject(ids=["200002"])
        ok = run_sync(PUSH, instance=instance)
        assert ok.success, ok.failures
        assert_nothing_lost(env.db, env.ometria, env.sap.company)

        for run in (dry, failed, ok):
            texts += list(run.failures.values()) + run.messages()
            for record in instance.all_logs(run.result.run_id):
                texts.append(json.dumps(dg.serialize_value(record)) if hasattr(dg, "serialize_value")
                             else repr(record))
    assert any("failed after 4 attempts" in t for t in texts)  # the error path was exercised
    texts += [r.getMessage() for r in caplog.records]
    out, err = capfd.readouterr()
    texts += [out, err]
    texts += [p.read_text() for p in outbox]
    leaks = [s for t in texts for s in _leaks(t)]
    assert not leaks, "secrets found in logs, events or errors"
    assert _duckdb_leaks(env.db) == []
    for path in home.rglob("*"):  # the instance's own storage (event log, run database)
        if path.is_file():
            raw = path.read_bytes()
            assert not any(s.encode() in raw for s in SECRETS), path


def test_secrets_are_secret_types_and_tls_verification_is_on_by_default(monkeypatch):
    monkeypatch.setenv("SAP_B1_PASSWORD", SAP_PASSWORD)
    monkeypatch.setenv("OMETRIA_API_KEY", OMETRIA_KEY)
    settings = Settings()
    assert SAP_PASSWORD not in repr(settings) and OMETRIA_KEY not in repr(settings)
    assert settings.sap_b1_verify_tls is True
    kwargs = settings_kwargs(settings)
    assert kwargs["verify"] is True
    sap = SapB1Client("https://sap.example.com:50000/b1s/v2", **kwargs)
    om = OmetriaClient("https://api.ometria.com/v2", settings.ometria_api_key)
    try:
        for client in (sap._http, om._http):
            context = client._transport._pool._ssl_context
            assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert SAP_PASSWORD not in repr(sap) and OMETRIA_KEY not in repr(om)
    finally:
        sap.close()
        om.close()
    assert OmetriaResource().model_dump().keys().isdisjoint({"api_key", "password"})


def test_the_ui_binds_localhost_unless_told_otherwise():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert re.search(r"^HOST \?= 127\.0\.0\.1$", makefile, re.M)
    assert "dagster-webserver -w workspace.yaml -h $(HOST)" in makefile


def _documented_fields() -> dict[str, set[str]]:
    def fields(model) -> set[str]:
        return {(f.alias or name) for name, f in model.model_fields.items()}

    nested = set().union(*(fields(m) for m in (ometria_models.OrderCustomer, ometria_models.OrderLineItem,
                                               ometria_models.ProductAttribute, ometria_models.ProductListing)))
    return {
        "contact": fields(ometria_models.ContactRecord),
        "order": fields(ometria_models.OrderRecord) | nested,
        "product": fields(ometria_models.ProductRecord) | fields(ometria_models.StockRecord) | nested,
    }


def _mapped_properties() -> set[str]:
    mapping = load_mapping(get_settings().mapping_path)
    props = {u.ometria_property for group in mapping.udfs.model_dump(by_alias=False).values()
             for u in map(lambda d: type("U", (), d), group) if u.ometria_property}
    props |= {mapping.contacts.group_property, mapping.contacts.segments.property}
    if mapping.credit_memos.mode == "negative_order":  # mapping.yaml: the negative order names its order
        props.add("original_order_id")
    return {p for p in props if p}


def test_only_documented_fields_and_mapped_properties_reach_ometria(push_env):
    """Every key of every record Ometria received is a documented Ometria field, or a property
    data/mapping.yaml maps: no unmapped SAP field (a new UDF, an internal note) leaves."""
    env = push_env
    assert run_sync(PUSH).success
    documented, mapped = _documented_fields(), _mapped_properties()
    assert {"loyalty_tier", "sales_channel", "customer_group"} <= mapped
    seen_properties: set[str] = set()
    stray: set[str] = set()

    def walk(kind: str, value, top: bool) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key == "properties" and isinstance(inner, dict):
                    seen_properties.update(inner)
                    stray.update(f"{kind}.properties.{k}" for k in inner if k not in mapped)
                    continue
                if key not in documented[kind]:
                    stray.add(f"{kind}.{key}")
                walk(kind, inner, False)
        elif isinstance(value, list):
            for item in value:
                walk(kind, item, False)

    total = 0
    for kind in ("contact", "order", "product"):
        for record in env.ometria.records(kind).values():
            walk(kind, record, True)
            total += 1
    assert total > 300 and seen_properties  # real payloads, with properties, were inspected
    assert not stray, f"fields Ometria received that are neither documented nor mapped: {sorted(stray)}"
