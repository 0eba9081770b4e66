"""Where the published snapshots live and how to open them: a DuckLake beside the warehouse.

Each warehouse has its own lake: `<warehouse dir>/lake/catalog.sqlite` (the DuckLake catalog:
which Parquet files make up which table at which snapshot) and `<warehouse dir>/lake/data/`
(the Parquet files). SQLite as the catalog (in WAL mode) lets any number of readers on this machine open the
lake while a sync publishes into it; a reader never takes a lock the sync waits for, and the
sync never writes a file a reader is scanning (DuckLake only adds files, and deletes them when
their snapshots have expired).

The two extensions come from the installed PyPI packages `duckdb-extension-ducklake` and
`duckdb-extension-sqlite-scanner` (LOADed by file path): nothing is downloaded at run time.
`open.sql` in the lake folder holds the same LOAD and a read-only ATTACH for the duckdb CLI and
BI tools (`duckdb -init data/demo/lake/open.sql`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import duckdb_extension_ducklake
import duckdb_extension_sqlite_scanner

from sap_ometria_assets.lib.warehouse.sql import lit

log = logging.getLogger(__name__)

ALIAS = "lake"
# who wrote a snapshot (DuckLake's commit author): the initial empty snapshot has none
AUTHOR = "sap-ometria"


class LakeError(RuntimeError):
    """The lake cannot be opened or read as asked: the message says why, in one sentence."""


def _extension_file(package, name: str) -> Path:
    path = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        raise LakeError(f"DuckDB extension {name} for duckdb {duckdb.__version__} is not installed "
                        f"({path} missing): reinstall the project (`make setup`)")
    return path


def extension_files() -> tuple[Path, Path]:
    """(sqlite_scanner, ducklake) extension files of the installed duckdb version."""
    return (_extension_file(duckdb_extension_sqlite_scanner, "sqlite_scanner"),
            _extension_file(duckdb_extension_ducklake, "ducklake"))


def load_extensions(con: duckdb.DuckDBPyConnection) -> None:
    for path in extension_files():
        con.execute(f"LOAD {lit(path)}")


@dataclass(frozen=True)
class Lake:
    """The lake of one warehouse."""

    root: Path

    @classmethod
    def for_warehouse(cls, warehouse_path: str | Path) -> "Lake":
        return cls(Path(warehouse_path).resolve().parent / "lake")

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.sqlite"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def open_sql(self) -> Path:
        return self.root / "open.sql"

    def exists(self) -> bool:
        return self.catalog.is_file()

    def attach_sql(self, read_only: bool = True, snapshot_version: int | None = None,
                   snapshot_time: str | None = None, alias: str = ALIAS) -> str:
        options = [f"DATA_PATH {lit(str(self.data) + '/')}"]
        if read_only:
            options.append("READ_ONLY")
        if snapshot_version is not None:
            options.append(f"SNAPSHOT_VERSION {int(snapshot_version)}")
        if snapshot_time is not None:
            options.append(f"SNAPSHOT_TIME {lit(snapshot_time)}")
        return f"ATTACH {lit('ducklake:sqlite:' + str(self.catalog))} AS {alias} ({', '.join(options)})"

    def init_sql(self) -> str:
        """What `open.sql` holds: load the extensions, attach the latest snapshot read-only."""
        sqlite_ext, ducklake_ext = extension_files()
        return (f"-- Opens the published snapshots of {self.root.parent} read-only (latest).\n"
                "-- duckdb CLI: duckdb -init <this file>; BI tools: run these lines on connect.\n"
                "-- Another snapshot: ATTACH with (READ_ONLY, SNAPSHOT_VERSION n), or\n"
                "-- SELECT ... FROM lake.<schema>.<table> AT (VERSION => n).\n"
                f"LOAD {lit(sqlite_ext)};\nLOAD {lit(ducklake_ext)};\n"
                f"{self.attach_sql(read_only=True)};\nUSE {ALIAS};\n")

    def write_open_sql(self) -> Path:
        """(Re)write `open.sql` atomically (extension paths change with the install)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.open_sql.with_suffix(".sql.tmp")
        tmp.write_text(self.init_sql(), encoding="utf-8")
        tmp.replace(self.open_sql)
        return self.open_sql


def ensure_wal(catalog: Path) -> None:
    """Put the SQLite catalogue in WAL mode (creating the file when missing). In SQLite's
    default mode a reader's open transaction (a BI session, a notebook) makes the publish's
    commit fail with "database is locked"; in WAL mode readers and the one writer never block
    each other, and a reader keeps the snapshot it started with. The mode is kept in the file."""
    con = sqlite3.connect(catalog, timeout=30)
    try:
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:  # a reader of an old catalogue holds it: next time
        log.warning("lake catalogue %s not switched to WAL yet: %s", catalog, exc)
    finally:
        con.close()


def attach_for_writing(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Attach the lake (created when missing) to a connection that publishes into it."""
    lake.data.mkdir(parents=True, exist_ok=True)
    ensure_wal(lake.catalog)
    load_extensions(con)
    con.execute(lake.attach_sql(read_only=False))


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


@contextmanager
def open_reader(lake: Lake, snapshot_version: int | None = None,
                snapshot_time: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only in-memory connection on the lake (latest, or pinned to one snapshot), with
    `USE lake` so `ometria.orders` means the published table."""
    if not lake.exists():
        raise LakeError(f"no published snapshot yet: {lake.catalog} does not exist "
                        "(a successful sync publishes the first one)")
    con = duckdb.connect()
    try:
        load_extensions(con)
        try:
            con.execute(lake.attach_sql(read_only=True, snapshot_version=snapshot_version,
                                        snapshot_time=snapshot_time))
        except duckdb.Error as exc:
            raise LakeError(f"cannot open the lake {lake.catalog}: {_first_line(exc)}") from None
        con.execute(f"USE {ALIAS}")
        yield con
    finally:
        con.close()
