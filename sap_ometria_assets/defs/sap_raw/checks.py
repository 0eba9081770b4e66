"""Checks on the landed SAP tables.

- `contract` (every table, **blocking**, ERROR): the essential contract columns of
  lib/sap/tables.py are all there with their types, in the latest extract and in the table. A
  removed column or a changed type stops what is downstream of that table (in the run, and in
  the push `push_after_landing` starts): nothing is transformed or pushed from a broken
  extract, and what does not read the table goes on. An optional contract column (one no
  downstream asset needs, e.g. UserFieldsMD.SubType) missing or retyped is a WARN naming it
  (`optional_columns_missing`): nothing is blocked.
- `schema_drift` (every table, WARN): columns beyond the contract that SAP started sending (a
  new UDF, say) or that had to be widened, named, for a few days after they changed; and
  contract columns with a few unreadable values (bad records, not a broken extract).

Both are evaluated by the step that lands the table (`landing_check_specs`,
`landing_check_results`), not by steps of their own.
- `order_volume` (on `sap_raw/ordr`, WARN): today's orders and revenue so far against the same
  part of the day over the trailing weeks.
"""

from collections.abc import Callable, Iterable
from datetime import datetime, timezone

import dagster as dg

from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.quality.checks_config import get_checks_config
from sap_ometria_assets.lib.quality.contracts import check_contract, schema_drift
from sap_ometria_assets.lib.quality.drift import order_volume
from sap_ometria_assets.lib.sap.tables import all_table_names, contract_columns, optional_columns
from sap_ometria_assets.defs.resources import WarehouseResource


# The contract and schema_drift checks of a table are evaluated by the step that lands it
# (defs/sap_raw/assets.py), on its connection, right after the table is written: a step of
# their own per table cost a Dagster step start and a connection each (40 steps a sync) for a
# few metadata queries. A failed blocking contract fails the landing step with Dagster's
# DagsterAssetCheckFailedError after the tables' materialisations, so what is downstream of
# them does not run, exactly as a separate blocking check step would.
# name -> (blocking, severity when it cannot be evaluated, description of the check on a table)
_LANDING_CHECKS: dict[str, tuple[bool, dg.AssetCheckSeverity, Callable[[str], str]]] = {
    # a contract that cannot be verified blocks: nothing is built from an unverified extract
    "contract": (True, dg.AssetCheckSeverity.ERROR, lambda table: (
        f"Blocking: sap_raw.{table} has every essential contract column of lib/sap/tables.py "
        "with its type, in the latest extract and in the table. Fails (and stops what is "
        "downstream of this table) on a removed column or a changed type; an optional contract "
        "column missing or retyped only warns, naming it.")),
    "schema_drift": (False, dg.AssetCheckSeverity.WARN, lambda table: (
        f"WARN when SAP's extract of {table.upper()} gains a column beyond the contract (e.g. a "
        "new UDF) or one had to be widened, naming it; or when some values of a contract column "
        "could not be read (too few to block). Landed either way; mapped to Ometria only "
        "through data/mapping.yaml.")),
}


def landing_check_specs(tables: list[str]) -> list[dg.AssetCheckSpec]:
    """`contract` (blocking) and `schema_drift` (WARN) for each table a landing step writes."""
    return [dg.AssetCheckSpec(name, asset=dg.AssetKey(["sap_raw", table]), blocking=blocking,
                              description=describe(table))
            for table in tables for name, (blocking, _, describe) in _LANDING_CHECKS.items()]


def landing_checks(tables: Iterable[str] | None = None) -> dg.AssetSelection:
    """The contract and schema_drift checks of the landed `tables` (default: all): part of the
    landing steps, so a selection of those landings without check steps must still hold them
    (`without_checks()` | this)."""
    return dg.AssetSelection.checks(*(
        dg.AssetCheckKey(dg.AssetKey(["sap_raw", t]), name)
        for t in (tables or all_table_names()) for name in _LANDING_CHECKS))


def landing_check_results(con, tables: list[str]):
    """The contract and schema_drift results of the tables just landed. A check that cannot be
    evaluated says why: a contract as a blocking ERROR (nothing is built from an extract that
    could not be verified), schema_drift as a WARN."""
    settings = get_checks_config().contracts
    evaluations = {
        "contract": lambda key, table: contract_result(key, check_contract(
            con, table, settings.type_change_min_share, settings.type_change_min_rows)),
        "schema_drift": lambda key, table: drift_result(key, schema_drift(
            con, table, datetime.now(timezone.utc), settings.new_column_warn_days)),
    }
    for table in tables:
        key = dg.AssetKey(["sap_raw", table])
        for name, evaluate in evaluations.items():
            try:
                yield evaluate(key, table)
            except Exception as exc:  # noqa: BLE001 - named in the result; never fails the landing
                yield dg.AssetCheckResult(
                    asset_key=key, check_name=name, passed=False,
                    severity=_LANDING_CHECKS[name][1],
                    description=f"{name} of {table.upper()} could not be evaluated: {exc}")


def contract_result(key: dg.AssetKey, report) -> dg.AssetCheckResult:
    expected = contract_columns(report.table)
    warn_only = report.ok and report.degraded  # a WARN never blocks (Dagster: ERROR only)
    return dg.AssetCheckResult(
        asset_key=key, check_name="contract",
        passed=report.ok and not report.degraded,
        severity=dg.AssetCheckSeverity.WARN if warn_only else dg.AssetCheckSeverity.ERROR,
        description=report.summary(),
        metadata={
            "contract_columns": len(expected),
            "optional_columns": dg.MetadataValue.json(sorted(optional_columns(report.table))),
            "optional_columns_missing": dg.MetadataValue.json(
                dict(sorted(report.optional_removed.items()))),
            "optional_type_changes": _type_changes(report.optional_retyped),
            "compared_with": dg.MetadataValue.json(report.sources),
            "missing_columns": dg.MetadataValue.json(dict(sorted(report.removed.items()))),
            "type_changes": _type_changes(report.retyped),
            "columns_beyond_contract": len(report.extra),
            "unreadable_values_below_threshold": _unreadable(report),
        },
    )


def drift_result(key: dg.AssetKey, report) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key, check_name="schema_drift",
        passed=not report.has_drift,
        severity=dg.AssetCheckSeverity.WARN,
        description=report.summary(),
        metadata={
            "new_columns": dg.MetadataValue.json(report.new),
            "type_widened": dg.MetadataValue.json(
                {c: {"from": a, "to": b} for c, (a, b) in report.widened.items()}),
            "unreadable_values": _unreadable(report),
        },
    )


def _unreadable(report) -> dg.MetadataValue:
    return dg.MetadataValue.json({c: {"records": n, "of": m, "example": ex}
                                  for c, (n, m, ex) in report.unreadable.items()})


def _type_changes(changes) -> dg.MetadataValue:
    return dg.MetadataValue.json([
        {"column": t.column, "expected": t.expected, "got": t.observed, "in": t.where}
        for t in changes
    ])


@dg.asset_check(
    asset=dg.AssetKey(["sap_raw", "ordr"]),
    name="order_volume",
    blocking=False,
    pool="duckdb",
    description="WARN when today's sales orders or revenue so far (company time, cancelled "
    "orders excluded) fall outside the band of the same part of the day over the trailing "
    "days (data/checks.yaml: volume).",
)
def ordr_order_volume(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    settings = get_checks_config().volume
    as_of = datetime.now(get_settings().zone)
    with warehouse.connect(read_only=True) as con:
        result = order_volume(con, as_of, settings)
    return volume_result(result)


def volume_result(result) -> dg.AssetCheckResult:
    if not result.enough_history:
        return dg.AssetCheckResult(
            passed=True,
            description=f"Not enough order history yet ({result.history_days} days; a band "
            "needs more) to judge today's volume.",
            metadata={"day": str(result.day), "history_days": result.history_days},
        )
    metadata = {"day": str(result.day), "up_to": result.cutoff, "history_days": result.history_days}
    for name, band in (("orders", result.orders), ("revenue", result.revenue)):
        metadata[f"{name}_today"] = round(band.value, 2)
        metadata[f"{name}_expected_low"] = round(band.low, 2)
        metadata[f"{name}_expected_high"] = round(band.high, 2)
        metadata[f"{name}_trailing_mean"] = round(band.mean, 2)
    outside = result.outside
    text = "; ".join(
        f"{n} {getattr(result, n).value:,.2f} outside {getattr(result, n).low:,.2f}-"
        f"{getattr(result, n).high:,.2f}" for n in outside
    )
    return dg.AssetCheckResult(
        passed=not outside,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=(f"Today up to {result.cutoff}: {text} (trailing {result.history_days} days)."
                     if outside else f"Orders and revenue up to {result.cutoff} within the band."),
    )


