"""Constants of the demo company: its clock (epoch, `BASE_NOW`, tick length), document object
codes and numbering, warehouses, partner groups, the word lists names and addresses are drawn
from, prices, currencies and exchange rates, and the enum dtypes the big tables store their
low-cardinality columns in.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl


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
