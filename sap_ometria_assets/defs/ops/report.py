"""The health report (group `ops`): one self-contained HTML page per run for marketing, finance
and ops, written to `data/reports/latest.html` (and one file per run, the last 30 kept)."""

from datetime import datetime, timezone

import dagster as dg

from sap_ometria_assets.defs.ops.assets import EXCEPTION_HISTORY, SYNC_EXCEPTIONS
from sap_ometria_assets.defs.recon.assets import RECON_VIEWS
from sap_ometria_assets.defs.resources import WarehouseResource
from sap_ometria_assets.lib.quality.checks_config import mapping_facts
from sap_ometria_assets.lib.report.facts import gather
from sap_ometria_assets.lib.report.render import render_html, write_report

HEALTH_REPORT = dg.AssetKey(["ops", "health_report"])


@dg.asset(
    key=HEALTH_REPORT,
    deps=[SYNC_EXCEPTIONS, EXCEPTION_HISTORY, RECON_VIEWS],
    group_name="ops",
    kinds={"html"},
    pool="duckdb",
)
def health_report(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """A page to open in a browser, no SQL needed (`data/reports/latest.html`): open exceptions by
    owner ranked by money at stake, each rule with what to do; reconciliation of net revenue per
    currency (SAP vs sent vs Ometria) with missing, extra and stale counts; the trend of open
    exceptions over the last 30 runs; how fresh each SAP table is. Self-contained (inline CSS and
    SVG charts): it can be mailed or archived as it is."""
    now = datetime.now(timezone.utc)
    currency = mapping_facts().local_currency
    with warehouse.connect(read_only=True) as con:
        facts = gather(con, now, currency)
    html = render_html(facts, run_id=context.run.run_id)
    reports_dir = warehouse.path.parent / "reports"
    run_file = write_report(html, reports_dir, facts)
    latest = (reports_dir / "latest.html").resolve()
    context.log.info(f"Health report: {latest}")
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.url(latest.as_uri()),
        "this_run": dg.MetadataValue.path(str(run_file.resolve())),
        "exceptions_in_report": sum(r.open for r in facts.rules),
        "rules_firing": len(facts.rules),
    })
