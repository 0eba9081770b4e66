"""Jobs: which assets run together, on which cadence (schedules.py) or trigger (sensors.py).

- `sync_stock_job`      stock snapshot end to end: land OITW/OWHS, build `ometria/stock`, push
                        the in-stock flags. Every 15 minutes. A failed blocking contract check on
                        the landed stock stops the push inside the same run.
- `land_sap_job`        land customers, orders, deliveries, invoices, credit memos, items and
                        their reference tables from the Service Layer (everything but the stock
                        snapshot). Hourly, and whenever `sap_change_sensor` sees a change.
- `push_ometria_job`    rebuild the Ometria-ready records and push what changed (contacts and
                        products before orders), then refresh the exception register. Started by
                        `push_after_landing` after each successful landing (or
                        `push_after_blocked_landing`, without what is downstream of a table
                        whose blocking check failed), never on its own.
- `nightly_deletion_scan_job`  land master data with a full key scan, so business partners and
                        items deleted in SAP are marked `_deleted_at` (deletions leave no trace
                        in an incremental read). The push follows as after any landing.
- `reconcile_job`       SAP vs ledger vs what Ometria holds (group `recon`, with its checks).
- `full_sync_job`       everything except the backfill, once (`make sync` runs the same set).
- `backfill_documents_job` (defs/backfill) historical orders and credit memos by month.

Every run is tagged `sap_ometria/lane`: `sync` for these, `backfill` for the backfill, so the
run queue can keep one of each going at once (see docs/operations.md).
"""

from __future__ import annotations

import dagster as dg

from sap_ometria_assets.defs.sap_raw import assets as sap_raw_assets
from sap_ometria_assets.lib.sap.tables import TABLES_BY_NAME

LANE_TAG = "sap_ometria/lane"
SYNC_TAGS = {LANE_TAG: "sync"}

STOCK_LANDING_KEYS = [dg.AssetKey(["sap_raw", "oitw"]), dg.AssetKey(["sap_raw", "owhs"])]
STOCK_KEYS = [
    *STOCK_LANDING_KEYS,
    dg.AssetKey(["ometria", "stock"]),
    dg.AssetKey(["ometria_push", "stock"]),
]

# Master data whose deletions only a full key scan can see (parents and their child tables).
DELETION_SCAN_TABLES = tuple(
    name
    for t in TABLES_BY_NAME.values()
    if t.is_master_data
    for name in (t.table, *(c.table for c in t.children))
)
DELETION_SCAN_KEYS = [dg.AssetKey(["sap_raw", name]) for name in DELETION_SCAN_TABLES]

# The published snapshot (defs/snapshots) ends every writing job: it depends on every asset,
# so it runs last and is skipped when a step before it fails.
PUBLISHED = dg.AssetKey(["snapshots", "published"])
publish_selection = dg.AssetSelection.assets(PUBLISHED)

stock_selection = dg.AssetSelection.assets(*STOCK_KEYS) | publish_selection
landing_selection = (dg.AssetSelection.groups("sap_raw")
                     - dg.AssetSelection.assets(*STOCK_LANDING_KEYS)) | publish_selection
push_selection = (dg.AssetSelection.groups("ometria", "ometria_push", "ops") - dg.AssetSelection.assets(
    dg.AssetKey(["ometria", "stock"]), dg.AssetKey(["ometria_push", "stock"])
)) | publish_selection
reconcile_selection = dg.AssetSelection.groups("recon") | publish_selection
full_sync_selection = dg.AssetSelection.all() - dg.AssetSelection.groups("backfill")
deletion_scan_selection = dg.AssetSelection.assets(*DELETION_SCAN_KEYS) | publish_selection


def deletion_scan_run_config() -> dict:
    """Run config turning on `deletion_scan` for every landing op that has the option.

    Read from the landing assets themselves, so a change in how they are split into ops
    cannot silently leave a table out of the scan."""
    wanted = set(DELETION_SCAN_KEYS)
    ops: dict[str, dict] = {}
    for value in vars(sap_raw_assets).values():
        candidates = value if isinstance(value, (list, tuple)) else [value]
        for asset_def in candidates:
            if not isinstance(asset_def, dg.AssetsDefinition) or not (set(asset_def.keys) & wanted):
                continue
            config_field = asset_def.op.config_field
            fields = getattr(config_field.config_type, "fields", {}) if config_field else {}
            if "deletion_scan" in fields:
                ops[asset_def.op.name] = {"config": {"deletion_scan": True}}
    return {"ops": ops}


sync_stock_job = dg.define_asset_job(
    "sync_stock_job",
    selection=stock_selection,
    description="Stock every 15 minutes: land OITW/OWHS, build ometria/stock, push in-stock flags.",
    tags=SYNC_TAGS,
)

land_sap_job = dg.define_asset_job(
    "land_sap_job",
    selection=landing_selection,
    description="Land customers, orders, deliveries, invoices, credit memos and items from SAP "
    "(incremental). A successful run starts push_ometria_job.",
    tags=SYNC_TAGS,
)

push_ometria_job = dg.define_asset_job(
    "push_ometria_job",
    selection=push_selection,
    description="Build the Ometria-ready records, push what changed, refresh the exceptions. "
    "Started by the push_after_landing / push_after_blocked_landing sensors.",
    tags=SYNC_TAGS,
)

nightly_deletion_scan_job = dg.define_asset_job(
    "nightly_deletion_scan_job",
    selection=deletion_scan_selection,
    config=deletion_scan_run_config(),
    description="Land master data (business partners, items) with a full key scan so records "
    "deleted in SAP are marked _deleted_at.",
    tags=SYNC_TAGS,
)

reconcile_job = dg.define_asset_job(
    "reconcile_job",
    selection=reconcile_selection,
    description="Reconcile SAP, the push ledger and what Ometria holds (recon group and checks).",
    tags=SYNC_TAGS,
)

full_sync_job = dg.define_asset_job(
    "full_sync_job",
    selection=full_sync_selection,
    description="Everything but the historical backfill, in dependency order: land, transform, "
    "push, exceptions, reconciliation (what `make demo` / `make sync` run). For a manual catch-up.",
    tags=SYNC_TAGS,
)
