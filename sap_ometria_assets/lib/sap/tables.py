"""Registry of the SAP B1 tables this product lands: one entry per DuckDB table in `sap_raw`.

This is the single place that says, for every landed table, which Service Layer entity set it
comes from, its key, how it is read (incremental on UpdateDate/UpdateTime or full scan), and the
*contract* columns with their DuckDB types. Column names are Service Layer property names,
verbatim (`CardCode`, `DocTotal`, `U_LoyaltyTier`), values as the Service Layer returns them
(`'cCustomer'`, `'tYES'`, `'bost_Open'`).

Contract columns are what downstream assets rely on. Each is either *essential* to the assets
downstream of its table (a contract column that disappears or changes type blocks them, and only
them: see the contract checks and `push_after_landing`) or *optional* (`optional`: no downstream
asset needs it; every reader treats it as NULL, so its absence is a warning that blocks nothing).
Columns the Service Layer returns beyond the contract (more standard properties, user-defined
fields `U_*`) are landed too.

Child tables (document lines, addresses, prices, stock per warehouse) come from collection
properties of their parent entity (`DocumentLines`, `BPAddresses`, ...). Their parent's key is
added to every child row when the Service Layer does not already carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# DuckDB types used for contract columns. Amounts and quantities are DECIMAL(19,6), the width
# of SAP's Num(19,6) columns, so nothing passes through binary floating point.
AMOUNT = "DECIMAL(19,6)"
INT = "INTEGER"
BIGINT = "BIGINT"
TEXT = "VARCHAR"
DATE = "DATE"      # v2 sends '2022-04-29T00:00:00Z': the time part and the Z are nominal
TIME = "VARCHAR"   # 'HH:MM:SS' in company time, kept as text exactly as sent

ReadMode = Literal["incremental", "full"]

# Metadata columns the landing adds to every sap_raw table (never sent by SAP).
LANDED_AT = "_landed_at"          # TIMESTAMP WITH TIME ZONE, when this version was landed
DELETED_AT = "_deleted_at"        # TIMESTAMP WITH TIME ZONE, master data missing from a key scan
IS_CANCELLATION = "_is_cancellation"  # BOOLEAN, documents with CancelStatus = 'csCancellation'


@dataclass(frozen=True)
class ChildTable:
    """A table landed from a collection property of a parent entity."""

    table: str                      # e.g. "rdr1"
    collection: str                 # e.g. "DocumentLines"
    key: tuple[str, ...]            # e.g. ("DocEntry", "LineNum")
    parent_key_column: str          # column holding the parent key in the child, e.g. "DocEntry"
    description: str
    columns: dict[str, str] = field(default_factory=dict)
    udf_table: str | None = None    # CUFD TableName whose UDFs appear on these rows
    optional: frozenset[str] = frozenset()  # contract columns no downstream asset needs


@dataclass(frozen=True)
class SapTable:
    """A table landed from a Service Layer entity set."""

    table: str                      # DuckDB table in schema sap_raw, e.g. "ordr"
    entity_set: str                 # Service Layer entity set, e.g. "Orders"
    sap_object: str                 # SAP table code for people, e.g. "ORDR"
    description: str                # shown in the Dagster UI
    key: tuple[str, ...]
    read_mode: ReadMode
    columns: dict[str, str]
    children: tuple[ChildTable, ...] = ()
    is_document: bool = False       # marketing document: cancellations flagged, never deleted
    is_master_data: bool = False    # deletions detected by a key scan
    udf_table: str | None = None    # CUFD TableName of this entity's UDFs
    history: bool = False           # SCD2 history kept in sap_history (children too)
    filter: str | None = None       # fixed $filter, if any
    # Contract columns no downstream asset needs: landed NULL when SAP stops sending them, and
    # their absence only warns. Every other contract column is essential to the table's dependents.
    optional: frozenset[str] = frozenset()


# ---------------------------------------------------------------------------------------------
# Column contracts
# ---------------------------------------------------------------------------------------------

_DOC_HEADER: dict[str, str] = {
    "DocEntry": INT,
    "DocNum": INT,
    "DocType": TEXT,
    "DocDate": DATE,
    "DocDueDate": DATE,
    "DocTime": TIME,
    "CardCode": TEXT,
    "CardName": TEXT,
    "NumAtCard": TEXT,
    "DocCurrency": TEXT,
    "DocRate": AMOUNT,
    "DocTotal": AMOUNT,
    "DocTotalFc": AMOUNT,
    "VatSum": AMOUNT,
    "VatSumFc": AMOUNT,
    "DiscountPercent": AMOUNT,
    "TotalDiscount": AMOUNT,
    "TotalDiscountFC": AMOUNT,
    "RoundingDiffAmount": AMOUNT,
    "DocumentStatus": TEXT,
    "Cancelled": TEXT,
    "CancelStatus": TEXT,
    "CreationDate": DATE,
    "UpdateDate": DATE,
    "UpdateTime": TIME,
}

_DOC_LINE: dict[str, str] = {
    "DocEntry": INT,
    "LineNum": INT,
    "ItemCode": TEXT,
    "ItemDescription": TEXT,
    "Quantity": AMOUNT,
    "RemainingOpenQuantity": AMOUNT,
    "UnitPrice": AMOUNT,
    "DiscountPercent": AMOUNT,
    "Price": AMOUNT,
    "PriceAfterVAT": AMOUNT,
    "Currency": TEXT,
    "LineTotal": AMOUNT,
    "RowTotalFC": AMOUNT,
    "TaxTotal": AMOUNT,
    "GrossTotal": AMOUNT,
    "GrossTotalFC": AMOUNT,
    "WarehouseCode": TEXT,
    "LineStatus": TEXT,
    "BaseType": INT,
    "BaseEntry": INT,
    "BaseLine": INT,
}

# Freight and other charges (RDR3/RIN3...): SAP keeps shipping here, not in the lines.
_DOC_EXPENSE: dict[str, str] = {
    "DocEntry": INT,
    "LineNum": INT,
    "ExpenseCode": INT,
    "LineTotal": AMOUNT,
    "LineTotalFC": AMOUNT,
    "TaxSum": AMOUNT,
    "TaxSumFC": AMOUNT,
}


def _document(table: str, lines: str, expenses: str, entity_set: str, name: str,
              history: bool = False) -> SapTable:
    upper = table.upper()
    return SapTable(
        table=table,
        entity_set=entity_set,
        sap_object=upper,
        description=f"{upper}: {name} (Service Layer `{entity_set}`), one row per document.",
        key=("DocEntry",),
        read_mode="incremental",
        columns=dict(_DOC_HEADER),
        is_document=True,
        udf_table=upper,
        history=history,
        children=(
            ChildTable(
                table=lines,
                collection="DocumentLines",
                key=("DocEntry", "LineNum"),
                parent_key_column="DocEntry",
                description=f"{lines.upper()}: {name} lines (`{entity_set}.DocumentLines`).",
                columns=dict(_DOC_LINE),
                udf_table=lines.upper(),
            ),
            ChildTable(
                table=expenses,
                collection="DocumentAdditionalExpenses",
                key=("DocEntry", "LineNum"),
                parent_key_column="DocEntry",
                description=(
                    f"{expenses.upper()}: {name} freight and additional expenses "
                    f"(`{entity_set}.DocumentAdditionalExpenses`)."
                ),
                columns=dict(_DOC_EXPENSE),
            ),
        ),
    )


SAP_TABLES: tuple[SapTable, ...] = (
    SapTable(
        table="cufd",
        entity_set="UserFieldsMD",
        sap_object="CUFD",
        description="CUFD: User-defined field definitions (Service Layer `UserFieldsMD`): the UDFs "
        "this company declares, per SAP table, with their types and allowed values.",
        key=("TableName", "FieldID"),
        read_mode="full",
        columns={
            "TableName": TEXT,
            "FieldID": INT,
            "Name": TEXT,
            "Type": TEXT,
            "SubType": TEXT,
            "Description": TEXT,
            "Size": INT,
            "ValidValuesMD": "JSON",
        },
        # The landing types UDFs from TableName, Name and Type (SubType only tells a db_Date
        # holding a time, read NULL as a date); the mapping check needs TableName and Name and
        # uses Type and ValidValuesMD when present; Description and Size are read by nothing.
        optional=frozenset({"SubType", "Description", "Size", "ValidValuesMD"}),
    ),
    SapTable(
        table="ocrg",
        entity_set="BusinessPartnerGroups",
        sap_object="OCRG",
        description="OCRG: Business Partner groups (Service Layer `BusinessPartnerGroups`), "
        "e.g. Retail, Trade, VIP.",
        key=("Code",),
        read_mode="full",
        columns={"Code": INT, "Name": TEXT, "Type": TEXT},
    ),
    SapTable(
        table="ocrd",
        entity_set="BusinessPartners",
        sap_object="OCRD",
        description="OCRD: Business Partners (Service Layer `BusinessPartners`): customers, "
        "leads and suppliers, one row per CardCode. Source of Ometria contacts.",
        key=("CardCode",),
        read_mode="incremental",
        is_master_data=True,
        udf_table="OCRD",
        history=True,
        columns={
            "CardCode": TEXT,
            "CardName": TEXT,
            "CardType": TEXT,
            "GroupCode": INT,
            "EmailAddress": TEXT,
            "Phone1": TEXT,
            "Cellular": TEXT,
            "Currency": TEXT,
            "City": TEXT,
            "ZipCode": TEXT,
            "Country": TEXT,
            "Valid": TEXT,
            "Frozen": TEXT,
            "BlockSendingMarketingContent": TEXT,
            "CreateDate": DATE,
            "CreateTime": TIME,
            "UpdateDate": DATE,
            "UpdateTime": TIME,
        },
        children=(
            ChildTable(
                table="crd1",
                collection="BPAddresses",
                key=("BPCode", "AddressName", "AddressType"),
                parent_key_column="BPCode",
                description="CRD1: Business Partner addresses (`BusinessPartners.BPAddresses`), "
                "bill-to (`bo_BillTo`) and ship-to (`bo_ShipTo`).",
                columns={
                    "BPCode": TEXT,
                    "AddressName": TEXT,
                    "AddressType": TEXT,
                    "Street": TEXT,
                    "City": TEXT,
                    "ZipCode": TEXT,
                    "County": TEXT,
                    "State": TEXT,
                    "Country": TEXT,
                    "RowNum": INT,
                },
                udf_table="CRD1",
            ),
        ),
    ),
    _document("ordr", "rdr1", "rdr3", "Orders", "Sales Orders", history=True),
    _document("odln", "dln1", "dln3", "DeliveryNotes", "Deliveries", history=True),
    _document("oinv", "inv1", "inv3", "Invoices", "A/R Invoices", history=True),
    _document("orin", "rin1", "rin3", "CreditNotes", "A/R Credit Memos", history=True),
    SapTable(
        table="oitm",
        entity_set="Items",
        sap_object="OITM",
        description="OITM: Items (Service Layer `Items`), one row per ItemCode. Source of Ometria "
        "products.",
        key=("ItemCode",),
        read_mode="incremental",
        is_master_data=True,
        udf_table="OITM",
        history=True,
        columns={
            "ItemCode": TEXT,
            "ItemName": TEXT,
            "ItemsGroupCode": INT,
            "BarCode": TEXT,
            "SalesItem": TEXT,
            "InventoryItem": TEXT,
            "Valid": TEXT,
            "Frozen": TEXT,
            "QuantityOnStock": AMOUNT,
            "QuantityOrderedByCustomers": AMOUNT,
            "CreateDate": DATE,
            "CreateTime": TIME,
            "UpdateDate": DATE,
            "UpdateTime": TIME,
        },
        children=(
            ChildTable(
                table="itm1",
                collection="ItemPrices",
                key=("ItemCode", "PriceList"),
                parent_key_column="ItemCode",
                description="ITM1: Item prices per price list (`Items.ItemPrices`).",
                columns={"ItemCode": TEXT, "PriceList": INT, "Price": AMOUNT, "Currency": TEXT},
            ),
        ),
    ),
    # Stock moves do not bump OITM.UpdateDate, so stock per warehouse is its own full snapshot,
    # read as Items?$select=ItemCode,ItemWarehouseInfoCollection on a fast cadence.
    SapTable(
        table="oitw",
        entity_set="Items",
        sap_object="OITW",
        description="OITW: Stock per item and warehouse (`Items.ItemWarehouseInfoCollection`), "
        "a full snapshot every run because stock moves do not change OITM.UpdateDate.",
        key=("ItemCode", "WarehouseCode"),
        read_mode="full",
        udf_table="OITW",
        history=True,
        columns={
            "ItemCode": TEXT,
            "WarehouseCode": TEXT,
            "InStock": AMOUNT,
            "Committed": AMOUNT,
            "Ordered": AMOUNT,
            "Locked": TEXT,
        },
    ),
    SapTable(
        table="owhs",
        entity_set="Warehouses",
        sap_object="OWHS",
        description="OWHS: Warehouses (Service Layer `Warehouses`).",
        key=("WarehouseCode",),
        read_mode="full",
        columns={"WarehouseCode": TEXT, "WarehouseName": TEXT, "Inactive": TEXT},
    ),
)

TABLES_BY_NAME: dict[str, SapTable] = {t.table: t for t in SAP_TABLES}
CHILDREN_BY_NAME: dict[str, tuple[SapTable, ChildTable]] = {
    c.table: (t, c) for t in SAP_TABLES for c in t.children
}


def all_table_names() -> list[str]:
    """Every sap_raw table, parents and children, in landing order."""
    names: list[str] = []
    for t in SAP_TABLES:
        names.append(t.table)
        names.extend(c.table for c in t.children)
    return names


def contract_columns(table: str) -> dict[str, str]:
    """Contract columns (name -> DuckDB type) of any sap_raw table, parent or child."""
    if table in TABLES_BY_NAME:
        return TABLES_BY_NAME[table].columns
    return CHILDREN_BY_NAME[table][1].columns


def optional_columns(table: str) -> frozenset[str]:
    """Contract columns of `table` that no downstream asset needs (absent: a warning)."""
    if table in TABLES_BY_NAME:
        return TABLES_BY_NAME[table].optional
    return CHILDREN_BY_NAME[table][1].optional


def essential_columns(table: str) -> dict[str, str]:
    """Contract columns of `table` its downstream assets need (absent: they are blocked)."""
    optional = optional_columns(table)
    return {c: t for c, t in contract_columns(table).items() if c not in optional}


def table_key(table: str) -> tuple[str, ...]:
    if table in TABLES_BY_NAME:
        return TABLES_BY_NAME[table].key
    return CHILDREN_BY_NAME[table][1].key
