"""Measurement helpers shared by the orchestrator (`run.py`), the emulator hosts (`hosts.py`)
and the stage workers (`stages.py`).

Each stage runs in its own worker process, so its peak memory is that process's own peak RSS
(`getrusage(RUSAGE_SELF).ru_maxrss`, kernel-tracked, no sampling), not the orchestrator's or an
emulator's. A worker prints its result as one JSON line prefixed with `RESULT_PREFIX` on stdout.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "
REPO_ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


class BenchError(RuntimeError):
    """A benchmark step failed; the message names the step and where its log is."""


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024 if sys.platform != "darwin" else kib / MiB, 1)


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / MiB, 1)
    except (OSError, ValueError):
        return peak_rss_mb()


def emit(result: dict[str, Any]) -> None:
    """The worker's answer: one line on stdout the orchestrator looks for."""
    result.setdefault("peak_rss_mb", peak_rss_mb())
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def parse_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


@dataclass
class Worker:
    """Runs `python -m benchmarks.stages ...` in a fresh process with the bench environment."""

    env: dict[str, str]
    log_dir: Path
    timeout_s: float = 3600.0
    min_available_mb: float = float(os.environ.get("BENCH_MIN_AVAILABLE_MB", 1536))

    def run(self, name: str, *args: str) -> dict[str, Any]:
        log = self.log_dir / f"{name}.log"
        cmd = [sys.executable, "-m", "benchmarks.stages", *args]
        started = time.perf_counter()
        with open(log, "w") as err, tempfile.TemporaryFile("w+") as out:
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=self.env, stdout=out, stderr=err, text=True)
            killed = _watch(proc, self.timeout_s, self.min_available_mb)
            out.seek(0)
            stdout = out.read()
        result = parse_result(stdout)
        if killed:
            raise BenchError(f"stage {name} stopped: {killed}; log {log}")
        if proc.returncode != 0 or result is None:
            tail = log.read_text(errors="replace")[-3000:]
            raise BenchError(f"stage {name} failed (exit {proc.returncode}); log {log}:\n{tail}")
        result["process_wall_s"] = round(time.perf_counter() - started, 3)
        return result


def _watch(proc: subprocess.Popen, timeout_s: float, min_available_mb: float) -> str | None:
    """Wait for `proc`; stop it (and say why) on timeout or when the machine runs out of memory,
    so a scale too big for the machine fails the stage instead of the machine."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is in the bench extra
        psutil = None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            proc.wait(timeout=0.5)
            return None
        except subprocess.TimeoutExpired:
            pass
        reason = None
        if time.monotonic() > deadline:
            reason = f"timed out after {timeout_s:.0f} s"
        elif psutil is not None:
            available = psutil.virtual_memory().available / MiB
            if available < min_available_mb:
                reason = (f"the machine had only {available:.0f} MiB of memory left "
                          f"(limit {min_available_mb:.0f} MiB, BENCH_MIN_AVAILABLE_MB)")
        if reason:
            proc.kill()
            proc.wait()
            return reason


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        import psutil

        ram_gib = round(psutil.virtual_memory().total / (1024 ** 3), 1)
        load = [round(x, 2) for x in psutil.getloadavg()]
    except (ImportError, OSError):
        load = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": ram_gib,
        "os": f"{platform.system()} {platform.release()} ({platform.platform()})",
        "load_avg_at_start": load,
    }


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("dagster", "duckdb", "polars", "dlt", "httpx", "orjson"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def rate(count: float | int | None, seconds: float | None) -> float | None:
    if not count or not seconds:
        return None
    return round(count / seconds, 1)
