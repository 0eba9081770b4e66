"""One build of `ometria.orders` and `ometria.refunds` in the warehouse: full or incremental.

`build_orders_tables` is what the `ometria/orders` asset runs and what the historical backfill
runs after landing a month: it decides (through `incremental`) whether to rebuild everything or
only the orders and credit memos whose SAP rows were landed since the previous build, reads the
projected (and, for a partial build, filtered) landed tables, runs the pure `build_orders`, and
writes: a full build replaces both tables (in slices of `FULL_BUILD_SLICE` orders for a large
company, so memory stays flat), an incremental one replaces the rebuilt documents' rows in one
transaction. It then records the build (high-water mark and settings fingerprint) for the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import polars as pl

from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.ometria.mapping import Mapping
from sap_ometria_assets.lib.transforms import incremental as inc
from sap_ometria_assets.lib.transforms import orders as to
from sap_ometria_assets.lib.transforms import refunds as tr
from sap_ometria_assets.lib.transforms.contacts_build import remember_kept_verdicts
from sap_ometria_assets.lib.transforms.tables import fast_string_writes, previous_hashes, read_raw, write_ometria
from sap_ometria_assets.lib.warehouse.db import append_rows
from sap_ometria_assets.lib.warehouse.sql import table_exists, transaction

# DuckDB's memory cap while a full build runs in slices (see build_orders_tables).
FULL_BUILD_DUCKDB_MEMORY = "512MB"


@dataclass
class OrdersBuild:
    """What one build did: the rows it built, why it was full (or since when it was
    incremental), and the id/payload_hash of the rows it replaced (for new/changed counts)."""

    result: to.OrdersResult
    plan: inc.RebuildPlan
    full: bool
    previous: pl.DataFrame | None


def build_orders_tables(con: duckdb.DuckDBPyConnection, mapping: Mapping, zone: str, *,
                        full_rebuild: bool = False) -> OrdersBuild:
    """Rebuild `ometria.orders`/`ometria.refunds`: everything when `full_rebuild` or when the
    previous build cannot serve as a base, else only what SAP changed since it."""
    print_ = inc.fingerprint(mapping, zone)
    # read before the sources: a row landed while we build is newer and caught next time
    high_water = inc.landed_high_water(con)
    plan = inc.RebuildPlan("full rebuild requested") if full_rebuild else inc.plan_rebuild(con, print_)
    full = plan.full_reason is not None
    slices = full_build_slices(con) if full else 1
    sliced = slices > 1
    if full:  # a full build that fails half-way must not be taken as a base for increments
        inc.forget_build(con)
    if sliced:
        # in slices, each written before the next is built: the sources, the frames and a
        # million payloads never sit in memory at once
        previous = previous_hashes(con, "orders")
        inc.prepare_links(con, with_previous=False)
        # DuckDB's buffer pool would otherwise hold on to the slices' reads and writes (x100:
        # peak 4.2 GiB uncapped, 2.7 GiB at 1GB; with strings stored plain, 2.8 GiB at 1GB and
        # 2.2 GiB at 512MB for the same CPU time); beyond the limit it spills, it does not fail
        con.execute(f"SET memory_limit = '{FULL_BUILD_DUCKDB_MEMORY}'")
        try:
            for part in range(slices):
                inc.fill_chunk(con, part, slices)
                result = build_from_warehouse(con, mapping, zone, inc.subset_filters())
                if part == 0:
                    write_ometria(con, "orders", result.orders, to.DESCRIPTIONS)
                    write_ometria(con, "refunds", result.refunds, tr.DESCRIPTIONS)
                else:
                    with fast_string_writes(con):
                        upsert_rebuilt(con, result)
                del result
            inc.record_build(con, high_water, print_, "full", datetime.now(UTC))
            # checkpoint now, under the cap and before the read-back: left to the connection's
            # close it ran uncapped beside the read-back frames (x100: 9 s, +1.1 GiB, the peak
            # of the whole transform at 3.1 GiB; here the run's peak is a slice's build, 2.0 GiB)
            con.execute("CHECKPOINT")
            # read back under the cap too: uncapped, DuckDB's buffer pool grows by what it reads
            result = stored_result(con)
        finally:  # back to the warehouse's configured cap (lib/warehouse.connect)
            configured = get_settings().sap_ometria_duckdb_memory_limit
            con.execute(f"SET memory_limit = '{configured}'" if configured else "RESET memory_limit")
    elif full or plan.orders or plan.memos:
        result = build_from_warehouse(con, mapping, zone, {} if full else inc.subset_filters())
        if full:
            previous = previous_hashes(con, "orders")
            write_ometria(con, "orders", result.orders, to.DESCRIPTIONS)
            write_ometria(con, "refunds", result.refunds, tr.DESCRIPTIONS)
        else:
            previous = previous_rebuilt_hashes(con)
            upsert_rebuilt(con, result)
    else:
        result = build_from_warehouse(con, mapping, zone, {"ordr": "false", "rdr1": "false", **dict.fromkeys(
            ("rdr3", "orin", "rin1", "rin3", "odln", "dln1", "inv1", "ocrd"), "false")})
        previous = previous_rebuilt_hashes(con)
    if not sliced:  # a sliced build recorded itself before its checkpoint
        inc.record_build(con, high_water, print_, "full" if full else "incremental", datetime.now(UTC))
    return OrdersBuild(result, plan, full, previous)


def build_from_warehouse(con: duckdb.DuckDBPyConnection, mapping: Mapping, zone: str,
                         filters: dict[str, str]) -> to.OrdersResult:
    """Read the projected (and, for a partial build, filtered) sources and build."""
    inputs = {t: read_raw(con, t, required=t in ("ordr", "rdr1"), columns=c, where=filters.get(t))
              for t, c in to.input_columns(mapping).items()}
    ocrd = inputs.get("ocrd")
    if ocrd is not None and "EmailAddress" in ocrd.columns:
        # the orders carry their customers' emails, checked like the contacts'
        remember_kept_verdicts(con, ocrd["EmailAddress"].drop_nulls())
    return to.build_orders(to.OrderInputs(**inputs), mapping, zone=zone)  # type: ignore[arg-type]


def stored_result(con: duckdb.DuckDBPyConnection) -> to.OrdersResult:
    """What a sliced build wrote, read back (without payloads) for the asset's metadata."""
    # a credit memo reaching two slices is built in both: count from the stored table
    modes = dict(con.execute("SELECT mode_applied, count(*) FROM ometria.refunds GROUP BY 1").fetchall())
    return to.OrdersResult(
        orders=con.sql("SELECT * EXCLUDE (payload) FROM ometria.orders").pl(),
        refunds=con.sql("SELECT * FROM ometria.refunds").pl(), stats={
            "credit_memos_counted": sum(v for k, v in modes.items() if not str(k).startswith("excluded")),
            "credit_memos_on_original": modes.get("refund_on_original", 0),
            "credit_memos_negative_orders": modes.get("negative_order", 0) + modes.get("negative_order_fallback", 0),
            "credit_memos_fallback": modes.get("negative_order_fallback", 0),
        })


def full_build_slices(con: duckdb.DuckDBPyConnection) -> int:
    """How many slices a full build takes (1 when the tables slices need are not all landed)."""
    if not all(table_exists(con, "sap_raw", t) for t in inc.ORDER_TABLES):
        return 1
    n = con.execute("SELECT count(*) FROM sap_raw.ordr").fetchall()[0][0]
    return max(1, -(-n // inc.FULL_BUILD_SLICE))


def previous_rebuilt_hashes(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """id/payload_hash of the rows an incremental build replaces (for new/changed counts)."""
    return con.sql(f"""SELECT id, payload_hash FROM ometria.orders
        WHERE (sap_object = 'ORDR' AND TRY_CAST(sap_key AS BIGINT) IN (SELECT entry FROM {inc.ORDER_SET}))
           OR (sap_object = 'ORIN' AND TRY_CAST(sap_key AS BIGINT) IN (SELECT entry FROM {inc.MEMO_SET}))""").pl()


def upsert_rebuilt(con: duckdb.DuckDBPyConnection, result: to.OrdersResult) -> None:
    """Replace the rebuilt documents' rows (one transaction: readers never see half a build)."""
    with transaction(con):
        con.execute(f"""DELETE FROM ometria.orders
            WHERE (sap_object = 'ORDR' AND TRY_CAST(sap_key AS BIGINT) IN (SELECT entry FROM {inc.ORDER_SET}))
               OR (sap_object = 'ORIN' AND TRY_CAST(sap_key AS BIGINT) IN (SELECT entry FROM {inc.MEMO_SET}))""")
        con.execute(f"DELETE FROM ometria.refunds WHERE TRY_CAST(sap_key AS BIGINT) IN (SELECT entry FROM {inc.MEMO_SET})")
        for table, frame in (("orders", result.orders), ("refunds", result.refunds)):
            if frame.height:
                append_rows(con, "ometria", table, frame)
