"""One progress line per phase of a sync, and the Dagster event log in a file.

A sync runs in five phases, one per asset group: landing (sap_raw), building (ometria), pushing
(ometria_push), checking (ops: the exception register) and reconciling (recon). `RunLog` is a
Dagster logger: every event of the run goes to `logs/<run id>.log` beside the warehouse (and to stderr with
`--verbose`), and `PhaseProgress` follows the step events to show, per phase, steps done, what
they counted (rows landed, records built, records sent, open exceptions, records read back) and
the elapsed time: a rich progress bar on a terminal, otherwise one plain line per phase, in
phase order, as it finishes.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

PHASES: dict[str, str] = {
    "sap_raw": "landing", "ometria": "building", "ometria_push": "pushing",
    "ops": "checking", "recon": "reconciling", "snapshots": "publishing",
}
# per phase: the materialization metadata it adds up, and what that number is
COUNTS: dict[str, tuple[str, str]] = {
    "landing": ("rows_landed", "rows landed"),
    "building": ("dagster/row_count", "records built"),
    "pushing": ("records_sent", "records sent"),
    "checking": ("open_exceptions", "open exceptions"),
    "reconciling": ("dagster/row_count", "rows compared"),
    "publishing": ("rows_inserted", "rows published"),
}


def step_phases(defs: dg.Definitions, job: dg.JobDefinition) -> dict[str, str]:
    """Step key -> phase for the steps of `job` (an op's assets or checks name its group)."""
    graph = defs.resolve_asset_graph()
    group_of = {key: graph.get(key).group_name for key in graph.get_all_asset_keys()}
    steps = {node.name for node in job.graph.nodes}
    phases: dict[str, str] = {}
    for assets_def in graph.assets_defs:
        name = assets_def.node_def.name
        if name not in steps:
            continue
        keys = list(assets_def.keys) or [c.asset_key for c in assets_def.check_keys]
        groups = [group_of.get(k) for k in keys]
        phases[name] = PHASES.get(next((g for g in groups if g in PHASES), ""), "checking")
    return phases


@dataclass
class Phase:
    name: str
    total: int
    done: int = 0
    failed: int = 0
    count: float = 0
    started: float | None = None
    ended: float | None = None

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.perf_counter()) - self.started

    def counted(self) -> str:
        return f"{int(self.count):,} {COUNTS[self.name][1]}"

    def line(self) -> str:
        state = "FAILED" if self.failed else "done" if self.done >= self.total else "not run"
        return (f"{self.name:<12} {self.done:>3}/{self.total:<3} steps  {state:<7} "
                f"{self.counted():<28} {self.elapsed:6.1f}s")


class PhaseProgress(logging.Handler):
    """Follows a run's step events; draws a bar per phase on a terminal, plain lines otherwise."""

    def __init__(self, phase_of_step: dict[str, str], console: Console | None = None,
                 live: bool | None = None) -> None:
        super().__init__(level=logging.DEBUG)
        self.phase_of_step = phase_of_step
        self.console = console or Console()
        self.live = live
        totals: dict[str, int] = {}
        for phase in self.phase_of_step.values():
            totals[phase] = totals.get(phase, 0) + 1
        self.phases = {p: Phase(p, totals[p]) for p in PHASES.values() if p in totals}
        self.live = self.console.is_terminal if self.live is None else self.live
        self._bar: Progress | None = None
        self._tasks: dict[str, int] = {}
        self._printed: set[str] = set()

    def __enter__(self) -> PhaseProgress:
        if self.live:
            self._bar = Progress(
                TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[counted]}"), TimeElapsedColumn(), console=self.console)
            for p in self.phases.values():
                self._tasks[p.name] = self._bar.add_task(p.name, total=p.total, start=False,
                                                         counted=p.counted())
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def emit(self, record: logging.LogRecord) -> None:
        event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
        if event is None or event.step_key is None:
            return
        phase = self.phases.get(self.phase_of_step.get(event.step_key.split("[")[0], ""))
        if phase is None:
            return
        kind = event.event_type_value
        now = time.perf_counter()
        if kind == "STEP_START" and phase.started is None:
            phase.started = now
            if self._bar is not None:
                self._bar.start_task(self._tasks[phase.name])
        elif kind == "ASSET_MATERIALIZATION":
            value = event.event_specific_data.materialization.metadata.get(COUNTS[phase.name][0])
            if value is not None and isinstance(value.value, (int, float)):
                phase.count += value.value
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            phase.done += kind == "STEP_SUCCESS"
            phase.failed += kind == "STEP_FAILURE"
            if phase.done + phase.failed >= phase.total:
                phase.ended = now
                self._print_finished()
        else:
            return
        if self._bar is not None:
            task = self._tasks[phase.name]
            self._bar.update(task, completed=phase.done, counted=phase.counted())
            if phase.ended is not None:
                self._bar.stop_task(task)

    def _print_finished(self, everything: bool = False) -> None:
        """Plain lines, in phase order: each finished phase once all phases before it are."""
        if self._bar is not None:
            return
        for p in self.phases.values():
            if p.name in self._printed:
                continue
            if p.ended is None and not everything:
                return
            self._printed.add(p.name)
            self.console.print(p.line(), soft_wrap=True)

    def unfinished(self) -> list[Phase]:
        return [p for p in self.phases.values() if p.done + p.failed < p.total]

    def print_unfinished(self) -> None:
        """The phases not printed yet (some never finish when a step failed upstream)."""
        for p in self.unfinished():
            p.ended = p.ended or (time.perf_counter() if p.started else None)
        self._print_finished(everything=True)


def run_logger(log_path: Path, progress: PhaseProgress, verbose: bool) -> dg.LoggerDefinition:
    """A Dagster logger sending every event to `log_path`, to `progress` and, verbose, to stderr."""
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def build(_init_context) -> logging.Logger:
        logger = logging.getLogger(f"sap_ometria.run.{log_path.stem}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        file_handler = logging.FileHandler(log_path, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(file_handler)
        logger.addHandler(progress)
        if verbose:
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(console)
        return logger

    return dg.LoggerDefinition(build, description="sap-ometria run log (file, progress)")
