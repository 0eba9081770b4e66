"""Turns the results of `benchmarks.run` (a dict, also saved as results.json) into results.md."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.publish import REPORT_HEAD as PUBLISH_HEAD
from benchmarks.publish import report_rows as publish_rows
from benchmarks.scaling import scaling_section

FEEDS = ("contacts", "products", "orders", "stock")
OMETRIA_REQUESTS_PER_S = 4.0   # Ometria's documented ceiling: ~100 records a request, ~4 requests/s
CORE_PHASES = ("land", "transform", "push", "checks")


def _f(x: float | int | None, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 100):
        return f"{int(x):,}"
    return f"{x:,.{digits}f}"


def _rate(n: float | int | None, s: float | None) -> float | None:
    return n / s if n and s else None


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.1f} MB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _md(rows: list[list[Any]], head: list[str]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _sum_md(phase: dict[str, Any], prefix: str, key: str) -> int:
    return sum(int(m.get(key) or 0) for k, m in phase.get("materialized", {}).items() if k.startswith(prefix))


# ---------------------------------------------------------------------------------------------
def derive(s: dict[str, Any]) -> dict[str, Any]:
    """The figures the targets are judged on, for one scale (missing stages give None)."""
    st, inc, base = s.get("stages", {}), s.get("incremental", {}), s.get("baselines", {})
    d: dict[str, Any] = {}
    ordr = st.get("land", {}).get("materialized", {}).get("sap_raw/ordr")
    if ordr:
        d["our_orders_per_s"] = _rate(ordr.get("rows_landed"), ordr.get("duration_s"))
    if "read_json" in base:
        d["read_json_orders_per_s"] = _rate(base["read_json"]["orders"], base["read_json"]["wall_s"])
    if "pages" in base:
        d["http_orders_per_s"] = _rate(base["pages"]["orders"], base["pages"]["wall_s"])
    if "dlt" in base:
        d["dlt_orders_per_s"] = _rate(base["dlt"]["orders"], base["dlt"]["wall_s"])
    if "land" in st:
        d["land_s"] = st["land"]["wall_s"]
    push = st.get("push")
    if push and push.get("http_s_by_feed") and push.get("wall_s"):
        # what the emulator alone absorbs: the records over the time it took to answer them
        d["push_s"], d["push_waiting_s"] = push["wall_s"], sum(push["http_s_by_feed"].values())
    if "transform" in st and "checks" in st:
        d["transform_checks_s"] = st["transform"]["wall_s"] + st["checks"]["wall_s"]
        d["transform_checks_peak_mb"] = max(st["transform"]["peak_rss_mb"], st["checks"]["peak_rss_mb"])
    if all(p in st for p in CORE_PHASES) and all(p in inc for p in CORE_PHASES):
        d["full_s"] = sum(st[p]["wall_s"] for p in CORE_PHASES)
        d["inc_s"] = sum(inc[p]["wall_s"] for p in CORE_PHASES)
        d["full_s_no_push"] = sum(st[p]["wall_s"] for p in CORE_PHASES if p != "push")
        d["inc_s_no_push"] = sum(inc[p]["wall_s"] for p in CORE_PHASES if p != "push")
    if "push" in inc and "expected" in inc:
        rows = []
        for feed in FEEDS:
            exp = inc["expected"]["feeds"][feed]
            md = inc["push"]["materialized"].get(f"ometria_push/{feed}", {})
            changed = exp.get("changed_including_product_resends", exp["changed"])
            rows.append({"feed": feed, "changed": changed, "expected": exp["expected_requests"],
                         "requests": md.get("requests"), "sent": md.get("records_sent"),
                         "pushable": exp["pushable"], "bytes": md.get("bytes_sent")})
        d["push_rows"] = rows
    return d


def _targets(s: dict[str, Any], d: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("**met**" if ok else "**not met**")

    if "transform_checks_s" in d:
        t = d["transform_checks_s"]
        rows.append(["transforms + checks < 15 s", f"{t:.1f} s", verdict(t < 15)])
        p = d["transform_checks_peak_mb"]
        rows.append(["peak memory < 3 GiB (transforms, checks)", f"{p / 1024:.2f} GiB", verdict(p < 3072)])
    if "inc_s" in d:
        r = d["inc_s"] / d["full_s"]
        rows.append(["incremental 1% < 10% of full (land+transform+push+checks)",
                     f"{d['inc_s']:.1f} s vs {d['full_s']:.1f} s = {r:.1%}", verdict(r < 0.10)])
        r2 = d["inc_s_no_push"] / d["full_s_no_push"]
        rows.append(["  same without the push (which the full run spends on every record)",
                     f"{d['inc_s_no_push']:.1f} s vs {d['full_s_no_push']:.1f} s = {r2:.1%}", verdict(r2 < 0.10)])
    if "land_s" in d:
        rows.append(["landing all tables < 120 s", f"{d['land_s']:.1f} s", verdict(d["land_s"] < 120)])
    if d.get("push_waiting_s"):
        r = d["push_waiting_s"] / d["push_s"]
        rows.append(["full push >= 80% of what the emulator alone absorbs (its answer time / our push wall)",
                     f"{d['push_waiting_s']:.1f} s of {d['push_s']:.1f} s = {r:.0%}", verdict(r >= 0.8)])
    ours = d.get("our_orders_per_s")
    if ours and d.get("dlt_orders_per_s"):
        r = ours / d["dlt_orders_per_s"]
        rows.append(["landing >= 10x dlt (Orders)", f"{ours:,.0f} vs {d['dlt_orders_per_s']:,.0f} orders/s = {r:.1f}x",
                     verdict(r >= 10)])
    if ours and d.get("read_json_orders_per_s"):
        r = ours / d["read_json_orders_per_s"]
        rows.append(["landing >= 2/3 of DuckDB read_json (Orders)",
                     f"{ours:,.0f} vs {d['read_json_orders_per_s']:,.0f} orders/s = {r:.2f}", verdict(r >= 2 / 3)])
    if d.get("push_rows"):
        ok = all(r["requests"] == r["expected"] for r in d["push_rows"])
        text = ", ".join(f"{r['feed']} {r['requests']}/{r['expected']}" for r in d["push_rows"])
        rows.append(["push requests = ceil(changed/100) per type (actual/expected)", text, verdict(ok)])
    return rows


def _company(s: dict[str, Any]) -> str:
    g = s.get("generate", {}).get("summary", {})
    if not g:
        return ""
    return (f"{g.get('BusinessPartners', 0):,} business partners, {g.get('Orders', 0):,} orders with "
            f"{g.get('Orders.lines', 0):,} lines, {g.get('Invoices', 0):,} invoices, "
            f"{g.get('DeliveryNotes', 0):,} deliveries, {g.get('CreditNotes', 0):,} credit memos, "
            f"{g.get('Items', 0):,} items over {g.get('Warehouses', 0)} warehouses "
            f"({s['generate'].get('records_generated', 0):,} SAP rows in all)")


def _stage_rows(s: dict[str, Any], st: dict[str, Any], incremental: bool) -> list[list[Any]]:
    rows: list[list[Any]] = []
    tag = "6 incremental: " if incremental else ""
    if not incremental and "generate" in s:
        g = s["generate"]
        rows.append(["1 generate the company", _f(g["generate_s"], 2), _f(g["records_generated"]),
                     _f(_rate(g["records_generated"], g["generate_s"]), 0), _f(g["generate_peak_rss_mb"], 0),
                     "in the emulator host; " + (f"then pre-rendering its JSON took {g['prerender_s']:.1f} s (not counted)"
                                                 if g.get("prerender_s") else "JSON rendered while serving")])
    if incremental and "advance" in s.get("incremental", {}):
        a = s["incremental"]["advance"]
        rows.append(["6 advance 1 hour, change_fraction 0.01", _f(a["advance_s"], 2), "-", "-", "-",
                     "in the emulator" + (f"; re-render {a['prerender_s']:.1f} s (not counted)" if a.get("prerender_s") else "")])
    if "land" in st:
        p = st["land"]
        rows_landed = _sum_md(p, "sap_raw/", "rows_landed")
        changed = _sum_md(p, "sap_raw/", "rows_changed")
        req = _sum_md({"materialized": {k: v for k, v in p["materialized"].items()
                                        if "landed_with" not in v}}, "sap_raw/", "requests")
        nbytes = p.get("sap_served", {}).get("bytes_served")
        rows.append([f"{tag}2 land over HTTP (all tables)", _f(p["wall_s"], 2), _f(rows_landed),
                     _f(_rate(rows_landed, p["wall_s"]), 0), _f(p["peak_rss_mb"], 0),
                     f"{changed:,} rows changed; {req:,} requests, {_mb(nbytes)} read"])
    if "transform" in st:
        p = st["transform"]
        built = sum(int(m.get("dagster/row_count") or 0) for m in p["materialized"].values())
        changed = _sum_md(p, "ometria/", "payloads_new") + _sum_md(p, "ometria/", "payloads_changed")
        rows.append([f"{tag}3 transforms (ometria/*)", _f(p["wall_s"], 2), _f(built), _f(_rate(built, p["wall_s"]), 0),
                     _f(p["peak_rss_mb"], 0), f"{changed:,} payloads new or changed"])
    if "push_dry" in st:
        p = st["push_dry"]
        rows.append([f"{tag}5a push: delta + serialisation", _f(p["wall_s"], 2), _f(p["records"]),
                     _f(_rate(p["records"], p["wall_s"]), 0), _f(p["peak_rss_mb"], 0),
                     f"`push_feed` dry run on a copy: {p['requests']:,} request bodies, {_mb(p['bytes'])}"])
    if "push" in st:
        p = st["push"]
        sent = _sum_md(p, "ometria_push/", "records_sent")
        req = _sum_md(p, "ometria_push/", "requests")
        nbytes = _sum_md(p, "ometria_push/", "bytes_sent")
        rows.append([f"{tag}5b push over HTTP (emulator, no rate limit)", _f(p["wall_s"], 2), _f(sent),
                     _f(_rate(sent, p["wall_s"]), 0), _f(p["peak_rss_mb"], 0),
                     f"{req:,} requests ({_f(_rate(req, p['wall_s']), 0)}/s), {_mb(nbytes)}"
                     + (f", waiting on the emulator's answers {sum(p['http_s_by_feed'].values()):.1f} s of it"
                        if p.get("http_s_by_feed") else "")
                     + f"; at Ometria's 4 requests/s: {_duration(req / OMETRIA_REQUESTS_PER_S)}"])
    if "readback" in st:
        p = st["readback"]
        n = _sum_md(p, "recon/", "dagster/row_count")
        rows.append([f"{tag}4a recon read-back of Ometria (HTTP)", _f(p["wall_s"], 2), _f(n), _f(_rate(n, p["wall_s"]), 0),
                     _f(p["peak_rss_mb"], 0), f"{p.get('ometria_received', {}).get('requests', 0):,} GET requests"])
    if "checks" in st:
        p = st["checks"]
        checks = p.get("checks", {})
        failed = sum(1 for c in checks.values() if not c["passed"])
        exc = p["materialized"].get("ops/sync_exceptions", {}).get("dagster/row_count")
        rows.append([f"{tag}4b checks, exceptions, recon views", _f(p["wall_s"], 2), "-", "-", _f(p["peak_rss_mb"], 0),
                     f"{len(checks)} asset checks ({failed} did not pass), ops.sync_exceptions {_f(exc)} rows"])
    return rows


def _slowest(st: dict[str, Any], n: int = 6) -> str:
    parts = []
    for phase in ("land", "transform", "push", "checks"):
        steps = st.get(phase, {}).get("steps") or {}
        top = sorted(steps.items(), key=lambda kv: -kv[1])[:n]
        if top:
            parts.append(f"- {phase} ({st[phase]['wall_s']:.1f} s; Dagster setup before it "
                         f"{st[phase].get('setup_s', 0):.1f} s, not counted): "
                         + ", ".join(f"`{k}` {v:.2f} s" for k, v in top))
    return "\n".join(parts)


def _scale_section(s: dict[str, Any]) -> str:
    out = [f"## Scale x{s['scale']:g}", ""]
    if "error" in s:
        return "\n".join(out + ["**This scale failed:**", "", "```", s["error"], "```", ""])
    out += [_company(s), ""]
    d = derive(s)
    targets = _targets(s, d)
    if targets:
        out += ["### Targets (set for x100 on 2 cores)", "", _md(targets, ["target", "figure", "verdict"]), ""]
    head = ["stage", "wall s", "records", "records/s", "peak RSS MiB", "notes"]
    rows = _stage_rows(s, s.get("stages", {}), False) + _stage_rows(s, s.get("incremental", {}), True)
    out += ["### Stages", "", _md(rows, head), ""]
    if publish_rows(s):  # benchmarks/publish.py
        out += ["### Publish (the DuckLake snapshot people read)", "", _md(publish_rows(s), PUBLISH_HEAD), ""]

    base = s.get("baselines", {})
    if base or d.get("our_orders_per_s"):
        brows = []
        ordr = s.get("stages", {}).get("land", {}).get("materialized", {}).get("sap_raw/ordr", {})
        ours = d.get("our_orders_per_s")
        if ordr:
            brows.append(["ours: sap_raw/ordr asset (HTTP, parse, merge ordr+rdr1+rdr3, SCD2 history)",
                          _f(ordr.get("rows_landed")), _f(ordr.get("duration_s"), 2), _f(ours, 0), "1.00"])
        if "pages" in base:
            p = base["pages"]
            brows.append([f"HTTP only: our client saving the same pages ({p['pages']:,} x {p['page_size']}, {_mb(p['bytes'])})",
                          _f(p["orders"]), _f(p["wall_s"], 2), _f(d.get("http_orders_per_s"), 0),
                          _f(ours / d["http_orders_per_s"], 2) if ours and d.get("http_orders_per_s") else "-"])
        if "read_json" in base:
            p = base["read_json"]
            brows.append(["DuckDB `read_json` + unnest of the saved pages into a table (parsing limit)",
                          _f(p["orders"]), _f(p["wall_s"], 2), _f(d.get("read_json_orders_per_s"), 0),
                          _f(ours / d["read_json_orders_per_s"], 2) if ours and d.get("read_json_orders_per_s") else "-"])
        if "dlt" in base:
            p = base["dlt"]
            brows.append([f"dlt `rest_api` source -> DuckDB, first {p['limit']:,} orders only (dlt is slow)",
                          _f(p["orders"]), _f(p["wall_s"], 2), _f(d.get("dlt_orders_per_s"), 0),
                          _f(ours / d["dlt_orders_per_s"], 1) if ours and d.get("dlt_orders_per_s") else "-"])
        out += ["### Landing baselines (Orders, same data, same run)", "",
                _md(brows, ["path", "orders", "s", "orders/s", "ours / it"]), ""]

    if d.get("push_rows"):
        prows = []
        full = s["stages"].get("push", {})
        full_req = _sum_md(full, "ometria_push/", "requests")
        full_bytes = _sum_md(full, "ometria_push/", "bytes_sent")
        full_sent = _sum_md(full, "ometria_push/", "records_sent")
        if full:
            prows.append(["first sync: everything sent (empty ledger) = what a re-send-everything push costs each sync",
                          _f(full_sent), _f(full_req), _mb(full_bytes), _duration(full_req / OMETRIA_REQUESTS_PER_S)])
        resend_req = sum(math.ceil(r["pushable"] / 100) for r in d["push_rows"])
        resend_rec = sum(r["pushable"] for r in d["push_rows"])
        prows.append(["re-send everything at the incremental sync (pushable records now, 100 a request)",
                      _f(resend_rec), _f(resend_req), "-", _duration(resend_req / OMETRIA_REQUESTS_PER_S)])
        inc_req = sum(r["requests"] or 0 for r in d["push_rows"])
        inc_bytes = sum(r["bytes"] or 0 for r in d["push_rows"])
        inc_sent = sum(r["sent"] or 0 for r in d["push_rows"])
        prows.append(["incremental delta push (measured)", _f(inc_sent), _f(inc_req), _mb(inc_bytes),
                      _duration(inc_req / OMETRIA_REQUESTS_PER_S)])
        out += ["### Push: delta against re-sending everything", "",
                _md(prows, ["push", "records", "requests", "bytes", "at 4 requests/s"]), "",
                "Per feed at the incremental sync (`changed` = pushable records whose payload hash is new "
                "since the previous build, computed from the tables independently of the push; stock also "
                "counts flags whose product was re-sent, which the push re-sends by rule):", "",
                _md([[r["feed"], _f(r["changed"]), _f(r["sent"]), _f(r["expected"]), _f(r["requests"]),
                      "yes" if r["requests"] == r["expected"] else "**no**"] for r in d["push_rows"]],
                    ["feed", "changed", "sent", "ceil(changed/100)", "requests", "equal"]), ""]
    for stage, why in s.get("skipped", {}).items():
        out += [f"Skipped: {stage}, {why}.", ""]
    slow = _slowest(s.get("stages", {}))
    if slow:
        out += ["### Slowest steps (full run)", "", slow, ""]
    em = s.get("emulators", {})
    if em:
        out += [f"Emulator processes (not counted above): SAP B1 peak RSS {_f(em.get('sap', {}).get('peak_rss_mb'), 0)} MiB, "
                f"Ometria peak RSS {_f(em.get('ometria', {}).get('peak_rss_mb'), 0)} MiB.", ""]
    return "\n".join(out)


METHOD = """\
How it is measured:
- Each stage runs in its own worker process (`benchmarks/stages.py`); **peak RSS** is that
  process's own `getrusage(RUSAGE_SELF).ru_maxrss` (kernel-tracked peak, no sampling), imports
  and DuckDB included (Python + Dagster + polars + duckdb alone are ~120 MiB). **Wall time** is
  the Dagster job's execution of the real assets and checks, in process; loading the
  definitions before it is reported apart (setup) and not counted.
- The SAP B1 and Ometria emulators run in separate processes on the same 2 cores: they compete
  with the stage for CPU (a real Service Layer and Ometria would not). Up to x10 the SAP emulator
  pre-renders its JSON before the landing, so landing times serving, not the emulator's rendering.
- records/s = rows written (landing: rows of every landed table, child tables included;
  transforms: rows of the ometria/* tables; push: records sent) / wall time.
- Ometria's real ceiling is about 4 requests/s of 100 records: "at 4 requests/s" applies it on
  paper to the requests measured against the emulator (which applies no rate limit here).
- One run each; treat the figures as orders of magnitude on a shared machine."""


def render(results: dict[str, Any]) -> str:
    m, v = results["machine"], results["versions"]
    out = [
        "# Benchmarks at scale", "",
        f"Written by `make bench` (`{results['command']}`), started {results['started_at']}, "
        f"{results['total_s']:.0f} s in all. Stages run: {', '.join(results['stages_run'])}.", "",
        *([f"> {results['note']}", ""] if results.get("note") else []),
        "## Machine and versions", "",
        _md([["CPU", m["cpu"]], ["cores", f"{m['cores']} ({m.get('usable_cores')} usable)"],
             ["RAM", f"{m['ram_gib']} GiB" if m.get("ram_gib") else "-"], ["OS", m["os"]],
             ["load average at start", m.get("load_avg_at_start")],
             ["versions", ", ".join(f"{k} {val}" for k, val in v.items())]], ["", ""]), "",
        METHOD, "",
    ]
    for s in results["scales"]:
        out.append(_scale_section(s))
    out.append(scaling_section(results))
    return "\n".join(out).rstrip() + "\n"
