"""What the lake holds, remembered in the warehouse: the publish diffs without reading the lake.

For each published table the private schema `_published` of the working warehouse keeps one
row per lake row: DuckLake's stable row id (`rowid`, kept across snapshots and compaction) and
the row hash the publish compares on. A changed table is then diffed on the warehouse alone
(its hashes against the remembered ones, both columnar and local); the lake only sees the
changed rows: `DELETE ... WHERE rowid IN (...)` and an `INSERT` of the new ones. After the lake
commit, the remembered rows are brought up to date from what that snapshot inserted
(`ducklake_table_insertions`, which reads the new files only).

The state belongs to one lake snapshot (`_published._state`: id and commit time). When the
lake's latest snapshot is another one (someone wrote to the lake, the run stopped between the
lake commit and the warehouse update, the warehouse was restored from a backup), every
remembered table is forgotten, and a table without remembered rows is read from the lake once
(today's full diff), so a publish never trusts a state that may be wrong. `_published` is not
a published schema, so it never reaches the lake.
"""

from __future__ import annotations

import duckdb

from sap_ometria_assets.lib.snapshots.lake import ALIAS
from sap_ometria_assets.lib.warehouse.sql import lit, q, transaction

SCHEMA = "_published"
STATE = "_state"

Key = tuple[str, str]


def rows_table(wh: str, key: Key) -> str:
    """The remembered (rid, h) rows of one published table."""
    return f"{q(wh)}.{SCHEMA}.{q(key[0] + '.' + key[1])}"


def latest_snapshot(con: duckdb.DuckDBPyConnection) -> tuple[int, str]:
    sid, at = con.execute(f"SELECT snapshot_id, snapshot_time::VARCHAR FROM {ALIAS}.snapshots() "
                          "ORDER BY snapshot_id DESC LIMIT 1").fetchall()[0]
    return int(sid), str(at)


def remembered(con: duckdb.DuckDBPyConnection, wh: str) -> set[Key] | None:
    """The tables whose lake rows are remembered; None when the state is missing or belongs to
    another snapshot than the lake's latest (nothing the lake holds can then be assumed)."""
    names = {n for (n,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
                                        "AND schema_name = ?", [wh, SCHEMA]).fetchall()}
    if STATE not in names:
        return None
    state = con.execute(f"SELECT snapshot_id, snapshot_time FROM {q(wh)}.{SCHEMA}.{STATE}").fetchall()
    if not state or tuple(state[0]) != latest_snapshot(con):
        return None
    return {tuple(n.split(".", 1)) for n in names if "." in n}  # type: ignore[misc]


def lake_rows(con: duckdb.DuckDBPyConnection, key: Key, hash_sql: str, into: str) -> None:
    """Read the lake's rows of one table once (no remembered state): (rid, h) into a temp table."""
    con.execute(f"CREATE TEMP TABLE {into} AS SELECT rowid AS rid, {hash_sql} AS h "
                f"FROM {ALIAS}.{q(key[0])}.{q(key[1])}")


class StateUpdate:
    """What the publish changed per table, written to `_published` after the lake commit."""

    def __init__(self) -> None:
        self.whole: dict[Key, str] = {}                # table -> hash SQL: remember all its lake rows
        self.diffed: dict[Key, tuple[str, str]] = {}   # table -> (hash SQL, temp table of deleted rids)
        self.bases: dict[Key, str] = {}                # table -> temp table of its rows read from the lake
        self.dropped: list[Key] = []

    def apply(self, con: duckdb.DuckDBPyConnection, wh: str, snapshot: tuple[int, str] | None,
              valid: set[Key] | None) -> None:
        """One warehouse transaction. `snapshot`: the new lake snapshot (None: nothing was
        committed, only the rows read from the lake are kept). `valid`: tables remembered before (None: none can be trusted)."""
        if snapshot is None and not self.bases:
            return
        with transaction(con):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {q(wh)}.{SCHEMA}")
            if valid is None:  # the state did not match the lake: forget every table first
                for (name,) in con.execute(
                        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = ?",
                        [wh, SCHEMA]).fetchall():
                    con.execute(f"DROP TABLE {q(wh)}.{SCHEMA}.{q(name)}")
            for key, base in self.bases.items():
                if key not in self.whole:
                    con.execute(f"CREATE OR REPLACE TABLE {rows_table(wh, key)} AS SELECT rid, h FROM temp.main.{base}")
            if snapshot is not None:
                sid = snapshot[0]
                for key, hash_sql in self.whole.items():
                    con.execute(f"CREATE OR REPLACE TABLE {rows_table(wh, key)} AS SELECT rowid AS rid, "
                                f"{hash_sql} AS h FROM {ALIAS}.{q(key[0])}.{q(key[1])}")
                for key, (hash_sql, deleted) in self.diffed.items():
                    if key in self.whole:
                        continue
                    dst = rows_table(wh, key)
                    con.execute(f"DELETE FROM {dst} WHERE rid IN (SELECT rid FROM temp.main.{deleted})")
                    con.execute(
                        f"INSERT INTO {dst} SELECT rowid, {hash_sql} FROM ducklake_table_insertions("
                        f"{lit(ALIAS)}, {lit(key[0])}, {lit(key[1])}, {sid}, {sid})")
                for key in self.dropped:
                    con.execute(f"DROP TABLE IF EXISTS {rows_table(wh, key)}")
            state = snapshot or latest_snapshot(con)
            con.execute(f"CREATE OR REPLACE TABLE {q(wh)}.{SCHEMA}.{STATE} AS "
                        f"SELECT {state[0]}::BIGINT AS snapshot_id, {lit(state[1])} AS snapshot_time")
