"""OITW (stock per item and warehouse) + OWHS -> the Ometria stock flag, one row per SAP item.

available_qty = sum over counted warehouses of (InStock - Committed), where a warehouse counts
when the mapping includes it (`rule: include`, or `rule: channel` with `count_in_available`), it
is not Inactive in OWHS, and the item/warehouse row is not Locked. Ring-fenced warehouses
(`rule: exclude`, e.g. wholesale) never count. Channel warehouses are summed into their own
`available_qty_<channel>` columns for SQL users. Ometria only takes the flag:
`{"@type":"product","id":ItemCode,"is_in_stock":available_qty > threshold,"@merge":true}`.
Items that are not inventory items (no stock kept) are held back: Ometria keeps is_in_stock
absent (= in stock) for them, like Magento with manage-stock off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from sap_ometria_assets.lib.ometria.mapping import Mapping
from sap_ometria_assets.lib.transforms.frames import dedupe_latest, require_columns, with_optional
from sap_ometria_assets.lib.transforms.payloads import COMMON_DESCRIPTIONS, finalize
from sap_ometria_assets.lib.transforms.values import DEC, decimal, join_reasons, text, warnings_list, yes

QTY = pl.Decimal(38, 6)

BASE_COLUMNS: dict[str, str] = {
    "available_qty": "Sum of InStock - Committed over the warehouses that count for Ometria "
    "(included, active, not locked; ring-fenced warehouses excluded).",
    "in_stock_threshold": "Threshold from the mapping: is_in_stock = available_qty > threshold.",
    "is_in_stock": "The flag sent to Ometria.",
    "warehouses_counted": "Warehouses whose stock is in available_qty.",
    "is_inventory_item": "SAP InventoryItem: stock is kept for the item (otherwise held back).",
}

DESCRIPTIONS: dict[str, str] = {**COMMON_DESCRIPTIONS, **BASE_COLUMNS}


def channel_column(channel: str) -> str:
    return f"available_qty_{channel}"


def column_descriptions(mapping: Mapping) -> dict[str, str]:
    out = dict(DESCRIPTIONS)
    for ch in mapping.stock.channels:
        whs = sorted(code for code, w in mapping.stock.warehouses.items() if w.channel == ch)
        out[channel_column(ch)] = f"InStock - Committed summed over the {ch} warehouses ({', '.join(whs)})."
    return out


@dataclass
class StockResult:
    stock: pl.DataFrame
    stats: dict = field(default_factory=dict)


def build_stock(oitm: pl.DataFrame, oitw: pl.DataFrame | None, owhs: pl.DataFrame | None,
                mapping: Mapping) -> StockResult:
    cfg = mapping.stock
    require_columns(oitm, "oitm", ["ItemCode"])
    items = with_optional(oitm, {"InventoryItem": pl.String})
    items, dup = dedupe_latest(items, ["ItemCode"])
    items = items.with_columns(text("ItemCode").alias("_id"))

    stock = oitw if oitw is not None else pl.DataFrame(
        schema={"ItemCode": pl.String, "WarehouseCode": pl.String, "InStock": DEC, "Committed": DEC})
    require_columns(stock, "oitw", ["ItemCode", "WarehouseCode", "InStock", "Committed"])
    stock = with_optional(stock, {"Locked": pl.String})
    whs = _warehouses(owhs)
    ss = stock.schema
    in_stock = decimal("InStock", ss["InStock"])
    committed = decimal("Committed", ss["Committed"])
    codes = list(cfg.warehouses)
    rule = text("WarehouseCode").replace_strict(
        codes, [w.rule for w in cfg.warehouses.values()], default=cfg.default_rule, return_dtype=pl.String)
    channel = text("WarehouseCode").replace_strict(
        codes, [w.channel for w in cfg.warehouses.values()], default=None, return_dtype=pl.String)
    also = text("WarehouseCode").replace_strict(
        codes, [w.count_in_available for w in cfg.warehouses.values()], default=False, return_dtype=pl.Boolean)
    rows = stock.with_columns(
        text("ItemCode").alias("_id"),
        text("WarehouseCode").alias("_whs"),
        (in_stock.fill_null(0) - committed.fill_null(0)).alias("_qty"),
        ((pl.col("InStock").is_not_null() & in_stock.is_null())
         | (pl.col("Committed").is_not_null() & committed.is_null())).alias("_bad"),
        rule.alias("_rule"),
        channel.alias("_channel"),
        also.alias("_also"),
    ).join(whs, on="_whs", how="left").with_columns(
        (~yes("Locked") & ~pl.col("_inactive").fill_null(False)).alias("_usable"),
    ).with_columns(
        (pl.col("_usable") & ((pl.col("_rule") == "include") | ((pl.col("_rule") == "channel") & pl.col("_also"))))
        .alias("_counted"),
    )
    aggs = [
        pl.col("_qty").filter(pl.col("_counted")).sum().alias("_available"),
        pl.col("_whs").filter(pl.col("_counted")).drop_nulls().unique().sort().alias("warehouses_counted"),
        pl.col("_bad").any().alias("_bad_any"),
    ]
    for ch in cfg.channels:
        aggs.append(
            pl.col("_qty").filter(pl.col("_usable") & (pl.col("_channel") == ch)).sum().alias(channel_column(ch))
        )
    per_item = rows.group_by("_id").agg(aggs)
    df = items.join(per_item, on="_id", how="left").with_columns(
        pl.col("_available").fill_null(0).cast(QTY).alias("available_qty"),
        pl.col("warehouses_counted").fill_null(pl.lit([], pl.List(pl.String))),
        *(pl.col(channel_column(ch)).fill_null(0).cast(QTY) for ch in cfg.channels),
    )
    threshold = cfg.in_stock_threshold
    managed = ~(pl.col("InventoryItem").cast(pl.String) == "tNO").fill_null(False)
    df = df.with_columns(
        (pl.col("available_qty").cast(pl.Float64) > threshold).alias("is_in_stock"),
        pl.lit(threshold, pl.Float64).alias("in_stock_threshold"),
        managed.alias("is_inventory_item"),
    )
    payload = [
        pl.lit("product").alias("@type"),
        pl.col("_id").alias("id"),
        pl.col("is_in_stock"),
        pl.lit(True).alias("@merge"),
    ]
    df = df.with_columns(
        pl.lit("product").alias("record_type"),
        pl.col("_id").alias("id"),
        pl.lit("OITW").alias("sap_object"),
        pl.col("ItemCode").cast(pl.String).alias("sap_key"),
        join_reasons(
            dup,
            pl.when(pl.col("_id").is_null()).then(pl.lit("missing_sap_key")),
            pl.when(~pl.col("is_inventory_item")).then(pl.lit("stock_not_managed")),
            pl.when(pl.col("_bad_any").fill_null(False)).then(pl.lit("invalid_quantity")),
        ).alias("_reason"),
        warnings_list().alias("warnings"),
    )
    columns = [*BASE_COLUMNS, *(channel_column(ch) for ch in cfg.channels)]
    result = finalize(df, df.select(payload), "stock", columns)

    seen = set(rows["_whs"].drop_nulls().unique().to_list()) | set(whs["_whs"].drop_nulls().to_list())
    stats = {
        "unmapped_warehouses": sorted(seen - set(cfg.warehouses)),
        "inactive_warehouses": sorted(whs.filter(pl.col("_inactive"))["_whs"].to_list()),
        "locked_rows": int(rows.select(yes("Locked").sum()).item() or 0) if rows.height else 0,
    }
    return StockResult(result, stats)


def _warehouses(owhs: pl.DataFrame | None) -> pl.DataFrame:
    if owhs is None or owhs.height == 0:
        return pl.DataFrame(schema={"_whs": pl.String, "_inactive": pl.Boolean})
    require_columns(owhs, "owhs", ["WarehouseCode"])
    owhs = with_optional(owhs, {"Inactive": pl.String})
    return owhs.select(text("WarehouseCode").alias("_whs"), yes("Inactive").alias("_inactive")).drop_nulls(
        "_whs").unique("_whs", keep="last", maintain_order=True)
