"""Publishing the working warehouse into the lake: one DuckLake transaction = one snapshot.

What is published: every table and view of the schemas people read (`PUBLISHED_SCHEMAS`),
under the same schema.table names, except the transforms' private state (tables whose name
starts with `_`). `sap_meta` (watermarks, extract columns, rejected values) goes too: "up to
which SAP change was this landed" is a reader's question. No table holds a secret (secrets are
never written to DuckDB), so nothing is filtered.

Cost follows what changed, not the warehouse:
- only candidate tables are looked at: the ones the run wrote (the caller names them), or all;
- each candidate's fingerprint (row count and the sum of its row hashes, computed on the
  warehouse alone) is compared with the one remembered at the last publish: an unchanged table
  costs one scan of its fingerprint columns and never touches the lake;
- a changed table is compared row by row with the lake's rows as the warehouse remembers them
  (rowstate.py: DuckLake row ids and row hashes, so the lake is not read) on the same row hashes
  (for landed SAP tables and their history: the key, `_row_hash` and the columns that are not
  SAP properties, `_landed_at`, `_deleted_at`, validity times...; for Ometria records every
  column but the JSON `payload`, which `payload_hash` stands for; elsewhere the whole row): rows whose hash disappeared are
  deleted from the lake by row id, rows whose hash is new are inserted; when that memory does
  not belong to the lake's latest snapshot, every table is compared with the lake itself once;
- exact duplicate rows that came out in another number make the table be copied whole; so does
  a change of column type (the lake table is re-created). A new column is an `ALTER TABLE ...
  ADD COLUMN`, a removed one a `DROP COLUMN`; a new table is created, a dropped one dropped;
- nothing changed: the transaction is rolled back, so no empty snapshot is ever made.

The commit carries DuckLake's author `sap-ometria`, the message `run <run id>` and, in
`extra_info` (JSON), the run id, the tables changed (what `sap-ometria snapshots` shows), and
the fingerprints of tables and views the next publish compares with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

import duckdb

from sap_ometria_assets.lib.sap.tables import TABLES_BY_NAME
from sap_ometria_assets.lib.snapshots import rowstate
from sap_ometria_assets.lib.snapshots.lake import ALIAS, AUTHOR, Lake, attach_for_writing
from sap_ometria_assets.lib.snapshots.scope import is_candidate
from sap_ometria_assets.lib.warehouse.sql import lit, q

log = logging.getLogger(__name__)

PUBLISHED_SCHEMAS = ("sap_raw", "sap_history", "sap_meta", "ometria", "ometria_push", "ops", "recon")

Key = tuple[str, str]


@dataclass
class PublishResult:
    snapshot_id: int | None          # the new snapshot; None when nothing changed
    seconds: float = 0.0
    tables_changed: list[str] = field(default_factory=list)
    tables_created: list[str] = field(default_factory=list)
    rows_deleted: int = 0
    rows_inserted: int = 0
    tables_compared: int = 0         # fingerprinted on the warehouse
    tables_diffed: int = 0           # compared row by row with the lake
    expired_snapshots: int = 0


def _sap_keys() -> dict[str, tuple[str, ...]]:
    keys = {}
    for spec in TABLES_BY_NAME.values():
        keys[spec.table] = spec.key
        for child in spec.children:
            keys[child.table] = child.key
    return keys


SAP_KEYS = _sap_keys()


def row_hash_columns(schema: str, table: str, columns: list[str],
                     sap_columns: frozenset[str] = frozenset()) -> list[str]:
    """The columns whose hash identifies a version of a row (see the module docstring): the
    narrower, the less of the lake a publish reads. SAP rows: `_row_hash` stands for SAP's
    properties (`sap_columns`: the landed table's), so the key, `_row_hash` and every column
    that is not a SAP property (landing and history times) are enough. Ometria records:
    `payload_hash` stands for the JSON `payload`."""
    if schema in ("sap_raw", "sap_history") and "_row_hash" in columns and table in SAP_KEYS:
        wanted = [*SAP_KEYS[table], *(c for c in columns
                                      if c.startswith("_") or (sap_columns and c not in sap_columns))]
        if all(c in columns for c in wanted):
            return list(dict.fromkeys(wanted))
    if "payload" in columns and "payload_hash" in columns:
        return [c for c in columns if c != "payload"]
    return columns


def _row_hash(columns: list[str]) -> str:
    return f"hash({', '.join(q(c) for c in columns)})"


def objects(con: duckdb.DuckDBPyConnection, database: str) -> tuple[dict[Key, dict[str, str]], dict[Key, str]]:
    """Tables (with their columns and types, in order) and views (with their SQL) of the
    published schemas of one database, in two catalogue queries."""
    schemas = ", ".join(lit(s) for s in PUBLISHED_SCHEMAS)
    rows = con.execute(
        "SELECT c.schema_name, c.table_name, c.column_name, c.data_type FROM duckdb_columns() c "
        "JOIN duckdb_tables() t USING (database_name, schema_name, table_name) "
        f"WHERE c.database_name = ? AND c.schema_name IN ({schemas}) "
        "AND NOT starts_with(c.table_name, '_') ORDER BY 1, 2, c.column_index", [database]).fetchall()
    tables: dict[Key, dict[str, str]] = {}
    for schema, table, column, dtype in rows:
        tables.setdefault((schema, table), {})[column] = dtype
    views = con.execute(
        f"SELECT schema_name, view_name, sql FROM duckdb_views() WHERE database_name = ? "
        f"AND schema_name IN ({schemas}) AND NOT internal ORDER BY 1, 2", [database]).fetchall()
    return tables, {(s, v): sql for s, v, sql in views}


def _name(key: Key) -> str:
    return f"{key[0]}.{key[1]}"


def _last_commit_info(con: duckdb.DuckDBPyConnection) -> dict:
    rows = con.execute(f"SELECT commit_extra_info FROM {ALIAS}.snapshots() WHERE author = ? "
                       "ORDER BY snapshot_id DESC LIMIT 1", [AUTHOR]).fetchall()
    try:
        info = json.loads(rows[0][0]) if rows and rows[0][0] else {}
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _view_body(sql: str) -> str:
    """The SELECT of a `CREATE VIEW name AS SELECT ...;` statement."""
    at = sql.upper().find(" AS ")
    return sql[at + 4:].rstrip().rstrip(";") if at >= 0 else sql


class _Publisher:
    def __init__(self, con: duckdb.DuckDBPyConnection, warehouse_db: str):
        self.con = con
        self.wh = warehouse_db
        self.result = PublishResult(None)
        self.temps: list[str] = []
        self.sap_columns: dict[str, frozenset[str]] = {}  # sap_raw table -> its columns
        self.wh_cols: dict[Key, dict[str, str]] = {}
        self.hashes: dict[Key, str] = {}  # table -> temp table of (warehouse rowid, row hash)
        self.valid: set[Key] | None = None  # tables whose lake rows the warehouse remembers (rowstate.py)
        self.state = rowstate.StateUpdate()

    def hash_columns(self, key: Key, columns: list[str]) -> list[str]:
        sap = self.sap_columns.get(key[1], frozenset()) if key[0] == "sap_history" else frozenset()
        return row_hash_columns(key[0], key[1], columns, sap)

    def row_hash_sql(self, key: Key) -> str:
        return _row_hash(self.hash_columns(key, list(self.wh_cols[key])))

    def src(self, key: Key) -> str:
        return f"{q(self.wh)}.{q(key[0])}.{q(key[1])}"

    @staticmethod
    def dst(key: Key) -> str:
        return f"{ALIAS}.{q(key[0])}.{q(key[1])}"

    def count(self, table_sql: str) -> int:
        return self.con.execute(f"SELECT count(*) FROM {table_sql}").fetchall()[0][0]

    def fingerprint(self, key: Key, columns: dict[str, str]) -> str:
        """Row count, sum of row hashes and the column types: equal = same content. The row
        hashes (with the warehouse row ids) stay in a temp table for the diff: one hash scan."""
        h = _row_hash(self.hash_columns(key, list(columns)))
        hashes = self.hashes[key] = f"_publish_wh_{len(self.temps)}"
        self.temps.append(hashes)
        self.con.execute(f"CREATE TEMP TABLE {hashes} AS SELECT rowid AS wrid, {h} AS h FROM {self.src(key)}")
        n, total = self.con.execute(f"SELECT count(*), sum(h) FROM temp.main.{hashes}").fetchall()[0]
        types = hashlib.sha256(json.dumps(columns).encode()).hexdigest()[:12]
        return f"{n}:{total or 0}:{types}"

    def forget_hashes(self, key: Key) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS temp.main.{self.hashes.pop(key)}")

    def plan(self, key: Key, wh_cols: dict[str, str], lake_cols: dict[str, str] | None) -> dict | None:
        """What must change in the lake for this table (None: nothing)."""
        if lake_cols is None:
            return {"action": "create"}
        if any(lake_cols[c] != t for c, t in wh_cols.items() if c in lake_cols):
            return {"action": "retype"}
        added = {c: t for c, t in wh_cols.items() if c not in lake_cols}
        dropped = [c for c in lake_cols if c not in wh_cols]
        if added or dropped:  # rare (SAP added a field): evolve the table, copy its rows again
            return {"action": "evolve", "added": added, "dropped": dropped}
        self.result.tables_diffed += 1
        h = _row_hash(self.hash_columns(key, list(wh_cols)))
        i = len(self.temps)
        if self.valid is not None and key in self.valid:  # the lake's rows as remembered in the warehouse (rowstate.py)
            rows = rowstate.rows_table(self.wh, key)
        else:  # not remembered (yet, or no longer trusted): read the lake once
            base = f"_publish_lake_{i}"
            self.temps.append(base)
            rowstate.lake_rows(self.con, key, h, base)
            self.state.bases[key] = base
            rows = f"temp.main.{base}"
        deleted, inserted, diff = f"_publish_del_{i}", f"_publish_ins_{i}", f"_publish_diff_{i}"
        self.temps += [deleted, inserted, diff]
        # on the warehouse alone, in one join: lake rows whose hash is gone (delete by lake row
        # id), warehouse rows whose hash the lake lacks (insert by warehouse row id)
        self.con.execute(f"CREATE TEMP TABLE {diff} AS SELECT r.rid, w.wrid FROM temp.main.{self.hashes[key]} w "
                         f"FULL JOIN {rows} r ON w.h = r.h WHERE w.h IS NULL OR r.h IS NULL")
        self.con.execute(f"CREATE TEMP TABLE {deleted} AS SELECT rid FROM temp.main.{diff} WHERE rid IS NOT NULL")
        self.con.execute(f"CREATE TEMP TABLE {inserted} AS SELECT wrid FROM temp.main.{diff} WHERE wrid IS NOT NULL")
        self.forget_hashes(key)
        n_del, n_ins, n_src, n_dst = self.con.execute(
            f"SELECT (SELECT count(*) FROM temp.main.{deleted}), (SELECT count(*) FROM temp.main.{inserted}), "
            f"(SELECT count(*) FROM {self.src(key)}), (SELECT count(*) FROM {rows})").fetchall()[0]
        if not n_del and not n_ins:
            return None if n_src == n_dst else {"action": "copy"}  # exact duplicates, recounted
        return {"action": "diff", "hash": h, "deleted": deleted, "inserted": inserted,
                "n_del": n_del, "n_after": n_dst - n_del}

    def _copy_rows(self, key: Key) -> None:
        self.result.rows_deleted += self.count(self.dst(key))
        self.con.execute(f"DELETE FROM {self.dst(key)}")
        self.con.execute(f"INSERT INTO {self.dst(key)} BY NAME SELECT * FROM {self.src(key)}")
        self.result.rows_inserted += self.count(self.src(key))

    def apply(self, key: Key, plan: dict) -> None:
        src, dst, con = self.src(key), self.dst(key), self.con
        action = plan["action"]
        if action in ("create", "retype"):
            if action == "retype":
                self.result.rows_deleted += self.count(dst)
                con.execute(f"DROP TABLE {dst}")
            con.execute(f"CREATE TABLE {dst} AS SELECT * FROM {src}")
            self.state.whole[key] = self.row_hash_sql(key)
            changed = self.result.tables_created if action == "create" else self.result.tables_changed
            changed.append(_name(key))
            self.result.rows_inserted += self.count(src)
            return
        self.result.tables_changed.append(_name(key))
        if action == "evolve":
            for column in plan["dropped"]:
                con.execute(f"ALTER TABLE {dst} DROP COLUMN {q(column)}")
            for column, dtype in plan["added"].items():
                con.execute(f"ALTER TABLE {dst} ADD COLUMN {q(column)} {dtype}")
        if action in ("evolve", "copy"):
            self._copy_rows(key)
            self.state.whole[key] = self.row_hash_sql(key)
            return
        h = plan["hash"]
        if plan["n_del"]:  # by DuckLake's row id: the lake is not scanned for hashes
            con.execute(f"DELETE FROM {dst} WHERE rowid IN (SELECT rid FROM temp.main.{plan['deleted']})")
            self.result.rows_deleted += plan["n_del"]
        n_ins = con.execute(f"INSERT INTO {dst} BY NAME SELECT * FROM {src} "
                            f"WHERE rowid IN (SELECT wrid FROM temp.main.{plan['inserted']})").fetchall()[0][0]
        self.result.rows_inserted += n_ins
        self.state.diffed[key] = (h, plan["deleted"])
        if plan["n_after"] + n_ins != self.count(src):  # exact duplicate rows: copy the table whole
            self._copy_rows(key)
            self.state.whole[key] = h

    def drop_temps(self) -> None:
        for name in self.temps:
            self.con.execute(f"DROP TABLE IF EXISTS temp.main.{name}")


def publish(con: duckdb.DuckDBPyConnection, lake: Lake, run_id: str | None,
            candidates: set[Key] | None = None, retention_days: int | None = None) -> PublishResult:
    """Bring the lake up to date with the warehouse `con` is open on: one snapshot, or none
    when nothing changed. `candidates`: the (schema, table) pairs this run wrote (see scope.py); None = all.
    With `retention_days`, snapshots older than that are expired afterwards (never the latest)."""
    started = time.perf_counter()
    warehouse_db = con.execute("SELECT current_database()").fetchall()[0][0]
    attach_for_writing(con, lake)
    pub = _Publisher(con, warehouse_db)
    try:
        # one transaction from the first comparison to the commit: DuckLake reads its catalogue
        # once, and nothing changed means a rollback, so no empty snapshot is made
        con.execute("BEGIN TRANSACTION")
        try:
            committed = _compare_and_write(pub, run_id, candidates)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT" if committed else "ROLLBACK")
        snapshot = rowstate.latest_snapshot(con) if committed else None
        if snapshot is not None:
            pub.result.snapshot_id = snapshot[0]
        try:  # after the lake commit: a failure here only makes the next publish read the lake
            pub.state.apply(con, warehouse_db, snapshot, pub.valid)
        except duckdb.Error as exc:
            log.warning("published rows not remembered in the warehouse (the next publish reads the lake): %s", exc)
        if retention_days is not None:
            pub.result.expired_snapshots = expire(con, retention_days)
        lake.write_open_sql()
    finally:
        pub.drop_temps()
        con.execute(f"DETACH {ALIAS}")
    pub.result.seconds = time.perf_counter() - started
    return pub.result


def _compare_and_write(pub: _Publisher, run_id: str | None, candidates: set[Key] | None) -> bool:
    """Inside the publish transaction; True when something changed (the caller commits)."""
    con = pub.con
    tables, views = objects(con, pub.wh)
    lake_tables, lake_views = objects(con, ALIAS)
    pub.wh_cols = tables
    pub.sap_columns = {t: frozenset(cols) for (s, t), cols in tables.items() if s == "sap_raw"}
    info = _last_commit_info(con)
    remembered: dict[str, str] = dict(info.get("fingerprints") or {})
    pub.valid = rowstate.remembered(con, pub.wh)
    if pub.valid is None and lake_tables:
        # nothing remembered matches the lake (another writer, a stop after the lake commit, an
        # older lake): compare every table with the lake once, whatever the fingerprints say
        candidates, remembered = None, {}
    fingerprints = {k: v for k, v in remembered.items() if tuple(k.split(".", 1)) in tables}
    plans: dict[Key, dict] = {}
    for key, wh_cols in tables.items():
        # a table the lake lacks is always looked at: an existing warehouse's first publish
        if not is_candidate(key, candidates) and key in lake_tables:
            continue
        pub.result.tables_compared += 1
        fingerprint = pub.fingerprint(key, wh_cols)
        fingerprints[_name(key)] = fingerprint
        if key in lake_tables and remembered.get(_name(key)) == fingerprint:
            pub.forget_hashes(key)
            continue
        plan = pub.plan(key, wh_cols, lake_tables.get(key))
        if key in pub.hashes:  # not diffed (created, evolved...)
            pub.forget_hashes(key)
        if plan is not None:
            plans[key] = plan
    # DuckLake re-renders a view's SQL: compare the warehouse SQL it was published from
    view_hashes = {_name(k): hashlib.sha256(sql.encode()).hexdigest()[:16] for k, sql in views.items()}
    old_views = info.get("views") or {}
    changed_views = [k for k in views if k not in lake_views or old_views.get(_name(k)) != view_hashes[_name(k)]]
    gone = [k for k in lake_tables if k not in tables] + [k for k in lake_views if k not in views]
    if not (plans or changed_views or gone):
        return False
    present = {s for s, _ in lake_tables} | {s for s, _ in lake_views}
    for schema in sorted({s for s, _ in [*plans, *changed_views]} - present):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {ALIAS}.{q(schema)}")
    for key, plan in plans.items():
        pub.apply(key, plan)
    pub.state.dropped = gone
    for key in gone:
        con.execute(f"DROP {'VIEW' if key in lake_views else 'TABLE'} {pub.dst(key)}")
        pub.result.tables_changed.append(_name(key))
    for key in changed_views:
        # a view's body names `schema.table`: inside the lake it reads the lake's tables
        con.execute(f"CREATE OR REPLACE VIEW {pub.dst(key)} AS {_view_body(views[key])}")
        pub.result.tables_changed.append(_name(key))
    changed = sorted(pub.result.tables_created + pub.result.tables_changed)
    extra = json.dumps({"run_id": run_id, "tables": changed, "views": view_hashes,
                        "fingerprints": fingerprints})
    con.execute(f"CALL {ALIAS}.set_commit_message({lit(AUTHOR)}, "
                f"{lit('run ' + (run_id or 'manual'))}, extra_info => {lit(extra)})")
    return True


def expire(con: duckdb.DuckDBPyConnection, retention_days: int) -> int:
    """Expire snapshots older than the retention (DuckLake keeps the latest regardless), then
    delete the files only they referenced. Returns how many snapshots were expired."""
    expired = con.execute(
        f"CALL ducklake_expire_snapshots({lit(ALIAS)}, older_than => "
        f"now() - INTERVAL {int(retention_days)} DAY)").fetchall()
    if expired:
        con.execute(f"CALL ducklake_cleanup_old_files({lit(ALIAS)}, cleanup_all => true)").fetchall()
    return len(expired)
