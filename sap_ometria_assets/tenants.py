"""Many companies on one Dagster deployment: one code location per company.

`workspace.yaml` names each company as an attribute of this module:

    load_from:
      - python_module: {module_name: sap_ometria_assets.tenants, attribute: acme_uk,
                        location_name: acme_uk, working_directory: .}

Reading `sap_ometria_assets.tenants.acme_uk` (PEP 562 module `__getattr__`) reads
`companies/acme_uk.yaml`, validates it with the environment (its secrets, by the variable names
it gives), checks its mapping and checks files, makes the company's settings the process's
settings, and builds the same Definitions as the single-company product (`definitions.py`),
with every job tagged `sap_ometria/company` (and `sap_ometria/ometria_account` for jobs that talk
to Ometria) so the run queue can keep one writing run per company and one push per Ometria
account. Anything wrong raises, so that company's code location shows the error in the UI
while the others load and run: Dagster starts one code server process per location.

One company per process: the definitions are module-level objects built from the settings, so a
process that has built one company refuses to build another (a code server and each run worker
serve one location; this is what Dagster does anyway).

`sap_change_sensor` is left out of company locations: it reads the last landing's watermark
from the instance by asset key, and asset keys are not prefixed by company (see
docs/deployment.md); the hourly `land_sap_job_schedule` lands each company instead.

`python -m sap_ometria_assets.tenants workspace` prints the workspace.yaml for the companies
folder; `python -m sap_ometria_assets.tenants check` validates every company file.
"""

from __future__ import annotations

import sys
from typing import Any

import dagster as dg

from sap_ometria_assets import definitions
from sap_ometria_assets.lib.config.settings import Settings, activate_settings
from sap_ometria_assets.lib.ometria.mapping import load_mapping
from sap_ometria_assets.lib.quality.checks_config import load_checks_config
from sap_ometria_assets.lib.tenants.companies import (
    CompanyConfig,
    CompanyConfigError,
    company_settings,
    companies_dir,
    list_companies,
    load_company,
)
from sap_ometria_assets.lib.tenants.shared_accounts import check_shared_account

# Asset groups whose materialisation sends requests to Ometria (push, read-back, backfill push).
OMETRIA_GROUPS = frozenset({"ometria_push", "recon", "backfill"})
LEFT_OUT_SENSORS = frozenset({"sap_change_sensor"})

_built: dict[str, dg.Definitions] = {}


def _retag(job: Any, tags: dict[str, str]) -> Any:
    """The same asset job with `tags` added to its definition and run tags."""
    return type(job)(
        name=job.name, selection=job.selection, config=job.config, description=job.description,
        tags={**(job.tags or {}), **tags}, run_tags={**(job.run_tags or {}), **tags},
        metadata=job.metadata, partitions_def=job.partitions_def, executor_def=job.executor_def,
        hooks=job.hooks, op_retry_policy=job.op_retry_policy, owners=job.owners,
        automation_condition=job.automation_condition,
    )


def for_company(defs: dg.Definitions, company: CompanyConfig) -> dg.Definitions:
    """`defs` with the company's run tags on every job (and on what schedules and sensors
    start), less the sensors that cannot tell companies apart."""
    graph = defs.resolve_asset_graph()
    jobs = {}
    for job in defs.jobs or []:
        keys = job.selection.resolve(graph)
        talks_to_ometria = any(graph.get(k).group_name in OMETRIA_GROUPS for k in keys)
        jobs[job.name] = _retag(job, company.run_tags(pushes=talks_to_ometria))
    schedules = [s.with_updated_job(jobs[s.job_name]) if s.job_name in jobs else s
                 for s in defs.schedules or []]
    sensors = []
    for sensor in defs.sensors or []:
        if sensor.name in LEFT_OUT_SENSORS:
            continue
        targets = [t.job_name for t in sensor.targets]
        if targets and all(name in jobs for name in targets):
            sensor = sensor.with_updated_jobs([jobs[name] for name in targets])
        sensors.append(sensor)
    return dg.Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, jobs=list(jobs.values()),
        schedules=schedules, sensors=sensors, resources=defs.resources, executor=defs.executor,
        loggers=defs.loggers, metadata={**(defs.metadata or {}), "company": company.name},
    )


def validated_company(name: str) -> tuple[CompanyConfig, Settings]:
    """The company file, its settings, and its mapping and checks files read: anything wrong
    raises here, naming the file (a broken mapping fails this location's load), and so does
    a company that would overwrite another's orders or contacts in a shared Ometria account."""
    company = load_company(name)
    settings = company_settings(company)
    mapping = load_mapping(settings.mapping_path)
    load_checks_config(settings.checks_path)
    check_shared_account(company, settings, mapping)
    return company, settings


def company_definitions(name: str) -> dg.Definitions:
    """The Definitions of company `name` (built once per process; one company per process)."""
    if name in _built:
        return _built[name]
    if _built:
        raise CompanyConfigError(
            f"this process already serves company {next(iter(_built))}; each company needs its "
            "own code location (one python_module entry per company in workspace.yaml)")
    company, settings = validated_company(name)
    activate_settings(settings)
    _built[name] = for_company(definitions.defs(), company)
    return _built[name]


def __getattr__(name: str) -> dg.Definitions:
    if name.startswith("_"):
        raise AttributeError(name)
    return company_definitions(name)


def workspace_yaml(names: list[str]) -> str:
    lines = ["load_from:"]
    for name in names:
        lines += [
            "  - python_module:",
            "      module_name: sap_ometria_assets.tenants",
            f"      attribute: {name}",
            f"      location_name: {name}",
            "      working_directory: .",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    names = list_companies()
    if args[:1] == ["workspace"]:
        print(workspace_yaml(names), end="")
        return 0
    if args[:1] == ["check"]:
        failed = 0
        for name in names:
            try:
                validated_company(name)
                print(f"ok      {name}")
            except Exception as exc:  # noqa: BLE001 - report each company, go on with the next
                failed += 1
                print(f"FAILED  {name}: {exc}")
        print(f"{len(names) - failed} of {len(names)} companies in {companies_dir()} are valid")
        return 1 if failed else 0
    print("usage: python -m sap_ometria_assets.tenants workspace|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
