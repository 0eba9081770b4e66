"""What every column of a landed SAP table means, for the Dagster catalog and docs.

Three sources, in this order: the human descriptions below for every *contract* column (what a
marketing or finance analyst needs to know), keyed by the Service Layer type the table is read
from; SAP's own property list (`properties.json`, generated from a real Service Layer v1
`$metadata` by `tests/fixtures/sap/extract_properties.py`) for every other standard property,
which gives its SQL column (`EmailAddress` is `OCRD.E_Mail`), its type and, for enums, the codes;
and the company's UserFieldsMD (`sap_raw.cufd.Description`) for user-defined fields `U_*`.
Columns the landing adds (`_landed_at`, ...) and sap_history's validities are described here too.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

from sap_ometria_assets.lib.landing.history_time import (
    IS_CURRENT,
    SAP_FROM,
    SAP_TO,
    SOURCE,
    VALID_FROM,
    VALID_TO,
)
from sap_ometria_assets.lib.landing.split import ROW_HASH
from sap_ometria_assets.lib.sap.tables import (
    DELETED_AT,
    IS_CANCELLATION,
    LANDED_AT,
    all_table_names,
    contract_columns,
)
from sap_ometria_assets.lib.warehouse.sql import has_column, table_exists

# Contract columns, by Service Layer type. The SQL column is appended where SAP names one.
CONTRACT: dict[str, dict[str, str]] = {
    "UserFieldMD": {
        "TableName": "SAP table the user-defined field belongs to (e.g. OCRD, RDR1)",
        "FieldID": "Number of the field within its table",
        "Name": "Field name without the U_ prefix: the column is U_<Name>",
        "Type": "Field type (db_Alpha text, db_Numeric, db_Date, db_Float, db_Memo)",
        "SubType": "Refinement of the type (e.g. st_Price, st_Time for a db_Date holding a time)",
        "Description": "The field's label as users see it in SAP: describes the U_ column",
        "Size": "Maximum length of the field",
        "ValidValuesMD": "Allowed values and their labels, as JSON (empty: any value)",
    },
    "BusinessPartnerGroup": {
        "Code": "Group number, referenced by a business partner's GroupCode",
        "Name": "Group name (e.g. Retail, Trade, VIP)",
        "Type": "Whether the group is for customers (bbpgt_CustomerGroup) or vendors",
    },
    "BusinessPartner": {
        "CardCode": "Business partner code: the customer id sent to Ometria",
        "CardName": "Customer or company name, split into first and last name for Ometria",
        "CardType": "cCustomer, cSupplier or cLid (lead); only customers and leads become contacts",
        "GroupCode": "Business partner group (see sap_raw.ocrg), sent as the contact's segment",
        "EmailAddress": "Customer's email address",
        "Phone1": "Main telephone number",
        "Cellular": "Mobile phone number, preferred over Phone1 for Ometria",
        "Currency": "Currency the customer is billed in (## means all currencies)",
        "City": "City of the bill-to address",
        "ZipCode": "Postcode of the bill-to address",
        "Country": "Country code of the bill-to address (ISO 3166, e.g. GB)",
        "Valid": "tYES when the business partner is active",
        "Frozen": "tYES when the business partner is blocked (inactive)",
        "BlockSendingMarketingContent": "tYES when the customer must not receive marketing: "
                                        "sent to Ometria as no marketing consent",
        "CreateDate": "Date the business partner was created",
        "CreateTime": "Time (company time) the business partner was created",
        "UpdateDate": "Date of the last change; the landing reads changes since it",
        "UpdateTime": "Time (company time) of the last change",
    },
    "BPAddress": {
        "BPCode": "Business partner the address belongs to (sap_raw.ocrd.CardCode)",
        "AddressName": "Name of the address within the business partner",
        "AddressType": "bo_BillTo (billing) or bo_ShipTo (delivery)",
        "Street": "Street and house number",
        "City": "City",
        "ZipCode": "Postcode",
        "County": "County",
        "State": "State or region code",
        "Country": "Country code (ISO 3166)",
        "RowNum": "Line number of the address within the business partner",
    },
    "Document": {
        "DocEntry": "Internal document number, the key other tables refer to",
        "DocNum": "Document number people see on the printed document",
        "DocType": "dDocument_Items (item lines) or dDocument_Service (service lines)",
        "DocDate": "Posting date of the document",
        "DocDueDate": "Due date (delivery date for orders, payment due for invoices)",
        "DocTime": "Time (company time) the document was created",
        "CardCode": "Customer's business partner code (sap_raw.ocrd.CardCode)",
        "CardName": "Customer name as printed on the document",
        "NumAtCard": "Customer's own reference (e.g. the web shop order number)",
        "DocCurrency": "Currency of the document",
        "DocRate": "Exchange rate of the document currency to the company currency",
        "DocTotal": "Document total including tax, in the company currency",
        "DocTotalFc": "Document total including tax, in the document currency (foreign currency)",
        "VatSum": "Tax total, in the company currency",
        "VatSumFc": "Tax total, in the document currency",
        "DiscountPercent": "Discount on the whole document, in percent",
        "TotalDiscount": "Discount amount on the whole document, in the company currency",
        "TotalDiscountFC": "Discount amount on the whole document, in the document currency",
        "RoundingDiffAmount": "Rounding difference added to the total",
        "DocumentStatus": "bost_Open or bost_Close (closed: delivered, invoiced or cancelled)",
        "Cancelled": "tYES when the document was cancelled",
        "CancelStatus": "csNo, csYes (cancelled) or csCancellation (the cancelling document)",
        "CreationDate": "Date the document was entered",
        "UpdateDate": "Date of the last change; the landing reads changes since it",
        "UpdateTime": "Time (company time) of the last change",
    },
    "DocumentLine": {
        "DocEntry": "Document the line belongs to (DocEntry of the header table)",
        "LineNum": "Line number within the document",
        "ItemCode": "Item sold (sap_raw.oitm.ItemCode)",
        "ItemDescription": "Item name as printed on the line",
        "Quantity": "Quantity",
        "RemainingOpenQuantity": "Quantity not yet delivered or invoiced",
        "UnitPrice": "Unit price before the line discount",
        "DiscountPercent": "Line discount in percent",
        "Price": "Unit price after the line discount",
        "PriceAfterVAT": "Unit price after discount including tax",
        "Currency": "Currency of the line's prices",
        "LineTotal": "Line total before tax, in the company currency",
        "RowTotalFC": "Line total before tax, in the document currency",
        "TaxTotal": "Tax on the line, in the company currency",
        "GrossTotal": "Line total including tax, in the company currency",
        "GrossTotalFC": "Line total including tax, in the document currency",
        "WarehouseCode": "Warehouse the goods come from (sap_raw.owhs.WarehouseCode)",
        "LineStatus": "bost_Open or bost_Close",
        "BaseType": "Object type of the document this line was copied from (17 order, 15 "
                    "delivery, 13 invoice; -1 none)",
        "BaseEntry": "DocEntry of the document this line was copied from",
        "BaseLine": "Line number in the document this line was copied from",
    },
    "DocumentAdditionalExpense": {
        "DocEntry": "Document the charge belongs to (DocEntry of the header table)",
        "LineNum": "Line number of the charge within the document",
        "ExpenseCode": "Kind of charge (freight, packing...), as defined in SAP's freight setup",
        "LineTotal": "Charge before tax, in the company currency; sent to Ometria as shipping",
        "LineTotalFC": "Charge before tax, in the document currency",
        "TaxSum": "Tax on the charge, in the company currency",
        "TaxSumFC": "Tax on the charge, in the document currency",
    },
    "Item": {
        "ItemCode": "Item code: the product id and SKU sent to Ometria",
        "ItemName": "Item name: the product title in Ometria",
        "ItemsGroupCode": "Item group number",
        "BarCode": "Main barcode (EAN)",
        "SalesItem": "tYES when the item can be sold",
        "InventoryItem": "tYES when stock is kept for the item",
        "Valid": "tYES when the item is active",
        "Frozen": "tYES when the item is blocked (inactive)",
        "QuantityOnStock": "Stock on hand over all warehouses",
        "QuantityOrderedByCustomers": "Quantity on open sales orders (committed)",
        "CreateDate": "Date the item was created",
        "CreateTime": "Time (company time) the item was created",
        "UpdateDate": "Date of the last change; the landing reads changes since it",
        "UpdateTime": "Time (company time) of the last change",
    },
    "ItemPrice": {
        "ItemCode": "Item the price belongs to (sap_raw.oitm.ItemCode)",
        "PriceList": "Price list number; the mapping file says which one Ometria gets",
        "Price": "Price of the item in this price list",
        "Currency": "Currency of the price",
    },
    "ItemWarehouseInfo": {
        "ItemCode": "Item (sap_raw.oitm.ItemCode)",
        "WarehouseCode": "Warehouse (sap_raw.owhs.WarehouseCode)",
        "InStock": "Stock on hand in this warehouse",
        "Committed": "Quantity promised to open sales orders from this warehouse",
        "Ordered": "Quantity on open purchase orders for this warehouse",
        "Locked": "tYES when the item is locked in this warehouse",
    },
    "Warehouse": {
        "WarehouseCode": "Warehouse code",
        "WarehouseName": "Warehouse name",
        "Inactive": "tYES when the warehouse is no longer used",
    },
}

LANDING_COLUMNS: dict[str, str] = {
    LANDED_AT: "When this version of the row was landed (added by the landing, not SAP)",
    DELETED_AT: "When a key scan found the record missing in SAP (deleted there); NULL: present",
    IS_CANCELLATION: "True for a cancellation document (CancelStatus csCancellation)",
    ROW_HASH: "Hash of the row's content, to tell changed rows (added by the landing)",
    # sap_history's validities (docs/contracts.md, sap_history)
    SAP_FROM: "sap_history: when SAP says this version began: UpdateDate + UpdateTime in the "
              "company time zone (child rows: their header's)",
    SAP_TO: "sap_history: when SAP's next version began, or the row went; NULL while current",
    SOURCE: "sap_history: where valid_from comes from: sap, sap_day (no UpdateTime), landed "
            "(no UpdateDate: landing time), clamped (SAP's time went backwards)",
    VALID_FROM: "sap_history: when this product landed this version",
    VALID_TO: "sap_history: when this product landed the next version or found the row gone",
    IS_CURRENT: "sap_history: true for the version SAP holds now (as of the last landing)",
}

UDF_FALLBACK = "User-defined field; its description is in sap_raw.cufd.Description"


@cache
def _properties() -> dict:
    return json.loads(files("sap_ometria_assets.lib.sap").joinpath("properties.json").read_text())


def sap_type(table: str) -> str:
    """Service Layer type a sap_raw table is read from (`Document` for ordr)."""
    return _properties()["tables"][table]["type"]


def sql_column(table: str, column: str) -> str | None:
    """SAP's SQL name of a property (`ocrd`, `EmailAddress` -> `OCRD.E_Mail`), None if unknown."""
    info = _properties()["tables"][table]
    prop = _properties()["types"][info["type"]].get(column)
    if prop is None and "parent" in info:  # the parent key the landing adds to child rows
        parent = _properties()["tables"][info["parent"]]
        prop = _properties()["types"][parent["type"]].get(column)
    return f"{info['sql_table']}.{prop[0]}" if prop else None


def _standard(table: str, column: str) -> str | None:
    info = _properties()["tables"][table]
    prop = _properties()["types"][info["type"]].get(column)
    if prop is None:
        return None
    text = f"SAP property {column} ({info['sql_table']}.{prop[0]})"
    members = _properties()["enums"].get(prop[1])
    if members:
        text += ", one of " + ", ".join(f"{k} ({v})" for k, v in members.items())
    return text


def column_description(table: str, column: str, udfs: dict[str, str] | None = None) -> str:
    """One column of `sap_raw.<table>` in words, always with its SQL column when SAP names one.

    `udfs` maps `U_<Name>` to UserFieldsMD's Description for this table; without it a UDF says
    where its description is."""
    human = CONTRACT.get(sap_type(table), {}).get(column) if column in contract_columns(table) else None
    if human:
        sql = sql_column(table, column)
        return f"{human} ({sql})" if sql else human
    if column in LANDING_COLUMNS:
        return LANDING_COLUMNS[column]
    if column.startswith("U_"):
        label = (udfs or {}).get(column)
        sql = f"{table.upper()}.{column}"
        return f"User-defined field: {label} ({sql})" if label else f"{UDF_FALLBACK} ({sql})"
    return _standard(table, column) or (
        f"Service Layer property {column} (newer than the SAP v1 metadata we keep: no SQL name)")


def udf_descriptions(con, table: str) -> dict[str, str]:
    """`U_<Name>` -> Description from the landed UserFieldsMD (`sap_raw.cufd`) for one table."""
    if not table_exists(con, "sap_raw", "cufd") or not has_column(con, "sap_raw", "cufd", "Description"):
        return {}
    rows = con.execute(
        'SELECT \'U_\' || "Name", "Description" FROM sap_raw.cufd WHERE upper("TableName") = ? '
        'AND "Description" IS NOT NULL AND "Description" <> \'\'', [table.upper()],
    ).fetchall()
    return {name: str(descr) for name, descr in rows}


def missing_contract_descriptions() -> list[str]:
    """Contract columns of any sap_raw table without a human description (should be none)."""
    return [f"{t}.{c}" for t in all_table_names() for c in contract_columns(t)
            if c not in CONTRACT.get(sap_type(t), {})]
