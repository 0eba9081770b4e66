"""`python -m benchmarks.ledger`: the push ledger's write per acknowledged request, by ledger size.

What `lib/push/send.py` writes after each acknowledged request: its journal line
(lib/push/journal.py, append + fdatasync), and, every `OMETRIA_ACK_EVERY_REQUESTS` requests,
the group's `write_acknowledged` (audit rows, the records in `acks` and `sent_records`, one
transaction) and the journal emptied; reported per request (journal) and per group, measured
on warehouses whose ledger already holds the records of a demo company at x1, x10 and x100
(13,000 / 130,000 / 1,300,000 rows; half the batch replaces known records, half is new), then
the once-per-push `merge_acknowledged`. Without HTTP or emulators, so the figure is the ledger's
alone: it should not grow with the ledger.

    python -m benchmarks.ledger                 # sizes 13000,130000,1300000, 100 requests each
    python -m benchmarks.ledger --sizes 13000 --requests 30
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from sap_ometria_assets.lib.push.journal import Journal
from sap_ometria_assets.lib.push.ledger import ensure_push_tables, merge_acknowledged, write_acknowledged
from sap_ometria_assets.lib.push.send import ack_every_requests


def _seed(con: duckdb.DuckDBPyConnection, n: int) -> None:
    ensure_push_tables(con)
    con.execute(f"""INSERT INTO ometria_push.ledger SELECT 'orders', 'order', 'O' || i, md5(i::VARCHAR),
        'r' || (i // 100), now(), false, 'accepted', NULL FROM range({n}) t(i)""")
    con.execute(f"""INSERT INTO ometria_push.sent_records SELECT 'r' || (i // 100), 'orders', 'order', 'O' || i,
        md5(i::VARCHAR), now(), false FROM range({n}) t(i)""")
    con.execute(f"""INSERT INTO ometria_push.requests (request_id, feed, record_type, sent_at, record_count, dry_run)
        SELECT 'r' || i, 'orders', 'order', now(), 100, false FROM range({max(1, n // 100)}) t(i)""")
    con.execute("CHECKPOINT")


def measure(n: int, requests: int, folder: Path) -> dict[str, float]:
    """Median ms of one acknowledged request's journal line and of one group's DuckDB write, on a
    ledger of `n` rows, and the two together per request."""
    con = duckdb.connect(str(folder / f"ledger_{n}.duckdb"))
    journal = Journal(folder / f"journal_{n}", "orders")
    group_size = ack_every_requests()
    try:
        _seed(con, n)
        line, group_ms, cpu, group = [], [], [], []
        started, c0 = time.perf_counter(), time.process_time()
        for k in range(requests):
            ids = [f"O{(k * 100 + j) * 7 % n}" if j < 50 else f"N{k}_{j}" for j in range(100)]
            frame = pl.DataFrame({"record_type": ["order"] * 100, "id": ids, "payload_hash": ["h"] * 100})
            req = {"request_id": f"x{k}", "feed": "orders", "record_type": "order", "sent_at": datetime.now(UTC),
                   "record_count": 100, "dry_run": False, "status": "accepted"}
            t = time.perf_counter()
            journal.append("orders", False, frame, req)
            line.append((time.perf_counter() - t) * 1000)
            group.append((frame, req))
            if len(group) >= group_size or k == requests - 1:
                t = time.perf_counter()
                write_acknowledged(con, "orders", False, group)
                journal.clear()
                group_ms.append((time.perf_counter() - t) * 1000)
                group = []
        per_request = (time.perf_counter() - started) * 1000 / requests
        cpu_per_request = (time.process_time() - c0) * 1000 / requests
        t = time.perf_counter()
        merged = merge_acknowledged(con)
        merge_ms = (time.perf_counter() - t) * 1000
    finally:
        journal.close()
        con.close()
    return {"ledger_rows": n, "requests": requests, "journal_ms": statistics.median(line),
            "group_ms": statistics.median(group_ms), "group_size": group_size, "wall_ms": per_request,
            "cpu_ms": cpu_per_request, "merged": merged, "merge_ms": merge_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="13000,130000,1300000")
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args(argv)
    print("| ledger rows | requests | journal line ms (median) | group write ms (median) | "
          "wall ms a request, all in | CPU ms a request | merge once (ms) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench_ledger_") as tmp:
        for n in (int(s) for s in args.sizes.split(",") if s):
            r = measure(n, args.requests, Path(tmp))
            print(f"| {n:,} | {r['requests']} | {r['journal_ms']:.1f} | {r['group_ms']:.0f} "
                  f"({r['group_size']} requests) | {r['wall_ms']:.1f} | {r['cpu_ms']:.1f} | "
                  f"{r['merge_ms']:.0f} ({r['merged']:,} rows) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
