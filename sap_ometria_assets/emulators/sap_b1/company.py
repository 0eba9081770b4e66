"""The generated SAP Business One demo company: a UK retailer (local currency GBP, `SBODEMOGB`).

`generate_company(scale, seed, ticks)` builds, deterministically, the data a Service Layer would
serve: business partners with addresses, groups, items with prices and stock per warehouse,
warehouses, UDF declarations, and the document chain sales order (17) -> delivery (15) -> A/R
invoice (13) -> A/R credit memo (14), linked line by line through `BaseType`/`BaseEntry`/
`BaseLine` as SAP does. Property names are the Service Layer's (`lib/sap_tables.py` holds the
contract); values are typed as the Service Layer types them (dates, times, enum member names).

Everything is vectorised (numpy for randomness, polars for the tables): scale 1 (about 2,000 BPs
and 10,000 orders) builds in well under a second, scale 100 (200,000 BPs, 1,000,000 orders,
3,000,000 order lines) in well under a minute.

The company holds what real companies hold and what a sync must survive: invalid, blank and
duplicate emails, nameless customers, leads and suppliers, marketing blocks, frozen partners, UDF
values outside their declared valid values, cancelled orders, partial deliveries, full and partial
credit memos (linked through invoices, and stand-alone), a credit memo larger than its order,
cancellation documents, lines for unknown items, orders for leads, suppliers and unknown card
codes, foreign currencies (`EUR`, `US$`, `SFR`), a few deliberately inconsistent order totals,
items without price or name, inactive and frozen items, stock over several warehouses including
the ring-fenced `WHS-WHOLESALE`, and over-committed stock. `Company.planted` names the keys of
every deliberately planted case.

Every sync exception rule (`lib/exceptions.py`) has examples here, at every scale:

| rule | planted (`Company.planted` key) |
|---|---|
| contact_invalid_email / _missing_email / _duplicate_email / _missing_name | `invalid_emails`, `blank_emails`, `duplicate_emails`, `nameless_customers` |
| order_unknown_customer | `orders_for_leads`, `orders_for_suppliers`, `orders_unknown_card_code` |
| line_unknown_item | `unknown_item_lines` (items of a pre-2020 catalogue) |
| product_missing_price_or_title | `items_without_price`, `items_without_name` |
| currency_unmapped | `sfr_customers` / `sfr_orders` (SFR is left out of the default mapping) |
| order_total_mismatch | `inconsistent_order_totals` |
| credit_memo_unlinked / _exceeds_order | `standalone_credit_memos`, `credit_memos_exceeding_order` |
| stock_negative_available | `overcommitted_stock` |
| udf_value_not_allowed | `udf_invalid_values` |
| record_too_large | `oversized_orders` (a 460-line trade pre-order), `oversized_items` (a pasted product page in the web-title memo UDF) |
| ometria_rejected | `unknown_item_lines`: Ometria rejects an order whose line names a product it does not hold (the embedded Ometria emulator checks, as Ometria documents) |
| held_back_other | `email_card_codes`: customers keyed by their email address; Ometria ids must not carry personal data, so they and their orders are held back |
| ometria_stale | nothing to plant: a change Ometria has not acknowledged for `recon.stale_after_hours`. In the demo the stock flag of `oversized_items` can never be sent (Ometria holds no such product), so it turns stale that long after the first sync |

Phone numbers are fictional yet valid for libphonenumber (Ofcom's drama ranges per city, e.g.
0161 496 0xxx, 020 7946 0xxx; ARCEP's 01 99 00 xx xx for France; 555-01xx in the US); a third
of the mobiles are Ofcom's drama mobiles (07700 900xxx), which libphonenumber rejects, next to a
valid landline; `invalid_phones` (about 1 %) hold only an unusable number.

Clock: the company's 'now' is 2026-11-01 09:00 company time plus one hour per tick. A tick is one
hour of business (new and edited partners, new orders, line edits, cancellations, deliveries,
invoices, credit memos, the occasional cancellation document, stock moves, item edits, and one
partner and one item deleted outright), derived only from (seed, tick), so a company advanced
tick by tick equals one generated at that tick count.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

# ---------------------------------------------------------------------------------------------
# Clock and constants
# ---------------------------------------------------------------------------------------------

EPOCH = dt.datetime(2020, 1, 1)
EPOCH_DAYS = (EPOCH.date() - dt.date(1970, 1, 1)).days
BASE_NOW = dt.datetime(2026, 11, 1, 9, 0, 0)
DAY = 86_400
HOUR = 3_600
NOW_S = int((BASE_NOW - EPOCH).total_seconds())

LOCAL_CURRENCY = "GBP"
COMPANY_DB = "SBODEMOGB"

OBJECT_CODE = {"ORDR": 17, "ODLN": 15, "OINV": 13, "ORIN": 14}
DOC_OBJECT_NAME = {"ORDR": "oOrders", "ODLN": "oDeliveryNotes", "OINV": "oInvoices", "ORIN": "oCreditNotes"}
DOC_LABEL = {"ORDR": "Sales Orders", "ODLN": "Deliveries", "OINV": "A/R Invoices", "ORIN": "A/R Credit Memos"}
DOC_NUM_BASE = {"ORDR": 100_000, "ODLN": 200_000, "OINV": 300_000, "ORIN": 400_000}
DOC_TABLES = {  # entity set -> (header, lines, expenses)
    "Orders": ("ORDR", "RDR1", "RDR3"),
    "DeliveryNotes": ("ODLN", "DLN1", "DLN3"),
    "Invoices": ("OINV", "INV1", "INV3"),
    "CreditNotes": ("ORIN", "RIN1", "RIN3"),
}
HEADER_OF = {v[0]: k for k, v in DOC_TABLES.items()}

WAREHOUSES = [
    ("01", "Main DC", "tNO", "tYES", "Unit 4, Meridian Park", "Leicester", "LE19 1WX"),
    ("02", "London Store", "tNO", "tYES", "211 Oxford Street", "London", "W1D 2LG"),
    ("03", "Manchester Store", "tNO", "tYES", "14 King Street", "Manchester", "M2 6AG"),
    ("WHS-WHOLESALE", "Wholesale (ring-fenced)", "tNO", "tNO", "Unit 9, Meridian Park", "Leicester", "LE19 1WX"),
    ("04", "Returns", "tNO", "tNO", "Unit 5, Meridian Park", "Leicester", "LE19 1WX"),
    ("05", "Edinburgh Store", "tNO", "tYES", "48 Princes Street", "Edinburgh", "EH2 2YJ"),
]

BP_GROUPS = [
    (100, "Retail", "bbpgt_CustomerGroup"),
    (101, "VIP", "bbpgt_CustomerGroup"),
    (102, "Trade", "bbpgt_CustomerGroup"),
    (103, "Staff", "bbpgt_CustomerGroup"),
    (200, "Suppliers", "bbpgt_VendorGroup"),
]

FIRST = (
    "Olivia Amelia Isla Ava Mia Ivy Lily Isabella Rosie Sophia Grace Willow Freya Florence Emily "
    "Ella Poppy Evie Elsie Charlotte Evelyn Sienna Daisy Phoebe Sophie Alice Harper Ruby Matilda "
    "Noah Oliver George Arthur Muhammad Leo Harry Oscar Archie Henry Theodore Freddie Jack Charlie "
    "Theo Alfie Jacob Thomas Finley Arlo William Lucas Roman Tommy Isaac Teddy Edward James Adam "
    "Siobhan Aoife Niamh Rhys Dylan Cerys Priya Aarav Chen Zofia"
).split()
LAST = (
    "Smith Jones Taylor Brown Williams Wilson Johnson Davies Patel Robinson Wright Thompson Evans "
    "Walker White Roberts Green Hall Thomas Clarke Jackson Wood Harris Edwards Turner Martin Cooper "
    "Hill Ward Hughes Moore Clark King Harrison Lewis Baker Lee Allen Morris Khan Scott Watson Davis "
    "Parker James Bennett Young Phillips Richardson Mitchell Bailey Carter Cook Singh Shaw Bell "
    "Collins Morgan Kelly Begum Miller Cox Hussain Marshall Simpson Price Anderson Adams Wilkinson "
    "Ali Ahmed Foster Ellis Murphy Chapman Mason Gray Richards Webb Griffiths Hunt Palmer Campbell "
    "O'Brien Holmes Mills Rogers Barnes Knight Matthews Barker Powell Stevens Kaur Fisher"
).split()
UK_CITIES = [
    ("London", "Greater London", "SW1A"), ("London", "Greater London", "N1"), ("London", "Greater London", "E14"),
    ("Manchester", "Greater Manchester", "M1"), ("Birmingham", "West Midlands", "B1"),
    ("Leeds", "West Yorkshire", "LS1"), ("Glasgow", "Lanarkshire", "G1"), ("Edinburgh", "Midlothian", "EH1"),
    ("Bristol", "Bristol", "BS1"), ("Liverpool", "Merseyside", "L1"), ("Sheffield", "South Yorkshire", "S1"),
    ("Cardiff", "South Glamorgan", "CF10"), ("Belfast", "County Antrim", "BT1"), ("Leicester", "Leicestershire", "LE1"),
    ("Nottingham", "Nottinghamshire", "NG1"), ("Newcastle upon Tyne", "Tyne and Wear", "NE1"),
    ("Brighton", "East Sussex", "BN1"), ("Oxford", "Oxfordshire", "OX1"), ("Cambridge", "Cambridgeshire", "CB1"),
    ("York", "North Yorkshire", "YO1"), ("Bath", "Somerset", "BA1"), ("Norwich", "Norfolk", "NR1"),
    ("Southampton", "Hampshire", "SO14"), ("Aberdeen", "Aberdeenshire", "AB10"), ("Exeter", "Devon", "EX1"),
]
FOREIGN = {  # country -> (city, zip, currency)
    "IE": ("Dublin", "D02 X285", "EUR"), "FR": ("Paris", "75008", "EUR"), "DE": ("Berlin", "10117", "EUR"),
    "NL": ("Amsterdam", "1012 JS", "EUR"), "US": ("New York", "10001", "US$"), "CH": ("Zurich", "8001", "SFR"),
}
COUNTRY_P = {"GB": 0.894, "IE": 0.035, "FR": 0.02, "DE": 0.02, "NL": 0.01, "US": 0.02, "CH": 0.001}
STREETS = (
    "High Street,Station Road,Main Street,Park Road,Church Road,Church Street,London Road,Victoria Road,"
    "Green Lane,Manor Road,Church Lane,Park Avenue,The Avenue,Queens Road,New Road,Grange Road,Kings Road,"
    "Mill Lane,Springfield Road,North Street,Albert Road,Windsor Road,Highfield Road,Chester Road"
).split(",")
COMPANY_WORDS = "Harbour,Meadow,Northgate,Oak,Riverside,Summit,Beacon,Willow,Granite,Lark,Fenwick,Ashby".split(",")
COMPANY_SUFFIX = ["Ltd", "Trading Ltd", "& Sons", "Retail Ltd", "Wholesale Ltd", "Group plc", "Boutique", "Supplies Ltd"]
MAIL_DOMAINS = ["example.com", "example.co.uk", "example.org", "example.net", "mail.example.com"]
BRANDS = ["Northwind", "Harbour & Co", "Fenwick Lane", "Atlas Outdoor", "Meadow", "Kestrel", "Union Mills"]
COLOURS = ["Navy", "Black", "White", "Oatmeal", "Forest Green", "Burgundy", "Charcoal", "Sky Blue", "Rust", "Sage"]
SEASONS = ["AW24", "SS25", "AW25", "SS26", "AW26", "Core"]
ADJECTIVES = ["Classic", "Organic Cotton", "Slim Fit", "Relaxed", "Merino", "Linen", "Recycled", "Heritage", "Everyday", "Waxed"]
PRODUCTS = {  # ItemsGroupCode -> (group name, products)
    101: ("Apparel", ["T-Shirt", "Crew Jumper", "Jeans", "Midi Dress", "Field Jacket", "Overcoat", "Oxford Shirt",
                      "Pleated Skirt", "Hoodie", "Chinos"]),
    102: ("Footwear", ["Trainers", "Chelsea Boots", "Sandals", "Loafers", "Walking Boots"]),
    103: ("Accessories", ["Tote Bag", "Leather Belt", "Wallet", "Sunglasses", "Wool Scarf", "Beanie"]),
    104: ("Home", ["Soy Candle", "Stoneware Mug", "Linen Cushion", "Wool Throw", "Cotton Towel"]),
    105: ("Gift Cards", ["Gift Card"]),
}
GROSS_PRICES = np.array([4.99, 9.99, 12.99, 14.99, 19.99, 24.99, 29.99, 34.99, 39.99, 49.99, 59.99, 79.99, 99.99, 149.99])
CURRENCIES = ["GBP", "EUR", "US$", "SFR"]            # SAP codes: `US$` and `SFR` are not ISO
RATE_BASE = np.array([1.0, 0.8612, 0.7891, 0.9354])    # GBP per unit, by CURRENCIES index
FREIGHT_NET = np.array([4.16, 4.95, 5.95, 6.50])       # net freight in document currency
CHANNELS = ["Web", "Store", "Phone", "Marketplace"]

# Low-cardinality columns of the big tables are stored as enums (1 byte a value instead of 16):
# they serve as the same strings.
E_CUR = pl.Enum(CURRENCIES)
E_STATUS = pl.Enum(["bost_Open", "bost_Close", "bost_Paid", "bost_Delivered"])
E_YESNO = pl.Enum(["tNO", "tYES"])
E_CANCEL = pl.Enum(["csNo", "csYes", "csCancellation"])
E_TAX = pl.Enum(["O1", "O0"])
LINE_DTYPES = {"ItemDescription": pl.Categorical, "Currency": E_CUR, "WarehouseCode": pl.Enum([w[0] for w in [
    ("01",), ("02",), ("03",), ("WHS-WHOLESALE",), ("04",), ("05",)]]), "TaxCode": E_TAX, "LineStatus": E_STATUS}
HEADER_DTYPES = {"DocCurrency": E_CUR, "Rounding": E_YESNO, "DocumentStatus": E_STATUS, "Cancelled": E_YESNO,
                 "CancelStatus": E_CANCEL}
EXPENSE_DTYPES = {"TaxCode": E_TAX}

# UDFs the company declares (docs/contracts.md): (table, name, type, size, description, valid values)
UDF_DEFS = [
    ("OCRD", "AcquisitionSource", "db_Alpha", 20, "Acquisition source", ["Web", "Store", "Marketplace", "Referral", "Event"]),
    ("OCRD", "FirstPurchaseCategory", "db_Alpha", 30, "First purchase category", []),
    ("OCRD", "LoyaltyTier", "db_Alpha", 10, "Loyalty tier", ["Bronze", "Silver", "Gold", "Platinum"]),
    ("OCRD", "MarketingOptIn", "db_Alpha", 1, "Marketing opt-in", ["Y", "N"]),
    ("OCRD", "DateOfBirth", "db_Date", 8, "Date of birth", []),
    *[
        (t, name, "db_Alpha", size, desc, vals)
        for t in ("ORDR", "ODLN", "OINV", "ORIN")
        for name, size, desc, vals in (
            ("SalesChannel", 20, "Sales channel", ["Web", "Store", "Phone", "Marketplace"]),
            ("PromoCode", 30, "Promotion code", []),
        )
    ],
    ("OITM", "Brand", "db_Alpha", 50, "Brand", []),
    ("OITM", "Colour", "db_Alpha", 30, "Colour", []),
    ("OITM", "Season", "db_Alpha", 10, "Season", []),
    ("OITM", "WebTitle", "db_Memo", 64000, "Web title", []),
]
UDF_VALUE_LABELS = {"Y": "Yes", "N": "No"}

# ---------------------------------------------------------------------------------------------
# Column layouts of the stored tables (Service Layer property names; UDFs last)
# ---------------------------------------------------------------------------------------------

HEADER_COLUMNS = [
    "DocEntry", "DocNum", "DocDate", "DocDueDate", "DocTime", "CardCode", "CardName", "Address",
    "NumAtCard", "DocCurrency", "DocRate", "DocTotal", "DocTotalFc", "VatSum", "VatSumFc",
    "DiscountPercent", "TotalDiscount", "TotalDiscountFC", "RoundingDiffAmount", "RoundingDiffAmountFC",
    "Rounding", "PaidToDate", "Comments", "DocumentStatus", "Cancelled", "CancelStatus", "CancelDate",
    "ShipToCode", "PayToCode", "CreationDate", "UpdateDate", "UpdateTime", "U_SalesChannel", "U_PromoCode",
]
LINE_COLUMNS = [
    "DocEntry", "LineNum", "ItemCode", "ItemDescription", "Quantity", "ShipDate", "Price", "PriceAfterVAT",
    "Currency", "Rate", "DiscountPercent", "WarehouseCode", "TaxCode", "UnitPrice", "LineTotal", "RowTotalFC",
    "TaxTotal", "GrossTotal", "GrossTotalFC", "LineStatus", "RemainingOpenQuantity", "BaseType", "BaseEntry",
    "BaseLine",
]
EXPENSE_COLUMNS = ["DocEntry", "LineNum", "ExpenseCode", "LineTotal", "LineTotalFC", "TaxSum", "TaxSumFC", "TaxCode"]
BP_COLUMNS = [
    "CardCode", "CardName", "CardType", "CompanyPrivate", "GroupCode", "Address", "ZipCode", "City", "County",
    "Country", "MailAddress", "MailZipCode", "MailCity", "MailCountry", "Phone1", "Phone2", "Cellular",
    "EmailAddress", "Currency", "PriceListNum", "Valid", "Frozen", "BlockSendingMarketingContent",
    "CurrentAccountBalance", "Series", "BilltoDefault", "ShipToDefault", "CreateDate", "CreateTime",
    "UpdateDate", "UpdateTime", "U_AcquisitionSource", "U_FirstPurchaseCategory", "U_LoyaltyTier",
    "U_MarketingOptIn", "U_DateOfBirth",
]
ADDRESS_COLUMNS = ["BPCode", "AddressName", "AddressType", "Street", "StreetNo", "City", "ZipCode", "County", "Country", "RowNum"]
ITEM_COLUMNS = [
    "ItemCode", "ItemName", "ItemsGroupCode", "BarCode", "SalesVATGroup", "PurchaseItem", "SalesItem",
    "InventoryItem", "Valid", "Frozen", "QuantityOnStock", "QuantityOrderedFromVendors",
    "QuantityOrderedByCustomers", "CreateDate", "CreateTime", "UpdateDate", "UpdateTime",
    "U_Brand", "U_Colour", "U_Season", "U_WebTitle",
]
ITEM_PRICE_COLUMNS = ["ItemCode", "PriceList", "Price", "Currency"]
ITEM_WHS_COLUMNS = ["ItemCode", "WarehouseCode", "InStock", "Committed", "Ordered", "Locked"]

_S = pl.String
_NULL_S = pl.lit(None, _S)
_NULL_I = pl.lit(None, pl.Int32)
_NULL_D = pl.lit(None, pl.Date)
_EMPTY_LIST = pl.lit([], dtype=pl.List(pl.Int32))


# ---------------------------------------------------------------------------------------------
# Entity sets: how a stored table is served (key, collections, standard properties SAP adds)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChildSpec:
    """A collection property built from a child table (`DocumentLines` from RDR1...)."""

    collection: str
    table: str
    parent_key: str                  # column of the child holding the parent's key
    hidden: tuple[str, ...] = ()     # stored columns the Service Layer does not show here
    extras: tuple[tuple[str, Any], ...] = ()  # (property, constant or expression) added when served


@dataclass(frozen=True)
class EntitySpec:
    entity_set: str
    table: str
    key: tuple[str, ...]
    entity_type: str
    children: tuple[ChildSpec, ...] = ()
    extras: tuple[tuple[str, Any], ...] = ()


def _doc_spec(entity_set: str) -> EntitySpec:
    hdr, lines, exp = DOC_TABLES[entity_set]
    return EntitySpec(
        entity_set=entity_set,
        table=hdr,
        key=("DocEntry",),
        entity_type="Document",
        extras=(
            ("DocType", "dDocument_Items"),
            ("TaxDate", pl.col("DocDate")),
            ("DocTotalSys", pl.col("DocTotal")),
            ("DocObjectCode", DOC_OBJECT_NAME[hdr]),
            ("SalesPersonCode", -1),
            ("Series", 1),
            ("JournalMemo", pl.concat_str(pl.lit(DOC_LABEL[hdr] + " - "), pl.col("CardCode"))),
            ("ClosingDate", pl.when(pl.col("DocumentStatus") == "bost_Close").then(pl.col("UpdateDate")).otherwise(_NULL_D)),
        ),
        children=(
            ChildSpec(
                "DocumentLines", lines, "DocEntry",
                extras=(
                    ("VatGroup", pl.col("TaxCode")),
                    ("TreeType", "iNotATree"),
                    ("UoMCode", "Manual"),
                ),
            ),
            ChildSpec(
                "DocumentAdditionalExpenses", exp, "DocEntry",
                extras=(
                    ("VatGroup", pl.col("TaxCode")),
                    ("DistributionMethod", "aedm_None"),
                    ("BaseDocType", -1),
                ),
            ),
        ),
    )


ENTITY_SPECS: dict[str, EntitySpec] = {
    "BusinessPartners": EntitySpec(
        "BusinessPartners", "OCRD", ("CardCode",), "BusinessPartner",
        extras=(
            ("CardForeignName", _NULL_S),
            ("Fax", _NULL_S),
            ("ContactPerson", _NULL_S),
            ("SalesPersonCode", -1),
            ("PayTermsGrpCode", -1),
            ("CreditLimit", 0.0),
            ("LanguageCode", 3),
            ("ValidFrom", _NULL_D),
            ("ValidTo", _NULL_D),
            ("FrozenFrom", _NULL_D),
            ("FrozenTo", _NULL_D),
            ("Website", _NULL_S),
            ("Notes", _NULL_S),
            ("BillToState", _NULL_S),
            ("ShipToState", _NULL_S),
        ),
        children=(
            ChildSpec(
                "BPAddresses", "CRD1", "BPCode",
                extras=(
                    ("Block", _NULL_S),
                    ("BuildingFloorRoom", _NULL_S),
                    ("State", _NULL_S),
                    ("AddressName2", _NULL_S),
                    ("AddressName3", _NULL_S),
                    ("TypeOfAddress", _NULL_S),
                    ("GlobalLocationNumber", _NULL_S),
                ),
            ),
        ),
    ),
    "BusinessPartnerGroups": EntitySpec("BusinessPartnerGroups", "OCRG", ("Code",), "BusinessPartnerGroup"),
    "Orders": _doc_spec("Orders"),
    "DeliveryNotes": _doc_spec("DeliveryNotes"),
    "Invoices": _doc_spec("Invoices"),
    "CreditNotes": _doc_spec("CreditNotes"),
    "Items": EntitySpec(
        "Items", "OITM", ("ItemCode",), "Item",
        extras=(
            ("ForeignName", _NULL_S),
            ("ItemType", "itItems"),
            ("ItemClass", "itcMaterial"),
            ("TreeType", "iNotATree"),
            ("VatLiable", "tYES"),
            ("Manufacturer", -1),
            ("SalesUnit", "Each"),
            ("PurchaseUnit", "Each"),
            ("SalesItemsPerUnit", 1.0),
            ("DefaultWarehouse", "01"),
            ("ManageStockByWarehouse", "tYES"),
            ("ManageSerialNumbers", "tNO"),
            ("ManageBatchNumbers", "tNO"),
            ("ValidFrom", _NULL_D),
            ("ValidTo", _NULL_D),
            ("FrozenFrom", _NULL_D),
            ("FrozenTo", _NULL_D),
            ("Series", 3),
            ("MinInventory", 0.0),
            ("MaxInventory", 0.0),
        ),
        children=(
            ChildSpec(
                "ItemPrices", "ITM1", "ItemCode", hidden=("ItemCode",),
                extras=(
                    ("AdditionalPrice1", 0.0),
                    ("AdditionalCurrency1", _NULL_S),
                    ("AdditionalPrice2", 0.0),
                    ("AdditionalCurrency2", _NULL_S),
                    ("BasePriceList", pl.col("PriceList")),
                    ("Factor", 1.0),
                    ("UoMPrices", _EMPTY_LIST),
                ),
            ),
            ChildSpec(
                "ItemWarehouseInfoCollection", "OITW", "ItemCode",
                extras=(
                    ("MinimalStock", 0.0),
                    ("MaximalStock", 0.0),
                    ("MinimalOrder", 0.0),
                    ("StandardAveragePrice", 0.0),
                    ("InventoryAccount", "1400"),
                    ("CostAccount", "5000"),
                    ("CountedQuantity", 0.0),
                    ("WasCounted", "tNO"),
                    ("UserSignature", 1),
                    ("Counted", 0.0),
                    ("DefaultBin", _NULL_I),
                    ("DefaultBinEnforced", "tNO"),
                    ("ItemCycleCounts", _EMPTY_LIST),
                ),
            ),
        ),
    ),
    "Warehouses": EntitySpec(
        "Warehouses", "OWHS", ("WarehouseCode",), "Warehouse",
        extras=(("DropShip", "tNO"), ("EnableBinLocations", "tNO"), ("Location", _NULL_I)),
    ),
    "UserFieldsMD": EntitySpec(
        "UserFieldsMD", "CUFD", ("TableName", "FieldID"), "UserFieldMD",
        extras=(
            ("LinkedTable", _NULL_S),
            ("DefaultValue", _NULL_S),
            ("Mandatory", "tNO"),
            ("EditSize", pl.col("Size")),
            ("LinkedUDO", _NULL_S),
            ("LinkedSystemObject", _NULL_S),
        ),
    ),
}


def _extra_expr(name: str, value: Any) -> pl.Expr:
    if isinstance(value, pl.Expr):
        return value.alias(name)
    return pl.lit(value).alias(name)


def property_exprs(table_columns: list[str], extras: tuple[tuple[str, Any], ...], hidden=()) -> dict[str, pl.Expr]:
    """Scalar properties in Service Layer order: standard columns, standard extras, then UDFs."""
    plain = [c for c in table_columns if not c.startswith("U_") and c not in hidden]
    udfs = [c for c in table_columns if c.startswith("U_") and c not in hidden]
    out: dict[str, pl.Expr] = {c: pl.col(c) for c in plain}
    for name, value in extras:
        out[name] = _extra_expr(name, value)
    for c in udfs:
        out[c] = pl.col(c)
    return out


# ---------------------------------------------------------------------------------------------
# Small vectorised helpers
# ---------------------------------------------------------------------------------------------

def _date_of(col: str | pl.Expr) -> pl.Expr:
    e = pl.col(col) if isinstance(col, str) else col
    return ((e // DAY) + EPOCH_DAYS).cast(pl.Int32).cast(pl.Date)


def _time_of(col: str | pl.Expr) -> pl.Expr:
    e = pl.col(col) if isinstance(col, str) else col
    return ((e % DAY) * 1_000_000_000).cast(pl.Int64).cast(pl.Time)


def _pick(words, idx: np.ndarray, dtype: pl.DataType = pl.String) -> pl.Series:
    return pl.Series(values=list(words), dtype=dtype).gather(pl.Series(np.asarray(idx, dtype=np.int64)))


def _choice(rng: np.random.Generator, options, n: int, p=None) -> np.ndarray:
    """Indices into `options` (weights normalised)."""
    if p is not None:
        p = np.asarray(p, dtype=float)
        p = p / p.sum()
    return rng.choice(len(options), size=n, p=p)


def _tod(rng: np.random.Generator, n: int, store: np.ndarray | None = None) -> np.ndarray:
    """Seconds since midnight, weighted to business hours (stores 09:00-18:00)."""
    weights = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 2, 4, 6, 7, 7, 8, 7, 6, 6, 6, 6, 6, 7, 8, 7, 5, 3], float)
    hours = rng.choice(24, size=n, p=weights / weights.sum())
    if store is not None:
        hours = np.where(store, rng.integers(9, 18, size=n), hours)
    return hours * HOUR + rng.integers(0, HOUR, size=n)


def _doc_rate(cur: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Daily exchange rate (GBP per unit of the document currency, 4 decimals; 1 for GBP)."""
    day = t // DAY
    return np.where(cur == 0, 1.0, np.round(RATE_BASE[cur] * (1 + 0.03 * np.sin(day / 45.0 + cur)), 4))


def _rng(seed: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, *salt])


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    frames = [f for f in frames if f is not None]
    return pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]


# ---------------------------------------------------------------------------------------------
# Amounts: lines priced from UnitPrice/discount/quantity, headers totalled from lines
# ---------------------------------------------------------------------------------------------

_VAT = pl.when(pl.col("TaxCode") == "O1").then(0.2).otherwise(0.0)


def _reprice(lines: pl.DataFrame) -> pl.DataFrame:
    """Line amounts from UnitPrice, DiscountPercent and Quantity: doc currency, then local at Rate."""
    fc = pl.col("Currency") != LOCAL_CURRENCY
    return (
        lines.with_columns(Price=(pl.col("UnitPrice") * (1 - pl.col("DiscountPercent") / 100)).round(2))
        .with_columns(_net=(pl.col("Price") * pl.col("Quantity")).round(2))
        .with_columns(_tax=(pl.col("_net") * _VAT).round(2))
        .with_columns(
            PriceAfterVAT=(pl.col("Price") * (1 + _VAT)).round(2),
            LineTotal=pl.when(fc).then((pl.col("_net") * pl.col("Rate")).round(2)).otherwise(pl.col("_net")),
            TaxTotal=pl.when(fc).then((pl.col("_tax") * pl.col("Rate")).round(2)).otherwise(pl.col("_tax")),
            RowTotalFC=pl.when(fc).then(pl.col("_net")).otherwise(0.0),
            GrossTotalFC=pl.when(fc).then((pl.col("_net") + pl.col("_tax")).round(2)).otherwise(0.0),
        )
        .with_columns(GrossTotal=(pl.col("LineTotal") + pl.col("TaxTotal")).round(2))
        .drop("_net", "_tax")
    )


_TOTAL_COLS = [
    "DocTotal", "DocTotalFc", "VatSum", "VatSumFc", "TotalDiscount", "TotalDiscountFC",
    "RoundingDiffAmount", "RoundingDiffAmountFC",
]


def _totals(hdr: pl.DataFrame, lines: pl.DataFrame, exp: pl.DataFrame, subset: bool = False) -> pl.DataFrame:
    """DocTotal = sum(LineTotal) - TotalDiscount + VatSum + freight + RoundingDiffAmount (and Fc).

    `subset`: lines/exp may hold other documents too (filtered to `hdr`'s first).
    """
    if subset:
        keys = hdr["DocEntry"].implode()
        lines = lines.filter(pl.col("DocEntry").is_in(keys))
        exp = exp.filter(pl.col("DocEntry").is_in(keys))
    # Sums per document with bincount: DocEntry is a dense integer key.
    entries = hdr["DocEntry"].to_numpy().astype(np.int64)
    lo = int(min(entries.min(initial=0), lines["DocEntry"].min() or 0, exp["DocEntry"].min() or 0))
    size = int(max(entries.max(initial=0), lines["DocEntry"].max() or 0, exp["DocEntry"].max() or 0)) - lo + 1
    l_de = lines["DocEntry"].to_numpy().astype(np.int64) - lo
    e_de = exp["DocEntry"].to_numpy().astype(np.int64) - lo

    def per_doc(de: np.ndarray, values: pl.Series) -> pl.Series:
        return pl.Series(np.bincount(de, weights=values.to_numpy(), minlength=size)[entries - lo])

    sums = {
        "_lt": per_doc(l_de, lines["LineTotal"]), "_tax": per_doc(l_de, lines["TaxTotal"]),
        "_ltfc": per_doc(l_de, lines["RowTotalFC"]), "_taxfc": per_doc(l_de, lines["GrossTotalFC"] - lines["RowTotalFC"]),
        "_fr": per_doc(e_de, exp["LineTotal"]), "_frtax": per_doc(e_de, exp["TaxSum"]),
        "_frfc": per_doc(e_de, exp["LineTotalFC"]), "_frtaxfc": per_doc(e_de, exp["TaxSumFC"]),
    }
    helpers = ["_lt", "_tax", "_ltfc", "_taxfc", "_fr", "_frtax", "_frfc", "_frtaxfc"]
    d = pl.col("DiscountPercent") / 100
    fc = pl.col("DocCurrency") != LOCAL_CURRENCY
    rounding = pl.col("Rounding") == "tYES"
    h = (
        hdr.drop([c for c in _TOTAL_COLS if c in hdr.columns])
        .with_columns(**{k: v.round(6) for k, v in sums.items()})
        .with_columns(
            TotalDiscount=(pl.col("_lt") * d).round(2),
            TotalDiscountFC=pl.when(fc).then((pl.col("_ltfc") * d).round(2)).otherwise(0.0),
        )
        .with_columns(
            VatSum=((pl.col("_tax") * (1 - d)).round(2) + pl.col("_frtax")).round(2),
            VatSumFc=pl.when(fc).then(((pl.col("_taxfc") * (1 - d)).round(2) + pl.col("_frtaxfc")).round(2)).otherwise(0.0),
        )
        .with_columns(
            _pre=pl.col("_lt") - pl.col("TotalDiscount") + pl.col("VatSum") + pl.col("_fr"),
            _prefc=pl.col("_ltfc") - pl.col("TotalDiscountFC") + pl.col("VatSumFc") + pl.col("_frfc"),
        )
        .with_columns(
            RoundingDiffAmountFC=pl.when(fc & rounding)
            .then(((pl.col("_prefc") * 20).round(0) / 20 - pl.col("_prefc")).round(2))
            .otherwise(0.0),
        )
        .with_columns(
            RoundingDiffAmount=pl.when(fc)
            .then((pl.col("RoundingDiffAmountFC") * pl.col("DocRate")).round(2))
            .when(rounding)
            .then(((pl.col("_pre") * 20).round(0) / 20 - pl.col("_pre")).round(2))
            .otherwise(0.0),
        )
        .with_columns(
            DocTotal=(pl.col("_pre") + pl.col("RoundingDiffAmount")).round(2),
            DocTotalFc=pl.when(fc).then((pl.col("_prefc") + pl.col("RoundingDiffAmountFC")).round(2)).otherwise(0.0),
        )
        .drop(helpers + ["_pre", "_prefc"])
    )
    extra = [c for c in hdr.columns if c not in HEADER_COLUMNS]
    return h.select(HEADER_COLUMNS + extra)


# ---------------------------------------------------------------------------------------------
# Builders shared by the initial generation and the ticks
# ---------------------------------------------------------------------------------------------

# Telephone numbers reserved for drama by the regulators, so no real person is ever rung, and
# that libphonenumber (the validator Ometria uses) still accepts. Ofcom's drama mobiles
# (07700 900xxx) and 01632 960xxx are reserved too but libphonenumber rejects them.
DRAMA_PHONE_PREFIX = {  # UK city -> national prefix of its drama range (+ 3 digits)
    "London": "020 7946 0", "Manchester": "0161 496 0", "Birmingham": "0121 496 0", "Leeds": "0113 496 0",
    "Sheffield": "0114 496 0", "Leicester": "0116 496 0", "Bristol": "0117 496 0", "Edinburgh": "0131 496 0",
    "Glasgow": "0141 496 0", "Liverpool": "0151 496 0", "Newcastle upon Tyne": "0191 498 0",
    "Cardiff": "029 2018 0", "Belfast": "028 9018 0",
}
FOREIGN_PHONE_PREFIX = {  # country -> international prefix (+ 3 digits; US: + 2 digits)
    "FR": "+33 1 99 00 0",   # ARCEP's fiction range 01 99 00 xx xx
    "US": "+1 212 555 01",   # NANP 555-0100..0199, reserved for fiction
}
OTHER_PHONE_PREFIX = "+44 20 7946 0"  # a UK drama number in international form: valid anywhere


def _fictional_phone(digits_col: str, international: bool = False) -> pl.Expr:
    """A valid, fictional number for the partner's country (and UK city)."""
    p = pl.col(digits_col)
    three, two = p.cast(_S).str.zfill(3), (p % 100).cast(_S).str.zfill(2)
    gb = pl.col("_city").replace_strict(DRAMA_PHONE_PREFIX, default=DRAMA_PHONE_PREFIX["London"],
                                        return_dtype=_S)
    if international:
        gb = pl.concat_str(pl.lit("+44 "), gb.str.slice(1))
    country = pl.col("Country")
    return (pl.when(country == "GB").then(pl.concat_str(gb, three))
            .when(country == "US").then(pl.concat_str(pl.lit(FOREIGN_PHONE_PREFIX["US"]), two))
            .when(country == "FR").then(pl.concat_str(pl.lit(FOREIGN_PHONE_PREFIX["FR"]), three))
            .otherwise(pl.concat_str(pl.lit(OTHER_PHONE_PREFIX), three)))


def _invalid_phone(digits_col: str) -> pl.Expr:
    """Numbers people really type that no validator accepts (drama mobiles, a digit short).
    Abroad only in international form: a UK national number can be a real foreign one."""
    p = pl.col(digits_col)
    gb = pl.col("Country") == "GB"
    return (pl.when(gb & (p % 3 == 0)).then(pl.concat_str(pl.lit("07700 900"), p.cast(_S).str.zfill(3)))
            .when(gb & (p % 3 == 2)).then(pl.concat_str(pl.lit("0161 496 0"), p.cast(_S)))  # p < 12: short
            .otherwise(pl.concat_str(pl.lit("+44 7700 900"), p.cast(_S).str.zfill(3))))


def _make_bps(rng: np.random.Generator, kinds: np.ndarray, seqs: np.ndarray, create_s: np.ndarray,
              legacy: np.ndarray | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Business partners (kind 0 customer, 1 lead, 2 supplier) and their addresses."""
    n = len(kinds)
    customer, supplier = kinds == 0, kinds == 2
    group = np.where(supplier, 200, 100)
    r = rng.random(n)
    group = np.where(customer & (r < 0.06), 102, group)
    group = np.where(customer & (r >= 0.06) & (r < 0.11), 101, group)
    group = np.where(customer & (r >= 0.11) & (r < 0.13), 103, group)
    company = supplier | (group == 102)
    countries = list(COUNTRY_P)
    country_i = _choice(rng, countries, n, list(COUNTRY_P.values()))
    country_i = np.where(supplier & (rng.random(n) < 0.5), 0, country_i)
    country = _pick(countries, country_i)
    first_i = rng.integers(0, len(FIRST), n)
    last_i = rng.integers(0, len(LAST), n)
    city_i = rng.integers(0, len(UK_CITIES), n)
    street_i = rng.integers(0, len(STREETS), n)
    word_i = rng.integers(0, len(COMPANY_WORDS), n)
    suffix_i = rng.integers(0, len(COMPANY_SUFFIX), n)
    dom_i = rng.integers(0, len(MAIL_DOMAINS), n)
    sep_i = rng.integers(0, 3, n)
    house = rng.integers(1, 240, n)
    all_cur = country.replace_strict({c: FOREIGN[c][2] if c in FOREIGN else LOCAL_CURRENCY for c in countries})
    currency = pl.select(pl.when(pl.Series((group == 102) & (rng.random(n) < 0.3))).then(pl.lit("##"))
                         .otherwise(all_cur)).to_series()
    blocked = rng.random(n) < 0.08
    # UDFs: customers only (suppliers and leads have them empty), None = not filled in.
    src_i = np.where(customer, _choice(rng, range(6), n, [45, 25, 10, 8, 4, 8]), 5)
    tier_i = np.where(customer, _choice(rng, range(5), n, [50, 25, 10, 3, 12]), 4)
    optin_i = np.where(supplier, 2, np.where(blocked, 1, _choice(rng, range(3), n, [62, 28, 10])))
    cat_i = np.where(customer, _choice(rng, range(5), n, [40, 15, 15, 12, 18]), 4)
    dob = np.where(customer & (rng.random(n) < 0.55), rng.integers(-7300, 13000, n), -10**6)
    mobile_fmt = rng.integers(0, 3, n)

    df = pl.DataFrame({
        "_kind": kinds, "_seq": seqs, "_t": create_s, "_first": _pick(FIRST, first_i), "_last": _pick(LAST, last_i),
        "_city": _pick([c[0] for c in UK_CITIES], city_i), "_county": _pick([c[1] for c in UK_CITIES], city_i),
        "_pc": _pick([c[2] for c in UK_CITIES], city_i), "_street": _pick(STREETS, street_i), "_house": house,
        "_word": _pick(COMPANY_WORDS, word_i), "_suffix": _pick(COMPANY_SUFFIX, suffix_i),
        "_dom": _pick(MAIL_DOMAINS, dom_i), "_sep": _pick([".", "_", ""], sep_i),
        "_company": company, "Country": country, "GroupCode": group.astype(np.int32),
        "Currency": currency,
        "_blocked": blocked, "_legacy": legacy if legacy is not None else np.zeros(n, bool),
        "U_AcquisitionSource": _pick(["Web", "Store", "Marketplace", "Referral", "Event", None], src_i),
        "U_FirstPurchaseCategory": _pick(["Apparel", "Footwear", "Accessories", "Home", None], cat_i),
        "U_LoyaltyTier": _pick(["Bronze", "Silver", "Gold", "Platinum", None], tier_i),
        "U_MarketingOptIn": _pick(["Y", "N", None], optin_i),
        "_dob": dob, "_mob": mobile_fmt, "_p1": rng.integers(0, 1000, n), "_p2": rng.integers(0, 1000, n),
        "_hasphone": rng.random(n) < 0.55, "_hasmobile": rng.random(n) < 0.8,
        "_pz1": rng.integers(1, 10, n), "_pz2": rng.integers(1, 10, n),
        "_pz3": _pick(list("ABDEFGHJLNPQRSTUWXYZ"), rng.integers(0, 20, n)),
        "_pz4": _pick(list("ABDEFGHJLNPQRSTUWXYZ"), rng.integers(0, 20, n)),
    })
    kind = pl.col("_kind")
    # Phones are fictional but valid (see _fictional_phone). A third of the mobiles are Ofcom's
    # drama mobiles (07700 900xxx), which libphonenumber rejects: those partners also have a
    # landline, so the sync falls back to it. About 1 % hold only an unusable number.
    has_mobile = pl.col("_hasmobile") & ~pl.col("_company")
    mobile_drama = has_mobile & (pl.col("_mob") == 2)
    bad_phone = has_mobile & (pl.col("_p2") < 12)
    foreign_city = pl.col("Country").replace_strict({k: v[0] for k, v in FOREIGN.items()}, default=None)
    foreign_zip = pl.col("Country").replace_strict({k: v[1] for k, v in FOREIGN.items()}, default=None)
    is_gb = pl.col("Country") == "GB"
    df = df.with_columns(
        CardCode=pl.when(pl.col("_legacy")).then((200_000 + pl.col("_seq")).cast(_S))
        .when(kind == 0).then(pl.lit("C") + pl.col("_seq").cast(_S).str.zfill(6))
        .when(kind == 1).then(pl.lit("L") + pl.col("_seq").cast(_S).str.zfill(6))
        .otherwise(pl.lit("V") + pl.col("_seq").cast(_S).str.zfill(5)),
        CardName=pl.when(pl.col("_company"))
        .then(pl.concat_str(pl.col("_word"), pl.lit(" "), pl.col("_last"), pl.lit(" "), pl.col("_suffix")))
        .otherwise(pl.concat_str(pl.col("_first"), pl.lit(" "), pl.col("_last"))),
        CardType=pl.when(kind == 0).then(pl.lit("cCustomer")).when(kind == 1).then(pl.lit("cLid")).otherwise(pl.lit("cSupplier")),
        CompanyPrivate=pl.when(pl.col("_company")).then(pl.lit("cCompany")).otherwise(pl.lit("cPrivate")),
        Address=pl.concat_str(pl.col("_house").cast(_S), pl.lit(" "), pl.col("_street")),
        City=pl.when(is_gb).then(pl.col("_city")).otherwise(foreign_city),
        County=pl.when(is_gb).then(pl.col("_county")).otherwise(_NULL_S),
        ZipCode=pl.when(is_gb).then(pl.concat_str(
            pl.col("_pc"), pl.lit(" "), pl.col("_pz2").cast(_S), pl.col("_pz3"), pl.col("_pz4")
        )).otherwise(foreign_zip),
        EmailAddress=pl.when(pl.col("_company"))
        .then(pl.concat_str(pl.lit("accounts"), pl.col("_seq").cast(_S), pl.lit("@"),
                            pl.col("_word").str.to_lowercase(), pl.lit(".example.com")))
        .otherwise(pl.concat_str(pl.col("_first"), pl.col("_sep"), pl.col("_last").str.replace("'", ""),
                                 pl.col("_seq").cast(_S), pl.lit("@"), pl.col("_dom")).str.to_lowercase()),
        Phone1=pl.when((pl.col("_hasphone") | pl.col("_company") | mobile_drama) & ~bad_phone)
        .then(_fictional_phone("_p1")).otherwise(_NULL_S),
        Cellular=pl.when(bad_phone).then(_invalid_phone("_p2"))
        .when(mobile_drama).then(pl.concat_str(pl.when(is_gb).then(pl.lit("07700 900")).otherwise(pl.lit("+44 7700 900")),
                                               pl.col("_p2").cast(_S).str.zfill(3)))
        .when(has_mobile & (pl.col("_mob") == 1) & is_gb).then(_fictional_phone("_p2", international=True))
        .when(has_mobile).then(_fictional_phone("_p2"))
        .otherwise(_NULL_S),
        _badphone=bad_phone,
        Phone2=_NULL_S,
        PriceListNum=pl.when(pl.col("GroupCode") == 102).then(2).otherwise(1).cast(pl.Int32),
        Valid=pl.lit("tYES"),
        Frozen=pl.lit("tNO"),
        BlockSendingMarketingContent=pl.when(pl.col("_blocked")).then(pl.lit("tYES")).otherwise(pl.lit("tNO")),
        CurrentAccountBalance=pl.lit(0.0),
        Series=pl.when(kind == 0).then(1).when(kind == 1).then(2).otherwise(3).cast(pl.Int32),
        CreateDate=_date_of("_t"),
        CreateTime=_time_of("_t"),
        UpdateDate=_date_of("_t"),
        UpdateTime=_time_of("_t"),
        U_DateOfBirth=pl.when(pl.col("_dob") > -10**6).then(pl.col("_dob").cast(pl.Int32).cast(pl.Date)).otherwise(_NULL_D),
    )
    has_addr = (kind != 1) | (pl.col("_seq") % 3 == 0)
    df = df.with_columns(
        MailAddress=pl.when(has_addr).then(pl.col("Address")).otherwise(_NULL_S),
        MailZipCode=pl.when(has_addr).then(pl.col("ZipCode")).otherwise(_NULL_S),
        MailCity=pl.when(has_addr).then(pl.col("City")).otherwise(_NULL_S),
        MailCountry=pl.when(has_addr).then(pl.col("Country")).otherwise(_NULL_S),
        BilltoDefault=pl.when(has_addr).then(pl.lit("Default")).otherwise(_NULL_S),
        ShipToDefault=pl.when(has_addr).then(pl.lit("Default")).otherwise(_NULL_S),
        _has_addr=has_addr,
        _extra_ship=(pl.col("_seq") % 7 == 3) & (kind == 0),
    )
    addr_cols = ["BPCode", "Street", "StreetNo", "City", "ZipCode", "County", "Country"]
    base = df.filter(pl.col("_has_addr")).select(
        BPCode=pl.col("CardCode"), Street=pl.col("_street"), StreetNo=pl.col("_house").cast(_S),
        City=pl.col("City"), ZipCode=pl.col("ZipCode"), County=pl.col("County"), Country=pl.col("Country"),
        _extra=pl.col("_extra_ship"),
    )
    bill = base.select(addr_cols).with_columns(
        AddressName=pl.lit("Default"), AddressType=pl.lit("bo_BillTo"), RowNum=pl.lit(0, pl.Int32))
    ship = base.select(addr_cols).with_columns(
        AddressName=pl.lit("Default"), AddressType=pl.lit("bo_ShipTo"), RowNum=pl.lit(1, pl.Int32))
    work = base.filter(pl.col("_extra")).select(addr_cols).with_columns(
        AddressName=pl.lit("Work"), AddressType=pl.lit("bo_ShipTo"), RowNum=pl.lit(2, pl.Int32),
        Street=pl.lit("1 Canada Square"), StreetNo=_NULL_S, City=pl.lit("London"), ZipCode=pl.lit("E14 5AB"),
        County=pl.lit("Greater London"), Country=pl.lit("GB"),
    )
    crd1 = _concat([bill, ship, work]).select(ADDRESS_COLUMNS).sort("BPCode", "RowNum")
    ocrd = df.select(BP_COLUMNS + ["_t", "_badphone"])
    return ocrd, crd1


def _make_items(rng: np.random.Generator, seqs: np.ndarray, create_s: np.ndarray, warehouses: list[str]
                ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    n = len(seqs)
    groups = np.array(list(PRODUCTS))[_choice(rng, PRODUCTS, n, [45, 15, 20, 15, 5])]
    prod_name = np.empty(n, dtype=object)
    for g, (_, names) in PRODUCTS.items():
        m = groups == g
        prod_name[m] = np.array(names, dtype=object)[rng.integers(0, len(names), m.sum())]
    gift = groups == 105
    gross = GROSS_PRICES[rng.integers(0, len(GROSS_PRICES), n)]
    gross = np.where(gift, np.array([10.0, 25.0, 50.0])[rng.integers(0, 3, n)], gross)
    zero_rated = gift | (rng.random(n) < 0.05)
    net = np.where(zero_rated, gross, np.round(gross / 1.2, 2))
    ean = rng.random(n) < 0.10
    df = pl.DataFrame({
        "_seq": seqs, "_t": create_s, "_group": groups.astype(np.int32), "_prod": pl.Series(prod_name.tolist(), dtype=_S),
        "_adj": _pick(ADJECTIVES, rng.integers(0, len(ADJECTIVES), n)), "_col": _pick(COLOURS, rng.integers(0, len(COLOURS), n)),
        "_brand": _pick(BRANDS, rng.integers(0, len(BRANDS), n)), "_season": _pick(SEASONS, rng.integers(0, len(SEASONS), n)),
        "_ean": ean, "_gift": gift, "_price": net, "_zero": zero_rated, "_hasbar": rng.random(n) < 0.8,
    })
    df = df.with_columns(
        ItemCode=pl.when(pl.col("_ean")).then(pl.lit("506") + (pl.col("_seq") * 7919 % 10_000_000_000).cast(_S).str.zfill(10))
        .otherwise(pl.lit("SKU-") + pl.col("_seq").cast(_S).str.zfill(5)),
        ItemName=pl.when(pl.col("_gift"))
        .then(pl.concat_str(pl.col("_brand"), pl.lit(" Gift Card £"), pl.col("_price").cast(pl.Int32).cast(_S)))
        .otherwise(pl.concat_str(pl.col("_adj"), pl.lit(" "), pl.col("_prod"), pl.lit(" - "), pl.col("_col"))),
        ItemsGroupCode=pl.col("_group"),
        BarCode=pl.when(pl.col("_hasbar"))
        .then(pl.lit("50") + (pl.col("_seq") * 104_729 % 100_000_000_000).cast(_S).str.zfill(11)).otherwise(_NULL_S),
        SalesVATGroup=pl.when(pl.col("_zero")).then(pl.lit("O0")).otherwise(pl.lit("O1")),
        PurchaseItem=pl.when(pl.col("_gift")).then(pl.lit("tNO")).otherwise(pl.lit("tYES")),
        SalesItem=pl.lit("tYES"),
        InventoryItem=pl.when(pl.col("_gift")).then(pl.lit("tNO")).otherwise(pl.lit("tYES")),
        Valid=pl.lit("tYES"),
        Frozen=pl.lit("tNO"),
        QuantityOnStock=pl.lit(0.0), QuantityOrderedFromVendors=pl.lit(0.0), QuantityOrderedByCustomers=pl.lit(0.0),
        CreateDate=_date_of("_t"), CreateTime=_time_of("_t"), UpdateDate=_date_of("_t"), UpdateTime=_time_of("_t"),
        U_Brand=pl.col("_brand"),
        U_Colour=pl.when(pl.col("_gift")).then(_NULL_S).otherwise(pl.col("_col")),
        U_Season=pl.when(pl.col("_gift")).then(pl.lit("Core")).otherwise(pl.col("_season")),
    ).with_columns(
        U_WebTitle=pl.concat_str(pl.col("U_Brand"), pl.lit(" "), pl.col("ItemName"),
                                 pl.lit(" | Free UK delivery over £50 | Season "), pl.col("U_Season")),
    )
    oitm = df.select(ITEM_COLUMNS + ["_t", "_price"])
    itm1 = _concat([
        df.select("ItemCode", PriceList=pl.lit(1, pl.Int32), Price=pl.col("_price"), Currency=pl.lit(LOCAL_CURRENCY)),
        df.select("ItemCode", PriceList=pl.lit(2, pl.Int32), Price=(pl.col("_price") * 0.6).round(2),
                  Currency=pl.lit(LOCAL_CURRENCY)),
    ]).sort("ItemCode", "PriceList")
    # Stock per warehouse: one row per item and warehouse, as the Service Layer returns them.
    w = len(warehouses)
    codes = np.repeat(np.arange(n), w)
    whs = np.tile(np.array(warehouses, dtype=object), n)
    cap = {"01": 400, "02": 30, "03": 30, "WHS-WHOLESALE": 1500, "04": 8, "05": 25}
    maxq = np.array([cap[x] for x in warehouses])[np.tile(np.arange(w), n)]
    instock = np.floor(rng.random(n * w) ** 2 * maxq)
    instock = np.where(rng.random(n * w) < 0.12, 0.0, instock)
    instock = np.where(np.repeat(gift, w), 0.0, instock)
    ordered = np.where((whs == "01") & (rng.random(n * w) < 0.15), rng.integers(20, 200, n * w), 0).astype(float)
    oitw = pl.DataFrame({
        "ItemCode": df["ItemCode"].gather(pl.Series(codes)), "WarehouseCode": pl.Series(whs.tolist(), dtype=_S),
        "InStock": instock, "Committed": np.zeros(n * w), "Ordered": ordered,
    }).with_columns(Locked=pl.lit("tNO")).select(ITEM_WHS_COLUMNS).sort("ItemCode", "WarehouseCode")
    return oitm, itm1, oitw


def _new_orders(rng: np.random.Generator, t: np.ndarray, cards: pl.DataFrame, channel: np.ndarray,
                orderable: pl.DataFrame, first_entry: int, warehouses: list[str]
                ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Open sales orders placed at instants `t` (sorted) by `cards`.

    `cards`: CardCode, CardName, DocCurrency, GroupCode, Address per order; `channel`: index into
    CHANNELS; `orderable`: ItemCode, ItemName, SalesVATGroup, _price (list 1), _trade (list 2).
    """
    n = len(t)
    entries = first_entry + np.arange(n)
    cur = cards["DocCurrency"].cast(E_CUR).to_physical().to_numpy().astype(np.int64)
    rate = _doc_rate(cur, t)
    group = cards["GroupCode"].to_numpy()
    trade = group == 102
    store = channel == 1
    nlines = np.where(trade, 2 + rng.poisson(3.0, n), 1 + np.minimum(rng.poisson(2.0, n), 9))
    L = int(nlines.sum())
    order_of_line = np.repeat(np.arange(n), nlines)
    starts = np.cumsum(nlines) - nlines
    line_num = np.arange(L) - np.repeat(starts, nlines)
    m = orderable.height
    pop = np.empty(m)
    pop[_rng(7, m).permutation(m)] = 1.0 / (np.arange(m) + 8.0)  # fixed popularity ranking
    item_i = rng.choice(m, size=L, p=pop / pop.sum())
    trade_l = trade[order_of_line]
    qty = np.array([1.0, 2.0, 3.0, 4.0])[_choice(rng, range(4), L, [72, 18, 7, 3])]
    qty = np.where(trade_l, np.array([6.0, 12.0, 24.0, 48.0])[rng.integers(0, 4, L)], qty)
    disc = np.where(rng.random(L) < 0.08, np.array([10.0, 15.0, 20.0, 25.0])[rng.integers(0, 4, L)], 0.0)
    whs_names = ["01"] + [w for w in warehouses if w in ("02", "03", "05")] + ["WHS-WHOLESALE"]
    n_store = len(whs_names) - 2
    whs_i = np.where(trade, len(whs_names) - 1, np.where(store, 1 + rng.integers(0, n_store, n), 0))
    lrate = rate[order_of_line]
    fc_line = cur[order_of_line] != 0
    items = orderable.with_columns(pl.col("ItemName").cast(pl.Categorical), pl.col("SalesVATGroup").cast(E_TAX)).gather(
        pl.Series(item_i))
    price_gbp = np.where(trade_l, items["_trade"].to_numpy(), items["_price"].to_numpy())
    unit = np.where(fc_line, np.round(price_gbp / lrate, 2), price_gbp)
    due_days = np.where(store, 0, np.where(trade, 7, 3))
    day = t // DAY
    lines = pl.DataFrame({
        "DocEntry": entries[order_of_line].astype(np.int32), "LineNum": line_num.astype(np.int32),
        "ItemCode": items["ItemCode"], "ItemDescription": items["ItemName"], "Quantity": qty,
        "ShipDate": pl.Series((day + due_days)[order_of_line] + EPOCH_DAYS).cast(pl.Int32).cast(pl.Date),
        "Currency": _pick(CURRENCIES, cur[order_of_line], E_CUR), "Rate": np.where(fc_line, lrate, 0.0),
        "DiscountPercent": disc, "WarehouseCode": _pick(whs_names, whs_i[order_of_line], LINE_DTYPES["WarehouseCode"]),
        "TaxCode": items["SalesVATGroup"], "UnitPrice": unit,
    }).with_columns(
        LineStatus=pl.lit("bost_Open", E_STATUS), RemainingOpenQuantity=pl.col("Quantity"),
        BaseType=pl.lit(-1, pl.Int32), BaseEntry=_NULL_I, BaseLine=_NULL_I,
    )
    lines = _reprice(lines).select(LINE_COLUMNS).cast(LINE_DTYPES)
    freight = (~store) & (~trade) & (rng.random(n) < 0.55)
    fr = np.flatnonzero(freight)
    fr_fc = cur[fr] != 0
    fr_doc = FREIGHT_NET[cur[fr]]
    fr_local = np.where(fr_fc, np.round(fr_doc * rate[fr], 2), fr_doc)
    exp = pl.DataFrame({
        "DocEntry": entries[fr].astype(np.int32), "LineNum": np.zeros(len(fr), np.int32),
        "ExpenseCode": np.ones(len(fr), np.int32), "LineTotal": fr_local,
        "LineTotalFC": np.where(fr_fc, fr_doc, 0.0), "TaxSum": np.round(fr_local * 0.2, 2),
        "TaxSumFC": np.where(fr_fc, np.round(fr_doc * 0.2, 2), 0.0),
    }).with_columns(TaxCode=pl.lit("O1")).select(EXPENSE_COLUMNS).cast(EXPENSE_DTYPES)
    disc_h = np.where(group == 101, 10.0, np.where(group == 103, 20.0, np.where(rng.random(n) < 0.03, 5.0, 0.0)))
    promo_i = _choice(rng, range(6), n, [85, 5, 3, 3, 3, 1])
    hdr = pl.DataFrame({
        "DocEntry": entries.astype(np.int32), "_t": t, "_u": t,
        "CardCode": cards["CardCode"], "CardName": cards["CardName"], "Address": cards["Address"],
        "DocCurrency": _pick(CURRENCIES, cur), "DocRate": rate, "DiscountPercent": disc_h,
        "_ch": channel, "_due": due_days, "Rounding": np.where(store, "tYES", "tNO"),
        "U_SalesChannel": _pick(CHANNELS, channel),
        "U_PromoCode": _pick([None, "WELCOME10", "SUMMER25", "BLACKFRIDAY", "FREESHIP", ""], promo_i),
    }).with_columns(
        DocNum=(pl.col("DocEntry") + DOC_NUM_BASE["ORDR"]).cast(pl.Int32),
        DocDate=_date_of("_t"), DocTime=_time_of("_t"), CreationDate=_date_of("_t"),
        DocDueDate=_date_of(pl.col("_t") + pl.col("_due") * DAY),
        NumAtCard=pl.when(pl.col("_ch") == 0).then(pl.lit("WEB-") + (pl.col("_t") % 9_000_000 + 1_000_000).cast(_S))
        .when(pl.col("_ch") == 3).then(pl.lit("AMZ-") + (pl.col("_t") % 9_000_000 + 2_000_000).cast(_S))
        .otherwise(_NULL_S),
        PaidToDate=pl.lit(0.0), Comments=_NULL_S, DocumentStatus=pl.lit("bost_Open"), Cancelled=pl.lit("tNO"),
        CancelStatus=pl.lit("csNo"), CancelDate=_NULL_D, ShipToCode=pl.lit("Default"), PayToCode=pl.lit("Default"),
        UpdateDate=_date_of("_u"), UpdateTime=_time_of("_u"),
    )
    hdr = _totals(hdr, lines, exp)
    return hdr.select(HEADER_COLUMNS + ["_t", "_u"]).cast(HEADER_DTYPES), lines, exp


def _line_numbers(doc_entries: pl.Series) -> np.ndarray:
    """0..k-1 within each run of equal DocEntry (the frame is grouped by document)."""
    de = doc_entries.to_numpy()
    idx = np.arange(len(de))
    if len(de) == 0:
        return idx.astype(np.int32)
    start = np.r_[True, de[1:] != de[:-1]]
    return (idx - np.maximum.accumulate(np.where(start, idx, 0))).astype(np.int32)


def _copy_docs(src_hdr: pl.DataFrame, src_lines: pl.DataFrame, src_exp: pl.DataFrame, pick: pl.DataFrame,
               *, src_table: str, target_table: str, first_entry: int, base_type: int | None = None
               ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """SAP's copy-to: one new `target_table` document per source document in `pick`.

    `pick` rows (in source line order): `_row` (position of the source line in `src_lines`),
    `Quantity`, `_t` (instant of the new document), `_freight` (copy the source's freight) and
    optionally `_pf` (price factor). New documents are numbered by time from `first_entry`; their
    lines link back with BaseType/BaseEntry/BaseLine; headers copy partner, currency, rate,
    discount and UDFs from the source.
    """
    out_cols = HEADER_COLUMNS + ["_t", "_u", "_src"]
    if pick.height == 0:
        empty = src_hdr.clear().select(HEADER_COLUMNS).with_columns(
            _t=pl.lit(0, pl.Int64), _u=pl.lit(0, pl.Int64), _src=_NULL_I)
        return empty.select(out_cols), src_lines.clear(), src_exp.clear()
    srcl = src_lines.gather(pick["_row"])
    factor = pick["_pf"] if "_pf" in pick.columns else pl.lit(1.0)
    base = pl.DataFrame({"_src": srcl["DocEntry"], "_t": pick["_t"], "_freight": pick["_freight"]})
    docs = (
        base.group_by("_src", maintain_order=True).first()
        .sort("_t", "_src")
        .with_columns(DocEntry=(pl.int_range(pl.len()) + first_entry).cast(pl.Int32))
    )
    new_entry = base.select("_src").join(docs.select("_src", "DocEntry"), on="_src", how="left",
                                         maintain_order="left")["DocEntry"]
    lines = (
        srcl.with_columns(
            BaseType=pl.lit(base_type if base_type is not None else OBJECT_CODE[src_table], pl.Int32),
            BaseEntry=pl.col("DocEntry"), BaseLine=pl.col("LineNum"),
            DocEntry=new_entry, Quantity=pick["Quantity"], RemainingOpenQuantity=pick["Quantity"],
            LineStatus=pl.lit("bost_Open"), UnitPrice=(pl.col("UnitPrice") * factor).round(2),
        )
        .sort("DocEntry", maintain_order=True)
    )
    lines = _reprice(lines.with_columns(LineNum=pl.Series(_line_numbers(lines["DocEntry"])))).select(LINE_COLUMNS)
    exp = (
        docs.filter(pl.col("_freight")).select("_src", "DocEntry")
        .join(src_exp.rename({"DocEntry": "_src"}), on="_src").select(EXPENSE_COLUMNS).sort("DocEntry", "LineNum")
    )
    src_cols = [c for c in src_hdr.columns if not c.startswith("_")]
    hdr = docs.join(src_hdr.select(src_cols).rename({"DocEntry": "_src", "DocNum": "_srcnum"}), on="_src",
                    how="left", maintain_order="left")
    hdr = hdr.with_columns(
        _u=pl.col("_t"),
        DocNum=(pl.col("DocEntry") + DOC_NUM_BASE[target_table]).cast(pl.Int32),
        DocDate=_date_of("_t"), DocTime=_time_of("_t"), CreationDate=_date_of("_t"),
        DocDueDate=_date_of("_t"), UpdateDate=_date_of("_t"), UpdateTime=_time_of("_t"),
        Comments=pl.concat_str(pl.lit(f"Based On {DOC_LABEL[src_table]} "), pl.col("_srcnum").cast(_S), pl.lit(".")),
        DocumentStatus=pl.lit("bost_Open"), Cancelled=pl.lit("tNO"), CancelStatus=pl.lit("csNo"), CancelDate=_NULL_D,
        PaidToDate=pl.lit(0.0),
    )
    hdr = _totals(hdr, lines, exp)
    return hdr.select(out_cols).cast(HEADER_DTYPES), lines.cast(LINE_DTYPES), exp.cast(EXPENSE_DTYPES)


# ---------------------------------------------------------------------------------------------
# The company
# ---------------------------------------------------------------------------------------------

_SERIALS = itertools.count(1)


@dataclass
class Company:
    """A generated SAP B1 company at a given tick: stored tables plus how they are served.

    `tables` maps SAP table names (OCRD, CRD1, ORDR, RDR1, RDR3, ..., OITM, ITM1, OITW, OWHS,
    OCRG, CUFD) to flat polars frames sorted by key. `frame(entity_set)` gives the entity set as the
    Service Layer shows it (standard properties, UDFs, collections as list-of-struct columns);
    `records(entity_set)` the same as Python dicts. `planted` names the keys of each planted case.
    """

    scale: float
    seed: int
    ticks: int
    tables: dict[str, pl.DataFrame]
    planted: dict[str, list]
    counters: dict[str, int]
    change_fraction: float | None = None
    # Unique in the process (unlike id()): caches of served data are keyed on it.
    serial: int = field(default_factory=lambda: next(_SERIALS), repr=False, compare=False)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    # -- clock -------------------------------------------------------------------------------
    @property
    def now(self) -> dt.datetime:
        """Company wall-clock time (no time zone: SAP stores none)."""
        return BASE_NOW + dt.timedelta(hours=self.ticks)

    # -- serving shapes ------------------------------------------------------------------------
    @staticmethod
    def entity_sets() -> list[str]:
        return list(ENTITY_SPECS)

    @staticmethod
    def spec(entity_set: str) -> EntitySpec:
        return ENTITY_SPECS[entity_set]

    def table(self, name: str) -> pl.DataFrame:
        return self.tables[name]

    def header(self, entity_set: str) -> pl.DataFrame:
        """The stored top-level rows of an entity set (no collections, no computed properties)."""
        return self.tables[ENTITY_SPECS[entity_set].table]

    def property_exprs(self, entity_set: str) -> dict[str, pl.Expr]:
        """Top-level scalar properties (name -> expression over `header(entity_set)`), in order."""
        spec = ENTITY_SPECS[entity_set]
        cols = [c for c, d in self.header(entity_set).schema.items() if not isinstance(d, pl.List)]
        return property_exprs(cols, spec.extras)

    def collections(self, entity_set: str) -> list[str]:
        spec = ENTITY_SPECS[entity_set]
        stored = [c for c, d in self.header(entity_set).schema.items() if isinstance(d, pl.List)]
        return stored + [c.collection for c in spec.children]

    def _child_index(self, entity_set: str, child: ChildSpec) -> tuple[np.ndarray, np.ndarray]:
        key = ("child_index", entity_set, child.collection)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        spec = ENTITY_SPECS[entity_set]
        parent = self.header(entity_set).select(pl.col(spec.key[0]).alias("_k"))
        ctab = self.tables[child.table]
        # Children of one parent are stored contiguously (in collection order): a start and a count.
        grp = (
            ctab.select(pl.col(child.parent_key).alias("_k")).with_row_index("_i")
            .group_by("_k").agg(_start=pl.col("_i").min(), _n=pl.len(), _end=pl.col("_i").max())
        )
        if grp.height and (grp["_end"] - grp["_start"] + 1 != grp["_n"]).any():
            raise AssertionError(f"{child.table} rows of one {child.parent_key} are not contiguous")
        joined = parent.join(grp, on="_k", how="left", maintain_order="left").with_columns(
            pl.col("_start").fill_null(0), pl.col("_n").fill_null(0)
        )
        out = (joined["_start"].to_numpy().astype(np.int64), joined["_n"].to_numpy().astype(np.int64))
        with self._lock:
            self._cache[key] = out
        return out

    def _collection(self, entity_set: str, child: ChildSpec, positions: np.ndarray | None) -> pl.Series:
        starts, counts = self._child_index(entity_set, child)
        if positions is not None:
            starts, counts = starts[positions], counts[positions]
        total = int(counts.sum())
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        idx = np.repeat(starts - offsets[:-1], counts) + np.arange(total, dtype=np.int64)
        ctab = self.tables[child.table]
        props = property_exprs(list(ctab.columns), child.extras, hidden=child.hidden)
        rows = ctab.gather(pl.Series(idx)).select(list(props.values()))
        values = rows.to_struct("_").to_arrow()
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        arr = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values)
        return pl.Series(child.collection, arr)

    def rows(self, entity_set: str, positions=None, columns: list[str] | None = None) -> pl.DataFrame:
        """Stored top-level rows at `positions` (all if None) plus requested collections.

        `columns` limits the collections built (None = all). Scalar properties are not computed
        here: select `property_exprs(entity_set)` over the result.
        """
        spec = ENTITY_SPECS[entity_set]
        head = self.header(entity_set)
        pos = None if positions is None else np.asarray(positions, dtype=np.int64)
        if pos is not None:
            head = head.gather(pl.Series(pos))
        cols = []
        for child in spec.children:
            if columns is None or child.collection in columns:
                cols.append(self._collection(entity_set, child, pos))
        return head.with_columns(cols) if cols else head

    def frame(self, entity_set: str) -> pl.DataFrame:
        """The whole entity set as the Service Layer shows it (cached)."""
        key = ("frame", entity_set)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        raw = self.rows(entity_set)
        props = self.property_exprs(entity_set)
        out = raw.select(list(props.values()) + [pl.col(c) for c in self.collections(entity_set)])
        with self._lock:
            self._cache[key] = out
        return out

    @property
    def frames(self) -> dict[str, pl.DataFrame]:
        return {name: self.frame(name) for name in ENTITY_SPECS}

    def records(self, entity_set: str) -> list[dict]:
        return self.frame(entity_set).to_dicts()

    def summary(self) -> dict[str, Any]:
        t = self.tables
        docs = {}
        for es, (header, lines, _) in DOC_TABLES.items():
            hd = t[header]
            docs[es] = hd.height
            docs[f"{es}.lines"] = t[lines].height
            docs[f"{es}.cancellation_documents"] = int((hd["CancelStatus"] == "csCancellation").sum())
            docs[f"{es}.cancelled"] = int((hd["CancelStatus"] == "csYes").sum())
        bp = t["OCRD"]
        return {
            "now": self.now.isoformat(sep=" "),
            "ticks": self.ticks,
            "scale": self.scale,
            "seed": self.seed,
            "BusinessPartners": bp.height,
            "BusinessPartners.customers": int((bp["CardType"] == "cCustomer").sum()),
            "BusinessPartners.leads": int((bp["CardType"] == "cLid").sum()),
            "BusinessPartners.suppliers": int((bp["CardType"] == "cSupplier").sum()),
            "BPAddresses": t["CRD1"].height,
            "BusinessPartnerGroups": t["OCRG"].height,
            **docs,
            "Items": t["OITM"].height,
            "ItemPrices": t["ITM1"].height,
            "ItemWarehouseInfoCollection": t["OITW"].height,
            "Warehouses": t["OWHS"].height,
            "UserFieldsMD": t["CUFD"].height,
            "planted": {k: len(v) for k, v in self.planted.items()},
        }

    # -- clock ------------------------------------------------------------------------------
    def advance(self, ticks: int = 1, change_fraction: float | None = None) -> Company:
        """A new company `ticks` hours later (this one is left unchanged)."""
        if ticks < 0:
            raise ValueError("ticks must be >= 0")
        tables = dict(self.tables)
        counters = dict(self.counters)
        cf = change_fraction if change_fraction is not None else self.change_fraction
        for t in range(self.ticks + 1, self.ticks + ticks + 1):
            _apply_tick(tables, counters, self.planted, self.scale, self.seed, t, cf)
        return Company(self.scale, self.seed, self.ticks + ticks, tables, self.planted, counters, cf)


# ---------------------------------------------------------------------------------------------
# Initial generation
# ---------------------------------------------------------------------------------------------

def _warehouse_codes(scale: float) -> list[str]:
    return [w[0] for w in WAREHOUSES[: (6 if scale >= 10 else 4)]]


def _counts(scale: float) -> dict[str, int]:
    return {
        "bps": max(150, round(2000 * scale)),
        "items": max(40, round(300 * scale ** 0.912)),
        "orders": max(300, round(10_000 * scale)),
        "credit_linked": max(25, round(800 * scale)),
        "credit_standalone": max(8, round(200 * scale)),
    }


def generate_company(scale: float = 1.0, seed: int = 42, ticks: int = 0,
                     change_fraction: float | None = None) -> Company:
    """The demo company `ticks` hours after 2026-11-01 09:00; deterministic for its arguments.

    `change_fraction` (benchmarks) makes every tick also edit that fraction of the business
    partners, orders and items.
    """
    if scale <= 0:
        raise ValueError("scale must be > 0")
    if ticks < 0:
        raise ValueError("ticks must be >= 0")
    if change_fraction is not None and not 0 < change_fraction <= 1:
        raise ValueError("change_fraction must be in (0, 1]")
    tables, planted, counters = _generate_base(scale, seed)
    company = Company(scale, seed, 0, tables, planted, counters, change_fraction)
    return company.advance(ticks, change_fraction) if ticks else company


def _mask(n: int, idx) -> pl.Series:
    m = np.zeros(n, bool)
    m[np.asarray(idx, dtype=np.int64)] = True
    return pl.Series(m)


def _seed_of(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31))


def _generate_base(scale: float, seed: int):
    rng = _rng(seed, 1)
    n = _counts(scale)
    warehouses = _warehouse_codes(scale)
    planted: dict[str, list] = {}

    # -- reference data ------------------------------------------------------------------
    owhs = pl.DataFrame(
        [w for w in WAREHOUSES if w[0] in warehouses],
        schema=["WarehouseCode", "WarehouseName", "Inactive", "Nettable", "Street", "City", "ZipCode"],
        orient="row",
    ).with_columns(Country=pl.lit("GB")).sort("WarehouseCode")
    ocrg = pl.DataFrame(BP_GROUPS, schema={"Code": pl.Int32, "Name": _S, "Type": _S}, orient="row")
    cufd_rows = []
    field_ids: dict[str, int] = {}
    for table, name, typ, size, desc, vals in UDF_DEFS:
        fid = field_ids.get(table, 0)
        field_ids[table] = fid + 1
        cufd_rows.append({
            "TableName": table, "FieldID": fid, "Name": name, "Type": typ, "Size": size, "Description": desc,
            "SubType": "st_None",
            "ValidValuesMD": [{"Value": v, "Description": UDF_VALUE_LABELS.get(v, v)} for v in vals],
        })
    cufd = pl.DataFrame(cufd_rows, schema={
        "TableName": _S, "FieldID": pl.Int32, "Name": _S, "Type": _S, "Size": pl.Int32, "Description": _S,
        "SubType": _S, "ValidValuesMD": pl.List(pl.Struct({"Value": _S, "Description": _S})),
    }).sort("TableName", "FieldID")

    # -- items ---------------------------------------------------------------------------
    n_items = n["items"]
    item_t = np.sort(NOW_S - (rng.random(n_items) * 5 * 365 * DAY).astype(np.int64))
    item_t = (item_t // DAY) * DAY + _tod(rng, n_items)
    item_t = np.minimum(item_t, NOW_S - DAY)
    oitm, itm1, oitw = _make_items(rng, np.arange(1, n_items + 1), item_t, warehouses)
    # Edited items (price/name changes over time) carry a later UpdateDate.
    edited = rng.random(n_items) < 0.3
    upd = np.where(edited, item_t + (rng.random(n_items) * (NOW_S - item_t)).astype(np.int64), item_t)
    oitm = oitm.with_columns(_u=pl.Series(upd))
    perm = rng.permutation(n_items)
    no_price, no_name, inactive, frozen, not_sales, never_used = np.split(
        perm, np.cumsum([3, 3, 3, 3, 2, max(10, n_items // 20)]))[:6]
    codes = oitm["ItemCode"]
    for key, idx in (("items_without_price", no_price), ("items_without_name", no_name), ("inactive_items", inactive),
                     ("frozen_items", frozen), ("non_sales_items", not_sales), ("never_ordered_items", never_used)):
        planted[key] = codes.gather(pl.Series(np.sort(idx))).to_list()
    oitm = oitm.with_columns(
        ItemName=pl.when(_mask(n_items, no_name[:2])).then(_NULL_S)
        .when(_mask(n_items, no_name[2:])).then(pl.lit("")).otherwise(pl.col("ItemName")),
        Valid=pl.when(_mask(n_items, inactive)).then(pl.lit("tNO")).otherwise(pl.col("Valid")),
        Frozen=pl.when(_mask(n_items, frozen)).then(pl.lit("tYES")).otherwise(pl.col("Frozen")),
        SalesItem=pl.when(_mask(n_items, not_sales)).then(pl.lit("tNO")).otherwise(pl.col("SalesItem")),
        _price=pl.when(_mask(n_items, no_price)).then(0.0).otherwise(pl.col("_price")),
    )
    no_price_codes = pl.Series(planted["items_without_price"]).implode()
    itm1 = itm1.with_columns(
        Price=pl.when(pl.col("ItemCode").is_in(no_price_codes)).then(0.0).otherwise(pl.col("Price")),
        Currency=pl.when(pl.col("ItemCode").is_in(no_price_codes)).then(_NULL_S).otherwise(pl.col("Currency")),
    )
    # What shops sell: not the never-ordered, non-sales, priceless, inactive or frozen items.
    orderable = (
        oitm.filter(~pl.col("ItemCode").is_in(
            planted["never_ordered_items"] + planted["non_sales_items"] + planted["items_without_price"]
            + planted["inactive_items"] + planted["frozen_items"]))
        .select("ItemCode", pl.col("ItemName").fill_null(""), "SalesVATGroup", "_price",
                _trade=(pl.col("_price") * 0.6).round(2))
    )

    # -- business partners ---------------------------------------------------------------
    n_bp = n["bps"]
    kinds = np.zeros(n_bp, np.int8)
    r = rng.random(n_bp)
    kinds[r < 0.05] = 1
    kinds[(r >= 0.05) & (r < 0.08)] = 2
    old = rng.random(n_bp) < 0.55
    bp_t = np.where(old, NOW_S - (2 * 365 + rng.random(n_bp) * 4 * 365) * DAY,
                    NOW_S - (1 - np.sqrt(rng.random(n_bp))) * 2 * 365 * DAY).astype(np.int64)
    bp_t = np.minimum((bp_t // DAY) * DAY + _tod(rng, n_bp), NOW_S - 2 * DAY)
    order = np.argsort(bp_t, kind="stable")
    bp_t, kinds = bp_t[order], kinds[order]
    seqs = np.zeros(n_bp, np.int64)
    for k in (0, 1, 2):
        m = kinds == k
        seqs[m] = np.arange(1, m.sum() + 1)
    legacy = (kinds == 0) & (np.arange(n_bp) < n_bp * 0.05) & (rng.random(n_bp) < 0.6)
    ocrd, crd1 = _make_bps(rng, kinds, seqs, bp_t, legacy)
    counters = {"bp_c": int((kinds == 0).sum()), "bp_l": int((kinds == 1).sum()),
                "bp_s": int((kinds == 2).sum()), "items": n_items}
    # Edits after creation: a third of the partners, plus a cluster in the last two days.
    r = rng.random(n_bp)
    bp_u = np.where(r < 0.35, bp_t + (rng.random(n_bp) * (NOW_S - bp_t)).astype(np.int64), bp_t)
    bp_u = np.where(r > 0.97, NOW_S - DAY - 9 * HOUR + rng.integers(0, DAY + 8 * HOUR, n_bp), bp_u)
    ocrd = ocrd.with_columns(_u=pl.Series(np.maximum(bp_u, bp_t)))

    # Planted partner cases (customers only, disjoint).
    cust = np.flatnonzero((kinds == 0) & ~legacy)
    cust = cust[rng.permutation(len(cust))]
    sizes = {"invalid_emails": 8, "blank_emails": 6, "duplicate_emails": 9, "nameless_customers": 4,
             "marketing_blocked": 5, "frozen_bps": 4, "udf_invalid_values": 6, "marketing_conflict": 3,
             "sfr_customers": 3, "us_customers": 3, "eur_customers": 4}
    cuts = np.cumsum(list(sizes.values()))
    parts = dict(zip(sizes, np.split(cust[: cuts[-1]], cuts[:-1])))
    bad_emails = ["john.smith.example.com", "jane doe@example.co.uk", "sam.green@example.com.",
                  "\U0001F600love@example.org", "mary@@example.com", "info@example", "tom smith@example.net",
                  "peter.jones@example.co.uk."]
    fixes = {int(p): bad_emails[i % len(bad_emails)] for i, p in enumerate(parts["invalid_emails"])}
    fixes.update({int(p): ("" if i % 2 == 0 else None) for i, p in enumerate(parts["blank_emails"])})
    for g in range(3):
        shared = f"family.account{g + 1}@example.co.uk"
        variants = [shared, shared.upper().replace("@EXAMPLE.CO.UK", "@Example.co.uk"), f"  {shared} "]
        fixes.update({int(p): v for p, v in zip(parts["duplicate_emails"][g * 3:(g + 1) * 3], variants)})
    names = {int(p): (None if i % 2 == 0 else "") for i, p in enumerate(parts["nameless_customers"])}
    udf_bad = parts["udf_invalid_values"]
    ocrd = ocrd.with_columns(
        EmailAddress=pl.when(_mask(n_bp, list(fixes))).then(
            _sparse(n_bp, fixes)
        ).otherwise(pl.col("EmailAddress")),
        CardName=pl.when(_mask(n_bp, list(names))).then(pl.Series(_sparse(n_bp, names))).otherwise(pl.col("CardName")),
        BlockSendingMarketingContent=pl.when(_mask(n_bp, np.r_[parts["marketing_blocked"], parts["marketing_conflict"]]))
        .then(pl.lit("tYES")).otherwise(pl.col("BlockSendingMarketingContent")),
        U_MarketingOptIn=pl.when(_mask(n_bp, parts["marketing_conflict"])).then(pl.lit("Y"))
        .when(_mask(n_bp, udf_bad[3:4])).then(pl.lit("Yes")).otherwise(pl.col("U_MarketingOptIn")),
        Frozen=pl.when(_mask(n_bp, parts["frozen_bps"])).then(pl.lit("tYES")).otherwise(pl.col("Frozen")),
        U_AcquisitionSource=pl.when(_mask(n_bp, udf_bad[0:1])).then(pl.lit("Instagram"))
        .when(_mask(n_bp, udf_bad[1:2])).then(pl.lit("web ")).otherwise(pl.col("U_AcquisitionSource")),
        U_LoyaltyTier=pl.when(_mask(n_bp, udf_bad[2:3])).then(pl.lit("Diamond"))
        .when(_mask(n_bp, udf_bad[4:5])).then(pl.lit("gold")).otherwise(pl.col("U_LoyaltyTier")),
        U_FirstPurchaseCategory=pl.when(_mask(n_bp, udf_bad[5:6])).then(pl.lit(""))
        .otherwise(pl.col("U_FirstPurchaseCategory")),
    )
    for part, (country, city, zip_, cur) in (
        ("sfr_customers", ("CH", "Zurich", "8001", "SFR")), ("us_customers", ("US", "New York", "10001", "US$")),
        ("eur_customers", ("IE", "Dublin", "D02 X285", "EUR")),
    ):
        m = _mask(n_bp, parts[part])
        ocrd = ocrd.with_columns(
            *[pl.when(m).then(pl.lit(v)).otherwise(pl.col(c)).alias(c) for c, v in (
                ("Country", country), ("City", city), ("ZipCode", zip_), ("Currency", cur),
                ("MailCountry", country), ("MailCity", city), ("MailZipCode", zip_))],
            County=pl.when(m).then(_NULL_S).otherwise(pl.col("County")),
            # their UK numbers, written as a customer abroad gives them: with the country prefix
            *[pl.when(m & pl.col(c).str.starts_with("0")).then(pl.concat_str(pl.lit("+44 "), pl.col(c).str.slice(1)))
              .otherwise(pl.col(c)).alias(c) for c in ("Phone1", "Cellular")],
        )
    codes_bp = ocrd["CardCode"]
    for k, idx in parts.items():
        planted[k] = codes_bp.gather(pl.Series(np.sort(idx))).to_list()
    # Keep the addresses of the re-homed customers in step with their header.
    moved = ocrd.filter(pl.col("CardCode").is_in(planted["sfr_customers"] + planted["us_customers"] + planted["eur_customers"]))
    crd1 = crd1.join(moved.select(BPCode="CardCode", _c="Country", _ci="City", _z="ZipCode"), on="BPCode", how="left",
                     maintain_order="left").with_columns(
        Country=pl.coalesce("_c", "Country"), City=pl.coalesce("_ci", "City"), ZipCode=pl.coalesce("_z", "ZipCode"),
        County=pl.when(pl.col("_c").is_not_null()).then(_NULL_S).otherwise(pl.col("County")),
    ).select(ADDRESS_COLUMNS)
    planted["suppliers"] = codes_bp.filter(ocrd["CardType"] == "cSupplier").head(5).to_list()
    planted["leads"] = codes_bp.filter(ocrd["CardType"] == "cLid").head(5).to_list()
    planted["numeric_card_codes"] = codes_bp.filter(codes_bp.str.contains(r"^\d+$")).head(5).to_list()
    planted["invalid_phones"] = sorted(ocrd.filter(pl.col("_badphone") & (pl.col("CardType") == "cCustomer"))[
        "CardCode"].to_list())

    # -- orders --------------------------------------------------------------------------
    n_ord = n["orders"]
    t = (NOW_S - (1 - np.sqrt(rng.random(n_ord))) * 730 * DAY).astype(np.int64)
    cust_rows = ocrd.filter((pl.col("CardType") == "cCustomer") & (pl.col("Frozen") == "tNO")).sort("_t")
    ct = cust_rows["_t"].to_numpy()
    # Which customer: someone already registered; early customers have had time to buy more.
    k = np.maximum(np.searchsorted(ct, t, side="right"), 1)
    ci = np.minimum((rng.random(n_ord) ** 0.8 * k).astype(np.int64), k - 1)
    forced = np.flatnonzero(cust_rows["CardCode"].is_in(
        planted["sfr_customers"] + planted["us_customers"] + planted["eur_customers"]).to_numpy())
    slots = rng.choice(n_ord, size=len(forced) * 2, replace=False)
    ci[slots] = np.repeat(forced, 2)
    t[slots] = np.maximum(t[slots], ct[np.repeat(forced, 2)] + HOUR)
    channel = _choice(rng, CHANNELS, n_ord, [60, 25, 5, 10])
    trade = cust_rows["GroupCode"].to_numpy()[ci] == 102
    channel = np.where(trade, np.where(rng.random(n_ord) < 0.7, 2, 0), channel)
    t = (t // DAY) * DAY + _tod(rng, n_ord, channel == 1)
    t = np.where(t >= NOW_S - 60, t - DAY, t)
    o = np.argsort(t, kind="stable")
    t, ci, channel = t[o], ci[o], channel[o]
    cards = cust_rows.gather(pl.Series(ci)).select(
        "CardCode", pl.col("CardName").fill_null(""), DocCurrency=pl.col("Currency").replace("##", LOCAL_CURRENCY),
        GroupCode="GroupCode",
        Address=pl.concat_str(pl.col("Address"), pl.lit("\r"), pl.col("ZipCode"), pl.lit(" "), pl.col("City"), ignore_nulls=True),
    )
    # Planted: orders for leads, suppliers and card codes that are not partners at all.
    odd = _concat([
        ocrd.filter(pl.col("CardCode").is_in(planted["leads"][:3] + planted["suppliers"][:2])).select(
            "CardCode", pl.col("CardName").fill_null(""), DocCurrency=pl.lit(LOCAL_CURRENCY), GroupCode="GroupCode",
            Address="Address"),
        pl.DataFrame({"CardCode": ["C900001", "C900002", "WEBGUEST"],
                      "CardName": ["Unknown customer", "", "Web guest checkout"],
                      "DocCurrency": [LOCAL_CURRENCY] * 3, "GroupCode": [100] * 3, "Address": [None] * 3},
                     schema=cards.schema),
    ]).cast(cards.schema)
    slots = rng.choice(np.arange(n_ord // 10, n_ord), size=odd.height, replace=False)
    idx = np.arange(n_ord)
    idx[slots] = n_ord + np.arange(odd.height)
    cards = _concat([cards, odd]).gather(pl.Series(idx))
    channel[slots] = 0
    store = channel == 1
    ordr, rdr1, rdr3 = _new_orders(rng, t, cards, channel, orderable, 1, warehouses)
    del cards
    odd_entries = (slots + 1).tolist()
    planted["orders_for_leads"] = ordr.filter(pl.col("CardCode").is_in(planted["leads"]))["DocEntry"].to_list()
    planted["orders_for_suppliers"] = ordr.filter(pl.col("CardCode").is_in(planted["suppliers"]))["DocEntry"].to_list()
    planted["orders_unknown_card_code"] = ordr.filter(
        pl.col("CardCode").is_in(["C900001", "C900002", "WEBGUEST"]))["DocEntry"].to_list()

    # Planted: lines for items the company does not know (legacy codes).
    legacy_lines = rdr1.select("DocEntry", "LineNum").filter(pl.col("DocEntry") > n_ord // 5).sample(
        n=5, seed=_seed_of(rng)).sort("DocEntry")
    hit = pl.struct("DocEntry", "LineNum").is_in(legacy_lines.to_struct().implode())
    rdr1 = rdr1.with_columns(
        ItemCode=pl.when(hit).then(pl.concat_str(pl.lit("LEGACY-"), pl.col("DocEntry").cast(_S))).otherwise(pl.col("ItemCode")),
        ItemDescription=pl.when(hit).then(pl.lit("Legacy item (pre-2020 catalogue)")).otherwise(
            pl.col("ItemDescription").cast(_S)).cast(pl.Categorical),
    )
    planted["unknown_item_lines"] = [tuple(r) for r in legacy_lines.rows()]

    # Fulfilment by age: old orders are mostly shipped, recent ones open or partly shipped.
    age_d = (NOW_S - t) / DAY
    r = rng.random(n_ord)
    status = np.where(age_d < 1, np.where(r < 0.7, 0, 2),
                      np.where(age_d < 10, np.where(r < 0.25, 0, np.where(r < 0.35, 1, 2)),
                               np.where(r < 0.015, 0, np.where(r < 0.03, 1, np.where(r < 0.04, 3, 2)))))
    status = np.where(store, np.where(status == 3, 3, 2), status)  # 0 open, 1 partial, 2 full, 3 cancelled
    nl = np.bincount(rdr1["DocEntry"].to_numpy() - 1, minlength=n_ord)
    multi = np.flatnonzero((nl >= 2) & ~store & (age_d > 2))
    status[rng.choice(multi, size=min(6, len(multi)), replace=False)] = 1
    status[rng.choice(np.flatnonzero(~store & (age_d > 30)), size=5, replace=False)] = 3
    status[slots] = 0  # the odd-partner orders stay open
    # Quantities shipped per line.
    line_doc = rdr1["DocEntry"].to_numpy() - 1
    qty = rdr1["Quantity"].to_numpy()
    first = rdr1["LineNum"].to_numpy() == 0
    st_l = status[line_doc]
    deliv = np.where(st_l == 2, qty, np.where(st_l == 1, np.where(first, np.maximum(qty - 1, 1.0),
                                                                   np.floor(rng.random(len(qty)) * qty)), 0.0))
    shipped = np.bincount(line_doc, weights=deliv, minlength=n_ord)
    ordered = np.bincount(line_doc, weights=qty, minlength=n_ord)
    status = np.where((status == 1) & (shipped == 0), 0, np.where((status == 1) & (shipped >= ordered), 2, status))
    deliv = np.where(np.isin(status[line_doc], (1, 2)), deliv, 0.0)
    # When the next documents happen.
    room = (NOW_S - 120 - t).astype(float)
    lag_inv = rng.random(n_ord) * DAY
    t_del = (t + np.minimum((0.2 + rng.random(n_ord) * 2.8) * DAY, room * 0.6)).astype(np.int64)
    t_inv = np.where(store, t + 60, t_del + np.minimum(lag_inv, (NOW_S - 60 - t_del) * 0.5)).astype(np.int64)
    inv_ok = store | ((t_del + lag_inv) < NOW_S - 60)
    t_cancel = (t + np.minimum(rng.random(n_ord) * 3 * DAY, room * 0.5)).astype(np.int64)

    # Deliveries: non-store orders that shipped something (BaseType 17).
    ship = np.isin(status, (1, 2)) & ~store
    sel = np.flatnonzero(ship[line_doc] & (deliv > 0))
    pick = pl.DataFrame({"_row": sel, "Quantity": deliv[sel], "_t": t_del[line_doc[sel]], "_freight": np.ones(len(sel), bool)})
    odln, dln1, dln3 = _copy_docs(ordr, rdr1, rdr3, pick, src_table="ORDR", target_table="ODLN", first_entry=1)
    # Invoices: from deliveries (BaseType 15) and, for store sales, straight from the order (17).
    dl_order = dln1["DocEntry"].to_numpy()
    dl_src = odln["_src"].to_numpy() - 1          # order index per delivery (deliveries numbered 1..)
    src_of_line = dl_src[dl_order - 1]
    sel_d = np.flatnonzero(inv_ok[src_of_line])
    pick_d = pl.DataFrame({"_row": sel_d, "Quantity": dln1["Quantity"].to_numpy()[sel_d],
                           "_t": t_inv[src_of_line[sel_d]], "_freight": np.ones(len(sel_d), bool)})
    sel_o = np.flatnonzero(store[line_doc] & (status[line_doc] == 2))
    pick_o = pl.DataFrame({"_row": sel_o, "Quantity": qty[sel_o], "_t": t_inv[line_doc[sel_o]],
                           "_freight": np.ones(len(sel_o), bool)})
    parts_inv = [
        (*_copy_docs(odln, dln1, dln3, pick_d, src_table="ODLN", target_table="OINV", first_entry=1), 15),
        (*_copy_docs(ordr, rdr1, rdr3, pick_o, src_table="ORDR", target_table="OINV", first_entry=1), 17),
    ]
    del pick, pick_d, pick_o
    oinv, inv1, inv3 = _merge_renumber("OINV", parts_inv)
    del parts_inv

    # Orders and their lines after fulfilment and cancellation.
    cancelled = status == 3
    rdr1 = rdr1.with_columns(
        RemainingOpenQuantity=pl.Series(np.where(cancelled[line_doc], qty, qty - deliv)),
    ).with_columns(
        LineStatus=pl.when(pl.Series(cancelled[line_doc]) | (pl.col("RemainingOpenQuantity") == 0))
        .then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")),
    )
    upd = np.where(cancelled, t_cancel, np.where(np.isin(status, (1, 2)), np.where(store, t_inv, t_del), t))
    # Some open orders were amended after entry (header UpdateDate later than creation).
    amend = (status == 0) & (rng.random(n_ord) < 0.2)
    upd = np.where(amend, upd + ((NOW_S - upd) * rng.random(n_ord)).astype(np.int64), upd)
    s_c = pl.Series(cancelled)
    ordr = ordr.with_columns(
        _u=pl.Series(upd),
        DocumentStatus=pl.when(pl.Series(np.isin(status, (2, 3)))).then(pl.lit("bost_Close")).otherwise(pl.col("DocumentStatus")),
        Cancelled=pl.when(s_c).then(pl.lit("tYES")).otherwise(pl.col("Cancelled")),
        CancelStatus=pl.when(s_c).then(pl.lit("csYes")).otherwise(pl.col("CancelStatus")),
    ).with_columns(CancelDate=pl.when(s_c).then(_date_of("_u")).otherwise(pl.col("CancelDate")))
    planted["cancelled_orders"] = (np.flatnonzero(cancelled) + 1).tolist()
    planted["partially_delivered_orders"] = (np.flatnonzero(status == 1) + 1).tolist()

    # Deliveries close once invoiced.
    inv_time = oinv.filter(pl.col("_origin") == 15).select(DocEntry="_src", _ti="_t")
    odln = odln.join(inv_time, on="DocEntry", how="left", maintain_order="left").with_columns(
        DocumentStatus=pl.when(pl.col("_ti").is_not_null()).then(pl.lit("bost_Close")).otherwise(pl.col("DocumentStatus")),
        _u=pl.coalesce("_ti", "_u"),
    ).drop("_ti")
    closed_dl = (odln["DocumentStatus"] == "bost_Close").to_numpy()[dl_order - 1]
    dln1 = dln1.with_columns(
        RemainingOpenQuantity=pl.when(pl.Series(closed_dl)).then(0.0).otherwise(pl.col("RemainingOpenQuantity")),
        LineStatus=pl.when(pl.Series(closed_dl)).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")),
    )

    # Credit memos linked through invoices (full and partial) ...
    inv_pool = oinv.filter(pl.col("_t") < NOW_S - 2 * DAY).select("DocEntry", "_t", "_origin", "DocTotal")
    chosen = np.sort(rng.choice(inv_pool.height, size=min(n["credit_linked"], inv_pool.height // 3), replace=False))
    cm_src = inv_pool.gather(pl.Series(chosen))
    m = cm_src.height
    cm_t = np.minimum(cm_src["_t"].to_numpy() + ((1 + rng.random(m) * 39) * DAY).astype(np.int64),
                      NOW_S - HOUR - rng.integers(0, DAY, m))
    full = rng.random(m) < 0.4
    # Two goodwill credits larger than the order they refund (store sales: invoice = order).
    exceed_cand = np.flatnonzero(~full & (cm_src["_origin"] == 17).to_numpy() & (cm_src["DocTotal"] > 20).to_numpy())
    exceed = np.zeros(m, bool)
    exceed[exceed_cand[:2]] = True
    cm_src = cm_src.with_columns(_tc=pl.Series(cm_t), _full=pl.Series(full), _exceed=pl.Series(exceed))
    src_lines = inv1.select("DocEntry", "LineNum", "Quantity").with_row_index("_row").join(
        cm_src.select("DocEntry", "_tc", "_full", "_exceed"), on="DocEntry", maintain_order="left")
    src_lines = src_lines.with_columns(_nl=pl.len().over("DocEntry")).with_columns(
        _qty=pl.when(pl.col("_full") | pl.col("_exceed")).then(pl.col("Quantity"))
        .when(pl.col("_nl") > 1).then(pl.when(pl.col("LineNum") == 0).then(pl.col("Quantity")).otherwise(0.0))
        .when(pl.col("Quantity") > 1).then(pl.col("Quantity") - 1).otherwise(pl.col("Quantity")),
        _pf=pl.when(pl.col("_exceed")).then(3.0)
        .when(~pl.col("_full") & (pl.col("_nl") == 1) & (pl.col("Quantity") <= 1)).then(0.5).otherwise(1.0),
    ).filter(pl.col("_qty") > 0)
    pick = src_lines.select("_row", Quantity="_qty", _t="_tc", _freight="_full", _pf="_pf")
    cm_a = _copy_docs(oinv, inv1, inv3, pick, src_table="OINV", target_table="ORIN", first_entry=1)
    # ... and stand-alone ones (BaseType -1): goodwill and returns without an invoice.
    n_sa = n["credit_standalone"]
    sa_t = np.sort(NOW_S - (rng.random(n_sa) * 700 * DAY).astype(np.int64))
    sa_cards = cust_rows.filter(pl.col("_t") < NOW_S - 730 * DAY).sample(
        n=n_sa, with_replacement=True, seed=_seed_of(rng)).select(
        "CardCode", pl.col("CardName").fill_null(""), DocCurrency=pl.col("Currency").replace("##", LOCAL_CURRENCY),
        GroupCode="GroupCode", Address="Address")
    sa_h, sa_l, sa_e = _new_orders(rng, sa_t, sa_cards, np.ones(n_sa, np.int64), orderable, 1, warehouses)
    sa_l = sa_l.filter(pl.col("LineNum") < 2)
    sa_h = _totals(sa_h, sa_l, sa_e.clear()).with_columns(_src=_NULL_I)
    orin, rin1, rin3 = _merge_renumber("ORIN", [(*cm_a, 13), (sa_h, sa_l, sa_e.clear(), -1)])
    del cm_a, sa_h, sa_l, sa_e
    orin = orin.with_columns(
        DocumentStatus=pl.when(pl.col("_t") < NOW_S - 3 * DAY).then(pl.lit("bost_Close")).otherwise(pl.col("DocumentStatus")),
    )
    closed_cm = (orin["DocumentStatus"] == "bost_Close").to_numpy()[rin1["DocEntry"].to_numpy() - 1]
    rin1 = rin1.with_columns(
        RemainingOpenQuantity=pl.when(pl.Series(closed_cm)).then(0.0).otherwise(pl.col("Quantity")),
        LineStatus=pl.when(pl.Series(closed_cm)).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")),
    )
    linked = orin.filter(pl.col("_origin") == 13).join(
        cm_src.select(_src="DocEntry", _full="_full", _exceed="_exceed"), on="_src", how="left")
    planted["standalone_credit_memos"] = orin.filter(pl.col("_origin") == -1)["DocEntry"].to_list()
    planted["full_credit_memos"] = linked.filter(pl.col("_full") & ~pl.col("_exceed"))["DocEntry"].to_list()
    planted["partial_credit_memos"] = linked.filter(~pl.col("_full") & ~pl.col("_exceed"))["DocEntry"].to_list()
    planted["credit_memos_exceeding_order"] = linked.filter(pl.col("_exceed"))["DocEntry"].to_list()

    # Invoices: paid (closed) some days after issue; credited ones are closed by the credit memo.
    pay_t = oinv["_t"].to_numpy() + (rng.random(oinv.height) * 20 * DAY).astype(np.int64)
    credited = orin.filter(pl.col("_origin") == 13).group_by("_src").agg(_tc=pl.col("_t").max()).rename({"_src": "DocEntry"})
    paid = pl.col("_pay") < NOW_S
    oinv = oinv.with_columns(_pay=pl.Series(pay_t)).join(credited, on="DocEntry", how="left", maintain_order="left").with_columns(
        DocumentStatus=pl.when(paid | pl.col("_tc").is_not_null()).then(pl.lit("bost_Close")).otherwise(pl.col("DocumentStatus")),
        PaidToDate=pl.when(paid).then(pl.col("DocTotal")).otherwise(0.0),
        _u=pl.max_horizontal("_u", pl.when(paid).then(pl.col("_pay")).otherwise(pl.col("_u")), pl.col("_tc").fill_null(0)),
    ).drop("_pay", "_tc")
    closed_inv = (oinv["DocumentStatus"] == "bost_Close").to_numpy()[inv1["DocEntry"].to_numpy() - 1]
    inv1 = inv1.with_columns(
        RemainingOpenQuantity=pl.when(pl.Series(closed_inv)).then(0.0).otherwise(pl.col("Quantity")),
        LineStatus=pl.when(pl.Series(closed_inv)).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")),
    )

    # Cancellation documents: a few invoices (from deliveries, not credited) and credit memos.
    inv_c = oinv.filter((pl.col("_origin") == 15) & ~pl.col("DocEntry").is_in(credited["DocEntry"].implode())
                        & (pl.col("_t") < NOW_S - 4 * DAY))
    inv_c = inv_c.sample(n=min(max(2, round(oinv.height * 0.001)), inv_c.height), seed=_seed_of(rng)).sort("DocEntry")
    cm_c = orin.filter(pl.col("_t") < NOW_S - 3 * DAY)
    cm_c = cm_c.sample(n=min(max(3, round(orin.height * 0.01)), cm_c.height), seed=_seed_of(rng)).sort("DocEntry")
    oinv, inv1, inv3, c_inv = _cancel_documents("OINV", oinv, inv1, inv3, inv_c["DocEntry"].to_numpy(), rng)
    orin, rin1, rin3, c_cm = _cancel_documents("ORIN", orin, rin1, rin3, cm_c["DocEntry"].to_numpy(), rng)
    planted["cancelled_invoices"] = inv_c["DocEntry"].to_list()
    planted["cancellation_invoices"] = c_inv
    planted["cancelled_credit_memos"] = cm_c["DocEntry"].to_list()
    planted["cancellation_credit_memos"] = c_cm
    # Cancelling an invoice reopens the delivery it was based on.
    reopen = oinv.filter(pl.col("DocEntry").is_in(planted["cancelled_invoices"])).select(DocEntry="_src", _cu="_u")
    odln = odln.join(reopen, on="DocEntry", how="left", maintain_order="left").with_columns(
        DocumentStatus=pl.when(pl.col("_cu").is_not_null()).then(pl.lit("bost_Open")).otherwise(pl.col("DocumentStatus")),
        _u=pl.coalesce("_cu", "_u"),
    ).drop("_cu")
    reopened = pl.col("DocEntry").is_in(reopen["DocEntry"].implode())
    dln1 = dln1.with_columns(
        RemainingOpenQuantity=pl.when(reopened).then(pl.col("Quantity")).otherwise(pl.col("RemainingOpenQuantity")),
        LineStatus=pl.when(reopened).then(pl.lit("bost_Open")).otherwise(pl.col("LineStatus")),
    )

    # Planted: a few orders whose header total disagrees with its parts (manual edits, imports).
    bad = np.sort(rng.choice(np.flatnonzero(status == 2), size=4, replace=False)) + 1
    bad = bad.tolist()
    ordr = ordr.with_columns(
        DocTotal=pl.when(pl.col("DocEntry").is_in(bad[:2])).then((pl.col("DocTotal") + 10.0).round(2))
        .when(pl.col("DocEntry").is_in(bad[2:])).then((pl.col("DocTotal") - 0.5).round(2))
        .otherwise(pl.col("DocTotal"))
    )
    planted["inconsistent_order_totals"] = bad
    planted["foreign_currency_orders"] = ordr.filter(pl.col("DocCurrency") != LOCAL_CURRENCY)["DocEntry"].head(50).to_list()
    planted["sfr_orders"] = ordr.filter(pl.col("DocCurrency") == "SFR")["DocEntry"].to_list()
    planted["usd_orders"] = ordr.filter(pl.col("DocCurrency") == "US$")["DocEntry"].head(50).to_list()
    planted["rounded_orders"] = ordr.filter(pl.col("RoundingDiffAmount") != 0)["DocEntry"].head(20).to_list()
    planted["odd_partner_orders"] = sorted(odd_entries)

    ocrd, crd1, oitm, docs = _plant_sync_exceptions(
        seed, planted, ocrd, crd1, oitm, orderable,
        {"ORDR": ordr, "RDR1": rdr1, "RDR3": rdr3, "ODLN": odln, "OINV": oinv, "ORIN": orin},
        candidates=np.flatnonzero(status == 0) + 1)
    ordr, rdr1, rdr3, odln, oinv, orin = (docs[k] for k in ("ORDR", "RDR1", "RDR3", "ODLN", "OINV", "ORIN"))
    del docs

    tables = {
        "OWHS": owhs, "OCRG": ocrg, "CUFD": cufd,
        "OCRD": _finish_master(ocrd, BP_COLUMNS).sort("CardCode"),
        "CRD1": crd1.sort("BPCode", "RowNum"),
        "OITM": _finish_master(oitm, ITEM_COLUMNS).sort("ItemCode"),
        "ITM1": itm1.sort("ItemCode", "PriceList"),
        "OITW": oitw,
        "ORDR": _finish_doc(ordr), "RDR1": rdr1, "RDR3": rdr3,
        "ODLN": _finish_doc(odln), "DLN1": dln1, "DLN3": dln3,
        "OINV": _finish_doc(oinv), "INV1": inv1, "INV3": inv3,
        "ORIN": _finish_doc(orin), "RIN1": rin1, "RIN3": rin3,
    }
    del ordr, odln, oinv, orin, rdr1, dln1, inv1, rin1
    # Over-committed stock: reservations beyond what is on hand for a few items.
    over = oitw.filter((pl.col("WarehouseCode") == "01") & ~pl.col("ItemCode").is_in(planted["never_ordered_items"]))
    over = over.sample(n=min(4, over.height), seed=_seed_of(rng)).select("ItemCode", "WarehouseCode").sort("ItemCode")
    tables["_RESERVED"] = over.with_columns(Extra=pl.lit(12.0))
    tables["OITW"] = tables["OITW"].join(over.with_columns(_o=pl.lit(True)), on=["ItemCode", "WarehouseCode"],
                                         how="left", maintain_order="left").with_columns(
        InStock=pl.when(pl.col("_o")).then(3.0).otherwise(pl.col("InStock"))
    ).drop("_o")
    planted["overcommitted_stock"] = [tuple(r) for r in over.rows()]
    _refresh_stock(tables)
    _canon(tables)
    return tables, planted, counters


OVERSIZED_ORDER_LINES = 460      # > 60 KB as an Ometria order even with the shortest item codes
OVERSIZED_TITLE_CHARS = 33_000   # sent twice (product and listing title): > 60 KB


def _pasted_description(name: str) -> str:
    """The kind of text that ends up in a web-title memo UDF when someone pastes the whole product
    page from the web shop's editor: HTML, a size guide, delivery and returns."""
    head = (f'<div class="pdp"><h1>{name}</h1><p class="lead">Designed in our Leicester studio and made to '
            "last: read the care guide below before the first wash.</p><h2>Size guide</h2>"
            '<table class="size-guide"><tr><th>Size</th><th>Chest (cm)</th><th>Waist (cm)</th>'
            "<th>Hip (cm)</th><th>Length (cm)</th></tr>")
    rows, i = [], 0
    tail = ("</table><h2>Delivery &amp; returns</h2><p>Free UK delivery over &pound;50. Returns within 28 "
            "days of delivery: see www.example.co.uk/returns.</p></div>")
    while len(head) + sum(map(len, rows)) + len(tail) < OVERSIZED_TITLE_CHARS:
        rows.append(f'<tr data-row="{i}"><td>UK {4 + 2 * (i % 14)} ({"Petite" if i % 3 == 0 else "Regular"})</td>'
                    f"<td>{78 + i % 40}</td><td>{60 + i % 35}</td><td>{86 + i % 38}</td><td>{60 + i % 25}</td></tr>")
        i += 1
    return head + "".join(rows) + tail


def _plant_sync_exceptions(seed: int, planted: dict[str, list], ocrd: pl.DataFrame, crd1: pl.DataFrame,
                           oitm: pl.DataFrame, orderable: pl.DataFrame, docs: dict[str, pl.DataFrame],
                           candidates: np.ndarray):
    """The cases whose exception only shows on the way into Ometria (own random stream, so the
    rest of the company is as it was without them):

    - `email_card_codes`: two web customers whose CardCode is their email address (an old shop
      connector keyed partners that way). Ometria ids must not carry personal data, so the
      contact and every order of theirs are held back (`held_back_other`).
    - `oversized_orders`: a trade customer's season pre-order of OVERSIZED_ORDER_LINES lines
      (open, staggered ship dates, from the wholesale warehouse): over Ometria's 60 KB a record.
    - `oversized_items`: an item whose web-title memo UDF holds a pasted product page: its
      product is over 60 KB, so Ometria never gets it (nor its stock flag).
    """
    rng = _rng(seed, 2)
    protected = {c for k in _PROTECTED_BPS for c in planted.get(k, [])}
    ordr = docs["ORDR"]

    # Partners keyed by their email address (occasional buyers, never refunded: a handful of
    # orders held back).
    counts = ordr.group_by("CardCode").len()
    buyers = counts.filter((pl.col("len") <= 3) & ~pl.col("CardCode").is_in(docs["ORIN"]["CardCode"].implode()))[
        "CardCode"].implode()
    cand = ocrd.filter(
        (pl.col("CardType") == "cCustomer") & (pl.col("GroupCode") == 100) & (pl.col("Country") == "GB")
        & (pl.col("CompanyPrivate") == "cPrivate") & pl.col("CardCode").str.starts_with("C")
        & ~pl.col("CardCode").is_in(list(protected)) & pl.col("CardCode").is_in(buyers)
        & pl.col("EmailAddress").is_not_null() & (pl.col("EmailAddress").str.len_chars() <= 50)
    ).sort("CardCode")
    pick = cand.gather(pl.Series(np.sort(rng.choice(cand.height, size=min(2, cand.height), replace=False))))
    rename = dict(zip(pick["CardCode"].to_list(), pick["EmailAddress"].str.to_lowercase().to_list(), strict=True))
    if rename:
        ocrd = ocrd.with_columns(pl.col("CardCode").replace(rename))
        crd1 = crd1.with_columns(pl.col("BPCode").replace(rename))
        for name in ("ORDR", "ODLN", "OINV", "ORIN"):
            docs[name] = docs[name].with_columns(pl.col("CardCode").replace(rename))
    planted["email_card_codes"] = sorted(rename.values())

    # A pre-order too large for Ometria: the latest open order (nothing copied from it yet) is
    # re-entered as a trade customer's season pre-order.
    ordr, rdr1, rdr3 = docs["ORDR"], docs["RDR1"], docs["RDR3"]
    taken = {d for k in ("odd_partner_orders", "inconsistent_order_totals") for d in planted.get(k, [])}
    taken |= {int(d) for d, _ in planted.get("unknown_item_lines", [])}
    open_ids = [int(d) for d in candidates if int(d) not in taken]
    target = ordr.filter(pl.col("DocEntry").is_in(open_ids) & (pl.col("U_SalesChannel") != "Store")).tail(1)
    traders = ocrd.filter(
        (pl.col("CardType") == "cCustomer") & (pl.col("GroupCode") == 102) & (pl.col("Frozen") == "tNO")
        & pl.col("Currency").is_in(["##", LOCAL_CURRENCY]) & ~pl.col("CardCode").is_in(list(protected))
    ).sort("CardCode")
    planted["oversized_orders"] = []
    if target.height and traders.height and orderable.height:
        entry = int(target["DocEntry"][0])
        buyer = traders.row(int(rng.integers(0, traders.height)), named=True)
        n, m = OVERSIZED_ORDER_LINES, orderable.height
        items = orderable.sort("ItemCode").gather(pl.Series(np.arange(n) % m))
        day = int((target["DocDate"][0] - dt.date(1970, 1, 1)).days)
        lines = pl.DataFrame({
            "DocEntry": np.full(n, entry, np.int32), "LineNum": np.arange(n, dtype=np.int32),
            "ItemCode": items["ItemCode"], "ItemDescription": items["ItemName"],
            "Quantity": np.full(n, 6.0),
            "ShipDate": pl.Series(day + 30 + 7 * (np.arange(n) // m)).cast(pl.Int32).cast(pl.Date),
            "Currency": pl.Series([LOCAL_CURRENCY] * n), "Rate": np.zeros(n), "DiscountPercent": np.zeros(n),
            "WarehouseCode": pl.Series(["WHS-WHOLESALE"] * n), "TaxCode": items["SalesVATGroup"],
            "UnitPrice": items["_trade"],
        }).with_columns(
            LineStatus=pl.lit("bost_Open"), RemainingOpenQuantity=pl.col("Quantity"),
            BaseType=pl.lit(-1, pl.Int32), BaseEntry=_NULL_I, BaseLine=_NULL_I,
        )
        lines = _reprice(lines).select(LINE_COLUMNS).cast(LINE_DTYPES)
        address = "\r".join(x for x in (buyer["Address"], " ".join(
            y for y in (buyer["ZipCode"], buyer["City"]) if y)) if x)
        hdr = target.with_columns(
            CardCode=pl.lit(buyer["CardCode"]), CardName=pl.lit(buyer["CardName"]), Address=pl.lit(address),
            DocCurrency=pl.lit(LOCAL_CURRENCY), DocRate=pl.lit(1.0), DiscountPercent=pl.lit(0.0),
            Rounding=pl.lit("tNO"), U_SalesChannel=pl.lit("Phone"), U_PromoCode=_NULL_S,
            NumAtCard=pl.lit(f"PO-AW27-{entry}"), Comments=pl.lit("AW27 season pre-order, staggered delivery"),
            DocDueDate=pl.lit(dt.date(1970, 1, 1) + dt.timedelta(days=day + 30)),
        ).cast(ordr.schema)
        hdr = _totals(hdr, lines, rdr3.clear()).select(ordr.columns).cast(ordr.schema)
        docs["ORDR"] = _replace_rows(ordr, hdr, ["DocEntry"])
        docs["RDR1"] = _replace_children(rdr1, [entry], lines)
        docs["RDR3"] = rdr3.filter(pl.col("DocEntry") != entry)
        planted["oversized_orders"] = [entry]

    # An item whose web title is a whole pasted product page; nobody orders it (yet).
    spare = [c for c in planted.get("never_ordered_items", []) if c not in {
        x for k in _PROTECTED_ITEMS for x in planted.get(k, [])}]
    planted["oversized_items"] = spare[:1]
    if spare:
        code = spare[0]
        name = oitm.filter(pl.col("ItemCode") == code)["ItemName"][0] or code
        oitm = oitm.with_columns(U_WebTitle=pl.when(pl.col("ItemCode") == code)
                                 .then(pl.lit(_pasted_description(name))).otherwise(pl.col("U_WebTitle")))
    return ocrd, crd1, oitm, docs


def _sparse(n: int, values: dict[int, Any]) -> pl.Series:
    """A string column that is null everywhere except at the given positions."""
    pos = np.fromiter(values, dtype=np.int64, count=len(values))
    out = pl.repeat(None, n, dtype=_S, eager=True)
    return out.scatter(pos, pl.Series(list(values.values()), dtype=_S)) if len(pos) else out


def _merge_renumber(table: str, parts):
    """Documents from several sources in one table, numbered by time (as SAP numbers them)."""
    hdrs, lines, exps, offset = [], [], [], 0
    for hdr, ln, ex, origin in parts:
        hdrs.append(hdr.with_columns(_tmp=pl.col("DocEntry").cast(pl.Int64) + offset, _origin=pl.lit(origin, pl.Int32)))
        lines.append(ln.with_columns(_tmp=pl.col("DocEntry").cast(pl.Int64) + offset))
        exps.append(ex.with_columns(_tmp=pl.col("DocEntry").cast(pl.Int64) + offset))
        offset += int(hdr["DocEntry"].max() or 0) + 1
    h = _concat(hdrs).sort("_t", "_tmp").with_columns(DocEntry=(pl.int_range(pl.len()) + 1).cast(pl.Int32))
    h = h.with_columns(DocNum=(pl.col("DocEntry") + DOC_NUM_BASE[table]).cast(pl.Int32))
    remap = np.zeros(offset + 1, np.int32)
    remap[h["_tmp"].to_numpy()] = h["DocEntry"].to_numpy()

    # Child rows keep their place: they only need to stay contiguous per document.
    def renumber(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(DocEntry=pl.Series(remap[df["_tmp"].to_numpy()])).drop("_tmp")

    return h.drop("_tmp"), renumber(_concat(lines)).select(LINE_COLUMNS), renumber(_concat(exps)).select(EXPENSE_COLUMNS)


def _cancel_documents(table: str, hdr: pl.DataFrame, lines: pl.DataFrame, exp: pl.DataFrame, entries: np.ndarray,
                      rng: np.random.Generator, at: np.ndarray | None = None):
    """Cancel documents SAP's way: the original closes as cancelled (csYes) and a cancellation
    document (csCancellation) copying it is added to the same table, its lines based on the original."""
    if len(entries) == 0:
        return hdr, lines, exp, []
    entries = np.sort(np.asarray(entries, dtype=np.int64))
    ids = pl.Series(entries.astype(np.int32)).implode()
    orig = hdr.filter(pl.col("DocEntry").is_in(ids)).sort("DocEntry")
    if at is None:
        room = np.maximum(NOW_S - 60 - orig["_u"].to_numpy(), 60)
        at = orig["_u"].to_numpy() + (rng.random(orig.height) * np.minimum(room, 2 * DAY)).astype(np.int64)
    at = np.asarray(at, dtype=np.int64)
    when = pl.DataFrame({"DocEntry": orig["DocEntry"], "_cu": at})
    src = lines.select("DocEntry", "Quantity").with_row_index("_row").join(when, on="DocEntry", maintain_order="left")
    pick = src.select("_row", "Quantity", _t="_cu", _freight=pl.lit(True))
    c_h, c_l, c_e = _copy_docs(hdr, lines, exp, pick, src_table=table, target_table=table,
                               first_entry=int(hdr["DocEntry"].max()) + 1)
    c_h = c_h.with_columns(
        DocumentStatus=pl.lit("bost_Close"), CancelStatus=pl.lit("csCancellation"), Cancelled=pl.lit("tNO"),
        Comments=pl.concat_str(pl.lit("Cancellation of "), pl.col("Comments")), PaidToDate=pl.lit(0.0),
    )
    if "_origin" in hdr.columns:
        c_h = c_h.with_columns(_origin=pl.lit(OBJECT_CODE[table], pl.Int32))
    c_l = c_l.with_columns(RemainingOpenQuantity=pl.lit(0.0), LineStatus=pl.lit("bost_Close"))
    hit = pl.col("_cu").is_not_null()
    hdr = hdr.join(when, on="DocEntry", how="left", maintain_order="left").with_columns(
        Cancelled=pl.when(hit).then(pl.lit("tYES")).otherwise(pl.col("Cancelled")),
        CancelStatus=pl.when(hit).then(pl.lit("csYes")).otherwise(pl.col("CancelStatus")),
        DocumentStatus=pl.when(hit).then(pl.lit("bost_Close")).otherwise(pl.col("DocumentStatus")),
        CancelDate=pl.when(hit).then(_date_of("_cu")).otherwise(pl.col("CancelDate")),
        _u=pl.coalesce("_cu", "_u"),
    ).drop("_cu")
    in_orig = pl.col("DocEntry").is_in(ids)
    lines = lines.with_columns(
        LineStatus=pl.when(in_orig).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")),
        RemainingOpenQuantity=pl.when(in_orig).then(0.0).otherwise(pl.col("RemainingOpenQuantity")),
    )
    cols = hdr.columns
    c_h = c_h.with_columns([pl.lit(None).alias(c) for c in cols if c not in c_h.columns]).select(cols)
    # New DocEntries are above every existing one: appending keeps the tables in key order.
    return (_concat([hdr, c_h.cast(hdr.schema)]), _concat([lines, c_l.cast(lines.schema)]),
            _concat([exp, c_e.cast(exp.schema)]), c_h["DocEntry"].to_list())


def _finish_doc(hdr: pl.DataFrame) -> pl.DataFrame:
    return hdr.with_columns(UpdateDate=_date_of("_u"), UpdateTime=_time_of("_u")).select(HEADER_COLUMNS)


def _finish_master(df: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    if "_u" in df.columns:
        df = df.with_columns(UpdateDate=_date_of("_u"), UpdateTime=_time_of("_u"))
    return df.select(columns)


def _canon(tables: dict[str, pl.DataFrame]) -> None:
    """Store the big document tables with their compact dtypes (no-op when already so)."""
    for names in DOC_TABLES.values():
        for name, dtypes in zip(names, (HEADER_DTYPES, LINE_DTYPES, EXPENSE_DTYPES)):
            schema = tables[name].schema
            todo = {c: d for c, d in dtypes.items() if schema[c] != d}
            if todo:
                tables[name] = tables[name].cast(todo)


def _refresh_stock(tables: dict[str, pl.DataFrame]) -> None:
    """Committed = open quantities of open sales orders (+ reservations); item totals = sum of warehouses."""
    open_docs = tables["ORDR"].filter((pl.col("DocumentStatus") == "bost_Open") & (pl.col("CancelStatus") == "csNo"))
    committed = (
        tables["RDR1"].filter((pl.col("LineStatus") == "bost_Open") & pl.col("DocEntry").is_in(open_docs["DocEntry"].implode()))
        .group_by(pl.col("ItemCode"), pl.col("WarehouseCode").cast(_S)).agg(_c=pl.col("RemainingOpenQuantity").sum())
    )
    reserved = tables["_RESERVED"].rename({"Extra": "_r"})
    oitw = (
        tables["OITW"].drop("Committed")
        .join(committed, on=["ItemCode", "WarehouseCode"], how="left", maintain_order="left")
        .join(reserved, on=["ItemCode", "WarehouseCode"], how="left", maintain_order="left")
        .with_columns(Committed=(pl.col("_c").fill_null(0.0) + pl.col("_r").fill_null(0.0)))
        .select(ITEM_WHS_COLUMNS)
    )
    tables["OITW"] = oitw
    sums = oitw.group_by("ItemCode").agg(_on=pl.col("InStock").sum(), _co=pl.col("Committed").sum(),
                                         _or=pl.col("Ordered").sum())
    tables["OITM"] = (
        tables["OITM"].join(sums, on="ItemCode", how="left", maintain_order="left")
        .with_columns(
            QuantityOnStock=pl.col("_on").fill_null(0.0),
            QuantityOrderedByCustomers=pl.col("_co").fill_null(0.0),
            QuantityOrderedFromVendors=pl.col("_or").fill_null(0.0),
        ).select(ITEM_COLUMNS)
    )


# ---------------------------------------------------------------------------------------------
# Ticks: one hour of business
# ---------------------------------------------------------------------------------------------

def _stamp(df: pl.DataFrame, secs: np.ndarray) -> pl.DataFrame:
    return df.with_columns(_u=pl.Series(np.asarray(secs, dtype=np.int64))).with_columns(
        UpdateDate=_date_of("_u"), UpdateTime=_time_of("_u")
    ).drop("_u")


def _stamp_from(hdr: pl.DataFrame, targets: pl.DataFrame) -> pl.DataFrame:
    """Base documents take the time of the document copied from them as their update stamp."""
    when = targets.group_by("_src").agg(_u=pl.col("_t").max()).rename({"_src": "DocEntry"})
    return hdr.join(when.with_columns(pl.col("DocEntry").cast(pl.Int32)), on="DocEntry").with_columns(
        UpdateDate=_date_of("_u"), UpdateTime=_time_of("_u")
    ).drop("_u")


def _tick_times(rng: np.random.Generator, start: int, k: int) -> np.ndarray:
    """k change instants inside the hour; the first two share a minute (incremental boundaries)."""
    if k <= 0:
        return np.zeros(0, np.int64)
    secs = np.sort(start + rng.integers(0, HOUR, k))
    if k >= 2:
        s0 = int(secs[0])
        secs[1] = s0 + int(rng.integers(0, 60 - s0 % 60))
        secs = np.sort(secs)
    return secs.astype(np.int64)


def _replace_rows(df: pl.DataFrame, new: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """Rows of `df` replaced in place (same position) by the rows of `new` with the same key."""
    if new.height == 0:
        return df
    new = new.select(df.columns).cast(df.schema)
    pos = df.select(key).with_row_index("_i").join(new.select(key).with_row_index("_j"), on=key, how="inner").sort("_j")
    old, upd = df.gather(pos["_i"]), new.gather(pos["_j"])
    idx = np.arange(df.height, dtype=np.int64)
    idx[pos["_i"].to_numpy()] = df.height + np.arange(pos.height)
    # Only the columns that changed are rebuilt; the others stay shared with `df`.
    cols = [pl.concat([df[c], upd[c]]).gather(pl.Series(idx)).alias(c)
            for c in df.columns if not old[c].equals(upd[c], null_equal=True)]
    return df.with_columns(cols) if cols else df


def _replace_children(df: pl.DataFrame, parents, new: pl.DataFrame) -> pl.DataFrame:
    """All child rows of `parents` replaced by `new` (appended: children stay contiguous per parent)."""
    kept = df.filter(~pl.col("DocEntry").is_in(pl.Series(list(parents), dtype=pl.Int32).implode()))
    return _concat([kept, new.select(df.columns).cast(df.schema)])


def _ids(values) -> pl.Expr:
    return pl.Series(list(values), dtype=pl.Int32).implode()


def _orderable(tables: dict[str, pl.DataFrame], planted: dict[str, list]) -> pl.DataFrame:
    return tables["OITM"].filter(
        (pl.col("SalesItem") == "tYES") & (pl.col("Valid") == "tYES") & (pl.col("Frozen") == "tNO")
        & ~pl.col("ItemCode").is_in(planted.get("never_ordered_items", []))
    ).join(
        tables["ITM1"].filter(pl.col("PriceList") == 1).select("ItemCode", _price="Price"), on="ItemCode", how="left"
    ).filter(pl.col("_price") > 0).select(
        "ItemCode", pl.col("ItemName").fill_null(""), "SalesVATGroup", "_price", _trade=(pl.col("_price") * 0.6).round(2))


_PROTECTED_BPS = ("invalid_emails", "blank_emails", "duplicate_emails", "nameless_customers", "marketing_blocked",
                  "frozen_bps", "udf_invalid_values", "marketing_conflict", "sfr_customers", "us_customers",
                  "eur_customers", "suppliers", "leads", "numeric_card_codes", "invalid_phones",
                  "email_card_codes")
_PROTECTED_ITEMS = ("items_without_price", "items_without_name", "inactive_items", "frozen_items", "non_sales_items",
                    "oversized_items")
_PROTECTED_ORDERS = ("inconsistent_order_totals", "odd_partner_orders", "oversized_orders")


def _apply_tick(tables: dict[str, pl.DataFrame], counters: dict[str, int], planted: dict[str, list],
                scale: float, seed: int, tick: int, change_fraction: float | None) -> None:
    """One hour of business (tick `tick`), applied in place to `tables`; deterministic from (seed, tick)."""
    rng = _rng(seed, 1000 + tick)
    start = NOW_S + (tick - 1) * HOUR
    mult = max(1.0, scale)
    protected_bps = [c for k in _PROTECTED_BPS for c in planted.get(k, [])]
    protected_items = [c for k in _PROTECTED_ITEMS for c in planted.get(k, [])]
    protected_orders = [d for k in _PROTECTED_ORDERS for d in planted.get(k, [])]
    n_bp, n_ord, n_items = tables["OCRD"].height, tables["ORDR"].height, tables["OITM"].height
    if change_fraction:
        k_edit_bp, k_edit_ord, k_edit_item = (max(1, round(x * change_fraction)) for x in (n_bp, n_ord, n_items))
    else:
        k_edit_bp, k_edit_ord, k_edit_item = round(4 * mult), round(2 * mult), max(1, round(mult))
    warehouses = tables["OWHS"]["WarehouseCode"].to_list()

    # 1. New partners (mostly customers, some leads) and a new catalogue item.
    k_new = max(1, round(2 * mult))
    kinds = np.where(rng.random(k_new) < 0.8, 0, 1).astype(np.int8)
    seqs = np.zeros(k_new, np.int64)
    for kind, name in ((0, "bp_c"), (1, "bp_l")):
        m = kinds == kind
        seqs[m] = counters[name] + 1 + np.arange(m.sum())
        counters[name] += int(m.sum())
    bp_new, crd_new = _make_bps(rng, kinds, seqs, _tick_times(rng, start, k_new))
    tables["OCRD"] = _concat([tables["OCRD"], bp_new.select(BP_COLUMNS)]).sort("CardCode")
    tables["CRD1"] = _concat([tables["CRD1"], crd_new])
    k_item = max(1, round(0.5 * mult))
    item_seq = counters["items"] + 1 + np.arange(k_item)
    counters["items"] += k_item
    it_new, ip_new, iw_new = _make_items(rng, item_seq, _tick_times(rng, start, k_item), warehouses)
    tables["OITM"] = _concat([tables["OITM"], it_new.select(ITEM_COLUMNS)]).sort("ItemCode")
    tables["ITM1"] = _concat([tables["ITM1"], ip_new])
    tables["OITW"] = _concat([tables["OITW"], iw_new])

    # 2. Edited partners: email (sometimes to an invalid one or another's), name, phone, tier, marketing block.
    ocrd = tables["OCRD"]
    pool = ocrd.filter(~pl.col("CardCode").is_in(protected_bps + bp_new["CardCode"].to_list()))
    k = min(k_edit_bp, pool.height)
    if k:
        sel = pool.gather(pl.Series(np.sort(rng.choice(pool.height, size=k, replace=False))))
        sel = sel.with_columns(
            _w=pl.Series(rng.integers(0, 5, k)), _v=pl.Series(rng.random(k)),
            _donor=ocrd["EmailAddress"].gather(pl.Series(rng.integers(0, ocrd.height, k))),
            _last=_pick(LAST, rng.integers(0, len(LAST), k)), _n=pl.Series(rng.integers(1, 999, k)),
            _p=pl.Series(rng.integers(0, 1000, k)),
        )
        first = pl.col("CardName").fill_null("").str.split(" ").list.first().fill_null("")
        tiers = ["Bronze", "Silver", "Gold", "Platinum"]
        block = pl.col("BlockSendingMarketingContent") == "tYES"
        sel = sel.with_columns(
            EmailAddress=pl.when(pl.col("_w") == 0).then(
                pl.when(pl.col("_v") < 0.1).then(pl.concat_str(first.str.to_lowercase(), pl.lit(" at example.com")))
                .when(pl.col("_v") < 0.2).then(pl.col("_donor").str.to_uppercase())
                .otherwise(pl.concat_str(first.str.to_lowercase(), pl.lit("."),
                                         pl.col("_last").str.to_lowercase().str.replace("'", ""),
                                         pl.col("_n").cast(_S), pl.lit("@example.net")))
            ).otherwise(pl.col("EmailAddress")),
            CardName=pl.when((pl.col("_w") == 1) & (pl.col("CompanyPrivate") == "cPrivate"))
            .then(pl.concat_str(first, pl.lit(" "), pl.col("_last"))).otherwise(pl.col("CardName")),
            Cellular=pl.when(pl.col("_w") == 2).then(pl.concat_str(pl.lit("+44 20 7946 0"), pl.col("_p").cast(_S).str.zfill(3)))
            .otherwise(pl.col("Cellular")),
            U_LoyaltyTier=pl.when(pl.col("_w") == 3).then(
                pl.col("U_LoyaltyTier").replace_strict(dict(zip(tiers, tiers[1:] + ["Platinum"])), default="Bronze")
            ).otherwise(pl.col("U_LoyaltyTier")),
            BlockSendingMarketingContent=pl.when(pl.col("_w") == 4)
            .then(pl.when(block).then(pl.lit("tNO")).otherwise(pl.lit("tYES")))
            .otherwise(pl.col("BlockSendingMarketingContent")),
            U_MarketingOptIn=pl.when(pl.col("_w") == 4).then(pl.when(block).then(pl.lit("Y")).otherwise(pl.lit("N")))
            .otherwise(pl.col("U_MarketingOptIn")),
        )
        tables["OCRD"] = _replace_rows(ocrd, _stamp(sel.select(BP_COLUMNS), _tick_times(rng, start, k)), ["CardCode"])

    # 3. New orders.
    ocrd = tables["OCRD"]
    orderable = _orderable(tables, planted)
    k_new_o = max(2, round(5 * mult))
    custs = ocrd.filter((pl.col("CardType") == "cCustomer") & (pl.col("Frozen") == "tNO"))
    cards = custs.gather(pl.Series(rng.integers(0, custs.height, k_new_o))).select(
        "CardCode", pl.col("CardName").fill_null(""), DocCurrency=pl.col("Currency").replace("##", LOCAL_CURRENCY),
        GroupCode="GroupCode",
        Address=pl.concat_str(pl.col("Address"), pl.lit("\r"), pl.col("ZipCode"), pl.lit(" "), pl.col("City"), ignore_nulls=True),
    )
    channel = _choice(rng, CHANNELS, k_new_o, [60, 25, 5, 10])
    h, ln, ex = _new_orders(rng, _tick_times(rng, start, k_new_o), cards, channel, orderable,
                            int(tables["ORDR"]["DocEntry"].max()) + 1, warehouses)
    # A shop sale is invoiced on the spot (BaseType 17), closing its order.
    store = h.filter(pl.col("U_SalesChannel") == "Store").select("DocEntry", _t=pl.col("_t") + 60)
    if store.height:
        pick = ln.select("DocEntry", "Quantity").with_row_index("_row").join(store, on="DocEntry").select(
            "_row", "Quantity", "_t", _freight=pl.lit(True))
        i_h, i_l, i_e = _copy_docs(h, ln, ex, pick, src_table="ORDR", target_table="OINV",
                                   first_entry=int(tables["OINV"]["DocEntry"].max()) + 1)
        tables["OINV"] = _concat([tables["OINV"], i_h.select(HEADER_COLUMNS)])
        tables["INV1"] = _concat([tables["INV1"], i_l])
        tables["INV3"] = _concat([tables["INV3"], i_e])
        sold = pl.col("DocEntry").is_in(store["DocEntry"].implode())
        ln = ln.with_columns(RemainingOpenQuantity=pl.when(sold).then(0.0).otherwise(pl.col("RemainingOpenQuantity")),
                             LineStatus=pl.when(sold).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")))
        h = h.join(store.rename({"_t": "_sold"}), on="DocEntry", how="left", maintain_order="left").with_columns(
            DocumentStatus=pl.when(pl.col("_sold").is_not_null()).then(pl.lit("bost_Close")).otherwise(pl.col("DocumentStatus")),
            UpdateDate=pl.when(pl.col("_sold").is_not_null()).then(_date_of("_sold")).otherwise(pl.col("UpdateDate")),
            UpdateTime=pl.when(pl.col("_sold").is_not_null()).then(_time_of("_sold")).otherwise(pl.col("UpdateTime")),
        )
    tables["ORDR"] = _concat([tables["ORDR"], h.select(HEADER_COLUMNS).cast(HEADER_DTYPES)])
    tables["RDR1"] = _concat([tables["RDR1"], ln])
    tables["RDR3"] = _concat([tables["RDR3"], ex])
    fresh = h["DocEntry"].to_list()

    # Open orders nothing has been copied from yet: these can be edited or cancelled.
    ordr, rdr1 = tables["ORDR"], tables["RDR1"]
    open_ids = ordr.filter((pl.col("DocumentStatus") == "bost_Open") & (pl.col("CancelStatus") == "csNo")
                           & ~pl.col("DocEntry").is_in(_ids(protected_orders + fresh)))["DocEntry"]
    untouched = (
        rdr1.filter(pl.col("DocEntry").is_in(open_ids.implode()))
        .group_by("DocEntry").agg(_ok=(pl.col("RemainingOpenQuantity") == pl.col("Quantity")).all(), _nl=pl.len(),
                                  _maxl=pl.col("LineNum").max())
        .filter(pl.col("_ok")).sort("DocEntry")
    )

    # 4. Line edits on open orders: a quantity changes, the last line goes, or a line is added.
    k = min(k_edit_ord, untouched.height)
    edited: list[int] = []
    if k:
        sel = untouched.gather(pl.Series(np.sort(rng.choice(untouched.height, size=k, replace=False))))
        edited = sel["DocEntry"].to_list()
        op = sel.with_columns(_op=pl.Series(rng.integers(0, 3, k))).with_columns(
            _op=pl.when((pl.col("_op") == 1) & (pl.col("_nl") < 2)).then(0).otherwise(pl.col("_op")))
        old = rdr1.filter(pl.col("DocEntry").is_in(_ids(edited))).join(op, on="DocEntry", maintain_order="left")
        first_line = pl.col("LineNum") == pl.col("LineNum").min().over("DocEntry")
        changed = old.filter(~((pl.col("_op") == 1) & (pl.col("LineNum") == pl.col("_maxl")))).with_columns(
            Quantity=pl.when((pl.col("_op") == 0) & first_line).then(pl.col("Quantity") + 1).otherwise(pl.col("Quantity")),
        ).with_columns(RemainingOpenQuantity=pl.col("Quantity"))
        proto = old.filter(first_line & (pl.col("_op") == 2))
        if proto.height:
            items = orderable.gather(pl.Series(rng.integers(0, orderable.height, proto.height)))
            fc = pl.col("Currency") != LOCAL_CURRENCY
            add = proto.with_columns(
                LineNum=(pl.col("_maxl") + 1).cast(pl.Int32), ItemCode=items["ItemCode"],
                ItemDescription=items["ItemName"].cast(pl.Categorical), TaxCode=items["SalesVATGroup"].cast(E_TAX),
                Quantity=pl.lit(1.0), RemainingOpenQuantity=pl.lit(1.0), DiscountPercent=pl.lit(0.0),
                UnitPrice=pl.when(fc).then((items["_price"] / pl.col("Rate")).round(2)).otherwise(items["_price"]),
            )
            changed = _concat([changed, add]).sort("DocEntry", "LineNum")
        changed = _reprice(changed.select(LINE_COLUMNS))
        tables["RDR1"] = _replace_children(rdr1, edited, changed)
        hdr = _totals(ordr.filter(pl.col("DocEntry").is_in(_ids(edited))), tables["RDR1"], tables["RDR3"], subset=True)
        tables["ORDR"] = _replace_rows(ordr, _stamp(hdr, _tick_times(rng, start, k)), ["DocEntry"])

    # Benchmarks' change_fraction reaches closed orders too: header-only edits (a promo code fix).
    if change_fraction:
        rest = k_edit_ord - len(edited)
        pool = tables["ORDR"].filter(~pl.col("DocEntry").is_in(_ids(protected_orders + fresh + edited)))
        if rest > 0 and pool.height:
            sel = pool.gather(pl.Series(np.sort(rng.choice(pool.height, size=min(rest, pool.height), replace=False))))
            sel = sel.with_columns(U_PromoCode=pl.lit(f"FIX{tick}"))
            tables["ORDR"] = _replace_rows(tables["ORDR"], _stamp(sel, _tick_times(rng, start, sel.height)), ["DocEntry"])

    # 5. Every other hour an open order is cancelled.
    pool = untouched.filter(~pl.col("DocEntry").is_in(_ids(edited)))
    k = min(max(1, round(0.5 * mult)) if tick % 2 == 0 else 0, pool.height)
    if k:
        ids = pool["DocEntry"].gather(pl.Series(np.sort(rng.choice(pool.height, size=k, replace=False)))).to_list()
        secs = _tick_times(rng, start, k)
        hdr = tables["ORDR"].filter(pl.col("DocEntry").is_in(_ids(ids))).sort("DocEntry").with_columns(
            Cancelled=pl.lit("tYES"), CancelStatus=pl.lit("csYes"), DocumentStatus=pl.lit("bost_Close"),
            _cu=pl.Series(secs),
        ).with_columns(CancelDate=_date_of("_cu")).drop("_cu")
        tables["ORDR"] = _replace_rows(tables["ORDR"], _stamp(hdr, secs), ["DocEntry"])
        tables["RDR1"] = tables["RDR1"].with_columns(
            LineStatus=pl.when(pl.col("DocEntry").is_in(_ids(ids))).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")))

    # 6. Deliveries of recent open orders (everything still open on them).
    ordr, rdr1 = tables["ORDR"], tables["RDR1"]
    open_ord = ordr.filter((pl.col("DocumentStatus") == "bost_Open") & (pl.col("CancelStatus") == "csNo")
                           & (pl.col("U_SalesChannel") != "Store")
                           & ~pl.col("DocEntry").is_in(_ids(protected_orders + fresh + edited)))
    k = min(max(1, round(3 * mult)), open_ord.height)
    if k:
        recent = open_ord.tail(k * 5)
        ids = recent["DocEntry"].gather(pl.Series(np.sort(rng.choice(recent.height, size=k, replace=False)))).to_list()
        when = pl.DataFrame({"DocEntry": pl.Series(ids, dtype=pl.Int32), "_t": _tick_times(rng, start, k)})
        shipped_before = tables["DLN1"].filter((pl.col("BaseType") == 17) & pl.col("BaseEntry").is_in(_ids(ids)))[
            "BaseEntry"].unique().implode()
        pick = (
            rdr1.select("DocEntry", "RemainingOpenQuantity").with_row_index("_row")
            .filter(pl.col("DocEntry").is_in(_ids(ids)) & (pl.col("RemainingOpenQuantity") > 0))
            .join(when, on="DocEntry", maintain_order="left")
            .select("_row", Quantity="RemainingOpenQuantity", _t="_t",
                    _freight=~pl.col("DocEntry").is_in(shipped_before))  # freight goes with the first delivery
        )
        d_h, d_l, d_e = _copy_docs(ordr, rdr1, tables["RDR3"], pick, src_table="ORDR", target_table="ODLN",
                                   first_entry=int(tables["ODLN"]["DocEntry"].max()) + 1)
        tables["ODLN"] = _concat([tables["ODLN"], d_h.select(HEADER_COLUMNS)])
        tables["DLN1"] = _concat([tables["DLN1"], d_l])
        tables["DLN3"] = _concat([tables["DLN3"], d_e])
        in_ids = pl.col("DocEntry").is_in(_ids(ids))
        tables["RDR1"] = rdr1.with_columns(
            RemainingOpenQuantity=pl.when(in_ids).then(0.0).otherwise(pl.col("RemainingOpenQuantity")),
            LineStatus=pl.when(in_ids).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")),
        )
        hdr = ordr.filter(in_ids).with_columns(DocumentStatus=pl.lit("bost_Close"))
        tables["ORDR"] = _replace_rows(ordr, _stamp_from(hdr, d_h), ["DocEntry"])
        moved = d_l.group_by("ItemCode", pl.col("WarehouseCode").cast(_S)).agg(_q=pl.col("Quantity").sum())
        tables["OITW"] = tables["OITW"].join(
            moved, on=["ItemCode", "WarehouseCode"], how="left", maintain_order="left").with_columns(
            InStock=pl.max_horizontal(pl.col("InStock") - pl.col("_q").fill_null(0.0), pl.lit(0.0))).drop("_q")

    # 7. Invoices for the oldest open deliveries.
    odln = tables["ODLN"]
    open_dl = odln.filter((pl.col("DocumentStatus") == "bost_Open") & (pl.col("CancelStatus") == "csNo"))
    k = min(max(1, round(3 * mult)), open_dl.height)
    if k:
        ids = open_dl["DocEntry"].head(k).to_list()
        when = pl.DataFrame({"DocEntry": pl.Series(ids, dtype=pl.Int32), "_t": _tick_times(rng, start, k)})
        pick = (
            tables["DLN1"].select("DocEntry", "Quantity").with_row_index("_row")
            .filter(pl.col("DocEntry").is_in(_ids(ids))).join(when, on="DocEntry", maintain_order="left")
            .select("_row", "Quantity", "_t", _freight=pl.lit(True))
        )
        i_h, i_l, i_e = _copy_docs(odln, tables["DLN1"], tables["DLN3"], pick, src_table="ODLN", target_table="OINV",
                                   first_entry=int(tables["OINV"]["DocEntry"].max()) + 1)
        tables["OINV"] = _concat([tables["OINV"], i_h.select(HEADER_COLUMNS)])
        tables["INV1"] = _concat([tables["INV1"], i_l])
        tables["INV3"] = _concat([tables["INV3"], i_e])
        in_ids = pl.col("DocEntry").is_in(_ids(ids))
        tables["DLN1"] = tables["DLN1"].with_columns(
            RemainingOpenQuantity=pl.when(in_ids).then(0.0).otherwise(pl.col("RemainingOpenQuantity")),
            LineStatus=pl.when(in_ids).then(pl.lit("bost_Close")).otherwise(pl.col("LineStatus")),
        )
        hdr = odln.filter(in_ids).with_columns(DocumentStatus=pl.lit("bost_Close"))
        tables["ODLN"] = _replace_rows(odln, _stamp_from(hdr, i_h), ["DocEntry"])

    # 8. Credit memos against recent invoices (full, or the first line only).
    oinv = tables["OINV"]
    credited = tables["RIN1"].filter(pl.col("BaseType") == 13)["BaseEntry"].unique().implode()
    cand = oinv.filter((pl.col("CancelStatus") == "csNo") & ~pl.col("DocEntry").is_in(credited)).tail(200)
    k = min(max(1, round(mult)), cand.height)
    if k:
        ids = cand["DocEntry"].gather(pl.Series(np.sort(rng.choice(cand.height, size=k, replace=False)))).to_list()
        when = pl.DataFrame({"DocEntry": pl.Series(ids, dtype=pl.Int32), "_t": _tick_times(rng, start, k),
                             "_full": rng.random(k) < 0.5})
        pick = (
            tables["INV1"].select("DocEntry", "LineNum", "Quantity").with_row_index("_row")
            .filter(pl.col("DocEntry").is_in(_ids(ids))).join(when, on="DocEntry", maintain_order="left")
            .filter(pl.col("_full") | (pl.col("LineNum") == 0))
            .select("_row", "Quantity", "_t", _freight="_full")
        )
        c_h, c_l, c_e = _copy_docs(oinv, tables["INV1"], tables["INV3"], pick, src_table="OINV", target_table="ORIN",
                                   first_entry=int(tables["ORIN"]["DocEntry"].max()) + 1)
        tables["ORIN"] = _concat([tables["ORIN"], c_h.select(HEADER_COLUMNS)])
        tables["RIN1"] = _concat([tables["RIN1"], c_l])
        tables["RIN3"] = _concat([tables["RIN3"], c_e])
        hdr = oinv.filter(pl.col("DocEntry").is_in(_ids(ids))).with_columns(DocumentStatus=pl.lit("bost_Close"))
        tables["OINV"] = _replace_rows(oinv, _stamp_from(hdr, c_h), ["DocEntry"])

    # 9. Every third hour a credit memo is cancelled (cancellation document in ORIN).
    if tick % 3 == 0:
        cand = tables["ORIN"].filter(pl.col("CancelStatus") == "csNo").tail(50)
        if cand.height:
            target = int(cand["DocEntry"][int(rng.integers(0, cand.height))])
            h = tables["ORIN"].with_columns(_u=pl.lit(0, pl.Int64))
            h, ln, ex, _ = _cancel_documents("ORIN", h, tables["RIN1"], tables["RIN3"], np.array([target]), rng,
                                             at=_tick_times(rng, start, 1))
            tables["ORIN"] = h.with_columns(
                UpdateDate=pl.when(pl.col("_u") > 0).then(_date_of("_u")).otherwise(pl.col("UpdateDate")),
                UpdateTime=pl.when(pl.col("_u") > 0).then(_time_of("_u")).otherwise(pl.col("UpdateTime")),
            ).select(HEADER_COLUMNS)
            tables["RIN1"], tables["RIN3"] = ln, ex

    # 10. Stock moves (goods receipts: OITM.UpdateDate does not change) and item edits (it does).
    oitw = tables["OITW"]
    k = min(max(2, round(5 * mult)), oitw.height)
    bump = np.zeros(oitw.height)
    bump[np.sort(rng.choice(oitw.height, size=k, replace=False))] = rng.integers(5, 60, k)
    tables["OITW"] = oitw.with_columns(InStock=pl.col("InStock") + pl.Series(bump))
    oitm = tables["OITM"]
    pool = oitm.filter(~pl.col("ItemCode").is_in(protected_items))
    k = min(k_edit_item, pool.height)
    if k:
        sel = pool.gather(pl.Series(np.sort(rng.choice(pool.height, size=k, replace=False))))
        factor = pl.Series(np.array([0.8, 0.9, 1.1, 1.2])[rng.integers(0, 4, k)])
        sel = sel.with_columns(
            U_Season=pl.when(pl.Series(rng.random(k) < 0.3)).then(pl.lit("AW26")).otherwise(pl.col("U_Season")))
        tables["OITM"] = _replace_rows(oitm, _stamp(sel, _tick_times(rng, start, k)), ["ItemCode"])
        prices = tables["ITM1"].join(pl.DataFrame({"ItemCode": sel["ItemCode"], "_f": factor}), on="ItemCode").filter(
            pl.col("PriceList") == 1).with_columns(Price=(pl.col("Price") * pl.col("_f")).round(2)).drop("_f")
        tables["ITM1"] = _replace_rows(tables["ITM1"], prices, ["ItemCode", "PriceList"])

    # 11. One unused partner and one unused item are deleted outright (no trace left in SAP).
    # Candidates are sampled, then checked against the documents (SAP refuses to delete used data).
    # (most partners of a small company have bought something: look at enough of them)
    pool = tables["OCRD"].filter(~pl.col("CardCode").is_in(protected_bps))
    cand = pool["CardCode"].gather(pl.Series(np.sort(rng.choice(pool.height, size=min(200, pool.height), replace=False))))
    used = pl.concat([tables[t].filter(pl.col("CardCode").is_in(cand.implode()))["CardCode"] for t in ("ORDR", "ORIN")])
    cand = cand.filter(~cand.is_in(used.implode()))
    if cand.len():
        gone = cand[0]
        tables["OCRD"] = tables["OCRD"].filter(pl.col("CardCode") != gone)
        tables["CRD1"] = tables["CRD1"].filter(pl.col("BPCode") != gone)
    pool = tables["OITM"].filter(~pl.col("ItemCode").is_in(protected_items))
    cand = pool["ItemCode"].gather(pl.Series(np.sort(rng.choice(pool.height, size=min(40, pool.height), replace=False))))
    used = pl.concat([tables[t].filter(pl.col("ItemCode").is_in(cand.implode()))["ItemCode"] for t in ("RDR1", "RIN1")])
    cand = cand.filter(~cand.is_in(used.implode()))
    if cand.len():
        gone = cand[0]
        for name in ("OITM", "ITM1", "OITW", "_RESERVED"):
            tables[name] = tables[name].filter(pl.col("ItemCode") != gone)

    _refresh_stock(tables)
    _canon(tables)
