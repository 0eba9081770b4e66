"""The cross-scale part of results.md: how costs grow between the measured scales, and x1000 on paper.

- **push overhead per request**: the push's wall time minus the time spent waiting on
  Ometria's answers, divided by the requests, per scale (the target: within 20% between
  scales, i.e. the ledger's cost per request does not grow with the ledger);
- **Dagster overhead** per scale (benchmarks/overhead.py: run wall minus op compute, and the
  share of the steps that only evaluate asset checks);
- **x1000 on paper** (2M business partners, 10M orders): each stage's wall time and peak
  memory projected from the two largest measured scales with a per-stage power law
  (t = a * scale^b, b from the two points: b = log(t2/t1) / log(s2/s1)), and what gives out
  first: memory (the machine's RAM, the 3 GiB target), time (the full run against a day, the
  incremental hour against its hour) or the push (Ometria's 4 requests/s).
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.overhead import OVERHEAD_HEAD, overhead_rows

TARGET_SCALE = 1000.0
OMETRIA_REQUESTS_PER_S = 4.0
MEMORY_TARGET_MB = 3 * 1024
_STAGES = (("land", "land over HTTP (all tables)"), ("transform", "transforms (ometria/*)"),
           ("push_dry", "push: delta + serialisation"), ("push", "push over HTTP (emulator)"),
           ("checks", "checks, exceptions, recon views"))
_INC = (("land", "incremental land"), ("transform", "incremental transforms"),
        ("push", "incremental push"), ("checks", "incremental checks"))


def _md(rows: list[list[Any]], head: list[str]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _push_requests(phase: dict[str, Any]) -> int:
    return sum(int(m.get("requests") or 0) for k, m in phase.get("materialized", {}).items()
               if k.startswith("ometria_push/"))


def push_overhead_ms(phase: dict[str, Any]) -> float | None:
    """Our time per push request (wall minus waiting on Ometria), milliseconds."""
    req = _push_requests(phase) or phase.get("ometria_received", {}).get("push_requests") or 0
    if not req or "wall_s" not in phase:
        return None
    http = sum((phase.get("http_s_by_feed") or {}).values())
    return (phase["wall_s"] - http) / req * 1000


def loop_ms(phase: dict[str, Any]) -> float | None:
    """Our time between consecutive push requests (the request loop's span minus the waiting on
    answers, per interval), milliseconds: the marginal cost of one more request."""
    loop = phase.get("push_loop") or {}
    if not loop.get("intervals"):
        return None
    return loop["between_requests_s"] / loop["intervals"] * 1000


def exponent(s1: float, v1: float, s2: float, v2: float) -> float | None:
    """b of v = a * s^b through two points (None when a value is missing or not positive)."""
    if not (v1 and v2 and v1 > 0 and v2 > 0 and s2 != s1):
        return None
    return math.log(v2 / v1) / math.log(s2 / s1)


def project(s1: float, v1: float, s2: float, v2: float, target: float = TARGET_SCALE) -> tuple[float | None, float | None]:
    b = exponent(s1, v1, s2, v2)
    return (b, None) if b is None else (b, v2 * (target / s2) ** b)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _projection(lo: dict[str, Any], hi: dict[str, Any], ram_mb: float | None) -> list[str]:
    s1, s2 = lo["scale"], hi["scale"]
    rows, breaks = [], []
    stage_sets = [(lo.get("stages", {}), hi.get("stages", {}), _STAGES, False),
                  (lo.get("incremental", {}), hi.get("incremental", {}), _INC, True)]
    full_s = inc_s = 0.0
    for st1, st2, names, inc in stage_sets:
        for key, label in names:
            p1, p2 = st1.get(key), st2.get(key)
            if not p1 or not p2:
                continue
            bt, t = project(s1, p1["wall_s"], s2, p2["wall_s"])
            bm, m = project(s1, p1.get("peak_rss_mb"), s2, p2.get("peak_rss_mb"))
            rows.append([label, f"{p1['wall_s']:.1f}", f"{p2['wall_s']:.1f}", "-" if bt is None else f"{bt:.2f}",
                         _duration(t), f"{p1.get('peak_rss_mb', 0):,.0f}", f"{p2.get('peak_rss_mb', 0):,.0f}",
                         "-" if bm is None else f"{bm:.2f}", "-" if m is None else f"{m / 1024:,.1f} GiB"])
            if t is not None:
                if inc:
                    inc_s += t
                elif key != "push_dry":
                    full_s += t
            if m is not None and ram_mb and m > ram_mb:
                breaks.append(f"memory: {label} would need about {m / 1024:.0f} GiB, more than the machine's "
                              f"{ram_mb / 1024:.0f} GiB")
            elif m is not None and m > MEMORY_TARGET_MB:
                breaks.append(f"memory: {label} would peak at about {m / 1024:.1f} GiB, over the 3 GiB target")
    hi_push = hi.get("stages", {}).get("push")
    if hi_push:
        req = _push_requests(hi_push) * TARGET_SCALE / s2
        breaks.append(f"push: a first full push is about {req:,.0f} requests, {_duration(req / OMETRIA_REQUESTS_PER_S)} "
                      "at Ometria's 4 requests/s, whatever our side costs")
    if inc_s:
        verdict = "longer than the hour it covers" if inc_s > 3600 else "within its hour"
        breaks.append(f"time: the incremental hour (land, transform, push, checks) projects to {_duration(inc_s)}, {verdict}")
    if full_s:
        breaks.append(f"time: a full run (land, transform, push, checks) projects to {_duration(full_s)}"
                      + (", more than a day" if full_s > 86400 else ""))
    pushes = [p for p in (lo.get("stages", {}).get("push"), hi_push) if p]
    # the marginal cost per request when the loop was timed, else the all-in figure
    ms = [loop_ms(p) for p in pushes] if all(loop_ms(p) for p in pushes) else [push_overhead_ms(p) for p in pushes]
    if len(ms) == 2 and all(ms):
        b = exponent(s1, ms[0], s2, ms[1])
        at = ms[1] * (TARGET_SCALE / s2) ** b if b is not None else None
        breaks.append(f"ledger: our push overhead per request {ms[0]:.1f} ms at x{s1:g}, {ms[1]:.1f} ms at x{s2:g}"
                      + (f", about {at:.0f} ms at x1000" if at else "")
                      + " (Ometria's 4 requests/s leave 250 ms a request, 8 requests/s 125 ms)")
    head = ["stage", f"x{s1:g} s", f"x{s2:g} s", "time exponent", "x1000 time", f"x{s1:g} MiB",
            f"x{s2:g} MiB", "memory exponent", "x1000 peak"]
    return [f"### x1000 on paper (2M business partners, 10M orders), from x{s1:g} and x{s2:g}", "",
            "Per stage, a power law through the two measured points (exponent 1 = linear; one run each on a "
            "shared machine, so read the exponents as rough):", "", _md(rows, head), "",
            "What gives out first, by these projections:", "", *[f"- {b}" for b in breaks], ""]


def scaling_section(results: dict[str, Any]) -> str:
    scales = sorted((s for s in results.get("scales", []) if "error" not in s), key=lambda s: s["scale"])
    if not scales:
        return ""
    out = ["## Across scales", ""]
    prow = []
    for s in scales:
        p = s.get("stages", {}).get("push")
        ms = push_overhead_ms(p) if p else None
        if ms is not None:
            http = sum((p.get("http_s_by_feed") or {}).values())
            marginal = loop_ms(p)
            prow.append([f"x{s['scale']:g}", f"{_push_requests(p):,}", f"{p['wall_s']:.1f}", f"{http:.1f}",
                         f"{ms:.1f}", "-" if marginal is None else f"{marginal:.1f}"])
    if prow:
        def spread(col: int) -> float | None:
            vals = [float(r[col]) for r in prow if r[col] != "-"]
            return max(vals) / min(vals) - 1 if len(vals) == len(prow) and min(vals) > 0 else None

        all_in, marginal = spread(4), spread(5)
        verdict = "" if marginal is None else (
            f"Spread of the cost between requests across scales: {marginal:.0%} "
            f"({'**met**' if marginal <= 0.20 else '**not met**'}); of the all-in figure: "
            + ("-" if all_in is None else f"{all_in:.0%}") + ".")
        out += ["### Push: our overhead per request", "",
                "All-in: wall time of the full push minus the time waiting on the emulator's answers, per "
                "request; it also carries the once-per-feed work (delta plan, merging the acks into the "
                "ledger, Dagster's step), which weighs more per request at x1's 135 requests. Between "
                "requests: from each feed's first request to its last answer, minus the waiting, per "
                "interval (`ometria_push.requests`): the marginal cost of one more request (body, "
                "ledger, bookkeeping), the one the target is about (it must not grow with the ledger). "
                "Target: within 20% between scales.", "",
                _md(prow, ["scale", "requests", "push wall s", "waiting on Ometria s", "all-in per request ms",
                           "between requests ms"]), "", verdict, ""]
    orow = []
    for s in scales:
        rows = overhead_rows(s.get("stages", {}))
        orow += [[f"x{s['scale']:g} {r[0]}", *r[1:]] for r in rows]
    if orow:
        out += ["### Dagster overhead (full run, per phase)", "",
                "Run wall time minus the op compute times from the event log (benchmarks/overhead.py); check "
                "steps = the steps that only evaluate asset checks, one step each.", "",
                _md(orow, OVERHEAD_HEAD), ""]
    measured = [s for s in scales if s.get("stages")]
    if len(measured) >= 2:
        ram = results.get("machine", {}).get("ram_gib")
        out += _projection(measured[-2], measured[-1], ram * 1024 if ram else None)
    return "\n".join(out)
