"""Bad values that used to go out as good ones: each is held back or rejected, and listed."""

from __future__ import annotations

import dataclasses
import json

import polars as pl
import pytest
from faultkit import assert_nothing_lost, query, run_sync

BAD_EMAILS = [".user@x.com", "us..er@x.com", "user.@x.com", "us\u200ber@x.com", "us\x01er@x.com"]


@pytest.fixture
def company(company):
    """The demo company with five customers whose emails break RFC 5322 in ways a simple regex
    lets through."""
    ocrd = company.tables["OCRD"]
    customers = ocrd.filter(pl.col("CardType") == "cCustomer")["CardCode"].head(len(BAD_EMAILS))
    bad = dict(zip(customers.to_list(), BAD_EMAILS, strict=True))
    ocrd = ocrd.with_columns(
        pl.col("CardCode").replace_strict(bad, default=pl.col("EmailAddress"),
                                          return_dtype=pl.String).alias("EmailAddress"))
    changed = dataclasses.replace(company, tables={**company.tables, "OCRD": ocrd})
    changed.planted = {**company.planted, "bad_emails": list(bad)}
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
