"""`make bench` / `python -m benchmarks.run`: the pipeline at demo scale x1, x10 and x100, with
baselines, written to `benchmarks/results.md` (and `results.json`).

    python -m benchmarks.run                       # scales 1,10,100 (or BENCH_SCALES=1,10)
    python -m benchmarks.run --scales 1,10 --dlt-limit 50000 --out /tmp/results.md
    python -m benchmarks.run --scales 0.02 --stages land,transform,push_dry   # quick harness check

Per scale, in a fresh temp directory (removed at the end; `--keep` keeps it):
 1. the SAP B1 emulator host generates the company (stage 1, timed in that process) and
    pre-renders its JSON, so landing times serving, not the emulator's rendering;
 2. land every table over HTTP (the real client and `lib/landing/land.py`, via the sap_raw assets);
    baselines on the same Orders pages: save them, DuckDB `read_json` over them, dlt `rest_api`;
 3. build ometria/* (the assets); 5a. push delta + serialisation (`push_feed` dry run on a copy);
    5b. push over HTTP to the Ometria emulator (rate limit off); 4. read-back, then asset checks,
    ops.sync_exceptions and the recon views (the assets and checks);
 6. advance the company one hour with `change_fraction=0.01` (1% of partners, orders, items
    edited, plus that hour's new business) and run land, transform, push, checks again.
Every stage is a separate process: its peak memory is its own `ru_maxrss`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO_ROOT,
    RESULT_PREFIX,
    BenchError,
    Worker,
    machine_info,
    versions,
)
from benchmarks.hosts import BENCH_OMETRIA_KEY, BENCH_SAP_PASSWORD

ALL_STAGES = ("land", "baselines", "dlt", "transform", "push_dry", "push", "readback", "checks", "publish",
              "incremental")
DEFAULT_SCALES = (1.0, 10.0, 100.0)


class Host:
    """An emulator host process (benchmarks/hosts.py) driven over stdin/stdout."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"host_{name}.log"
        self._err = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.hosts", *args], cwd=REPO_ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, text=True, bufsize=1)
        self.ready = self._answer()

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(RESULT_PREFIX):
                answer = json.loads(line[len(RESULT_PREFIX):])
                if answer.get("ok") is False:
                    raise BenchError(f"{self.name} emulator host: {answer.get('error')}")
                return answer
        tail = self.log.read_text(errors="replace")[-3000:]
        raise BenchError(f"{self.name} emulator host exited (code {self.proc.poll()}); log {self.log}:\n{tail}")

    def command(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def stop(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.close()  # the host stops when its stdin closes
            self.proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        finally:
            self._err.close()


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SAP_B1_PASSWORD": BENCH_SAP_PASSWORD,
        "SAP_B1_COMPANY_DB": "SBODEMOGB",
        "SAP_B1_USERNAME": "manager",
        "SAP_OMETRIA_DUCKDB_PATH": str(work / "warehouse.duckdb"),
        "SAP_OMETRIA_OUTBOX_DIR": str(work / "outbox"),
        "SAP_OMETRIA_DEMO_DIR": str(work / "demo"),
        "SAP_OMETRIA_ALERT_WEBHOOK": "",
        "OMETRIA_API_KEY": BENCH_OMETRIA_KEY,
        "OMETRIA_DRY_RUN": "false",
        "DAGSTER_HOME": str(work / "dagster_home"),
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "PYTHONUNBUFFERED": "1",
    })
    (work / "dagster_home").mkdir(parents=True, exist_ok=True)
    return env


def _stats_delta(before: dict[str, Any], after: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: after["stats"][k] - before["stats"][k] for k in keys}


def bench_scale(scale: float, stages: set[str], dlt_limit: int, root: Path, log=print,
                readback_max_scale: float = 10.0, prerender_max_scale: float = 10.0) -> dict[str, Any]:
    work = root / f"scale_{scale:g}"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = _env(work)
    out: dict[str, Any] = {"scale": scale, "stages": {}, "incremental": {}, "baselines": {}, "skipped": {}}
    hosts: list[Host] = []
    try:
        log(f"[x{scale:g}] generating the company and starting the emulators ...")
        prerender = scale <= prerender_max_scale
        sap = Host("sap", ["sap", "--scale", str(scale), *(["--prerender"] if prerender else []),
                           "--render-cache-mb", str(8192 if prerender else 2048)], env, logs)
        hosts.append(sap)
        om = Host("ometria", ["ometria"], env, logs)
        hosts.append(om)
        out["generate"] = sap.ready
        if not prerender:
            out["skipped"]["prerender"] = (
                f"of the SAP emulator's JSON above x{prerender_max_scale:g} (BENCH_PRERENDER_MAX_SCALE), to "
                "leave memory to the stages: the emulator renders pages while serving them, on the same "
                "2 cores, so landing figures include some of its work")
        env["SAP_B1_SERVICE_LAYER_URL"] = sap.ready["url"]
        env["OMETRIA_API_URL"] = om.ready["url"]
        worker = Worker(env=env, log_dir=logs)
        wd = ["--workdir", str(work)]

        def phase(name: str, phase_name: str, into: dict[str, Any]) -> dict[str, Any]:
            log(f"[x{scale:g}] {name} ...")
            sap_before, om_before = sap.command(cmd="stats"), om.command(cmd="stats")
            res = worker.run(name, "dagster", *wd, "--phase", phase_name)
            sap_after, om_after = sap.command(cmd="stats"), om.command(cmd="stats")
            res["sap_served"] = _stats_delta(sap_before, sap_after, ("requests", "bytes_served"))
            res["ometria_received"] = _stats_delta(om_before, om_after, ("requests", "push_requests", "bytes"))
            if not res["success"]:
                raise BenchError(f"{name} failed: {res['failures']}")
            into[phase_name] = res
            log(f"[x{scale:g}]   {res['wall_s']:.1f}s, peak {res['peak_rss_mb']:.0f} MiB")
            return res

        if "land" in stages:
            phase("land", "land", out["stages"])
        if "baselines" in stages:
            log(f"[x{scale:g}] baselines: saving the Orders pages, DuckDB read_json ...")
            out["baselines"]["pages"] = worker.run("pages", "pages", *wd)
            out["baselines"]["read_json"] = worker.run("read_json", "read_json", *wd)
            shutil.rmtree(work / "orders_pages", ignore_errors=True)
        if "dlt" in stages:
            log(f"[x{scale:g}] baseline: dlt rest_api (first {dlt_limit} orders) ...")
            out["baselines"]["dlt"] = worker.run("dlt", "dlt", *wd, "--limit", str(dlt_limit))
        if "transform" in stages:
            phase("transform", "transform", out["stages"])
        if "push_dry" in stages:
            log(f"[x{scale:g}] push delta + serialisation (dry run on a copy) ...")
            out["stages"]["push_dry"] = worker.run("push_dry", "push_dry", *wd)
        if "push" in stages:
            phase("push", "push", out["stages"])
        if "readback" in stages and scale <= readback_max_scale:
            phase("readback", "readback", out["stages"])
        elif "readback" in stages:
            out["skipped"]["readback"] = (
                f"above x{readback_max_scale:g} (BENCH_READBACK_MAX_SCALE): the Ometria emulator pages its "
                "list endpoints with LIMIT/OFFSET over the whole store, so a full read-back grows with the "
                "square of the records")
        if "checks" in stages:
            phase("checks", "checks", out["stages"])
        if "publish" in stages:  # benchmarks/publish.py
            log(f"[x{scale:g}] publish (first: everything into the lake) ...")
            out["stages"]["publish"] = worker.run("publish", "publish", *wd)
        if "incremental" in stages:
            inc = out["incremental"]
            worker.run("hashes_save", "hashes", *wd, "--save")
            log(f"[x{scale:g}] advancing the company one hour with change_fraction=0.01 ...")
            inc["advance"] = sap.command(cmd="advance", ticks=1, change_fraction=0.01)
            phase("inc_land", "land", inc)
            phase("inc_transform", "transform", inc)
            inc["expected"] = worker.run("hashes_diff", "hashes", *wd)
            if "push_dry" in stages:
                inc["push_dry"] = worker.run("inc_push_dry", "push_dry", *wd)
            phase("inc_push", "push", inc)
            phase("inc_checks", "checks", inc)
            if "publish" in stages:
                inc["publish"] = worker.run("inc_publish", "publish", *wd)
        out["emulators"] = {"sap": sap.command(cmd="stats"), "ometria": om.command(cmd="stats")}
        for h in out["emulators"].values():
            h.pop("ok", None)
        out["emulators"]["sap"].pop("stats", None)
    finally:
        for host in hosts:
            host.stop()
    return out


def parse_scales(text: str) -> list[float]:
    scales = [float(s) for s in text.replace(" ", "").split(",") if s]
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {text!r}")
    return scales


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default=os.environ.get("BENCH_SCALES", ",".join(f"{s:g}" for s in DEFAULT_SCALES)),
                        help="comma-separated demo scales (env BENCH_SCALES; default 1,10,100)")
    parser.add_argument("--stages", default=",".join(ALL_STAGES),
                        help=f"subset of {','.join(ALL_STAGES)} (generation always runs)")
    parser.add_argument("--dlt-limit", type=int, default=int(os.environ.get("BENCH_DLT_LIMIT", 50_000)),
                        help="orders the dlt baseline loads (dlt is slow; default 50000)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results.md")
    parser.add_argument("--tmp", type=Path, default=os.environ.get("BENCH_TMPDIR"),
                        help="parent of the temp directory (default: the system's)")
    parser.add_argument("--readback-max-scale", type=float,
                        default=float(os.environ.get("BENCH_READBACK_MAX_SCALE", 10)),
                        help="largest scale at which the recon read-back of Ometria runs (default 10)")
    parser.add_argument("--prerender-max-scale", type=float,
                        default=float(os.environ.get("BENCH_PRERENDER_MAX_SCALE", 10)),
                        help="largest scale at which the SAP emulator pre-renders its JSON (default 10)")
    parser.add_argument("--note", default=os.environ.get("BENCH_NOTE", ""),
                        help="a remark printed under the title of results.md (e.g. what else ran on the machine)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (logs, warehouses)")
    args = parser.parse_args(argv)
    scales = parse_scales(args.scales)
    stages = {s for s in args.stages.split(",") if s}
    unknown = stages - set(ALL_STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; choose from {','.join(ALL_STAGES)}")
    if "incremental" in stages and not {"land", "transform", "push"} <= stages:
        parser.error("the incremental stage needs a full run before it: add land,transform,push")

    from benchmarks.report import render

    root = Path(tempfile.mkdtemp(prefix="sap_ometria_bench_", dir=args.tmp))
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"), "machine": machine_info(), "versions": versions(),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.run", *(argv if argv is not None else sys.argv[1:])]),
        "scales": [], "stages_run": sorted(stages), "dlt_limit": args.dlt_limit, "note": args.note,
    }
    code = 0
    t0 = time.perf_counter()
    try:
        for scale in scales:
            try:
                results["scales"].append(bench_scale(scale, stages, args.dlt_limit, root,
                                                    readback_max_scale=args.readback_max_scale,
                                                    prerender_max_scale=args.prerender_max_scale))
            except BenchError as exc:
                print(f"[x{scale:g}] FAILED: {exc}", file=sys.stderr)
                results["scales"].append({"scale": scale, "error": str(exc)[:4000]})
                code = 1
    finally:
        results["total_s"] = round(time.perf_counter() - t0, 1)
        if args.keep:
            print(f"temp directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {args.out} and {args.out.with_suffix('.json')} in {results['total_s']:.0f}s")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
