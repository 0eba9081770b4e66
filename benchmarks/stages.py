"""Stage workers: `python -m benchmarks.stages <stage> [options]`, one process per stage.

Every stage runs the project's own code, never a copy of it:
- `dagster --phase land|transform|push|readback|checks`: the real assets and asset checks,
  executed by Dagster in process (as `make demo` runs them) on a subset of the definitions;
  wall time is the job's execution (imports and definition loading are reported apart).
- `push_dry`: `lib.push.push_feed(dry_run=True)` for every feed on a copy of the warehouse: the
  delta computation and serialisation of a push (plan, batching, JSON bodies, ledger), no HTTP.
- `pages` / `read_json` / `dlt`: the landing baselines (save the Orders pages with the real
  client; DuckDB `read_json` over them; dlt's `rest_api` source paging the same endpoint).
- `hashes --save|--diff`: the Ometria records whose payload changed, computed independently of
  the push, to check that an incremental push sends exactly those.

Settings come from the environment the orchestrator sets (a temp warehouse, the emulators).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.common import current_rss_mb, emit, peak_rss_mb
from benchmarks.publish import stage_publish
from benchmarks.overhead import run_overhead

FEEDS = ("contacts", "products", "orders", "stock")


# ---------------------------------------------------------------------------------------------
# Dagster phases
# ---------------------------------------------------------------------------------------------
def _selection(phase: str):
    import dagster as dg

    from sap_ometria_assets.defs.sap_raw.checks import landing_checks

    snapshot = dg.AssetKey(["recon", "ometria_snapshot"])
    if phase == "land":  # with contract and schema_drift, which the landing steps evaluate
        return dg.AssetSelection.groups("sap_raw").without_checks() | landing_checks()
    if phase == "transform":
        return dg.AssetSelection.groups("ometria").without_checks()
    if phase == "push":
        return dg.AssetSelection.groups("ometria_push").without_checks()
    if phase == "readback":
        return dg.AssetSelection.assets(snapshot).without_checks()
    if phase == "checks":
        # Asset checks of the landed and Ometria-ready tables, the exception register, the
        # reconciliation views and their checks (the read-back is its own phase: HTTP-bound).
        checked = dg.AssetSelection.groups("sap_raw", "ometria")
        return (checked - checked.without_checks() - landing_checks()) | (
            dg.AssetSelection.groups("ops", "recon") - dg.AssetSelection.assets(snapshot).without_checks()
            - dg.AssetSelection.assets(snapshot))
    raise ValueError(f"unknown phase {phase!r}")


def _step_durations(instance, run_id: str) -> dict[str, float]:
    starts: dict[str, float] = {}
    out: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        key, kind = event.step_key, event.event_type_value
        if not key:
            continue
        if kind == "STEP_START":
            starts[key] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and key in starts:
            out[key] = round(entry.timestamp - starts[key], 3)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return None  # tables, schemas, markdown: not needed in the report


def stage_dagster(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    import dagster as dg

    from sap_ometria_assets.definitions import defs as build_defs
    from sap_ometria_assets.defs.resources import OmetriaResource

    loaded = build_defs()
    job = dg.define_asset_job(f"bench_{args.phase}", selection=_selection(args.phase))
    resources = dict(loaded.resources or {})
    # The emulator applies no rate limit; neither does our client here (Ometria's real ceiling
    # is applied on paper in the report: requests / 4 per second).
    resources["ometria"] = OmetriaResource(rate_limit_per_s=1_000_000.0)
    defs = dg.Definitions(assets=loaded.assets, asset_checks=loaded.asset_checks, resources=resources,
                          jobs=[job], executor=dg.in_process_executor)
    job_def = defs.resolve_job_def(job.name)
    setup_s = time.perf_counter() - t0
    rss_before = current_rss_mb()
    with dg.DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        result = job_def.execute_in_process(instance=instance, raise_on_error=False)
        wall = time.perf_counter() - started
        steps = _step_durations(instance, result.run_id)
        overhead = run_overhead(instance, result.run_id)
    extra: dict[str, Any] = {"overhead": overhead}
    if args.phase == "push":
        extra["http_s_by_feed"] = _http_seconds(result.run_id)
        extra["push_loop"] = _push_loop(result.run_id)
    failures = []
    for event in result.all_events:
        if event.is_step_failure:
            err = event.event_specific_data.error  # type: ignore[union-attr]
            failures.append(f"{event.step_key}: {err.message.strip()[:500] if err else ''}")
    materialized: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization  # type: ignore[union-attr]
        materialized[mat.asset_key.to_user_string()] = {
            k: _plain(v.value) for k, v in mat.metadata.items() if _plain(v.value) is not None}
    checks: dict[str, dict[str, Any]] = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            ev = event.event_specific_data
            checks[f"{ev.asset_key.to_user_string()}:{ev.check_name}"] = {
                "passed": ev.passed, "severity": str(ev.severity.value) if ev.severity else None}
    return {
        "phase": args.phase, "success": result.success and not failures, "failures": failures,
        "wall_s": round(wall, 3), "setup_s": round(setup_s, 3), "rss_before_mb": rss_before,
        "steps": steps, "materialized": materialized, "checks": checks, **extra,
    }


def _http_seconds(run_id: str) -> dict[str, float]:
    """Time spent waiting on Ometria's answers, per feed (the rest of a push is ours)."""
    from sap_ometria_assets.lib.config.settings import get_settings
    from sap_ometria_assets.lib.warehouse.db import connect

    with connect(get_settings().duckdb_path, read_only=True) as con:
        rows = con.execute(
            "SELECT feed, coalesce(sum(duration_ms), 0) / 1000 FROM ometria_push.requests "
            "WHERE run_id = ? GROUP BY feed", [run_id]).fetchall()
    return {feed: round(float(s), 3) for feed, s in rows}


def _push_loop(run_id: str) -> dict[str, float]:
    """The push's request loop, summed over feeds: requests, time from each feed's first request
    to its last answer, and the time waiting on answers within it. What is left between
    requests is our cost per request (body, ledger, bookkeeping), free of the once-per-feed
    work before the first request and after the last (delta plan, ack merge, Dagster)."""
    from sap_ometria_assets.lib.config.settings import get_settings
    from sap_ometria_assets.lib.warehouse.db import connect

    with connect(get_settings().duckdb_path, read_only=True) as con:
        row = con.execute(
            "SELECT coalesce(sum(n), 0), coalesce(sum(gaps), 0), coalesce(sum(span), 0) FROM ("
            "  SELECT feed, count(*) - 1 AS n, "
            "         epoch(max(sent_at + duration_ms * INTERVAL 1 MILLISECOND) - min(sent_at)) AS span, "
            "         epoch(max(sent_at + duration_ms * INTERVAL 1 MILLISECOND) - min(sent_at)) "
            "           - sum(duration_ms) / 1000 AS gaps "
            "  FROM ometria_push.requests WHERE run_id = ? AND duration_ms IS NOT NULL "
            "  GROUP BY feed HAVING count(*) > 1)", [run_id]).fetchall()[0]
    return {"intervals": int(row[0]), "between_requests_s": round(float(row[1]), 3),
            "loop_s": round(float(row[2]), 3)}


# ---------------------------------------------------------------------------------------------
# Push without HTTP: delta computation + serialisation
# ---------------------------------------------------------------------------------------------
def stage_push_dry(args: argparse.Namespace) -> dict[str, Any]:
    from sap_ometria_assets.lib.push.send import push_feed
    from sap_ometria_assets.lib.config.settings import get_settings
    from sap_ometria_assets.lib.warehouse.db import connect

    settings = get_settings()
    work = Path(args.workdir)
    copy = work / "push_dry.duckdb"
    outbox = work / "push_dry_outbox"
    shutil.copyfile(settings.duckdb_path, copy)
    wal = Path(str(settings.duckdb_path) + ".wal")
    if wal.exists():
        shutil.copyfile(wal, str(copy) + ".wal")
    feeds: dict[str, Any] = {}
    try:
        with connect(copy) as con:
            rss_before = current_rss_mb()
            started = time.perf_counter()
            for feed in FEEDS:
                t = time.perf_counter()
                r = push_feed(con, None, feed, dry_run=True, outbox_dir=outbox, run_id="bench")
                feeds[feed] = {"records": r.records_sent, "requests": r.requests, "bytes": r.bytes_sent,
                               "skipped_unchanged": r.skipped_unchanged, "waiting": r.waiting_for_parent,
                               "s": round(time.perf_counter() - t, 3)}
            wall = time.perf_counter() - started
    finally:
        copy.unlink(missing_ok=True)
        Path(str(copy) + ".wal").unlink(missing_ok=True)
        shutil.rmtree(outbox, ignore_errors=True)
    return {"wall_s": round(wall, 3), "rss_before_mb": rss_before, "feeds": feeds,
            "records": sum(f["records"] for f in feeds.values()),
            "requests": sum(f["requests"] for f in feeds.values()),
            "bytes": sum(f["bytes"] for f in feeds.values())}


# ---------------------------------------------------------------------------------------------
# Independent change count: which Ometria records a push must send
# ---------------------------------------------------------------------------------------------
def _pushable(con, feed: str):
    return con.sql(
        f"SELECT CAST(id AS VARCHAR) AS id, payload_hash FROM ometria.{feed} "
        "WHERE held_back_reason IS NULL").pl()


def stage_hashes(args: argparse.Namespace) -> dict[str, Any]:
    import polars as pl

    from sap_ometria_assets.lib.config.settings import get_settings
    from sap_ometria_assets.lib.warehouse.db import connect

    folder = Path(args.workdir) / "hashes_before"
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    with connect(get_settings().duckdb_path, read_only=True) as con:
        if args.save:
            for feed in FEEDS:
                frame = _pushable(con, feed)
                frame.write_parquet(folder / f"{feed}.parquet")
                out[feed] = frame.height
            return {"saved": out}
        changed_ids: dict[str, pl.Series] = {}
        for feed in FEEDS:
            before = pl.read_parquet(folder / f"{feed}.parquet")
            after = _pushable(con, feed)
            # new records and records whose payload differs from the version last pushed
            diff = after.join(before, on=["id", "payload_hash"], how="anti")
            changed_ids[feed] = diff["id"]
            out[feed] = {"pushable": after.height, "changed": diff.height}
        # A stock flag is sent again after its product was re-sent whole (lib/push/plan.py rule).
        stock_ids = _pushable(con, "stock")["id"]
        resent = stock_ids.filter(stock_ids.is_in(changed_ids["products"]) | stock_ids.is_in(changed_ids["stock"]))
        out["stock"]["changed_including_product_resends"] = resent.len()
    for feed in FEEDS:
        n = out[feed].get("changed_including_product_resends", out[feed]["changed"])
        out[feed]["expected_requests"] = math.ceil(n / 100)
    return {"feeds": out}


# ---------------------------------------------------------------------------------------------
# Landing baselines
# ---------------------------------------------------------------------------------------------
def stage_pages(args: argparse.Namespace) -> dict[str, Any]:
    """Save the Orders pages exactly as our landing reads them (client, page size, order)."""
    from sap_ometria_assets.lib.sap.client import SapB1Client
    from sap_ometria_assets.lib.config.settings import get_settings

    folder = Path(args.workdir) / "orders_pages"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    settings = get_settings()
    with SapB1Client.from_settings(settings) as client:
        orders = client.count("Orders")
        started = time.perf_counter()
        pages = nbytes = 0
        for number, body in enumerate(client.iter_pages("Orders", orderby="DocEntry"), start=1):
            (folder / f"page_{number:07d}.json").write_bytes(body)
            pages += 1
            nbytes += len(body)
        wall = time.perf_counter() - started
    return {"wall_s": round(wall, 3), "orders": orders, "pages": pages, "bytes": nbytes,
            "page_size": settings.sap_b1_page_size}


def stage_read_json(args: argparse.Namespace) -> dict[str, Any]:
    import duckdb

    folder = Path(args.workdir) / "orders_pages"
    db = Path(args.workdir) / "read_json.duckdb"
    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    try:
        rss_before = current_rss_mb()
        started = time.perf_counter()
        con.execute(
            "CREATE TABLE orders AS SELECT unnest(o) FROM (SELECT unnest(value) AS o FROM "
            f"read_json('{folder}/*.json', format='unstructured', records=true))")
        wall = time.perf_counter() - started
        rows = con.execute("SELECT count(*) FROM orders").fetchall()[0][0]
        lines = con.execute("SELECT sum(len(DocumentLines)) FROM orders").fetchall()[0][0]
    finally:
        con.close()
        db.unlink(missing_ok=True)
        Path(str(db) + ".wal").unlink(missing_ok=True)
    return {"wall_s": round(wall, 3), "orders": int(rows), "lines": int(lines or 0), "rss_before_mb": rss_before}


def stage_dlt(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # no outside network here
    import dlt
    import httpx
    from dlt.sources.rest_api import rest_api_source

    from sap_ometria_assets.lib.config.settings import get_settings

    settings = get_settings()
    work = Path(args.workdir) / "dlt"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # dlt has no SAP B1 session login: a user of dlt logs in once (POST Login) and hands dlt
    # the session cookies, as done here with plain httpx.
    base = settings.sap_b1_service_layer_url.rstrip("/")
    login = httpx.post(f"{base}/Login", json={
        "CompanyDB": settings.sap_b1_company_db, "UserName": settings.sap_b1_username,
        "Password": settings.sap_b1_password.get_secret_value()}, timeout=60)
    login.raise_for_status()
    cookie = "; ".join(f"{k}={v}" for k, v in login.cookies.items())
    source = rest_api_source({
        "client": {
            "base_url": base + "/",
            "headers": {"Cookie": cookie, "Prefer": f"odata.maxpagesize={settings.sap_b1_page_size}"},
            "paginator": {"type": "json_link", "next_url_path": "'@odata.nextLink'"},
        },
        "resources": [{
            "name": "orders",
            "endpoint": {"path": "Orders", "data_selector": "value",
                         "params": {"$orderby": "DocEntry", "$top": args.limit}},
        }],
    })
    pipeline = dlt.pipeline(pipeline_name="bench_dlt", pipelines_dir=str(work / "pipelines"),
                            destination=dlt.destinations.duckdb(str(work / "dlt.duckdb")),
                            dataset_name="sap")
    rss_before = current_rss_mb()
    started = time.perf_counter()
    pipeline.run(source)
    wall = time.perf_counter() - started
    with pipeline.sql_client() as sql:
        orders = sql.execute_sql("SELECT count(*) FROM orders")[0][0]
        tables = [r[0] for r in sql.execute_sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'sap'")]
        lines = 0
        if "orders__document_lines" in tables:
            lines = sql.execute_sql("SELECT count(*) FROM orders__document_lines")[0][0]
    shutil.rmtree(work, ignore_errors=True)
    return {"wall_s": round(wall, 3), "orders": int(orders), "lines": int(lines), "limit": args.limit,
            "rss_before_mb": rss_before}


STAGES = {"dagster": stage_dagster, "push_dry": stage_push_dry, "hashes": stage_hashes,
          "pages": stage_pages, "read_json": stage_read_json, "dlt": stage_dlt}
STAGES["publish"] = stage_publish  # benchmarks/publish.py


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--phase", default=None)
    parser.add_argument("--limit", type=int, default=50_000)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args(argv)
    result = STAGES[args.stage](args)
    result["peak_rss_mb"] = peak_rss_mb()
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
