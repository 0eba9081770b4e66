"""The benchmark harness (`make bench`) still runs: its cheapest stages at a tiny scale.

The full benchmark is far too slow for `make test`; this catches a harness broken by a change
elsewhere (an asset renamed, a settings variable, an emulator API) before the next `make bench`.
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.common import REPO_ROOT
from benchmarks.report import render


def test_harness_runs_cheapest_stages_at_tiny_scale(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--scales", "0.02", "--stages", "land,baselines",
         "--out", str(out), "--tmp", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.with_suffix(".json").read_text())
    (scale,) = results["scales"]
    assert "error" not in scale
    # stage 1: the company was generated and counted
    assert scale["generate"]["records_generated"] > 1000
    assert scale["generate"]["summary"]["Orders"] == 300
    # stage 2: every SAP table landed over HTTP, orders included, by the real assets
    land = scale["stages"]["land"]
    assert land["success"] and land["peak_rss_mb"] > 0 and land["wall_s"] > 0
    assert land["materialized"]["sap_raw/ordr"]["rows_landed"] == 300
    assert land["sap_served"]["requests"] > 0
    # baselines over the same Orders pages
    assert scale["baselines"]["pages"]["orders"] == 300
    assert scale["baselines"]["read_json"]["orders"] == 300
    report = out.read_text()
    for text in ("## Machine and versions", "1 generate the company", "2 land over HTTP",
                 "DuckDB `read_json`", "landing >= 2/3 of DuckDB read_json"):
        assert text in report
    # the temp directory (warehouse, pages) is cleaned up
    assert not list(tmp_path.glob("sap_ometria_bench_*"))


def _scale_with_push(requests: dict[str, int], changed: dict[str, int]) -> dict:
    feeds = {f: {"pushable": 1000, "changed": n, "expected_requests": -(-n // 100)} for f, n in changed.items()}
    materialized = {f"ometria_push/{f}": {"requests": r, "records_sent": changed[f], "bytes_sent": 10}
                    for f, r in requests.items()}
    return {"scale": 1.0, "stages": {}, "baselines": {},
            "incremental": {"expected": {"feeds": feeds},
                            "push": {"wall_s": 1.0, "peak_rss_mb": 100.0, "materialized": materialized}}}


def test_report_flags_a_push_that_sends_more_requests_than_changes_need():
    changed = {"contacts": 150, "products": 0, "orders": 1000, "stock": 1}
    exact = {"contacts": 2, "products": 0, "orders": 10, "stock": 1}
    base = {"started_at": "x", "command": "c", "total_s": 1.0, "stages_run": [], "versions": {},
            "machine": {"cpu": "c", "cores": 2, "os": "o"}}
    good = render({**base, "scales": [_scale_with_push(exact, changed)]})
    assert "push requests = ceil(changed/100) per type" in good
    assert "orders 10/10" in good and "**not met**" not in good
    bad = render({**base, "scales": [_scale_with_push({**exact, "orders": 11}, changed)]})
    assert "orders 11/10" in bad and "**not met**" in bad
