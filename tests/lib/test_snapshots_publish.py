"""Publishing a warehouse into its lake: the lake always equals the warehouse, each publish is
one snapshot, nothing changed makes none, retention keeps the latest (lib/snapshots)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from sap_ometria_assets.lib.snapshots.catalog import list_snapshots, resolve_as_of
from sap_ometria_assets.lib.snapshots.lake import Lake, LakeError, attach_for_writing, open_reader
from sap_ometria_assets.lib.snapshots.publish import expire, publish
from sap_ometria_assets.lib.snapshots.rowstate import StateUpdate
from sap_ometria_assets.lib.snapshots.scope import tables_written


@pytest.fixture
def warehouse(tmp_path: Path):
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    for schema in ("sap_raw", "ometria", "ops", "sap_meta"):
        con.execute(f"CREATE SCHEMA {schema}")
    con.execute("CREATE TABLE sap_raw.ocrd AS SELECT 'C' || i AS CardCode, 'name ' || i AS CardName, "
                "md5(i::VARCHAR) AS _row_hash, now() AS _landed_at, NULL::TIMESTAMPTZ AS _deleted_at "
                "FROM range(1000) t(i)")
    con.execute("CREATE TABLE ometria.orders AS SELECT 'SO-' || i AS id, (i * 1.25)::DECIMAL(19,2) AS total, "
                "'{}'::JSON AS payload FROM range(500) t(i)")
    con.execute("CREATE TABLE ops.sync_exceptions (rule VARCHAR, n INTEGER)")
    con.execute("INSERT INTO ops.sync_exceptions VALUES ('a', 1), ('a', 1), ('b', 2)")  # exact duplicates
    con.execute("CREATE VIEW ops.rules AS SELECT DISTINCT rule FROM ops.sync_exceptions")
    con.execute("CREATE TABLE ometria._private_state AS SELECT 1 AS x")
    con.execute("CREATE TABLE sap_meta.watermarks AS SELECT 1 AS x")
    yield path, con
    con.close()


def _contents(con, database: str) -> dict[str, list]:
    out = {}
    for table in ("sap_raw.ocrd", "ometria.orders", "ops.sync_exceptions", "ops.rules"):
        try:
            out[table] = sorted(con.execute(f"SELECT * FROM {database}.{table}").fetchall(), key=repr)
        except duckdb.CatalogException:
            out[table] = None
    return out


def _assert_lake_equals_warehouse(path: Path, con) -> None:
    wh = _contents(con, "warehouse")
    with open_reader(Lake.for_warehouse(path)) as reader:
        assert _contents(reader, "lake") == wh


def test_publish_copies_the_read_schemas_and_nothing_private(warehouse):
    path, con = warehouse
    result = publish(con, Lake.for_warehouse(path), "run-1")
    assert result.snapshot_id is not None
    _assert_lake_equals_warehouse(path, con)
    with open_reader(Lake.for_warehouse(path)) as reader:
        tables = {f"{s}.{t}" for s, t in reader.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'lake'").fetchall()}
    # the transforms' private state (`_` tables) stays in the warehouse
    assert tables == {"sap_raw.ocrd", "ometria.orders", "ops.sync_exceptions", "sap_meta.watermarks"}
    [snap] = list_snapshots(Lake.for_warehouse(path))
    assert snap.run_id == "run-1" and "ometria.orders" in snap.tables


def test_nothing_changed_makes_no_snapshot(warehouse):
    path, con = warehouse
    lake = Lake.for_warehouse(path)
    first = publish(con, lake, "run-1")
    again = publish(con, lake, "run-2")
    assert again.snapshot_id is None and again.tables_changed == []
    assert [s.snapshot_id for s in list_snapshots(lake)] == [first.snapshot_id]


def test_changes_are_published_as_deletes_and_inserts_of_the_changed_rows_only(warehouse):
    path, con = warehouse
    lake = Lake.for_warehouse(path)
    first = publish(con, lake, "run-1")
    con.execute("UPDATE sap_raw.ocrd SET CardName = 'renamed', _row_hash = 'x' WHERE CardCode = 'C7'")
    con.execute("UPDATE sap_raw.ocrd SET _deleted_at = now() WHERE CardCode = 'C8'")  # same _row_hash
    con.execute("DELETE FROM ometria.orders WHERE id = 'SO-3'")
    con.execute("INSERT INTO ometria.orders VALUES ('SO-new', 9.99, '{\"a\": 1}')")
    second = publish(con, lake, "run-2")
    assert second.snapshot_id > first.snapshot_id
    assert sorted(second.tables_changed) == ["ometria.orders", "sap_raw.ocrd"]
    # two business partners re-written, one order gone, one new
    assert (second.rows_deleted, second.rows_inserted) == (3, 3)
    _assert_lake_equals_warehouse(path, con)
    # the first snapshot still reads as it was
    with open_reader(lake, snapshot_version=first.snapshot_id) as old:
        assert old.execute("SELECT CardName FROM sap_raw.ocrd WHERE CardCode = 'C7'").fetchall() == [("name 7",)]
        assert old.execute("SELECT count(*) FROM ometria.orders WHERE id = 'SO-3'").fetchall() == [(1,)]


def test_duplicates_new_columns_new_and_dropped_tables_and_views(warehouse):
    path, con = warehouse
    lake = Lake.for_warehouse(path)
    publish(con, lake, "run-1")
    con.execute("DELETE FROM ops.sync_exceptions WHERE rule = 'a'")
    con.execute("INSERT INTO ops.sync_exceptions VALUES ('a', 1)")           # 2 copies -> 1
    con.execute("ALTER TABLE ometria.orders ADD COLUMN currency VARCHAR DEFAULT 'GBP'")
    con.execute("CREATE TABLE ometria.refunds AS SELECT 'CN-1' AS id")
    con.execute("CREATE OR REPLACE VIEW ops.rules AS SELECT rule, count(*) AS n FROM ops.sync_exceptions GROUP BY rule")
    result = publish(con, lake, "run-2")
    assert result.tables_created == ["ometria.refunds"]
    _assert_lake_equals_warehouse(path, con)
    with open_reader(lake) as reader:
        assert reader.execute("SELECT DISTINCT currency FROM ometria.orders").fetchall() == [("GBP",)]
    con.execute("DROP TABLE ometria.refunds")
    publish(con, lake, "run-3")
    with open_reader(lake) as reader, pytest.raises(duckdb.CatalogException):
        reader.execute("SELECT * FROM ometria.refunds")


def test_only_candidate_tables_are_compared(warehouse):
    path, con = warehouse
    lake = Lake.for_warehouse(path)
    publish(con, lake, "run-1")
    con.execute("DELETE FROM ometria.orders WHERE id = 'SO-1'")
    con.execute("DELETE FROM sap_raw.ocrd WHERE CardCode = 'C1'")
    stock_run = publish(con, lake, "run-2", candidates=tables_written([_Key(["sap_raw", "ocrd"])]))
    assert stock_run.tables_changed == ["sap_raw.ocrd"] and stock_run.tables_compared == 2  # + sap_meta
    later = publish(con, lake, "run-3")  # the next run that writes orders publishes them
    assert later.tables_changed == ["ometria.orders"]
    _assert_lake_equals_warehouse(path, con)


class _Key:
    def __init__(self, path):
        self.path = path


def test_retention_expires_old_snapshots_but_never_the_latest(warehouse):
    path, con = warehouse
    lake = Lake.for_warehouse(path)
    ids = []
    for i in range(3):
        con.execute(f"INSERT INTO ometria.orders VALUES ('SO-x{i}', 1, '{{}}')")
        ids.append(publish(con, lake, f"run-{i}", retention_days=30).snapshot_id)
    assert [s.snapshot_id for s in list_snapshots(lake)] == ids[::-1]  # none old enough yet
    attach_for_writing(con, lake)
    try:
        assert expire(con, 0) >= 2  # everything is older than "0 days ago" but the latest
    finally:
        con.execute("DETACH lake")
    assert [s.snapshot_id for s in list_snapshots(lake)] == [ids[-1]]
    _assert_lake_equals_warehouse(path, con)
    with pytest.raises(LakeError, match="unknown snapshot"):
        resolve_as_of(lake, str(ids[0]))


def test_as_of_resolves_ids_and_times_and_refuses_the_rest(warehouse):
    path, con = warehouse
    lake = Lake.for_warehouse(path)
    with pytest.raises(LakeError, match="no published snapshot yet"):
        resolve_as_of(lake, None)
    first = publish(con, lake, "run-1").snapshot_id
    con.execute("DELETE FROM ometria.orders WHERE id = 'SO-2'")
    second = publish(con, lake, "run-2").snapshot_id
    assert resolve_as_of(lake, None).snapshot_id == second
    assert resolve_as_of(lake, str(first)).snapshot_id == first
    first_time = resolve_as_of(lake, str(first)).time
    assert resolve_as_of(lake, first_time.isoformat()).snapshot_id == first
    with pytest.raises(LakeError, match="no snapshot as of"):
        resolve_as_of(lake, "2001-01-01")
    with pytest.raises(LakeError, match="neither a snapshot id nor a timestamp"):
        resolve_as_of(lake, "yesterday")


def test_row_hashes_read_few_columns_but_every_one_that_can_change_alone():
    from sap_ometria_assets.lib.snapshots.publish import row_hash_columns

    sap = ["CardCode", "CardName", "Phone1", "_row_hash", "_landed_at", "_deleted_at"]
    assert row_hash_columns("sap_raw", "ocrd", sap) == ["CardCode", "_row_hash", "_landed_at", "_deleted_at"]
    # history: SAP's change time columns (not SAP properties) count, the properties do not
    history = [*sap, "valid_from", "valid_to", "_valid_from", "_valid_to"]
    assert set(row_hash_columns("sap_history", "ocrd", history, frozenset(sap))) == {
        "CardCode", "_row_hash", "_landed_at", "_deleted_at", "valid_from", "valid_to",
        "_valid_from", "_valid_to"}
    orders = ["id", "status", "payload", "payload_hash", "held_back_reason"]
    assert row_hash_columns("ometria", "orders", orders) == ["id", "status", "payload_hash", "held_back_reason"]
    assert row_hash_columns("recon", "orders_by_day", ["day", "n"]) == ["day", "n"]


def _third_and_fourth_publish(path: Path, con, lake: Lake) -> None:
    con.execute("UPDATE sap_raw.ocrd SET CardName = 'third', _row_hash = 'y' WHERE CardCode IN ('C1', 'C2')")
    assert publish(con, lake, "run-3").snapshot_id is not None
    _assert_lake_equals_warehouse(path, con)
    con.execute("DELETE FROM sap_raw.ocrd WHERE CardCode = 'C3'")
    con.execute("UPDATE sap_raw.ocrd SET CardName = 'fourth', _row_hash = 'z' WHERE CardCode = 'C1'")
    publish(con, lake, "run-4")
    _assert_lake_equals_warehouse(path, con)


def test_the_lake_rows_are_remembered_privately_and_a_write_to_the_lake_is_noticed(warehouse):
    """The warehouse remembers the lake's rows (never published); when someone else wrote to
    the lake, the publish does not trust what it remembers and still makes the lake equal."""
    path, con = warehouse
    lake = Lake.for_warehouse(path)
    publish(con, lake, "run-1")
    con.execute("UPDATE sap_raw.ocrd SET CardName = 'second', _row_hash = 'x' WHERE CardCode = 'C7'")
    publish(con, lake, "run-2")
    assert con.execute("SELECT count(*) FROM _published.\"sap_raw.ocrd\"").fetchall() == [(1000,)]
    with open_reader(lake) as reader:
        assert reader.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake' "
                              "AND starts_with(schema_name, '_')").fetchall() == [(0,)]
    other = duckdb.connect()
    attach_for_writing(other, lake)
    other.execute("DELETE FROM lake.sap_raw.ocrd WHERE CardCode IN ('C10', 'C11')")
    other.execute("INSERT INTO lake.ometria.orders VALUES ('stray', 1, '{}')")
    other.close()
    _third_and_fourth_publish(path, con, lake)


def test_a_stop_between_the_lake_commit_and_the_warehouse_update_is_recovered(warehouse, monkeypatch):
    path, con = warehouse
    lake = Lake.for_warehouse(path)
    publish(con, lake, "run-1")
    con.execute("UPDATE sap_raw.ocrd SET CardName = 'second', _row_hash = 'x' WHERE CardCode IN ('C7', 'C8')")

    def stop(*_args, **_kwargs):
        raise duckdb.IOException("the process stopped")

    with monkeypatch.context() as patch:
        patch.setattr(StateUpdate, "apply", stop)
        assert publish(con, lake, "run-2").snapshot_id is not None  # the lake committed, the warehouse did not
    _assert_lake_equals_warehouse(path, con)
    _third_and_fourth_publish(path, con, lake)
