"""OITM (Items) + ITM1 (prices) -> Ometria products: one row per SAP item.

- id and sku are the ItemCode; title is the web-title UDF when set, else ItemName.
- price and currency come from the configured price list (ITM1), on the product and on the
  store listing (Ometria's price-drop and recommendation features read the listing).
- is_active = sales item, not frozen, not deleted in SAP. Items that are not sales items are
  still sent, inactive, so an item that stops being sold never stays active in Ometria. `Valid`
  alone does not deactivate: SAP's defaults are Valid = Frozen = tNO on active items, and only a
  Valid date range (not landed) could make a tYES item inactive.
- attributes from mapped item UDFs, always all of them (Ometria replaces attributes on update).
- no is_in_stock: the stock feed (`ometria.stock`) owns that flag.
- url and image_url from the mapping (`products.url` / `products.image_url`, see
  lib/ometria/links.py): a template on item fields, a UDF (relative paths completed with its
  base_url) or both (the UDF when set). A value that is not an absolute http(s) URL is left out
  for that item with a warning; the product is still sent. Not configured: not sent, and
  `@merge` keeps what the web platform's own feed set.
"""

from __future__ import annotations

import polars as pl

from sap_ometria_assets.lib.ometria.links import ProductLink, template_parts
from sap_ometria_assets.lib.ometria.mapping import Mapping
from sap_ometria_assets.lib.ometria.models import HTTP_URL, MAX_URL_LENGTH
from sap_ometria_assets.lib.transforms.frames import dedupe_latest, require_columns, with_optional
from sap_ometria_assets.lib.transforms.payloads import COMMON_DESCRIPTIONS, finalize
from sap_ometria_assets.lib.transforms.values import (
    cents,
    currency_iso,
    currency_reason,
    join_reasons,
    money,
    money_out,
    slug,
    text,
    warnings_list,
    yes,
)

REQUIRED = ("ItemCode", "ItemName", "SalesItem", "Frozen")

BUSINESS_COLUMNS: dict[str, str] = {
    "sku": "SKU sent to Ometria (the ItemCode).",
    "title": "Product title: the web-title UDF when set, else ItemName.",
    "price": "Price from the configured ITM1 price list (NULL when the item has none; a price of 0 "
    "is SAP's 'not priced' and is not sent).",
    "currency": "ISO 4217 currency of the price (ITM1 Currency through the mapping).",
    "sap_currency": "ITM1 Currency as SAP holds it.",
    "price_list": "The ITM1 price list the price was taken from.",
    "is_active": "Sent is_active: SalesItem = tYES, Frozen <> tYES and not deleted in SAP.",
    "is_sales_item": "SAP SalesItem flag.",
    "is_frozen": "SAP Frozen flag (inactive in SAP).",
    "is_deleted": "True when the item was deleted in SAP (missing from the last key scan).",
    "url": "Product page URL sent to Ometria (products.url in the mapping; NULL when not "
    "configured or the item's value is not an absolute http(s) URL).",
    "image_url": "Product image URL sent to Ometria (products.image_url in the mapping; NULL when "
    "not configured, empty, or not an absolute http(s) URL).",
    "attributes": "Attributes sent to Ometria ({type, id, label}) from the mapped item UDFs.",
}

DESCRIPTIONS: dict[str, str] = {**COMMON_DESCRIPTIONS, **BUSINESS_COLUMNS}


def build_products(oitm: pl.DataFrame, itm1: pl.DataFrame | None, mapping: Mapping) -> pl.DataFrame:
    """One Ometria product row per SAP item."""
    cfg = mapping.products
    require_columns(oitm, "oitm", REQUIRED)
    udfs = [a.sap_field for a in cfg.attributes] + ([cfg.title_udf] if cfg.title_udf else [])
    links = {key: link for key in ("url", "image_url") if (link := getattr(cfg, key)) is not None}
    require_columns(oitm, "oitm", udfs + [f for link in links.values() for f in link.fields])
    df = with_optional(oitm, {"_deleted_at": pl.Datetime("us", "UTC")})
    df, dup = dedupe_latest(df, ["ItemCode"])
    df = df.with_columns(text("ItemCode").alias("_id"))

    prices = _prices(itm1, cfg.price_list)
    df = df.join(prices, on="_id", how="left")
    iso = currency_iso(pl.col("_ccy"), mapping)
    title = pl.coalesce(text(cfg.title_udf), text("ItemName")) if cfg.title_udf else text("ItemName")
    is_active = yes("SalesItem") & ~yes("Frozen") & pl.col("_deleted_at").is_null()

    attrs = []
    for a in cfg.attributes:
        label = text(a.sap_field)
        if a.value_map:
            label = label.replace_strict(list(a.value_map), list(a.value_map.values()), default=label,
                                         return_dtype=pl.String)
        label = label.str.slice(0, 255)
        attrs.append(pl.when(label.is_not_null()).then(
            pl.struct(pl.lit(a.type).alias("type"), slug(label).alias("id"), label.alias("label"))
        ))
    link_values = {key: _link_candidate(link) for key, link in links.items()}
    link_ok = {key: _is_url(v) for key, v in link_values.items()}

    attributes = pl.concat_list(attrs).list.drop_nulls() if attrs else pl.lit(None, pl.List(pl.Struct(
        {"type": pl.String, "id": pl.String, "label": pl.String})))

    # SAP shows an unpriced item as 0 on the list: never send 0 over a real web price
    has_price = pl.col("_price_c").is_not_null() & (pl.col("_price_c") != 0)
    df = df.with_columns(
        title.alias("title"),
        iso.alias("currency"),
        is_active.alias("is_active"),
        attributes.alias("attributes"),
        *[pl.when(link_ok[k]).then(v).alias(k) for k, v in link_values.items()],
        *[pl.lit(None, pl.String).alias(k) for k in ("url", "image_url") if k not in links],
        pl.when(has_price & iso.is_not_null()).then(pl.col("_price_c")).alias("_sent_price_c"),
    )
    listing = pl.struct(
        pl.lit(mapping.store).alias("store"),
        pl.col("title"),
        money(pl.col("_sent_price_c")).alias("price"),
        pl.when(pl.col("_sent_price_c").is_not_null()).then(pl.col("currency")).alias("currency"),
        pl.col("is_active"),
    )
    payload = [
        pl.lit("product").alias("@type"),
        pl.col("_id").alias("id"),
        pl.col("_id").alias("sku"),
        pl.col("title"),
        money(pl.col("_sent_price_c")).alias("price"),
        pl.when(pl.col("_sent_price_c").is_not_null()).then(pl.col("currency")).alias("currency"),
        pl.col("is_active"),
        pl.col("url"),
        pl.col("image_url"),
        pl.col("attributes"),
        pl.concat_list(listing).alias("listings"),
        pl.lit(True).alias("@merge"),
    ]
    reasons = [
        dup,
        pl.when(pl.col("_id").is_null()).then(pl.lit("missing_sap_key")),
        pl.when(pl.col("_ccy").is_not_null()).then(currency_reason(pl.col("_ccy"), iso)),
        pl.when(pl.col("_bad_price")).then(pl.lit("invalid_amount")),
    ]
    warns = [
        pl.when(~has_price & ~pl.col("_bad_price").fill_null(False)).then(
            pl.lit(f"no price in price list {cfg.price_list}")
        ),
        pl.when(title.is_null()).then(pl.lit("no title (ItemName and web title empty)")),
        *[pl.when(v.is_not_null() & ~link_ok[k]).then(
            pl.lit(f"{k} left out: not an absolute http(s) URL: ") + v.str.slice(0, 120))
          for k, v in link_values.items()],
    ]
    df = df.with_columns(
        pl.lit("product").alias("record_type"),
        pl.col("_id").alias("id"),
        pl.lit("OITM").alias("sap_object"),
        pl.col("ItemCode").cast(pl.String).alias("sap_key"),
        pl.col("_id").alias("sku"),
        money_out(pl.col("_price_c")).alias("price"),
        pl.col("_ccy").alias("sap_currency"),
        pl.lit(cfg.price_list, pl.Int32).alias("price_list"),
        yes("SalesItem").alias("is_sales_item"),
        yes("Frozen").alias("is_frozen"),
        pl.col("_deleted_at").is_not_null().alias("is_deleted"),
        join_reasons(*reasons).alias("_reason"),
        warnings_list(*warns).alias("warnings"),
        pl.col("_bad_price").fill_null(False),
    )
    return finalize(df, df.select(payload), "products", list(BUSINESS_COLUMNS))


# Characters of an item field that would change a URL's meaning or are not allowed in one,
# percent-encoded when a template inserts the field ('%' first, so nothing is encoded twice).
_ENCODED = (("%", "%25"), (" ", "%20"), ("/", "%2F"), ("?", "%3F"), ("#", "%23"), ("&", "%26"),
            ("+", "%2B"), ('"', "%22"), ("<", "%3C"), (">", "%3E"), ("\\", "%5C"), ("^", "%5E"),
            ("`", "%60"), ("{", "%7B"), ("|", "%7C"), ("}", "%7D"))


def _encoded(field: str) -> pl.Expr:
    e = text(field)
    for char, code in _ENCODED:
        e = e.str.replace_all(char, code, literal=True)
    return e


def _link_candidate(link: ProductLink) -> pl.Expr:
    """The link before validation: the UDF when set (relative paths after base_url), else the
    template filled in (null when a field it needs is empty)."""
    candidates = []
    if link.udf:
        v = text(link.udf).str.replace_all(" ", "%20", literal=True)
        if link.base_url:
            joined = pl.lit(link.base_url.rstrip("/") + "/") + v.str.strip_chars_start("/")
            v = pl.when(v.str.contains(r"^(?i)https?://")).then(v).otherwise(joined)
        candidates.append(v)
    if link.template:
        pieces = [e for literal, f in template_parts(link.template)
                  for e in ([pl.lit(literal)] if literal else []) + ([_encoded(f)] if f else [])]
        candidates.append(pl.concat_str(pieces))
    return pl.coalesce(candidates) if len(candidates) > 1 else candidates[0]


def _is_url(value: pl.Expr) -> pl.Expr:
    """Vectorised: an absolute http(s) URL Ometria's product model accepts (lib/ometria/models)."""
    return (value.str.contains(HTTP_URL) & (value.str.len_chars() <= MAX_URL_LENGTH)).fill_null(False)


def _prices(itm1: pl.DataFrame | None, price_list: int) -> pl.DataFrame:
    schema = {"_id": pl.String, "_price_c": pl.Int64, "_ccy": pl.String, "_bad_price": pl.Boolean}
    if itm1 is None or itm1.height == 0:
        return pl.DataFrame(schema=schema)
    require_columns(itm1, "itm1", ["ItemCode", "PriceList", "Price", "Currency"])
    p = itm1.filter(pl.col("PriceList").cast(pl.Int64, strict=False) == price_list)
    price_c = cents("Price", itm1.schema["Price"])
    return (
        p.select(
            text("ItemCode").alias("_id"),
            price_c.alias("_price_c"),
            text("Currency").alias("_ccy"),
            (pl.col("Price").is_not_null() & price_c.is_null()).alias("_bad_price"),
        )
        .drop_nulls("_id")
        .unique("_id", keep="last", maintain_order=True)
    )
