"""`python -m benchmarks.ledger`: the push ledger's write per acknowledged request, by ledger size.

What `lib/push/send.py` writes after each acknowledged request (`write_acknowledged`: the
request's audit row, its 100 records in `acks` and `sent_records`, one transaction), measured
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

from sap_ometria_assets.lib.push.ledger import ensure_push_tables, merge_acknowledged, write_acknowledged


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
    """Median wall and CPU ms of one acknowledged request's write on a ledger of `n` rows."""
    con = duckdb.connect(str(folder / f"ledger_{n}.duckdb"))
    try:
        _seed(con, n)
        wall, cpu = [], []
        for k in range(requests):
            ids = [f"O{(k * 100 + j) * 7 % n}" if j < 50 else f"N{k}_{j}" for j in range(100)]
            frame = pl.DataFrame({"record_type": ["order"] * 100, "id": ids, "payload_hash": ["h"] * 100})
            req = {"request_id": f"x{k}", "feed": "orders", "record_type": "order", "sent_at": datetime.now(UTC),
                   "record_count": 100, "dry_run": False, "status": "accepted"}
            t, c = time.perf_counter(), time.process_time()
            write_acknowledged(con, "orders", False, [(frame, req)])
            wall.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
        t = time.perf_counter()
        merged = merge_acknowledged(con)
        merge_ms = (time.perf_counter() - t) * 1000
    finally:
        con.close()
    return {"ledger_rows": n, "requests": requests, "wall_ms": statistics.median(wall),
            "cpu_ms": statistics.median(cpu), "merged": merged, "merge_ms": merge_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="13000,130000,1300000")
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args(argv)
    print("| ledger rows | requests | median wall ms a request | median CPU ms a request | merge once (ms) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench_ledger_") as tmp:
        for n in (int(s) for s in args.sizes.split(",") if s):
            r = measure(n, args.requests, Path(tmp))
            print(f"| {n:,} | {r['requests']} | {r['wall_ms']:.1f} | {r['cpu_ms']:.1f} | "
                  f"{r['merge_ms']:.0f} ({r['merged']:,} rows) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
