"""Hand-written SAP fixtures shaped exactly like the sap_raw tables (contract columns and types
from lib/sap/tables.py, landing metadata columns, UDF columns), for the Ometria transform tests."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import polars as pl

from sap_ometria_assets.lib.sap.tables import CHILDREN_BY_NAME, TABLES_BY_NAME, contract_columns

_DUCK_TO_POLARS = {
    "DECIMAL(19,6)": pl.Decimal(19, 6),
    "INTEGER": pl.Int32,
    "BIGINT": pl.Int64,
    "VARCHAR": pl.String,
    "DATE": pl.Date,
    "JSON": pl.String,
}

UDFS: dict[str, dict[str, pl.DataType]] = {
    "ocrd": {"U_AcquisitionSource": pl.String, "U_FirstPurchaseCategory": pl.String,
             "U_LoyaltyTier": pl.String, "U_MarketingOptIn": pl.String, "U_DateOfBirth": pl.Date},
    "ordr": {"U_SalesChannel": pl.String, "U_PromoCode": pl.String},
    "odln": {"U_SalesChannel": pl.String, "U_PromoCode": pl.String},
    "oinv": {"U_SalesChannel": pl.String, "U_PromoCode": pl.String},
    "orin": {"U_SalesChannel": pl.String, "U_PromoCode": pl.String},
    "oitm": {"U_Brand": pl.String, "U_Colour": pl.String, "U_Season": pl.String, "U_WebTitle": pl.String,
             "U_ImagePath": pl.String},
}

# Standard properties beyond the contract that the landing also stores (as the demo company has).
EXTRA: dict[str, dict[str, pl.DataType]] = {
    "ocrd": {"CompanyPrivate": pl.String, "ContactPerson": pl.String},
}

LANDED = dt.datetime(2024, 7, 1, 12, 0, tzinfo=dt.UTC)


def schema(table: str) -> dict[str, pl.DataType]:
    cols = {name: _DUCK_TO_POLARS[t] for name, t in contract_columns(table).items()}
    cols.update(EXTRA.get(table, {}))
    cols.update(UDFS.get(table, {}))
    cols["_landed_at"] = pl.Datetime("us", "UTC")
    parent = TABLES_BY_NAME.get(table) or CHILDREN_BY_NAME[table][0]
    if parent.is_master_data:
        cols["_deleted_at"] = pl.Datetime("us", "UTC")
    if table in TABLES_BY_NAME and TABLES_BY_NAME[table].is_document:
        cols["_is_cancellation"] = pl.Boolean
    return cols


def _coerce(value, dtype):
    if value is None:
        return None
    if isinstance(dtype, pl.Decimal):
        return Decimal(str(value))
    if dtype == pl.Date and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value


def frame(table: str, rows: list[dict]) -> pl.DataFrame:
    """A sap_raw-shaped frame; keys not given are NULL, `_landed_at` defaults to a fixed time."""
    s = schema(table)
    unknown = {k for r in rows for k in r} - set(s)
    assert not unknown, f"{table}: unknown columns {unknown}"
    data = {c: [_coerce(r.get(c, LANDED if c == "_landed_at" else (False if c == "_is_cancellation" else None)), t)
                for r in rows] for c, t in s.items()}
    return pl.DataFrame(data, schema=s)


# --- the demo company's declared UDFs (UserFieldsMD) -------------------------------------------

def _vv(*values: str) -> str:
    return json.dumps([{"Value": v, "Description": v} for v in values])


def cufd() -> pl.DataFrame:
    rows = [
        ("OCRD", "AcquisitionSource", "db_Alpha", _vv("Web", "Store", "Marketplace", "Referral", "Event")),
        ("OCRD", "FirstPurchaseCategory", "db_Alpha", None),
        ("OCRD", "LoyaltyTier", "db_Alpha", _vv("Bronze", "Silver", "Gold", "Platinum")),
        ("OCRD", "MarketingOptIn", "db_Alpha", _vv("Y", "N")),
        ("OCRD", "DateOfBirth", "db_Date", None),
        *[(t, "SalesChannel", "db_Alpha", _vv("Web", "Store", "Phone", "Marketplace")) for t in ("ORDR", "ODLN", "OINV", "ORIN")],
        *[(t, "PromoCode", "db_Alpha", None) for t in ("ORDR", "ODLN", "OINV", "ORIN")],
        ("OITM", "Brand", "db_Alpha", None),
        ("OITM", "Colour", "db_Alpha", None),
        ("OITM", "Season", "db_Alpha", None),
        ("OITM", "WebTitle", "db_Memo", None),
        ("OITM", "ImagePath", "db_Alpha", None),
    ]
    return frame("cufd", [
        {"TableName": t, "FieldID": i, "Name": n, "Type": ty, "ValidValuesMD": vv, "Size": 50}
        for i, (t, n, ty, vv) in enumerate(rows)
    ])


def ocrg() -> pl.DataFrame:
    return frame("ocrg", [
        {"Code": 100, "Name": "Retail", "Type": "bbpgt_CustomerGroup"},
        {"Code": 101, "Name": "VIP", "Type": "bbpgt_CustomerGroup"},
        {"Code": 102, "Name": "Trade", "Type": "bbpgt_CustomerGroup"},
        {"Code": 103, "Name": "Staff", "Type": "bbpgt_CustomerGroup"},
        {"Code": 200, "Name": "Suppliers", "Type": "bbpgt_VendorGroup"},
    ])


def bp(code: str, **kw) -> dict:
    """A customer BP row with sensible defaults."""
    row = {
        "CardCode": code, "CardName": "Jane Doe", "CardType": "cCustomer", "GroupCode": 100,
        "EmailAddress": f"{code.lower()}@example.com", "Phone1": None, "Cellular": None,
        "Currency": "GBP", "City": "London", "ZipCode": "EC1A 1BB", "Country": "GB",
        "Valid": "tYES", "Frozen": "tNO", "BlockSendingMarketingContent": "tNO",
        "CreateDate": "2023-04-19", "CreateTime": "09:00:00", "UpdateDate": "2024-06-30",
        "UpdateTime": "16:45:00",
    }
    row.update(kw)
    return row


def order(entry: int, card: str = "C001", **kw) -> dict:
    """An open local-currency sales order header (amounts to be given by the test)."""
    row = {
        "DocEntry": entry, "DocNum": 1000 + entry, "DocType": "dDocument_Items",
        "DocDate": "2024-05-01", "DocDueDate": "2024-05-03", "DocTime": "14:00:00",
        "CardCode": card, "CardName": "Jane Doe", "DocCurrency": "GBP", "DocRate": 1,
        "DocTotal": 0, "DocTotalFc": 0, "VatSum": 0, "VatSumFc": 0, "DiscountPercent": 0,
        "TotalDiscount": 0, "TotalDiscountFC": 0, "RoundingDiffAmount": 0,
        "DocumentStatus": "bost_Open", "Cancelled": "tNO", "CancelStatus": "csNo",
        "CreationDate": "2024-05-01", "UpdateDate": "2024-05-01", "UpdateTime": "14:00:00",
        "U_SalesChannel": "Web",
    }
    row.update(kw)
    return row


def line(entry: int, num: int, item: str, qty, price, vat_rate=Decimal("0.2"), currency="GBP",
         fc: bool = False, discount_pct=0, **kw) -> dict:
    """A document line whose totals follow SAP's arithmetic (net = qty x price after discount)."""
    qty, price = Decimal(str(qty)), Decimal(str(price))
    net = (qty * price * (1 - Decimal(str(discount_pct)) / 100)).quantize(Decimal("0.01"))
    tax = (net * vat_rate).quantize(Decimal("0.01"))
    row = {
        "DocEntry": entry, "LineNum": num, "ItemCode": item, "ItemDescription": item,
        "Quantity": qty, "RemainingOpenQuantity": qty, "UnitPrice": price,
        "DiscountPercent": discount_pct, "Price": price, "Currency": currency,
        "LineTotal": net if not fc else (net * 2), "RowTotalFC": net if fc else 0,
        "TaxTotal": tax if not fc else tax * 2,
        "GrossTotal": (net + tax) if not fc else (net + tax) * 2, "GrossTotalFC": (net + tax) if fc else 0,
        "WarehouseCode": "01", "LineStatus": "bost_Open", "BaseType": -1, "BaseEntry": None, "BaseLine": None,
    }
    row.update(kw)
    return row
