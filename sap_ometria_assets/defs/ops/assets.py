"""Sync exceptions (group `ops`): the exception register and its daily history.

They read what the other layers built (sap_raw, ometria, ometria_push) and write only the `ops`
schema. All logic lives in lib/sync_exceptions/ and lib/quality/drift.py.
"""

from datetime import datetime, timezone

import dagster as dg
import polars as pl

from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.quality.checks_config import get_checks_config, mapping_facts
from sap_ometria_assets.lib.quality.drift import create_trend_views
from sap_ometria_assets.lib.sync_exceptions.catalogue import RULES_BY_ID
from sap_ometria_assets.lib.sync_exceptions.register import (
    EXCEPTIONS_DDL,
    evaluate_exceptions,
    open_exceptions,
)
from sap_ometria_assets.lib.warehouse.sql import ddl_columns
from sap_ometria_assets.defs.ometria.metadata import described_table
from sap_ometria_assets.lib.recon.summaries import markdown_table
from sap_ometria_assets.lib.ometria.feeds import OMETRIA_FEEDS
from sap_ometria_assets.defs.resources import WarehouseResource

OMETRIA_KEYS = [dg.AssetKey(["ometria", f]) for f in OMETRIA_FEEDS]
PUSH_KEYS = [dg.AssetKey(["ometria_push", f]) for f in OMETRIA_FEEDS]
# Reads Ometria's asynchronous validation errors into ometria_push.errors (the push layer).
PUSH_ERRORS = dg.AssetKey(["ometria_push", "errors"])

SYNC_EXCEPTIONS = dg.AssetKey(["ops", "sync_exceptions"])
EXCEPTION_HISTORY = dg.AssetKey(["ops", "exception_history"])


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dg.multi_asset(
    name="ops_sync_exceptions",
    specs=[
        dg.AssetSpec(
            SYNC_EXCEPTIONS,
            deps=[*OMETRIA_KEYS, *PUSH_KEYS, PUSH_ERRORS],
            group_name="ops",
            kinds={"duckdb"},
            metadata=described_table("ops.sync_exceptions",
                                     ddl_columns(EXCEPTIONS_DDL)["ops.sync_exceptions"]),
            description=(
                "Every SAP record that will not reach Ometria correctly, one row per problem "
                "(`ops.sync_exceptions`): the rule it breaks, the SAP record (entity + "
                "record_key), who owns the fix (marketing, finance or ops), the money at stake "
                "(`impact`, in `currency`, the company's local currency; each rule's description says what "
                "it means: the customer's net revenue for contact rules, the document total not "
                "reaching Ometria for order rules...), "
                "what is wrong (`detail`) and how to fix it (`fix_hint`). A row stays open "
                "(`resolved_at` empty) while the problem exists; `first_seen` says since when. "
                "Open exceptions: `SELECT * FROM ops.sync_exceptions WHERE resolved_at IS NULL "
                "ORDER BY impact DESC`. Rules that judge a document by its own rows only (order "
                "totals) read the documents landed since the last evaluation and every document "
                "at the nightly full pass (`ops.exception_scope`; the rules table says which)."
            ),
        ),
        dg.AssetSpec(
            EXCEPTION_HISTORY,
            deps=[SYNC_EXCEPTIONS],
            group_name="ops",
            kinds={"duckdb"},
            metadata=described_table("ops.exception_history",
                                     ddl_columns(EXCEPTIONS_DDL)["ops.exception_history"]),
            description=(
                "The exception register over time (`ops.exception_history`): per rule and "
                "evaluation, open, new and resolved exceptions and the open impact. "
                "`ops.exception_rate_daily` and `ops.exception_trend` show whether a problem is "
                "growing (rising = the rate went up over the last weeks)."
            ),
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "all_rules_evaluated", asset=SYNC_EXCEPTIONS,
            description="Every exception rule ran. A rule that failed (ERROR) or could not run "
            "because its tables do not exist yet (WARN) leaves its exceptions as they were.",
        )
    ],
    pool="duckdb",
)
def ops_sync_exceptions(warehouse: WarehouseResource):
    config = get_checks_config()
    facts = mapping_facts()
    now = _now()
    with warehouse.connect() as con:
        result = evaluate_exceptions(con, now, config, facts,
                                     full_pass_hours=get_settings().sap_ometria_full_pass_hours)
        create_trend_views(con, config.trend)
        top = open_exceptions(con).head(10)
        total_open = con.execute(
            "SELECT count(*) FROM ops.sync_exceptions WHERE resolved_at IS NULL").fetchall()[0][0]
        total_rows = con.execute("SELECT count(*) FROM ops.sync_exceptions").fetchall()[0][0]
        history_rows = con.execute("SELECT count(*) FROM ops.exception_history").fetchall()[0][0]
        by_owner = dict(con.execute(
            "SELECT owner, count(*) FROM ops.sync_exceptions WHERE resolved_at IS NULL GROUP BY 1"
        ).fetchall())

    counts = [
        {"rule": o.rule, "status": o.status, "open": o.open, "new": o.new,
         "resolved": o.resolved, "impact": round(o.impact, 2),
         "owner": RULES_BY_ID[o.rule].owner, "note": o.reason or ""}
        for o in result.outcomes.values()
    ]
    yield dg.MaterializeResult(
        asset_key=SYNC_EXCEPTIONS,
        metadata={
            "dagster/row_count": int(total_rows),
            "open_exceptions": int(total_open),
            "new_exceptions": sum(o.new for o in result.outcomes.values()),
            "resolved_exceptions": sum(o.resolved for o in result.outcomes.values()),
            "open_impact": round(sum(o.impact for o in result.outcomes.values()), 2),
            "open_by_owner": dg.MetadataValue.json({str(k): int(v) for k, v in by_owner.items()}),
            "rules": dg.MetadataValue.md(markdown_table(pl.DataFrame(counts))),
            "top_10_by_impact": dg.MetadataValue.md(markdown_table(
                top, ["rule", "entity", "record_key", "impact", "currency", "owner", "detail"])),
        },
    )
    failed = result.failed
    skipped = [o for o in result.outcomes.values() if o.status == "skipped"]
    yield dg.AssetCheckResult(
        asset_key=SYNC_EXCEPTIONS,
        check_name="all_rules_evaluated",
        passed=not failed and not skipped,
        severity=dg.AssetCheckSeverity.ERROR if failed else dg.AssetCheckSeverity.WARN,
        metadata={
            "failed": dg.MetadataValue.json({o.rule: o.reason for o in failed}),
            "skipped": dg.MetadataValue.json({o.rule: o.reason for o in skipped}),
        },
        description=(
            f"{len(failed)} rule(s) failed, {len(skipped)} skipped" if failed or skipped
            else f"All {len(result.outcomes)} rules evaluated."
        ),
    )
    yield dg.MaterializeResult(
        asset_key=EXCEPTION_HISTORY,
        metadata={"dagster/row_count": int(history_rows), "evaluated_at": now.isoformat()},
    )
