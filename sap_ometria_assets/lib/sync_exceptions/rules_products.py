"""Sync-exception rules on items and stock (SAP items -> Ometria products, warehouse stock).

Sellable items without a name or a price in the price list Ometria gets, active products sent
without an image (when the mapping sends images), and negative available stock in a warehouse
that feeds Ometria.
"""

from __future__ import annotations

from sap_ometria_assets.lib.quality.checks_config import MappingFacts
from sap_ometria_assets.lib.quality.sql_fragments import money, qty
from sap_ometria_assets.lib.sync_exceptions.rule import Rule, RuleContext
from sap_ometria_assets.lib.sync_exceptions.sources import POP_ITEMS
from sap_ometria_assets.lib.warehouse.sql import text_list


def feeds_ometria(facts: MappingFacts, column: str) -> str:
    """SQL: does this warehouse's stock reach Ometria (included or a store channel, per mapping)?"""
    included = [w for w, feeds in facts.warehouse_feeds.items() if feeds]
    excluded = [w for w, feeds in facts.warehouse_feeds.items() if not feeds]
    default = "true" if facts.warehouse_default_feeds else "false"
    return (f"(CASE WHEN list_contains({text_list(included)}, {column}) THEN true "
            f"WHEN list_contains({text_list(excluded)}, {column}) THEN false ELSE {default} END)")


def _product_missing_price_or_title(ctx: RuleContext) -> str:
    pl = int(ctx.facts.price_list)
    return f"""
        WITH p AS (
            SELECT "ItemCode", max("Price") AS price FROM raw_itm1
            WHERE "PriceList" = {pl} GROUP BY 1
        )
        SELECT CAST(i."ItemCode" AS VARCHAR) AS record_key,
               concat_ws('; ',
                 CASE WHEN nullif(trim(i."ItemName"), '') IS NULL THEN 'no title (ItemName is blank)' END,
                 CASE WHEN p.price IS NULL THEN 'no price in price list {pl}'
                      WHEN p.price <= 0 THEN 'price is ' || {money('p.price')} || ' in price list {pl}'
                 END) AS detail
        FROM raw_oitm i LEFT JOIN p ON p."ItemCode" = i."ItemCode"
        WHERE coalesce(i."SalesItem", 'tYES') = 'tYES' AND i."_deleted_at" IS NULL
          AND coalesce(i."Frozen", 'tNO') <> 'tYES'
          AND (nullif(trim(i."ItemName"), '') IS NULL OR p.price IS NULL OR p.price <= 0)"""


def _product_missing_image(ctx: RuleContext) -> str:
    if not ctx.facts.sends_image_url:
        # products.image_url not in the mapping: the web platform's own feed owns the image and
        # this sync cannot see it, so nothing is flagged (and earlier findings resolve)
        return "SELECT NULL::VARCHAR AS record_key, NULL::VARCHAR AS detail WHERE false"
    return """
        WITH p AS (
            SELECT id, json_extract_string(payload, '$.title') AS title FROM om_products
            WHERE held_back_reason IS NULL
              AND coalesce(TRY_CAST(json_extract(payload, '$.is_active') AS BOOLEAN), false)
              AND nullif(json_extract_string(payload, '$.image_url'), '') IS NULL
        )
        SELECT id AS record_key,
               'Product ' || id || coalesce(' (' || title || ')', '') ||
               ' is sent without image_url: one of ' || count(*) OVER () ||
               ' active products without an image' AS detail
        FROM p"""


def _stock_negative_available(ctx: RuleContext) -> str:
    pl = int(ctx.facts.price_list)
    return f"""
        WITH price AS (
            SELECT "ItemCode", max("Price") AS price FROM raw_itm1 WHERE "PriceList" = {pl} GROUP BY 1
        )
        SELECT CAST(w."ItemCode" AS VARCHAR) || '/' || CAST(w."WarehouseCode" AS VARCHAR) AS record_key,
               'Item ' || w."ItemCode" || ' in warehouse ' || w."WarehouseCode" || ': in stock ' ||
               {qty('coalesce(w."InStock", 0)')} || ', committed ' ||
               {qty('coalesce(w."Committed", 0)')} || ', available ' ||
               {qty('coalesce(w."InStock", 0) - coalesce(w."Committed", 0)')} AS detail,
               abs(coalesce(w."InStock", 0) - coalesce(w."Committed", 0)) * coalesce(p.price, 0) AS impact
        FROM raw_oitw w
        LEFT JOIN price p ON p."ItemCode" = w."ItemCode"
        LEFT JOIN raw_oitm i ON i."ItemCode" = w."ItemCode"
        WHERE w."_deleted_at" IS NULL AND i."_deleted_at" IS NULL
          AND {feeds_ometria(ctx.facts, 'w."WarehouseCode"')}
          AND coalesce(w."InStock", 0) - coalesce(w."Committed", 0) < 0"""


PRODUCT_RULES: tuple[Rule, ...] = (
    Rule(
        id="product_missing_price_or_title", entity="product", severity="ERROR", owner="marketing",
        title="Product without price or title",
        description="A sellable item has no name, or no (or a zero) price in the price list sent "
        "to Ometria. Ometria leaves such products out of emails and recommendations.",
        fix_hint="Give the item a name and a price in the Retail price list in SAP (Item Master "
        "Data), or mark it as not a sales item if it should not be sold.",
        sql=_product_missing_price_or_title, requires=("sap_raw.oitm",), population_sql=POP_ITEMS,
    ),
    Rule(
        id="product_missing_image", entity="product", severity="WARN", owner="marketing",
        title="Product without an image",
        description="An active product is sent to Ometria without an image_url: the item's image "
        "field (products.image_url in the mapping) is empty or not an absolute http(s) URL. "
        "Ometria shows it in emails and recommendations without a picture. The number of open "
        "exceptions is how many active products lack an image.",
        fix_hint="Fill the item's image field in SAP (Item Master Data, the UDF named in "
        "products.image_url) with the image's address or path; the run's warnings on "
        "ometria.products say which values were not URLs.",
        sql=_product_missing_image, requires=("ometria.products",),
        population_sql="SELECT count(*) FROM om_products WHERE held_back_reason IS NULL",
    ),
    Rule(
        id="stock_negative_available", entity="stock", severity="WARN", owner="ops",
        title="Negative available stock",
        description="In a warehouse that feeds Ometria, more stock is committed to orders than is "
        "on hand. The product shows as out of stock and those orders may not ship. Impact is the "
        "shortfall at the retail price.",
        fix_hint="Check goods receipts and open orders for the item in that warehouse; post "
        "missing receipts or move stock.",
        sql=_stock_negative_available, requires=("sap_raw.oitw",),
        population_sql="SELECT count(*) FROM raw_oitw",
    ),
)
