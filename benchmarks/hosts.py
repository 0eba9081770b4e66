"""Emulator hosts: each emulator runs in its own process, so the stage workers' memory and CPU
figures are ours, not the emulator's (on 2 cores the emulator still competes for CPU; that is
said in the report).

    python -m benchmarks.hosts sap --scale 10 [--seed 42] [--prerender]
    python -m benchmarks.hosts ometria

A host prints one `BENCH_RESULT {...}` line when it is listening (for `sap`: stage 1, how long
generating the company took and its peak memory), then answers commands read from stdin, one
JSON object a line, each with one `BENCH_RESULT` line: `{"cmd": "advance", "ticks": 1,
"change_fraction": 0.01}` (sap), `{"cmd": "stats"}`, `{"cmd": "quit"}`. It stops when stdin closes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from benchmarks.common import current_rss_mb, emit, peak_rss_mb

BENCH_SAP_PASSWORD = "bench-password"
BENCH_OMETRIA_KEY = "bench-key"


def _serve_commands(handle) -> None:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
            if cmd.get("cmd") == "quit":
                emit({"ok": True})
                return
            emit({"ok": True, **handle(cmd)})
        except Exception as exc:  # noqa: BLE001 - report it to the orchestrator, keep serving
            emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def _sap(args: argparse.Namespace) -> None:
    from sap_ometria_assets.emulators.sap_b1.company import generate_company
    from sap_ometria_assets.emulators.sap_b1.server import SapB1Emulator

    base_rss = current_rss_mb()
    started = time.perf_counter()
    company = generate_company(args.scale, args.seed)
    generate_s = time.perf_counter() - started
    generate_peak = peak_rss_mb()
    summary = company.summary()
    emu = SapB1Emulator(company, host="127.0.0.1", port=0, password=BENCH_SAP_PASSWORD,
                        render_cache_bytes=args.render_cache_mb << 20)

    def prerender() -> float:
        if not args.prerender:
            return 0.0
        t = time.perf_counter()
        emu.prerender()
        return round(time.perf_counter() - t, 3)

    prerender_s = prerender()
    emu.start()
    records = sum(v for k, v in summary.items() if isinstance(v, int) and k not in ("ticks", "seed"))
    emit({
        "url": emu.url, "company_db": emu.company_db, "username": emu.username,
        "generate_s": round(generate_s, 3), "generate_peak_rss_mb": generate_peak,
        "rss_before_generate_mb": base_rss, "records_generated": records,
        "summary": {k: v for k, v in summary.items() if k != "planted"},
        "prerender_s": prerender_s,
    })

    def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["cmd"] == "advance":
            before = emu.company.summary()
            t = time.perf_counter()
            company = emu.advance(int(cmd.get("ticks", 1)), cmd.get("change_fraction"))
            advance_s = time.perf_counter() - t
            after = company.summary()
            return {"ticks": company.ticks, "advance_s": round(advance_s, 3),
                    "prerender_s": prerender(),
                    "growth": {k: after[k] - before[k] for k in after
                               if isinstance(after[k], int) and k not in ("ticks", "seed")}}
        if cmd["cmd"] == "stats":
            return {"stats": emu.stats.snapshot(), "rss_mb": current_rss_mb(), "peak_rss_mb": peak_rss_mb()}
        if cmd["cmd"] == "reset_stats":
            emu.stats.reset()
            return {}
        raise ValueError(f"unknown command {cmd!r}")

    try:
        _serve_commands(handle)
    finally:
        emu.stop()


def _ometria(args: argparse.Namespace) -> None:
    from sap_ometria_assets.emulators.ometria.server import OmetriaEmulator

    # No fault switched on: the emulator applies no rate limit unless `max_rate_per_s` is set.
    emu = OmetriaEmulator(api_key=BENCH_OMETRIA_KEY, host="127.0.0.1", port=0, store_path=args.store).start()
    emit({"url": emu.url})

    def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["cmd"] == "stats":
            with emu._lock:
                snap = emu.stats.snapshot()
            return {"stats": snap, "rss_mb": current_rss_mb(), "peak_rss_mb": peak_rss_mb()}
        raise ValueError(f"unknown command {cmd!r}")

    try:
        _serve_commands(handle)
    finally:
        emu.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="which", required=True)
    sap = sub.add_parser("sap")
    sap.add_argument("--scale", type=float, required=True)
    sap.add_argument("--seed", type=int, default=42)
    sap.add_argument("--prerender", action="store_true")
    sap.add_argument("--render-cache-mb", type=int, default=8192)
    om = sub.add_parser("ometria")
    om.add_argument("--store", default=None)
    args = parser.parse_args(argv)
    {"sap": _sap, "ometria": _ometria}[args.which](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
