"""Checks on the Ometria-ready assets: how many of their records have open sync exceptions.

One check per asset (`ometria/contacts`, `orders`, `products`, `stock`), read from
`ops.sync_exceptions` after it is refreshed. WARN / ERROR thresholds per rule come from
`data/checks.yaml`. Never blocking: held-back records are not sent anyway, and the records that
are fine must still reach Ometria.
"""


import dagster as dg
import polars as pl

from sap_ometria_assets.lib.quality.checks_config import ChecksConfig, get_checks_config
from sap_ometria_assets.lib.ometria.feeds import OMETRIA_FEEDS
from sap_ometria_assets.lib.sync_exceptions.summaries import summarise_for_asset
from sap_ometria_assets.lib.recon.summaries import markdown_table
from sap_ometria_assets.defs.resources import WarehouseResource

SYNC_EXCEPTIONS = dg.AssetKey(["ops", "sync_exceptions"])
_SEVERITY = {"WARN": dg.AssetCheckSeverity.WARN, "ERROR": dg.AssetCheckSeverity.ERROR}


def evaluate_asset_exceptions(con, asset: str, config: ChecksConfig | None = None) -> dg.AssetCheckResult:
    """The check result for one Ometria asset (separate from the decorator for tests)."""
    config = config or get_checks_config()
    summary = summarise_for_asset(con, asset, config)
    owners = {k: (v.team + (f" <{v.contact}>" if v.contact else "")) for k, v in config.owners.items()}
    counts = pl.DataFrame(
        [{"rule": r.rule, "owner": owners.get(r.owner, r.owner), "open": r.open,
          "rate": f"{r.rate:.2%}", "impact": f"{r.impact:,.2f}",
          "result": r.outcome or "ok", "thresholds": r.threshold}
         for r in summary.rules],
        schema={"rule": pl.String, "owner": pl.String, "open": pl.Int64, "rate": pl.String,
                "impact": pl.String, "result": pl.String, "thresholds": pl.String},
    )
    metadata = {
        "open_exceptions": summary.open_total,
        "records": summary.population,
        "open_impact": round(sum(r.impact for r in summary.rules), 2),
        "counts_by_rule": dg.MetadataValue.md(markdown_table(counts)),
        "top_10_by_impact": dg.MetadataValue.md(markdown_table(
            summary.top, ["rule", "record_key", "impact", "currency", "owner", "detail", "fix_hint"],
            max_chars=160,
        )),
    }
    for r in summary.rules:
        metadata[f"open/{r.rule}"] = r.open
    severity = summary.severity
    return dg.AssetCheckResult(
        passed=severity is None,
        severity=_SEVERITY[severity] if severity else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=summary.description(),
    )


def _build(asset: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(["ometria", asset]),
        name="sync_exceptions",
        additional_deps=[SYNC_EXCEPTIONS],
        blocking=False,
        pool="duckdb",
        description=f"Open sync exceptions on the records of ometria/{asset}, per rule, against "
        "the WARN/ERROR thresholds in data/checks.yaml; the 10 with the most money at stake.",
    )
    def _check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.connect(read_only=True) as con:
            return evaluate_asset_exceptions(con, asset)

    return _check


ometria_exception_checks = [_build(asset) for asset in OMETRIA_FEEDS]
