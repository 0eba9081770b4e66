"""A tiny, internally consistent warehouse for the checks, exceptions and recon tests.

`build_world(con)` lands a handful of SAP records in `sap_raw` (contract columns from the
registry, plus the landing's metadata columns), the Ometria-ready records they produce (payloads
written out by hand, as the transform layer makes them), a push ledger acknowledging every
record, and Ometria's read-back snapshot equal to what was sent. In this world no exception rule
fires and every reconciliation view agrees to the penny; each test then breaks one thing.

Demo-company facts: local currency GBP, customers `cCustomer`, price list 1, warehouse `01`
included, `WHS-WHOLESALE` ring-fenced, `SFR` not mapped.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from decimal import Decimal

import duckdb

from sap_ometria_assets.lib.quality.checks_config import ChecksConfig, MappingFacts
from sap_ometria_assets.lib.sync_exceptions.sources import OMETRIA_COLUMNS, SAP_META_COLUMNS
from sap_ometria_assets.lib.warehouse.sql import q
from sap_ometria_assets.lib.push.ledger import ensure_push_tables
from sap_ometria_assets.lib.sap.tables import all_table_names, contract_columns

T0 = datetime(2024, 3, 10, 9, 0, tzinfo=timezone.utc)

FACTS = MappingFacts(
    local_currency="GBP",
    customer_card_types=("cCustomer",),
    currency_map={"GBP": "GBP", "EUR": "EUR", "US$": "USD"},
    pass_through_iso_codes=True,
    price_list=1,
    warehouse_feeds={"01": True, "WHS-WHOLESALE": False},
    warehouse_default_feeds=False,
    credit_memo_mode="negative_order",
    sends_image_url=True,
)
CONFIG = ChecksConfig()

D = Decimal


def create_sap_table(con: duckdb.DuckDBPyConnection, table: str, extra: dict[str, str] | None = None,
                     drop: tuple[str, ...] = (), retype: dict[str, str] | None = None) -> None:
    cols = {**contract_columns(table), **(extra or {}), **SAP_META_COLUMNS}
    cols.update(retype or {})
    for c in drop:
        cols.pop(c, None)
    con.execute("CREATE SCHEMA IF NOT EXISTS sap_raw")
    con.execute(f"CREATE OR REPLACE TABLE sap_raw.{table} ("
                + ", ".join(f"{q(c)} {t}" for c, t in cols.items()) + ")")


def insert(con: duckdb.DuckDBPyConnection, schema: str, table: str, rows: list[dict]) -> None:
    if not rows:
        return
    names = sorted({k for r in rows for k in r})
    sql = (f"INSERT INTO {schema}.{table} ({', '.join(q(n) for n in names)}) "
           f"VALUES ({', '.join('?' for _ in names)})")
    con.executemany(sql, [[r.get(n) for n in names] for r in rows])


def payload_row(feed: str, sap_object: str, sap_key: str, payload: dict,
                held_back_reason: str | None = None) -> dict:
    text = json.dumps(payload, separators=(",", ":"))
    return {
        "record_type": payload.get("@type"),
        "id": payload["id"],
        "sap_object": sap_object,
        "sap_key": sap_key,
        "payload": text,
        "payload_hash": hashlib.sha256(text.encode()).hexdigest(),
        "payload_bytes": len(text.encode()),
        "held_back_reason": held_back_reason,
    }


def set_payload(con: duckdb.DuckDBPyConnection, feed: str, record_id: str, payload: dict) -> None:
    row = payload_row(feed, "x", "x", payload)
    con.execute(f"UPDATE ometria.{feed} SET payload = ?, payload_hash = ?, payload_bytes = ? WHERE id = ?",
                [row["payload"], row["payload_hash"], row["payload_bytes"], record_id])


def contact(card: str, email: str | None, first: str, last: str) -> dict:
    p = {"@type": "contact", "@collection": "sap_b1", "id": card, "customer_id": card,
         "firstname": first, "lastname": last, "@merge": True}
    if email:
        p["email"] = email
    return p


def order(oid: str, card: str, ts: str, currency: str, grand_total: float, status: str = "complete",
          is_valid: bool = True, lines: list[dict] | None = None) -> dict:
    return {"@type": "order", "id": oid, "timestamp": ts, "status": status, "is_valid": is_valid,
            "currency": currency, "subtotal": grand_total, "discount": 0.0, "shipping": 0.0,
            "tax": 0.0, "grand_total": grand_total, "customer": {"id": card},
            "lineitems": lines or []}


def product(item: str, title: str, price: float) -> dict:
    return {"@type": "product", "id": item, "sku": item, "title": title, "price": price,
            "currency": "GBP", "is_active": True, "image_url": f"https://cdn.example.com/{item}.jpg",
            "@merge": True}


def stock(item: str, in_stock: bool) -> dict:
    return {"@type": "product", "id": item, "is_in_stock": in_stock, "@merge": True}


def build_world(con: duckdb.DuckDBPyConnection) -> None:
    for schema in ("sap_raw", "sap_meta", "ometria", "ometria_push", "ops", "recon"):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for table in all_table_names():
        extra = {}
        if table == "ocrd":
            extra = {"U_LoyaltyTier": "VARCHAR", "U_AcquisitionSource": "VARCHAR"}
        if table == "ordr":
            extra = {"U_SalesChannel": "VARCHAR", "U_PromoCode": "VARCHAR"}
        create_sap_table(con, table, extra)

    insert(con, "sap_raw", "cufd", [
        {"TableName": "OCRD", "FieldID": 0, "Name": "LoyaltyTier", "Type": "db_Alpha",
         "ValidValuesMD": json.dumps([{"Value": v, "Description": v}
                                      for v in ("Bronze", "Silver", "Gold", "Platinum")])},
        {"TableName": "OCRD", "FieldID": 1, "Name": "AcquisitionSource", "Type": "db_Alpha",
         "ValidValuesMD": json.dumps([{"Value": v, "Description": v}
                                      for v in ("Web", "Store", "Marketplace", "Referral", "Event")])},
        {"TableName": "ORDR", "FieldID": 0, "Name": "SalesChannel", "Type": "db_Alpha",
         "ValidValuesMD": json.dumps([{"Value": v, "Description": v}
                                      for v in ("Web", "Store", "Phone", "Marketplace")])},
        {"TableName": "ORDR", "FieldID": 1, "Name": "PromoCode", "Type": "db_Alpha",
         "ValidValuesMD": "[]"},
    ])
    insert(con, "sap_raw", "ocrd", [
        {"CardCode": "C001", "CardName": "Alice Smith", "CardType": "cCustomer", "GroupCode": 100,
         "EmailAddress": "alice@example.com", "U_LoyaltyTier": "Gold", "U_AcquisitionSource": "Web"},
        {"CardCode": "C002", "CardName": "Bob Jones", "CardType": "cCustomer", "GroupCode": 100,
         "EmailAddress": "Bob.Jones@Example.co.uk ", "U_LoyaltyTier": "Silver"},
        {"CardCode": "C003", "CardName": "Carol White", "CardType": "cCustomer", "GroupCode": 101,
         "EmailAddress": "carol@example.com", "U_LoyaltyTier": None, "U_AcquisitionSource": ""},
        {"CardCode": "S001", "CardName": "Supplier Ltd", "CardType": "cSupplier", "GroupCode": 200,
         "EmailAddress": "sales@supplier.example"},
    ])
    insert(con, "sap_raw", "oitm", [
        {"ItemCode": "SKU1", "ItemName": "Blue Shirt", "SalesItem": "tYES", "Frozen": "tNO"},
        {"ItemCode": "SKU2", "ItemName": "Red Scarf", "SalesItem": "tYES", "Frozen": "tNO"},
    ])
    insert(con, "sap_raw", "itm1", [
        {"ItemCode": "SKU1", "PriceList": 1, "Price": D("20"), "Currency": "GBP"},
        {"ItemCode": "SKU2", "PriceList": 1, "Price": D("10"), "Currency": "GBP"},
        {"ItemCode": "SKU2", "PriceList": 2, "Price": D("0"), "Currency": "SFR"},
    ])
    insert(con, "sap_raw", "owhs", [
        {"WarehouseCode": "01", "WarehouseName": "Main DC", "Inactive": "tNO"},
        {"WarehouseCode": "WHS-WHOLESALE", "WarehouseName": "Wholesale", "Inactive": "tNO"},
    ])
    insert(con, "sap_raw", "oitw", [
        {"ItemCode": "SKU1", "WarehouseCode": "01", "InStock": D("10"), "Committed": D("2")},
        {"ItemCode": "SKU2", "WarehouseCode": "01", "InStock": D("5"), "Committed": D("0")},
        # over-committed, but ring-fenced: not Ometria's business
        {"ItemCode": "SKU1", "WarehouseCode": "WHS-WHOLESALE", "InStock": D("0"), "Committed": D("4")},
    ])
    hdr = {"DocType": "dDocument_Items", "DocumentStatus": "bost_Open", "Cancelled": "tNO",
           "CancelStatus": "csNo", "TotalDiscount": D("0"), "RoundingDiffAmount": D("0"),
           "_is_cancellation": False}
    insert(con, "sap_raw", "ordr", [
        {**hdr, "DocEntry": 1, "DocNum": 1001, "CardCode": "C001", "DocDate": "2024-03-01",
         "DocTime": "10:00:00", "DocCurrency": "GBP", "DocTotal": D("54"), "VatSum": D("9"),
         "U_SalesChannel": "Web"},
        {**hdr, "DocEntry": 2, "DocNum": 1002, "CardCode": "C002", "DocDate": "2024-03-02",
         "DocTime": "11:30:00", "DocCurrency": "EUR", "DocRate": D("0.85"), "DocTotal": D("10.20"),
         "DocTotalFc": D("12"), "VatSum": D("1.70"), "VatSumFc": D("2")},
        {**hdr, "DocEntry": 3, "DocNum": 1003, "CardCode": "C001", "DocDate": "2024-03-02",
         "DocTime": "12:00:00", "DocCurrency": "GBP", "DocTotal": D("12"), "VatSum": D("2"),
         "Cancelled": "tYES", "CancelStatus": "csYes", "DocumentStatus": "bost_Close"},
        {**hdr, "DocEntry": 4, "DocNum": 1004, "CardCode": "C003", "DocDate": "2024-03-03",
         "DocTime": "09:15:00", "DocCurrency": "GBP", "DocTotal": D("21.60"), "VatSum": D("3.60"),
         "TotalDiscount": D("2")},
    ])
    insert(con, "sap_raw", "rdr1", [
        {"DocEntry": 1, "LineNum": 0, "ItemCode": "SKU1", "Quantity": D("2"), "LineTotal": D("40"),
         "TaxTotal": D("8"), "GrossTotal": D("48"), "BaseType": -1},
        {"DocEntry": 2, "LineNum": 0, "ItemCode": "SKU2", "Quantity": D("1"), "LineTotal": D("8.50"),
         "RowTotalFC": D("10"), "TaxTotal": D("1.70"), "GrossTotal": D("10.20"), "BaseType": -1},
        {"DocEntry": 3, "LineNum": 0, "ItemCode": "SKU2", "Quantity": D("1"), "LineTotal": D("10"),
         "TaxTotal": D("2"), "GrossTotal": D("12"), "BaseType": -1},
        {"DocEntry": 4, "LineNum": 0, "ItemCode": "SKU1", "Quantity": D("1"), "LineTotal": D("20"),
         "TaxTotal": D("3.60"), "GrossTotal": D("23.60"), "BaseType": -1},
    ])
    insert(con, "sap_raw", "rdr3", [
        {"DocEntry": 1, "LineNum": 0, "ExpenseCode": 1, "LineTotal": D("5"), "TaxSum": D("1")},
    ])
    insert(con, "sap_raw", "oinv", [
        {**hdr, "DocEntry": 10, "DocNum": 5010, "CardCode": "C001", "DocDate": "2024-03-01",
         "DocCurrency": "GBP", "DocTotal": D("54"), "VatSum": D("9")},
    ])
    insert(con, "sap_raw", "inv1", [
        {"DocEntry": 10, "LineNum": 0, "ItemCode": "SKU1", "Quantity": D("2"), "LineTotal": D("40"),
         "TaxTotal": D("8"), "GrossTotal": D("48"), "BaseType": 17, "BaseEntry": 1, "BaseLine": 0},
    ])
    insert(con, "sap_raw", "orin", [
        {**hdr, "DocEntry": 20, "DocNum": 7020, "CardCode": "C001", "DocDate": "2024-03-05",
         "DocTime": "15:00:00", "DocCurrency": "GBP", "DocTotal": D("24"), "VatSum": D("4"),
         "DocumentStatus": "bost_Close"},
    ])
    insert(con, "sap_raw", "rin1", [
        {"DocEntry": 20, "LineNum": 0, "ItemCode": "SKU1", "Quantity": D("1"), "LineTotal": D("20"),
         "TaxTotal": D("4"), "GrossTotal": D("24"), "BaseType": 13, "BaseEntry": 10, "BaseLine": 0},
    ])

    # --- Ometria-ready records (negative_order mode) -------------------------------------
    for feed in ("contacts", "orders", "products", "stock"):
        con.execute(f"CREATE OR REPLACE TABLE ometria.{feed} ("
                    + ", ".join(f"{q(c)} {t}" for c, t in OMETRIA_COLUMNS.items()) + ")")
    insert(con, "ometria", "contacts", [
        payload_row("contacts", "OCRD", "C001", contact("C001", "alice@example.com", "Alice", "Smith")),
        payload_row("contacts", "OCRD", "C002", contact("C002", "bob.jones@example.co.uk", "Bob", "Jones")),
        payload_row("contacts", "OCRD", "C003", contact("C003", "carol@example.com", "Carol", "White")),
    ])
    insert(con, "ometria", "orders", [
        payload_row("orders", "ORDR", "1", order("SO-1", "C001", "2024-03-01T10:00:00+00:00", "GBP", 54.0)),
        payload_row("orders", "ORDR", "2", order("SO-2", "C002", "2024-03-02T11:30:00+00:00", "EUR", 12.0)),
        payload_row("orders", "ORDR", "3", order("SO-3", "C001", "2024-03-02T12:00:00+00:00", "GBP", 12.0,
                                                 status="cancelled", is_valid=False)),
        payload_row("orders", "ORDR", "4", order("SO-4", "C003", "2024-03-03T09:15:00+00:00", "GBP", 21.6)),
        payload_row("orders", "ORIN", "20", order("CN-20", "C001", "2024-03-05T15:00:00+00:00", "GBP", -24.0)),
    ])
    insert(con, "ometria", "products", [
        payload_row("products", "OITM", "SKU1", product("SKU1", "Blue Shirt", 20.0)),
        payload_row("products", "OITM", "SKU2", product("SKU2", "Red Scarf", 10.0)),
    ])
    insert(con, "ometria", "stock", [
        payload_row("stock", "OITW", "SKU1", stock("SKU1", True)),
        payload_row("stock", "OITW", "SKU2", stock("SKU2", True)),
    ])

    # --- push ledger (the push layer's own DDL): everything acknowledged --------------------
    ensure_push_tables(con)
    acknowledge_all(con, T0, request_prefix="req-0")

    # --- Ometria read back = what was sent -------------------------------------------------
    snapshot_from_ometria_tables(con, T0)


def acknowledge_all(con: duckdb.DuckDBPyConnection, at: datetime, request_prefix: str) -> None:
    """The ledger acknowledges the current payload of every pushable record."""
    for feed in ("contacts", "orders", "products", "stock"):
        con.execute("DELETE FROM ometria_push.ledger WHERE feed = ?", [feed])
        con.execute(f"""
            INSERT INTO ometria_push.ledger (feed, record_type, id, payload_hash, request_id,
                                             acknowledged_at, dry_run, status)
            SELECT '{feed}', record_type, id, payload_hash, '{request_prefix}-{feed}', ?, false,
                   'accepted'
            FROM ometria.{feed} WHERE held_back_reason IS NULL""", [at])
        con.execute(
            "INSERT INTO ometria_push.requests (request_id, feed, record_type, sent_at, record_count, "
            "http_status, accepted, rejected, dry_run) SELECT ?, ?, 'x', ?, 1, 202, 1, 0, false",
            [f"{request_prefix}-{feed}", feed, at])


def snapshot_from_ometria_tables(con: duckdb.DuckDBPyConnection, at: datetime) -> None:
    from sap_ometria_assets.lib.recon.snapshot import write_snapshot

    rows = con.execute("""
        SELECT record_type, id, payload FROM ometria.contacts WHERE held_back_reason IS NULL
        UNION ALL SELECT record_type, id, payload FROM ometria.orders WHERE held_back_reason IS NULL
        UNION ALL SELECT record_type, id, payload FROM ometria.products WHERE held_back_reason IS NULL
    """).fetchall()
    write_snapshot(con, rows, at)


def open_keys(con: duckdb.DuckDBPyConnection, rule: str | None = None) -> set[tuple[str, str, str]]:
    sql = "SELECT rule, entity, record_key FROM ops.sync_exceptions WHERE resolved_at IS NULL"
    params: list = []
    if rule:
        sql += " AND rule = ?"
        params.append(rule)
    return {tuple(r) for r in con.execute(sql, params).fetchall()}


_TEMPLATE: list = []


def world_file(directory) -> str:
    """A fresh copy of the built world as a DuckDB file in `directory` (built once per process:
    copying the file is far cheaper than building the tables again for every test)."""
    import shutil
    import tempfile
    from pathlib import Path

    if not _TEMPLATE:
        path = Path(tempfile.mkdtemp(prefix="checks_world_")) / "world.duckdb"
        con = duckdb.connect(str(path))
        try:
            build_world(con)
        finally:
            con.close()
        _TEMPLATE.append(path)
    target = Path(directory) / "warehouse.duckdb"
    shutil.copyfile(_TEMPLATE[0], target)
    return str(target)


def world(directory) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(world_file(directory))
