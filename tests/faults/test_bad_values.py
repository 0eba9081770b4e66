"""Bad values that used to go out as good ones: each is held back or rejected, and listed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import polars as pl
import pytest
from faultkit import assert_nothing_lost, query, run_sync

BAD_EMAILS = [".user@x.com", "us..er@x.com", "user.@x.com", "us\u200ber@x.com", "us\x01er@x.com"]


@pytest.fixture
def company(company):
    """The demo company with five customers whose emails break RFC 5322 in ways a simple regex
    lets through, and an order dated 1899-12-30."""
    ocrd = company.tables["OCRD"]
    customers = ocrd.filter(pl.col("CardType") == "cCustomer")["CardCode"].head(len(BAD_EMAILS))
    bad = dict(zip(customers.to_list(), BAD_EMAILS, strict=True))
    ocrd = ocrd.with_columns(
        pl.col("CardCode").replace_strict(bad, default=pl.col("EmailAddress"),
                                          return_dtype=pl.String).alias("EmailAddress"))
    # and one live order dated 1899-12-30 (the OLE zero date)
    ordr = company.tables["ORDR"]
    entry = int(ordr.filter((pl.col("CancelStatus") == "csNo")
                            & (pl.col("DocCurrency") == "GBP"))["DocEntry"][0])
    ordr = ordr.with_columns(
        pl.when(pl.col("DocEntry") == entry).then(pl.lit(dt.date(1899, 12, 30)))
        .otherwise(pl.col("DocDate")).alias("DocDate"))
    changed = dataclasses.replace(company, tables={**company.tables, "OCRD": ocrd, "ORDR": ordr})
    changed.planted = {**company.planted, "bad_emails": list(bad), "order_1899": [str(entry)]}
    return changed


def test_rfc_invalid_emails_are_held_back_with_an_exception_not_sent(env, company):
    run = run_sync()
    assert run.success, run.failures
    keys = company.planted["bad_emails"]
    held = dict(query(env.db, "SELECT sap_key, held_back_reason FROM ometria.contacts "
                              f"WHERE sap_key IN ({', '.join('?' * len(keys))})", keys))
    assert held == dict.fromkeys(keys, "invalid_email")
    listed = {r[0] for r in query(env.db, "SELECT record_key FROM ops.sync_exceptions "
                                          "WHERE rule = 'contact_invalid_email' AND resolved_at IS NULL")}
    assert set(keys) <= listed
    sent = json.dumps(list(env.ometria.records("contact").values()))
    for email in BAD_EMAILS:
        assert json.dumps(email)[1:-1] not in sent
    assert_nothing_lost(env.db, env.ometria, company)



def test_an_order_dated_1899_is_held_back_not_sent(env, company):
    run = run_sync()
    assert run.success, run.failures
    [entry] = company.planted["order_1899"]
    held = query(env.db, "SELECT held_back_reason FROM ometria.orders WHERE sap_key = ? "
                                "AND sap_object = 'ORDR'", [entry])
    assert held == [("implausible_doc_date",)]
    listed = query(env.db, "SELECT detail FROM ops.sync_exceptions WHERE resolved_at IS NULL "
                           "AND rule = 'document_date_implausible' AND record_key = ?", [entry])
    assert len(listed) == 1 and "1899-12-30" in listed[0][0]
    assert not any("1899" in json.dumps(r) for r in env.ometria.records("order").values())
    assert_nothing_lost(env.db, env.ometria, company)


@pytest.fixture
def company_udf_not_served(company):
    """SAP declares U_FirstPurchaseCategory (CUFD lists it) but the Service Layer has not
    restarted since it was added, so business partners come without it."""
    ocrd = company.tables["OCRD"].drop("U_FirstPurchaseCategory")
    return dataclasses.replace(company, tables={**company.tables, "OCRD": ocrd})


@pytest.fixture
def env_udf(company_udf_not_served, tmp_path, monkeypatch, ometria, fast_retries):
    from conftest import _apply
    from faultkit import SAP_PASSWORD, Env

    from sap_ometria_assets.emulators.sap_b1.server import SapB1Emulator
    from sap_ometria_assets.lib.config.settings import get_settings

    with SapB1Emulator(company_udf_not_served, password=SAP_PASSWORD, admin=True) as emu:
        e = Env(tmp_path, emu, ometria, fast_retries)
        _apply(monkeypatch, e)
        yield e
    get_settings(refresh=True)


def test_a_declared_udf_sap_does_not_serve_leaves_only_its_property_out(env_udf,
                                                                       company_udf_not_served):
    run = run_sync()
    assert run.success, run.failures
    assert {"ometria__contacts", "ometria_orders_and_refunds", "ometria_push__contacts"} <= run.succeeded
    listed = query(env_udf.db, "SELECT severity, owner, detail FROM ops.sync_exceptions "
                               "WHERE rule = 'udf_not_served' AND resolved_at IS NULL")
    assert [(r[0], r[1]) for r in listed] == [("WARN", "ops")]
    assert "OCRD.U_FirstPurchaseCategory" in listed[0][2]
    contacts = list(env_udf.ometria.records("contact").values())
    assert contacts and env_udf.ometria.records("order")
    assert not any("first_purchase" in json.dumps(c).lower() for c in contacts)
    assert_nothing_lost(env_udf.db, env_udf.ometria, company_udf_not_served)


def test_an_object_in_a_free_text_udf_is_left_out_and_listed_not_sent_as_json_text(env, company):
    """SAP serves a JSON object in the free-text UDF U_FirstPurchaseCategory (no valid values
    declared) of one customer and a JSON array in another's: the contacts go without that
    property (everything else of them is sent) and each value is listed, not sent as its JSON
    text."""
    ocrd = company.tables["OCRD"]
    codes = ocrd.filter((pl.col("CardType") == "cCustomer") & pl.col("EmailAddress").is_not_null()
                        & ~pl.col("CardCode").is_in(company.planted["bad_emails"]))["CardCode"]
    planted = {codes[10]: {"code": "APP", "label": "Apparel"}, codes[11]: ["Apparel", "Home"]}
    for code, value in planted.items():
        env.sap.faults.malformed_record("BusinessPartners", code, "U_FirstPurchaseCategory", value)

    run = run_sync()

    assert run.success, run.failures
    contacts = env.ometria.records("contact")
    for code in planted:
        [sent] = [c for c in contacts.values() if c.get("customer_id") == code]
        assert "first_purchase_category" not in sent.get("properties", {}), sent
        assert "Apparel" not in json.dumps(sent)
    sent_any = json.dumps(list(contacts.values()))
    assert '"code"' not in sent_any and "APP" not in sent_any
    listed = dict(query(env.db, "SELECT record_key, detail FROM ops.sync_exceptions "
                                "WHERE rule = 'udf_value_not_allowed' AND resolved_at IS NULL"))
    for code in planted:
        assert code in listed and "U_FirstPurchaseCategory" in listed[code], listed
    warned = dict(query(env.db, "SELECT sap_key, warnings FROM ometria.contacts WHERE sap_key IN (?, ?)",
                        list(planted)))
    assert all(any("U_FirstPurchaseCategory" in w for w in warned[code]) for code in planted), warned
    assert_nothing_lost(env.db, env.ometria, company)
