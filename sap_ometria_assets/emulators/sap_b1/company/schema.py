"""The company's schema: the UDFs it declares, the column layout of every stored table, and the
entity sets the Service Layer serves from them (`EntitySpec`/`ChildSpec`: key, child collections,
standard properties SAP adds), with `property_exprs` turning a stored table into its served
properties.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from sap_ometria_assets.emulators.sap_b1.company.constants import DOC_LABEL, DOC_OBJECT_NAME, DOC_TABLES


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
    ("OITM", "ImagePath", "db_Alpha", 254, "Image path", []),
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
    "U_Brand", "U_Colour", "U_Season", "U_WebTitle", "U_ImagePath",
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
