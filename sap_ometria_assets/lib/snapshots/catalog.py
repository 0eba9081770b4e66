"""The published snapshots as people name them: the list, and what `--as-of` means.

A snapshot is one successful sync's publish (DuckLake's author `sap-ometria`); its id is
DuckLake's snapshot id, its time the commit time (UTC), and its commit carries the run id and
the tables that changed. `--as-of` takes a snapshot id (a whole number) or a timestamp (ISO
8601, UTC unless it names an offset): the snapshot that was latest at that moment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from sap_ometria_assets.lib.snapshots.lake import ALIAS, AUTHOR, Lake, LakeError, open_reader


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: int
    time: datetime           # UTC
    run_id: str | None
    tables: tuple[str, ...]  # what changed

    @property
    def time_text(self) -> str:
        return self.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _snapshot(row) -> Snapshot:
    snapshot_id, when, extra = row
    try:
        info = json.loads(extra) if extra else {}
    except ValueError:
        info = {}
    info = info if isinstance(info, dict) else {}
    tables = info.get("tables") or []
    return Snapshot(int(snapshot_id), when, info.get("run_id"), tuple(str(t) for t in tables))


def read_snapshots(con: duckdb.DuckDBPyConnection) -> list[Snapshot]:
    """The snapshots still queryable (expired ones are gone), newest first."""
    rows = con.execute(
        f"SELECT snapshot_id, snapshot_time, commit_extra_info FROM {ALIAS}.snapshots() "
        "WHERE author = ? ORDER BY snapshot_id DESC", [AUTHOR]).fetchall()
    return [_snapshot(r) for r in rows]


def list_snapshots(lake: Lake) -> list[Snapshot]:
    with open_reader(lake) as con:
        return read_snapshots(con)


@dataclass(frozen=True)
class AsOf:
    snapshot: Snapshot


def parse_time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def resolve_as_of(lake: Lake, text: str | None) -> Snapshot:
    """The snapshot `--as-of TEXT` names (None: the latest). LakeError with the reason when
    there is no such snapshot."""
    snapshots = list_snapshots(lake)
    if not snapshots:
        raise LakeError(f"the lake {lake.root} holds no published snapshot yet "
                        "(a successful sync publishes the first one)")
    if text is None or text.strip().lower() == "latest":
        return snapshots[0]
    text = text.strip()
    if text.isdigit():
        for snap in snapshots:
            if snap.snapshot_id == int(text):
                return snap
        raise LakeError(f"unknown snapshot {text}: it never existed or has expired "
                        f"(kept: {snapshots[-1].snapshot_id}..{snapshots[0].snapshot_id}; "
                        "`sap-ometria snapshots` lists them)")
    when = parse_time(text)
    if when is None:
        raise LakeError(f"--as-of {text!r} is neither a snapshot id nor a timestamp "
                        "(e.g. 2026-11-30 or '2026-11-30 18:00:00+00:00')")
    earlier = [s for s in snapshots if s.time <= when]
    if not earlier:
        raise LakeError(f"no snapshot as of {when:%Y-%m-%d %H:%M:%S} UTC: the oldest kept is "
                        f"{snapshots[-1].snapshot_id} from {snapshots[-1].time_text}")
    return earlier[0]
