"""A table refreshed by its differences holds exactly what a full build would."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb

from sap_ometria_assets.lib.warehouse.refresh import (
    Refresh,
    definition_hash,
    full_pass_due,
    record_build,
    refresh_table,
)

IDENTITY = ("id", "version", "note")
SOURCE = "SELECT id, version, note, rowid AS _src FROM src"


def _rows(relation: str) -> str:
    # the costly column, computed only for the identities given
    return f"SELECT n.id, n.version, n.note, upper(s.body) AS body FROM {relation} n JOIN src s ON s.rowid = n._src"


def _full(con) -> list[tuple]:
    return sorted(con.execute("SELECT id, version, note, upper(body) FROM src").fetchall(),
                  key=repr)


def test_refresh_equals_a_full_build_after_inserts_updates_deletes_and_nulls():
    con = duckdb.connect()
    con.execute("CREATE TABLE src AS SELECT i AS id, 1 AS version, CASE WHEN i % 3 = 0 THEN NULL "
                "ELSE 'n' END AS note, 'body ' || i AS body FROM range(1000) t(i)")
    con.execute("CREATE TABLE out AS SELECT id, version, note, upper(body) AS body FROM src")
    assert refresh_table(con, "out", SOURCE, IDENTITY, _rows) == Refresh("refresh", 0, 0)

    con.execute("UPDATE src SET version = 2, body = 'changed ' || id WHERE id % 10 = 1")
    con.execute("DELETE FROM src WHERE id BETWEEN 500 AND 509")
    con.execute("INSERT INTO src VALUES (5000, 1, NULL, 'new'), (5001, 1, 'n', 'newer')")
    con.execute("UPDATE src SET note = NULL WHERE id = 2")  # identity column to NULL
    result = refresh_table(con, "out", SOURCE, IDENTITY, _rows)

    assert sorted(con.execute("FROM out").fetchall(), key=repr) == _full(con)
    # only what changed was rebuilt: 100 updated (one of them deleted too), 2 new, 1 renoted
    assert result.inserted == 99 + 2 + 1
    assert result.deleted == 100 + 10 - 1 + 1
    assert not con.execute("SELECT * FROM duckdb_tables() WHERE table_name LIKE '_refresh%'").fetchall()


def test_full_pass_due_when_missing_redefined_or_old():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA recon")
    now = datetime(2026, 12, 3, 12, tzinfo=timezone.utc)
    definition = definition_hash("SELECT 1")
    assert full_pass_due(con, "recon", "t", definition, now, 24) == "does not exist yet"
    con.execute("CREATE TABLE recon.t AS SELECT 1 AS x")
    assert full_pass_due(con, "recon", "t", definition, now, 24) == "no record of its last build"
    record_build(con, "recon", "t", definition, now, Refresh("full", None, 1))
    assert full_pass_due(con, "recon", "t", definition, now + timedelta(hours=3), 24) is None
    # a refresh keeps the clock of the last full build
    record_build(con, "recon", "t", definition, now + timedelta(hours=3), Refresh("refresh", 0, 0))
    assert full_pass_due(con, "recon", "t", definition, now + timedelta(hours=23), 24) is None
    assert full_pass_due(con, "recon", "t", definition, now + timedelta(hours=25), 24).startswith(
        "periodic full pass")
    assert full_pass_due(con, "recon", "t", definition, now + timedelta(hours=25), 0) is None
    assert full_pass_due(con, "recon", "t", definition_hash("SELECT 2"), now, 24) == \
        "its definition changed"


def test_a_source_column_that_widens_still_refreshes_to_the_full_build():
    # A landed column can widen (INTEGER -> BIGINT) while the table keeps the old type: the
    # rows must then look changed (and be rebuilt), never unchanged.
    con = duckdb.connect()
    con.execute("CREATE TABLE src AS SELECT i AS id, 1 AS version, 'n' AS note, 'b' || i AS body "
                "FROM range(50) t(i)")
    con.execute("CREATE TABLE out AS SELECT CAST(id AS INTEGER) AS id, version, note, upper(body) "
                "AS body FROM src")
    con.execute("UPDATE src SET body = 'changed' WHERE id = 7")
    con.execute("UPDATE src SET version = 2 WHERE id = 7")
    refresh_table(con, "out", SOURCE, IDENTITY, _rows)
    assert sorted(con.execute("FROM out").fetchall(), key=repr) == _full(con)
