"""What the push after a landing run may build: `push_ometria_job`'s assets, less those
downstream of a landed SAP table whose blocking contract check failed in that run.

A blocking check stops, inside its own run, only the assets downstream of the table it checks.
The push is a separate run (`push_after_landing`), so the landing run's verdict is carried over
here: a broken extract of ORDR holds back `ometria/orders`, `ometria/refunds` and the orders
push, while contacts and products, which do not read ORDR, are built and pushed as usual. The exception register and the
other `ops` assets always run: they report on what is there (and on what was held back).

A landing run that failed for any other reason (a read that crashed) is not pushed from at all:
only a run whose every failed step is a failed blocking check counts as "landed, partly blocked".
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from sap_ometria_assets.defs.automation.alerting import failed_check_evaluations
from sap_ometria_assets.defs.automation.jobs import push_selection

# Dagster's error for a step whose blocking check failed with ERROR severity.
_BLOCKED_STEP_ERROR = "DagsterAssetCheckFailedError"
# Groups whose assets a blocked table holds back (ops reports on whatever is there). A push
# that runs after another (orders after contacts and products, so an order's customer and
# products exist in Ometria first) is held back with it: downstream means the whole graph.
_HELD_BACK_GROUPS = ("ometria", "ometria_push")
# Reads Ometria's error list, not SAP data: never held back.
_ALWAYS_RUN = {dg.AssetKey(["ometria_push", "errors"])}


@dataclass(frozen=True)
class PushScope:
    blocked_checks: list[str]              # "sap_raw/oitm:contract", sorted
    held_back: list[dg.AssetKey]           # push-job assets downstream of a blocked table
    selection: list[dg.AssetKey] | None    # None: the whole push job

    @property
    def nothing_left(self) -> bool:
        return self.selection is not None and not any(
            k.path[0] in _HELD_BACK_GROUPS for k in self.selection)


def failed_other_than_blocking_checks(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Step keys of the run that failed for a reason other than a failed blocking check."""
    out = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        if error is None or error.cls_name != _BLOCKED_STEP_ERROR:
            out.append(event.step_key if event else "?")
    return out


def push_scope(instance: dg.DagsterInstance, run_id: str,
               repository_def: dg.RepositoryDefinition | None) -> PushScope:
    """The push-job assets a push after landing run `run_id` may build."""
    failed = [e for e in failed_check_evaluations(instance, run_id)
              if e.blocking and e.severity == dg.AssetCheckSeverity.ERROR]
    names = sorted(f"{e.asset_key.to_user_string()}:{e.check_name}" for e in failed)
    if not failed:
        return PushScope([], [], None)
    if repository_def is None:  # no asset graph to find what is downstream: hold back it all
        return PushScope(names, [], [])
    graph = repository_def.asset_graph
    everything = push_selection.resolve(graph)
    downstream = dg.AssetSelection.assets(*{e.asset_key for e in failed}).downstream().resolve(graph)
    held = {k for k in everything & downstream
            if k.path[0] in _HELD_BACK_GROUPS and k not in _ALWAYS_RUN}
    return PushScope(names, sorted(held, key=str), sorted(everything - held, key=str))
