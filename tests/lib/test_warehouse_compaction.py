"""Hourly syncs leave deleted rows in place; the syncs of the compaction hour rewrite them away.

What an operator watching the warehouse file sees: outside SAP_OMETRIA_COMPACT_HOUR_UTC a step's
checkpoint keeps the row groups it deleted rows from (the rows are gone for every reader), and a
step in that hour compacts them, including what earlier hours left behind.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.warehouse.db import compacts_now, connect

ROW_GROUP = 122_880  # DuckDB's default row group size


def _stored_rows(con) -> int:
    """Rows physically stored in t's row groups (deleted ones included until compacted)."""
    return int(con.execute("SELECT sum(count) FROM pragma_storage_info('main.t') "
                           "WHERE column_id = 0 AND segment_type <> 'VALIDITY'").fetchall()[0][0])


def _delete_and_checkpoint(path, compaction: str, monkeypatch, which: str) -> tuple[int, int]:
    """`compaction`: "other hour" (an hourly sync), "this hour" (the compaction hour), "always"."""
    hour = datetime.now(timezone.utc).hour
    hour = {"other hour": (hour + 12) % 24, "this hour": hour, "always": -1}[compaction]
    monkeypatch.setenv("SAP_OMETRIA_COMPACT_HOUR_UTC", str(hour))
    get_settings(refresh=True)
    with connect(path) as con:
        con.execute(f"DELETE FROM t WHERE {which}")
        con.execute("CHECKPOINT")
        return _stored_rows(con), int(con.execute("SELECT count(*) FROM t").fetchall()[0][0])


def _table(path, rows: int) -> None:
    with connect(path) as con:
        con.execute(f"CREATE OR REPLACE TABLE t AS SELECT i, 'payload ' || i AS body FROM range({rows}) r(i)")
        con.execute("CHECKPOINT")


@pytest.mark.parametrize("compaction", ["this hour", "always"])
def test_compaction_follows_the_compaction_hour(tmp_path, monkeypatch, compaction):
    path = tmp_path / "w.duckdb"
    rows = 4 * ROW_GROUP
    _table(path, rows)
    stored, live = _delete_and_checkpoint(path, "other hour", monkeypatch, "i % 2 = 0")
    assert live == rows // 2  # every reader sees the deletes at once
    assert stored == rows  # an hourly step left the deleted rows in place

    # the compaction hour (or -1, every step) rewrites them away, the earlier hour's included
    stored, live_after = _delete_and_checkpoint(path, compaction, monkeypatch, "i % 4 = 1")
    assert live_after == rows // 4
    assert stored == live_after


def test_compacts_now_by_hour():
    at = datetime(2026, 12, 4, 2, 30, tzinfo=timezone.utc)
    assert compacts_now(2, at)
    assert not compacts_now(3, at)
    assert compacts_now(-1, at)
