"""What Dagster itself costs in a run: the run's wall time minus the time spent in the ops.

Read from the run's event log (`instance.all_logs`), so it works for any finished run (a bench
phase, or a `sap-ometria demo` full sync in its own instance):

- a step's **compute** is STEP_START to its last STEP_OUTPUT / ASSET_CHECK_EVALUATION (the op
  body has returned or yielded its last result by then; input loading is counted as compute);
- **overhead** = run wall time (RUN_START to RUN_SUCCESS/FAILURE) minus the sum of compute:
  step starts, materialisation and check event writes after the body, the gaps between steps,
  run start and end;
- **check steps** are the steps that evaluated asset checks and materialised nothing (each a
  step of its own): their count, their total wall time and its share of the run.
"""

from __future__ import annotations

from typing import Any

_RUN_START = ("PIPELINE_START", "RUN_START")
_RUN_END = ("PIPELINE_SUCCESS", "PIPELINE_FAILURE", "RUN_SUCCESS", "RUN_FAILURE")
_RESULTS = ("STEP_OUTPUT", "ASSET_CHECK_EVALUATION")


def run_overhead(instance: Any, run_id: str) -> dict[str, Any]:
    """Wall, compute, overhead and check-step figures of one run (seconds)."""
    run_start = run_end = None
    steps: dict[str, dict[str, Any]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind, ts = event.event_type_value, entry.timestamp
        if kind in _RUN_START:
            run_start = ts
        elif kind in _RUN_END:
            run_end = ts
        key = event.step_key
        if not key:
            continue
        s = steps.setdefault(key, {"start": None, "end": None, "last_result": None,
                                   "checks": 0, "materialized": 0})
        if kind == "STEP_START":
            s["start"] = ts
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            s["end"] = ts
        elif kind in _RESULTS:
            s["last_result"] = ts
        if kind == "ASSET_CHECK_EVALUATION":
            s["checks"] += 1
        elif kind == "ASSET_MATERIALIZATION":
            s["materialized"] += 1
    done = [s for s in steps.values() if s["start"] is not None and s["end"] is not None]
    if run_start is None or run_end is None or not done:
        return {}
    wall = run_end - run_start
    compute = sum((s["last_result"] or s["end"]) - s["start"] for s in done)
    check_steps = [s for s in done if s["checks"] and not s["materialized"]]
    check_s = sum(s["end"] - s["start"] for s in check_steps)
    return {
        "wall_s": round(wall, 3), "steps": len(done), "compute_s": round(compute, 3),
        "overhead_s": round(wall - compute, 3), "overhead_share": round((wall - compute) / wall, 4) if wall else None,
        "check_steps": len(check_steps), "check_steps_s": round(check_s, 3),
        "check_steps_share": round(check_s / wall, 4) if wall else None,
    }


def overhead_rows(phases: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """Rows for results.md: one per bench phase that recorded its overhead, and their sum."""
    rows: list[list[Any]] = []
    total = {"wall_s": 0.0, "compute_s": 0.0, "overhead_s": 0.0, "steps": 0, "check_steps": 0, "check_steps_s": 0.0}
    for name, phase in phases.items():
        o = phase.get("overhead")
        if not o:
            continue
        for k in total:
            total[k] += o[k]
        rows.append([name, o["steps"], f"{o['wall_s']:.2f}", f"{o['compute_s']:.2f}", f"{o['overhead_s']:.2f}",
                     f"{o['overhead_share']:.0%}", o["check_steps"], f"{o['check_steps_s']:.2f}"])
    if len(rows) > 1 and total["wall_s"]:
        rows.append(["**all phases**", total["steps"], f"{total['wall_s']:.2f}", f"{total['compute_s']:.2f}",
                     f"{total['overhead_s']:.2f}", f"{total['overhead_s'] / total['wall_s']:.0%}",
                     total["check_steps"], f"{total['check_steps_s']:.2f}"])
    return rows


OVERHEAD_HEAD = ["phase", "steps", "run wall s", "op compute s", "Dagster overhead s", "overhead share",
                 "check steps", "check steps wall s"]


if __name__ == "__main__":  # python -m benchmarks.overhead DAGSTER_HOME [RUN_ID]: a finished run's figures
    import json
    import os
    import sys

    import dagster as dg

    os.environ["DAGSTER_HOME"] = sys.argv[1]
    with dg.DagsterInstance.get() as inst:
        run_id = sys.argv[2] if len(sys.argv) > 2 else inst.get_runs(limit=1)[0].run_id
        print(json.dumps(run_overhead(inst, run_id), indent=1))
