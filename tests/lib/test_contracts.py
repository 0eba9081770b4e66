"""Contract of the landed SAP tables: removed or retyped contract columns break it; columns
beyond the contract are drift, reported but never breaking."""

from datetime import datetime, timedelta, timezone

import duckdb
import pytest
from checks_fixtures import create_sap_table, insert

from sap_ometria_assets.lib.quality.contracts import (
    check_contract,
    normalise_type,
    schema_drift,
    types_compatible,
)
from sap_ometria_assets.lib.sap.tables import contract_columns, essential_columns, optional_columns

T = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def con():
    c = duckdb.connect()
    for schema in ("sap_raw", "sap_meta"):
        c.execute(f"CREATE SCHEMA {schema}")
    c.execute("CREATE TABLE sap_meta.extract_columns (table_name VARCHAR, column_name VARCHAR, "
              "column_type VARCHAR, seen_at TIMESTAMPTZ)")
    c.execute("CREATE TABLE sap_meta.rejected_values (table_name VARCHAR, record_key VARCHAR, "
              "column_name VARCHAR, raw_value VARCHAR, seen_at TIMESTAMPTZ)")
    c.execute("CREATE TABLE sap_meta.schema_changes (table_name VARCHAR, column_name VARCHAR, "
              "change VARCHAR, old_type VARCHAR, new_type VARCHAR, seen_at TIMESTAMPTZ)")
    yield c
    c.close()


def record_extract(con, table, columns: dict[str, str], seen_at=T):
    """What the landing writes: the columns this extract returned (replacing the previous)."""
    con.execute("DELETE FROM sap_meta.extract_columns WHERE table_name = ?", [table])
    con.executemany("INSERT INTO sap_meta.extract_columns VALUES (?, ?, ?, ?)",
                    [[table, c, t, seen_at] for c, t in columns.items()])


@pytest.mark.parametrize(("expected", "observed", "ok"), [
    ("DECIMAL(19,6)", "DECIMAL(19,6)", True),
    ("DECIMAL(19,6)", "BIGINT", True),          # whole amounts
    ("DECIMAL(19,6)", "DECIMAL(15,2)", True),   # fits: 13 integer digits, 2 decimals
    ("DECIMAL(19,6)", "DECIMAL(38,10)", False),  # does not fit
    ("DECIMAL(19,6)", "DOUBLE", False),         # never binary floating point for money
    ("DECIMAL(19,6)", "VARCHAR", False),
    ("INTEGER", "BIGINT", True),
    ("INTEGER", "VARCHAR", False),
    ("VARCHAR", "TEXT", True),
    ("VARCHAR", "INTEGER", False),
    ("DATE", "TIMESTAMP WITH TIME ZONE", True),  # v2 sends dates with a nominal time
    ("DATE", "VARCHAR", False),
    ("JSON", "VARCHAR", True),
    ("JSON", "STRUCT(\"Value\" VARCHAR)[]", True),
    ("INTEGER", "NULL", True),                   # an all-null column tells nothing
])
def test_types_compatible(expected, observed, ok):
    assert types_compatible(expected, observed) is ok


def test_normalise_type_aliases():
    assert normalise_type("int") == "INTEGER"
    assert normalise_type("decimal(19, 6)") == "DECIMAL(19,6)"
    assert normalise_type("varchar(50)") == "VARCHAR"


def test_extract_matching_the_contract_passes(con):
    create_sap_table(con, "ocrd", {"U_LoyaltyTier": "VARCHAR"})
    record_extract(con, "ocrd", {**contract_columns("ocrd"), "U_LoyaltyTier": "VARCHAR"})
    report = check_contract(con, "ocrd")
    assert report.ok, report.summary()
    assert report.extra == {"U_LoyaltyTier": "VARCHAR"}
    assert len(report.sources) == 2


def test_a_removed_column_in_the_latest_extract_breaks_the_contract(con):
    create_sap_table(con, "ocrd")  # the table keeps the column; the extract no longer has it
    cols = dict(contract_columns("ocrd"))
    record_extract(con, "ocrd", cols, seen_at=T - timedelta(days=1))
    del cols["EmailAddress"]
    record_extract(con, "ocrd", cols, seen_at=T)
    report = check_contract(con, "ocrd")
    assert not report.ok
    assert set(report.removed) == {"EmailAddress"}
    assert "EmailAddress" in report.summary() and "downstream of it will not run" in report.summary()


def test_an_optional_column_missing_or_retyped_only_degrades_the_contract(con):
    """UserFieldsMD.SubType, Description, Size, ValidValuesMD: nothing downstream needs them."""
    assert optional_columns("cufd") == {"SubType", "Description", "Size", "ValidValuesMD"}
    assert "SubType" not in essential_columns("cufd") and "Name" in essential_columns("cufd")
    create_sap_table(con, "cufd", retype={"Size": "VARCHAR"})
    cols = dict(contract_columns("cufd"))
    del cols["SubType"]
    record_extract(con, "cufd", cols)
    report = check_contract(con, "cufd")
    assert report.ok and report.degraded
    assert report.removed == {} and report.retyped == []
    assert set(report.optional_removed) == {"SubType"}
    assert [t.column for t in report.optional_retyped] == ["Size"]
    assert "SubType" in report.summary() and "nothing is blocked" in report.summary()


def test_an_essential_column_breaks_the_contract_and_names_optional_ones_too(con):
    create_sap_table(con, "cufd")
    cols = dict(contract_columns("cufd"))
    del cols["SubType"], cols["Name"]
    record_extract(con, "cufd", cols)
    report = check_contract(con, "cufd")
    assert not report.ok and set(report.removed) == {"Name"}
    assert set(report.optional_removed) == {"SubType"}
    assert "missing: Name" in report.summary() and "SubType" in report.summary()


def test_a_column_missing_from_the_table_breaks_the_contract(con):
    create_sap_table(con, "rdr1", drop=("LineTotal",))
    report = check_contract(con, "rdr1")
    assert set(report.removed) == {"LineTotal"} and "sap_raw.rdr1" in report.removed["LineTotal"]


def test_a_changed_type_breaks_the_contract(con):
    create_sap_table(con, "ordr", retype={"DocTotal": "DOUBLE"})
    report = check_contract(con, "ordr")
    assert [(t.column, t.expected, t.observed) for t in report.retyped] == [
        ("DocTotal", "DECIMAL(19,6)", "DOUBLE")]


def test_a_missing_table_breaks_the_contract(con):
    report = check_contract(con, "orin")
    assert report.missing_table and not report.ok
    assert "does not exist" in report.summary()


def test_unreadable_values_are_a_type_change_only_when_most_records_have_them(con):
    create_sap_table(con, "ordr")
    record_extract(con, "ordr", contract_columns("ordr"))
    insert(con, "sap_raw", "ordr", [{"DocEntry": i, "_landed_at": T} for i in range(10)])
    # two bad records out of ten: bad input, not a new type
    con.executemany("INSERT INTO sap_meta.rejected_values VALUES ('ordr', ?, 'DocTotal', 'abc', ?)",
                    [[str(i), T] for i in range(2)])
    report = check_contract(con, "ordr")
    assert report.ok and report.unreadable == {"DocTotal": (2, 10, "abc")}
    # eight of ten: SAP now sends text in DocTotal
    con.executemany("INSERT INTO sap_meta.rejected_values VALUES ('ordr', ?, 'DocTotal', 'abc', ?)",
                    [[str(i), T] for i in range(2, 8)])
    report = check_contract(con, "ordr")
    assert not report.ok and report.retyped[0].column == "DocTotal"
    assert "8 of 10" in report.retyped[0].observed


def test_new_udf_is_drift_for_a_few_days_and_contract_columns_never_are(con):
    create_sap_table(con, "ocrd", {"U_NewSegment": "VARCHAR"})
    con.executemany("INSERT INTO sap_meta.schema_changes VALUES ('ocrd', ?, ?, ?, ?, ?)", [
        ["U_NewSegment", "added", None, "VARCHAR", T - timedelta(days=1)],
        ["U_OldField", "added", None, "VARCHAR", T - timedelta(days=30)],
        ["Cellular", "added", None, "VARCHAR", T - timedelta(days=1)],  # a contract column
        ["U_Score", "type_changed", "BIGINT", "DECIMAL(38,6)", T - timedelta(hours=2)],
    ])
    report = schema_drift(con, "ocrd", T, warn_days=7)
    assert report.new == {"U_NewSegment": "VARCHAR"}
    assert report.widened == {"U_Score": ("BIGINT", "DECIMAL(38,6)")}
    assert "U_NewSegment" in report.summary()
    assert not schema_drift(con, "ocrd", T + timedelta(days=8), warn_days=7).has_drift


def test_no_drift_recorded_yet(con):
    con.execute("DROP TABLE sap_meta.schema_changes")
    report = schema_drift(con, "ocrd", T, warn_days=7)
    assert not report.has_drift and not report.recorded
