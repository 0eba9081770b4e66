"""Email-validator verdicts kept in the warehouse are reused by builds of a few partners (the
orders of an hour, the contacts that changed), only for the installed library version."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from sap_ometria_assets.lib.transforms import people
from sap_ometria_assets.lib.transforms.contacts_build import remember_kept_verdicts


@pytest.fixture
def con(monkeypatch):
    monkeypatch.setattr(people, "_EMAIL_VERDICTS", {})
    c = duckdb.connect()
    c.execute("CREATE SCHEMA ometria")
    version = people._validator_version()
    c.execute("CREATE TABLE ometria._email_verdicts (address VARCHAR, valid BOOLEAN, validator VARCHAR)")
    c.executemany("INSERT INTO ometria._email_verdicts VALUES (?, ?, ?)", [
        ("Alice@example.com", True, version), ("bob@x", False, version),
        ("carol@example.com", True, "email-validator 0.0"), ("dave@example.com", True, version),
    ])
    yield c
    c.close()


def test_kept_verdicts_of_these_addresses_are_used_instead_of_the_library(con, monkeypatch):
    taken = remember_kept_verdicts(con, pl.Series([" alice@EXAMPLE.com ", "bob@x", "carol@example.com"]))
    # matched ignoring case and blanks; the verdict of another library version is not taken,
    # nor that of an address not asked for
    assert taken == 2
    assert people._EMAIL_VERDICTS == {"Alice@example.com": True, "bob@x": False}

    def library(address):
        raise AssertionError(f"email-validator asked about {address}")

    monkeypatch.setattr(people, "_rfc_valid", library)
    assert people.rfc_valid_emails(pl.Series(["bob@x", "Alice@example.com"])).to_list() == [False, True]


def test_without_a_kept_table_nothing_is_taken(con):
    con.execute("DROP TABLE ometria._email_verdicts")
    assert remember_kept_verdicts(con, pl.Series(["bob@x"])) == 0
    assert people._EMAIL_VERDICTS == {}
