"""`python -m benchmarks.tenants`: how many demo companies one machine keeps in sync.

    python -m benchmarks.tenants                      # N = 1,2,4,8 companies at scale x1
    python -m benchmarks.tenants --counts 1,2 --scale 0.1 --out /tmp/tenants.md

In a temp folder, writes one `companies/<name>.yaml` per company (different seeds, each its own
warehouse and embedded emulators), then:
 1. full syncs of all companies at once (the first sync of a new tenant);
 2. for each N: advances the first N companies' clocks one hour of business and runs their
    incremental syncs (`full_sync_job`, which lands by watermark and pushes only what changed) at
    the same time, one process per company, as the run queue launches one run worker per run.
Each sync is a separate process built through `sap_ometria_assets.tenants` (what a run worker
does), so its time includes the process start a real run pays. Companies per hour =
N * 3600 / (wall time of N concurrent incremental syncs), at the best N.
The section "Many companies" of benchmarks/results.md is written from the printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from benchmarks.common import REPO_ROOT, machine_info
from sap_ometria_assets.emulators.sap_b1.embedded import advance_demo_clock
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.tenants import company_definitions

DEFAULT_COUNTS = (1, 2, 4, 8)


def _write_companies(folder: Path, count: int, scale: float) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"company_{i + 1:02d}"
        (folder / f"{name}.yaml").write_text(
            f"warehouse: {folder.parent / 'warehouses' / name}\n"
            f"demo: {{seed: {1000 + i}, scale: {scale}}}\n"
            "automation_enabled: false\n")
        names.append(name)
    return names


def _env(companies: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SAP_B1_", "SAP_OMETRIA_", "OMETRIA_"))}
    env["SAP_OMETRIA_COMPANIES_DIR"] = str(companies)
    return env


def _concurrent(names: list[str], mode: str, companies: Path) -> tuple[float, list[dict]]:
    """Start one worker per company at once; wall time and each worker's report."""
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.tenants", "worker", name, mode],
                              cwd=REPO_ROOT, env=_env(companies), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name in names]
    reports = []
    for proc in procs:
        out, err = proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"worker failed ({proc.returncode}): {err[-2000:]}")
        reports.append(json.loads(lines[-1]))
    wall = time.perf_counter() - started
    failed = [r for r in reports if not r["success"]]
    if failed:
        raise RuntimeError(f"{len(failed)} sync(s) failed: {failed}")
    return wall, reports


def worker(name: str, mode: str) -> int:
    """One company's sync in this process, as a run worker of its code location does."""
    started = time.perf_counter()  # imports are done: start_s is definitions + clock
    defs = company_definitions(name)
    if mode == "incremental":
        advance_demo_clock(get_settings(), 1)
    ready = time.perf_counter()
    result = defs.resolve_job_def("full_sync_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    print(json.dumps({"company": name, "mode": mode, "success": result.success,
                      "start_s": round(ready - started, 1),
                      "sync_s": round(time.perf_counter() - ready, 1)}))
    return 0


def run(counts: tuple[int, ...], scale: float, out: Path | None) -> str:
    with tempfile.TemporaryDirectory(prefix="bench_tenants_") as tmp:
        companies = Path(tmp) / "companies"
        names = _write_companies(companies, max(counts), scale)
        full_wall, full = _concurrent(names, "full", companies)
        rows = []
        for n in counts:
            wall, reports = _concurrent(names[:n], "incremental", companies)
            rows.append((n, wall, max(r["sync_s"] for r in reports),
                         sum(r["start_s"] for r in reports) / n))
    best = max(rows, key=lambda r: r[0] * 3600 / r[1])
    lines = [
        f"Scale x{scale:g} demo companies, {os.cpu_count()} cores "
        f"(shared with other work while measured; load average after: {os.getloadavg()[0]:.1f}).",
        "",
        f"First (full) sync of {len(names)} companies at once: {full_wall:.0f} s wall "
        f"(slowest {max(r['sync_s'] for r in full):.0f} s).",
        "",
        "| N concurrent incremental syncs (1 hour of business each) | wall time | slowest sync "
        "| process start + definitions (mean) | companies per hour at this N |",
        "|---|---|---|---|---|",
    ]
    for n, wall, slowest, start in rows:
        lines.append(f"| {n} | {wall:.1f} s | {slowest:.1f} s | {start:.1f} s | {n * 3600 / wall:.0f} |")
    lines += ["", f"Capacity: about {best[0] * 3600 / best[1]:.0f} companies synced per hour "
              f"(best at N = {best[0]})."]
    text = "\n".join(lines) + "\n"
    if out is not None:
        out.write_text(text)
    return text


SECTION = "## Many companies"


def upsert_section(results: Path, body: str) -> None:
    """Write `body` as the "Many companies" section of results.md, replacing an older one
    (benchmarks.run rewrites the rest of the file; this section is ours alone)."""
    text = results.read_text() if results.exists() else ""
    start = text.find(SECTION)
    if start >= 0:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start].rstrip("\n") + ("\n\n" + text[end + 1:] if end >= 0 else "")
    header = (f"{SECTION}\n\n`python -m benchmarks.tenants` (run by `make bench`): demo companies "
              "as tenants, each sync its own process as a run worker of its code location.\n\n")
    results.write_text(text.rstrip("\n") + "\n\n" + header + body)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["worker"]:
        return worker(args[1], args[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default=",".join(map(str, DEFAULT_COUNTS)))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=None,
                        help="also write the table as the 'Many companies' section of this file")
    opts = parser.parse_args(args)
    text = run(tuple(int(c) for c in opts.counts.split(",")), opts.scale, opts.out)
    print(text, end="")
    if opts.results is not None:
        upsert_section(opts.results, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
