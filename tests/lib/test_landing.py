"""Landing Service Layer pages into sap_raw: incremental boundary, types, merge, deletions,
history, bad values, real SL samples."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import duckdb
import httpx
import pytest
from pydantic import SecretStr

from sap_ometria_assets.lib.landing.land import land_table
from sap_ometria_assets.lib.landing.plan import Watermark, incremental_filter
from sap_ometria_assets.lib.landing.results import LandingError
from sap_ometria_assets.lib.sap.client import SapB1Client
from sap_ometria_assets.lib.sap.errors import SapB1Error
from sap_ometria_assets.lib.sap.tables import TABLES_BY_NAME
from sap_ometria_assets.lib.config.settings import get_settings

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def bp(code: str, day: str = "2024-03-01", at: str = "10:00:00", **extra) -> dict:
    row = {
        "CardCode": code, "CardName": f"Customer {code}", "CardType": "cCustomer", "GroupCode": 100,
        "EmailAddress": f"{code.lower()}@example.co.uk", "Phone1": None, "Cellular": "07700900123",
        "Currency": "GBP", "City": "London", "ZipCode": "N1 1AA", "Country": "GB", "Valid": "tYES",
        "Frozen": "tNO", "BlockSendingMarketingContent": "tNO",
        "CreateDate": "2023-01-05T00:00:00Z", "CreateTime": "09:00:00",
        "UpdateDate": f"{day}T00:00:00Z", "UpdateTime": at, "U_LoyaltyTier": "Gold",
        "BPAddresses": [
            {"AddressName": "Home", "AddressType": "bo_BillTo", "Street": "1 High St",
             "City": "London", "ZipCode": "N1 1AA", "Country": "GB", "BPCode": code, "RowNum": 0},
            {"AddressName": "Home", "AddressType": "bo_ShipTo", "Street": "1 High St",
             "City": "London", "ZipCode": "N1 1AA", "Country": "GB", "BPCode": code, "RowNum": 1},
        ],
        "ContactEmployees": [],
    }
    row.update(extra)
    return row


def order(entry: int, day: str = "2024-03-01", at: str = "10:00:00", lines: int = 3, **extra) -> dict:
    row = {
        "DocEntry": entry, "DocNum": 10000 + entry, "DocType": "dDocument_Items",
        "DocDate": f"{day}T00:00:00Z", "DocDueDate": f"{day}T00:00:00Z", "DocTime": "09:12:00",
        "CardCode": "C001", "CardName": "Customer C001", "DocCurrency": "GBP",
        "DocRate": Decimal("1.0"), "DocTotal": Decimal("36.00"), "VatSum": Decimal("6.00"),
        "DocumentStatus": "bost_Open", "Cancelled": "tNO", "CancelStatus": "csNo",
        "CreationDate": f"{day}T00:00:00Z", "UpdateDate": f"{day}T00:00:00Z", "UpdateTime": at,
        "U_SalesChannel": "Web", "PaidToDate": Decimal("0.0"),
        "AddressExtension": {"ShipToCity": "London", "ShipToCountry": "GB"},
        "DocumentLines": [
            {"DocEntry": entry, "LineNum": n, "ItemCode": f"SKU{n}", "ItemDescription": "Shirt",
             "Quantity": Decimal("1.0"), "Price": Decimal("10.00"), "LineTotal": Decimal("10.00"),
             "WarehouseCode": "01", "LineStatus": "bost_Open", "BaseType": -1, "BaseEntry": None,
             "BaseLine": None}
            for n in range(lines)
        ],
        "DocumentAdditionalExpenses": [],
    }
    row.update(extra)
    return row


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "land.duckdb"))
    yield c
    c.close()


@pytest.fixture
def sl(make_fake_sl):
    """A fake Service Layer with small pages (so every test pages)."""
    return make_fake_sl({}, default_page_size=4)


def land(con, fake, table: str, now: datetime = T0, page_size: int = 4, **kw):
    with SapB1Client(fake.base_url, fake.company, fake.username, SecretStr(fake.password),
                     transport=fake.transport(), page_size=page_size, sleep=lambda s: None) as c:
        settings = kw.pop("settings", None) or _SETTINGS_AHEAD()
        return land_table(con, c, TABLES_BY_NAME[table], settings=settings, now=now, **kw)


def _ANY_SHARE():  # noqa: N802
    """Tiny tables: one deletion is more than the default 5% share a scan may delete."""
    return _SETTINGS_AHEAD().model_copy(update={"sap_b1_deletion_max_share": 1.0})


def _SETTINGS_AHEAD():  # noqa: N802
    """These tests' records are dated up to weeks after their clock (T0): allow that much
    skew, so the future-date guard (tested on its own) does not hold their watermarks."""
    return get_settings().model_copy(update={"sap_b1_future_skew_minutes": 365 * 24 * 60})


def rows(con, sql: str, params=None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


# ---------------------------------------------------------------------------------------------
def test_incremental_filter_minds_the_overlap_and_midnight():
    assert incremental_filter(Watermark(date(2024, 3, 1), "10:00:30"), 10) == (
        "(UpdateDate gt '2024-03-01') or (UpdateDate eq '2024-03-01' and UpdateTime ge '09:50')")
    assert incremental_filter(Watermark(date(2024, 3, 2), "00:05:00"), 10) == (
        "(UpdateDate gt '2024-03-01') or (UpdateDate eq '2024-03-01' and UpdateTime ge '23:55')")
    assert incremental_filter(Watermark(date(2024, 3, 1), "00:00:00"), 0) == (
        "(UpdateDate gt '2024-03-01') or (UpdateDate eq '2024-03-01' and UpdateTime ge '00:00')")


def test_incremental_boundary_loses_no_record(con, sl):
    sl.entities["BusinessPartners"] = [bp(f"C{i:03d}", "2024-02-01", "08:00:00") for i in range(1, 9)]
    sl.entities["BusinessPartners"].append(bp("C100", "2024-03-01", "10:00:30"))
    first = land(con, sl, "ocrd")
    assert first.read == "full" and first.rows_changed == 9
    assert first.watermark_after == "2024-03-01 10:00:30"
    bps = {b["CardCode"]: b for b in sl.entities["BusinessPartners"]}
    # same day, later second of the same minute; same day later; next day, earlier clock time
    bps["C001"].update(UpdateDate="2024-03-01T00:00:00Z", UpdateTime="10:00:45", CardName="A")
    bps["C002"].update(UpdateDate="2024-03-01T00:00:00Z", UpdateTime="10:05:00", CardName="B")
    bps["C003"].update(UpdateDate="2024-03-02T00:00:00Z", UpdateTime="08:00:00", CardName="C")
    second = land(con, sl, "ocrd", now=T0 + timedelta(days=1))
    assert second.read == "incremental"
    assert second.filter == ("(UpdateDate gt '2024-03-01') or "
                             "(UpdateDate eq '2024-03-01' and UpdateTime ge '09:50')")
    assert second.rows_landed == 4            # the 3 edits and C100 (in the overlap)
    assert second.rows_changed == 3 and second.rows_unchanged == 1
    assert rows(con, "SELECT CardCode, CardName FROM sap_raw.ocrd WHERE CardCode IN "
                     "('C001','C002','C003') ORDER BY 1") == [("C001", "A"), ("C002", "B"), ("C003", "C")]
    assert second.watermark_after == "2024-03-02 08:00:00"
    assert rows(con, "SELECT update_date, update_time FROM sap_meta.watermarks WHERE entity='ocrd'") \
        == [(date(2024, 3, 2), "08:00:00")]


def test_a_late_commit_before_midnight_is_caught_by_the_overlap(con, sl):
    sl.entities["Orders"] = [order(1, "2024-03-02", "00:05:00"), order(2, "2024-03-01", "20:00:00")]
    land(con, sl, "ordr")
    # committed in SAP at 23:58 the previous day, but visible only after our last read
    sl.entities["Orders"].append(order(3, "2024-03-01", "23:58:00"))
    result = land(con, sl, "ordr", now=T0 + timedelta(hours=1))
    assert "UpdateDate eq '2024-03-01' and UpdateTime ge '23:55'" in result.filter
    assert result.rows_changed == 1
    assert rows(con, "SELECT DocEntry FROM sap_raw.ordr ORDER BY 1") == [(1,), (2,), (3,)]
    assert result.watermark_after == "2024-03-02 00:05:00"  # never moves back


def test_amounts_are_exact_decimals(con, sl):
    big = Decimal("123456789012.123456")
    o = order(1, DocTotal=big, VatSum=Decimal("0.000001"))
    for line, amount in zip(o["DocumentLines"], ("0.1", "0.2", "0.3"), strict=True):
        line["LineTotal"] = Decimal(amount)
    sl.entities["Orders"] = [o]
    land(con, sl, "ordr")
    assert rows(con, "SELECT DocTotal, VatSum, typeof(DocTotal) FROM sap_raw.ordr") == [
        (big, Decimal("0.000001"), "DECIMAL(19,6)")]
    assert rows(con, "SELECT sum(LineTotal) FROM sap_raw.rdr1") == [(Decimal("0.600000"),)]
    # properties outside the contract are never floats either
    assert rows(con, "SELECT typeof(PaidToDate) FROM sap_raw.ordr") == [("DECIMAL(19,6)",)]


def test_rerun_changes_nothing(con, sl):
    sl.entities["Orders"] = [order(i) for i in range(1, 12)]
    first = land(con, sl, "ordr")
    before = rows(con, "SELECT * FROM sap_raw.ordr ORDER BY DocEntry")
    lines_before = rows(con, "SELECT * FROM sap_raw.rdr1 ORDER BY DocEntry, LineNum")
    second = land(con, sl, "ordr", now=T0 + timedelta(hours=2))
    assert first.rows_changed == 11 and first.tables["rdr1"].rows_changed == 33
    assert second.rows_landed == 11 and second.rows_changed == 0
    assert second.tables["rdr1"].rows_changed == 0 and second.tables["rdr1"].rows_unchanged == 33
    assert rows(con, "SELECT * FROM sap_raw.ordr ORDER BY DocEntry") == before  # _landed_at too
    assert rows(con, "SELECT * FROM sap_raw.rdr1 ORDER BY DocEntry, LineNum") == lines_before
    assert rows(con, "SELECT count(*) FROM sap_history.ordr") == [(11,)]
    assert rows(con, "SELECT count(*) FROM sap_history.rdr1") == [(33,)]


def test_an_edited_order_replaces_its_lines_and_history_keeps_versions(con, sl):
    sl.entities["Orders"] = [order(1), order(2)]
    land(con, sl, "ordr")
    edited = sl.entities["Orders"][0]
    edited.update(UpdateTime="11:00:00", DocTotal=Decimal("20.00"))
    del edited["DocumentLines"][2]                          # line 2 removed
    edited["DocumentLines"][1]["Quantity"] = Decimal("2.0")  # line 1 changed, line 0 untouched
    t1 = T0 + timedelta(hours=1)
    result = land(con, sl, "ordr", now=t1)
    assert result.rows_changed == 1
    assert rows(con, "SELECT LineNum, Quantity FROM sap_raw.rdr1 WHERE DocEntry = 1 ORDER BY 1") == [
        (0, Decimal("1.000000")), (1, Decimal("2.000000"))]
    assert rows(con, "SELECT DocTotal, _is_current, _valid_to IS NULL FROM sap_history.ordr "
                     "WHERE DocEntry = 1 ORDER BY _valid_from") == [
        (Decimal("36.000000"), False, False), (Decimal("20.000000"), True, True)]
    assert rows(con, "SELECT count(*) FROM sap_history.ordr WHERE DocEntry = 2") == [(1,)]
    hist = rows(con, "SELECT LineNum, Quantity, _is_current FROM sap_history.rdr1 WHERE DocEntry = 1 "
                     "ORDER BY LineNum, _valid_from")
    assert hist == [
        (0, Decimal("1.000000"), True),                      # unchanged: one version
        (1, Decimal("1.000000"), False), (1, Decimal("2.000000"), True),
        (2, Decimal("1.000000"), False),                     # removed: closed, no new version
    ]
    assert rows(con, "SELECT max(_valid_to) FROM sap_history.rdr1")[0][0] == t1
    # an as-of query before the edit sees the old order
    assert rows(con, "SELECT DocTotal FROM sap_history.ordr WHERE DocEntry = 1 AND _valid_from <= ? "
                     "AND coalesce(_valid_to, 'infinity') > ?", [T0, T0]) == [(Decimal("36.000000"),)]


def test_deleted_business_partner_is_marked_not_removed_and_restored_when_back(con, sl):
    sl.entities["BusinessPartners"] = [bp(f"C{i:03d}") for i in range(1, 7)]
    land(con, sl, "ocrd")
    gone = sl.entities["BusinessPartners"].pop(2)  # C003 deleted in SAP
    t1 = T0 + timedelta(hours=1)
    result = land(con, sl, "ocrd", now=t1, deletion_scan=True, settings=_ANY_SHARE())
    assert result.keys_marked_deleted == 1
    assert rows(con, "SELECT CardCode FROM sap_raw.ocrd WHERE _deleted_at IS NOT NULL") == [("C003",)]
    assert rows(con, "SELECT count(*) FROM sap_raw.ocrd") == [(6,)]
    assert rows(con, "SELECT count(*) FROM sap_raw.crd1 WHERE BPCode = 'C003' AND _deleted_at = ?",
                [t1]) == [(2,)]
    assert rows(con, "SELECT _is_current FROM sap_history.ocrd WHERE CardCode = 'C003'") == [(False,)]
    scans = [r for r in sl.requests if r.query.get("$select") == "CardCode"]
    assert scans and all("$filter" not in r.query for r in scans)
    # a plain incremental run without a scan leaves the mark alone
    assert land(con, sl, "ocrd", now=t1 + timedelta(minutes=5)).keys_marked_deleted == 0
    assert rows(con, "SELECT count(*) FROM sap_raw.ocrd WHERE _deleted_at IS NOT NULL") == [(1,)]
    sl.entities["BusinessPartners"].append(gone)
    back = land(con, sl, "ocrd", now=t1 + timedelta(hours=1), deletion_scan=True)
    assert back.main.keys_restored == 1 and back.keys_marked_deleted == 0
    assert rows(con, "SELECT count(*) FROM sap_raw.ocrd WHERE _deleted_at IS NOT NULL") == [(0,)]
    assert rows(con, "SELECT count(*) FROM sap_raw.crd1 WHERE _deleted_at IS NOT NULL") == [(0,)]
    assert rows(con, "SELECT count(*) FROM sap_history.ocrd WHERE CardCode = 'C003' AND _is_current")\
        == [(1,)]


def test_a_key_scan_that_finds_nothing_refuses_to_mark_everything(con, sl):
    sl.entities["BusinessPartners"] = [bp("C001"), bp("C002")]
    land(con, sl, "ocrd")
    sl.entities["BusinessPartners"] = []
    result = land(con, sl, "ocrd", now=T0 + timedelta(hours=1), deletion_scan=True)
    assert "would mark 2 of 2 live record(s) deleted" in result.deletion_refused
    assert rows(con, "SELECT count(*) FROM sap_raw.ocrd WHERE _deleted_at IS NULL") == [(2,)]
    assert rows(con, "SELECT table_name, would_delete FROM sap_meta.deletion_scan_refusals") == [
        ("ocrd", 2)]


def test_real_items_page_lands_every_udf_prices_and_stock(con, sl, real_items):
    items = real_items
    sl.entities["Items"] = items
    sl.entities["UserFieldsMD"] = [
        {"TableName": "OITM", "FieldID": 0, "Name": "Utiliza_CCE", "Type": "db_Alpha",
         "SubType": "st_None", "Description": "CCE", "Size": 1, "ValidValuesMD": []},
        {"TableName": "OITM", "FieldID": 1, "Name": "Peso", "Type": "db_Float",
         "SubType": "st_Measurement", "Description": "Peso", "Size": 10, "ValidValuesMD": []},
    ]
    land(con, sl, "cufd")
    oitm = land(con, sl, "oitm")
    oitw = land(con, sl, "oitw")
    udfs = {k for k in items[0] if k.startswith("U_")}
    assert len(udfs) == 60
    columns = dict(rows(con, "SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_schema = 'sap_raw' AND table_name = 'oitm'"))
    assert udfs <= columns.keys()
    assert columns["U_Peso"] == "DECIMAL(19,6)"       # typed from UserFieldsMD
    assert columns["QuantityOnStock"] == "DECIMAL(19,6)" and columns["UpdateDate"] == "DATE"
    assert "ItemWarehouseInfoCollection" not in columns  # that is oitw's
    assert "@odata.etag" not in columns
    assert json.loads(rows(con, "SELECT ItemBarCodeCollection FROM sap_raw.oitm "
                                "WHERE ItemCode = '9990020012002'")[0][0])[0]["Barcode"] == "9990020012002"
    assert rows(con, "SELECT UpdateDate, UpdateTime, CreateDate FROM sap_raw.oitm "
                     "WHERE ItemCode = '9990020012002'") == [
        (date(2022, 4, 29), "19:32:42", date(2021, 10, 28))]
    assert oitm.rows_changed == 5 and oitm.tables["itm1"].rows_changed == 50
    # ItemPrices carry no ItemCode: the parent's is injected
    assert rows(con, "SELECT count(*), count(DISTINCT ItemCode), count(DISTINCT (ItemCode, PriceList)) "
                     "FROM sap_raw.itm1") == [(50, 5, 50)]
    expected = {(i["ItemCode"], p["PriceList"]) for i in items for p in i["ItemPrices"]}
    assert set(rows(con, "SELECT ItemCode, PriceList FROM sap_raw.itm1")) == expected
    assert oitw.rows_changed == 50
    assert rows(con, "SELECT count(DISTINCT ItemCode), count(*) FROM sap_raw.oitw") == [(5, 50)]
    assert [r for r in sl.requests if r.query.get("$select") == "ItemCode,ItemWarehouseInfoCollection"]
    stock_cols = dict(rows(con, "SELECT column_name, data_type FROM information_schema.columns "
                                "WHERE table_schema = 'sap_raw' AND table_name = 'oitw'"))
    assert stock_cols["InStock"] == "DECIMAL(19,6)" and "U_Ubicacion" in stock_cols
    assert land(con, sl, "oitw", now=T0 + timedelta(hours=1)).rows_changed == 0


def test_a_value_that_does_not_fit_lands_as_null_and_is_recorded(con, sl):
    good, bad = order(1), order(2, DocTotal="abc")
    bad["DocumentLines"][0]["Quantity"] = "lots"
    sl.entities["Orders"] = [good, bad, order(3)]
    result = land(con, sl, "ordr")
    assert result.rows_changed == 3 and result.rejected_values == 2
    assert rows(con, "SELECT DocEntry, DocTotal FROM sap_raw.ordr ORDER BY 1") == [
        (1, Decimal("36.000000")), (2, None), (3, Decimal("36.000000"))]
    assert rows(con, "SELECT table_name, record_key, column_name, raw_value FROM "
                     "sap_meta.rejected_values ORDER BY 1") == [
        ("ordr", "2", "DocTotal", "abc"), ("rdr1", "2|0", "Quantity", "lots")]
    assert rows(con, "SELECT count(*) FROM sap_raw.rdr1") == [(9,)]
    # fixed in SAP: the next read lands the value and clears the record
    sl.entities["Orders"][1] = order(2, at="10:30:00")
    land(con, sl, "ordr", now=T0 + timedelta(hours=1))
    assert rows(con, "SELECT DocTotal FROM sap_raw.ordr WHERE DocEntry = 2") == [(Decimal("36.000000"),)]
    assert rows(con, "SELECT count(*) FROM sap_meta.rejected_values") == [(0,)]


def test_a_record_with_an_unreadable_key_is_listed_not_landed(con, sl):
    broken = order(3)
    broken["DocEntry"] = "x3"
    sl.entities["Orders"] = [order(1), order(2, DocDate="2024-13-45T00:00:00Z"), broken]
    result = land(con, sl, "ordr")
    assert result.rows_landed == 2
    assert rows(con, "SELECT DocEntry, DocDate FROM sap_raw.ordr ORDER BY 1") == [
        (1, date(2024, 3, 1)), (2, None)]
    assert sorted(rows(con, "SELECT table_name, record_key, column_name, raw_value FROM "
                            "sap_meta.rejected_values")) == [
        ("ordr", "2", "DocDate", "2024-13-45T00:00:00Z"), ("ordr", "x3", "DocEntry", "x3")]


def test_a_collection_the_service_layer_omits_leaves_its_table_alone(con, sl):
    first = order(1)
    first["DocumentAdditionalExpenses"] = [
        {"DocEntry": 1, "LineNum": 0, "ExpenseCode": 1, "LineTotal": Decimal("4.95")}]
    sl.entities["Orders"] = [first]
    land(con, sl, "ordr")
    edited = copy.deepcopy(first)
    del edited["DocumentAdditionalExpenses"]  # e.g. a $select or an SL version without it
    edited["UpdateTime"] = "10:05:00"
    sl.entities["Orders"] = [edited]
    result = land(con, sl, "ordr", now=T0 + timedelta(hours=1))
    assert result.rows_changed == 1
    assert rows(con, "SELECT LineNum, LineTotal FROM sap_raw.rdr3") == [(0, Decimal("4.950000"))]
    # present and empty means "no expenses any more"
    edited["DocumentAdditionalExpenses"] = []
    edited["UpdateTime"] = "10:06:00"
    land(con, sl, "ordr", now=T0 + timedelta(hours=2))
    assert rows(con, "SELECT count(*) FROM sap_raw.rdr3") == [(0,)]


def test_a_new_property_adds_a_column_and_is_recorded(con, sl):
    sl.entities["BusinessPartners"] = [bp("C001"), bp("C002")]
    land(con, sl, "ocrd")
    for b in sl.entities["BusinessPartners"]:
        b["U_Newsletter"] = None
    sl.entities["BusinessPartners"][0].update(U_Newsletter="Y", UpdateTime="10:03:00")
    result = land(con, sl, "ocrd", now=T0 + timedelta(hours=1))
    assert result.columns_added == {"ocrd": ["U_Newsletter"]}
    assert result.rows_changed == 1  # the empty new property changes nobody else
    assert rows(con, "SELECT CardCode, U_Newsletter FROM sap_raw.ocrd ORDER BY 1") == [
        ("C001", "Y"), ("C002", None)]
    assert rows(con, "SELECT table_name, column_name, change FROM sap_meta.schema_changes") == [
        ("ocrd", "U_Newsletter", "added")]
    assert ("ocrd", "U_Newsletter") in rows(
        con, "SELECT table_name, column_name FROM sap_meta.extract_columns")


def test_udfs_are_typed_from_userfieldsmd(con, sl):
    sl.entities["UserFieldsMD"] = [
        {"TableName": "OCRD", "FieldID": 0, "Name": "DateOfBirth", "Type": "db_Date",
         "SubType": "st_None", "Size": 8, "ValidValuesMD": []},
        {"TableName": "OCRD", "FieldID": 1, "Name": "Score", "Type": "db_Float",
         "SubType": "st_Rate", "Size": 8, "ValidValuesMD": []},
        {"TableName": "OCRD", "FieldID": 2, "Name": "Visits", "Type": "db_Numeric",
         "SubType": "st_None", "Size": 11, "ValidValuesMD": []},
        {"TableName": "OCRD", "FieldID": 3, "Name": "CallAt", "Type": "db_Date",
         "SubType": "st_Time", "Size": 8, "ValidValuesMD": []},
        {"TableName": "OCRD", "FieldID": 4, "Name": "LoyaltyTier", "Type": "db_Alpha",
         "SubType": "st_None", "Size": 10,
         "ValidValuesMD": [{"Value": "Gold", "Description": "Gold"}]},
    ]
    sl.entities["BusinessPartners"] = [
        bp("C001", U_DateOfBirth="1990-05-01T00:00:00Z", U_Score=Decimal("12.5"), U_Visits=7,
           U_CallAt="14:30:00"),
        bp("C002", U_DateOfBirth=None, U_Score=None, U_Visits=None, U_CallAt=None),
    ]
    land(con, sl, "cufd")
    land(con, sl, "ocrd")
    assert rows(con, "SELECT typeof(U_DateOfBirth), typeof(U_Score), typeof(U_Visits), "
                     "typeof(U_CallAt), typeof(U_LoyaltyTier) FROM sap_raw.ocrd LIMIT 1") == [
        ("DATE", "DECIMAL(19,6)", "BIGINT", "VARCHAR", "VARCHAR")]
    assert rows(con, "SELECT U_DateOfBirth, U_Score, U_Visits, U_CallAt FROM sap_raw.ocrd "
                     "WHERE CardCode = 'C001'") == [(date(1990, 5, 1), Decimal("12.5"), 7, "14:30:00")]
    assert rows(con, "SELECT typeof(ValidValuesMD) FROM sap_raw.cufd LIMIT 1") == [("JSON",)]


def test_cancellation_documents_are_flagged(con, sl):
    sl.entities["CreditNotes"] = [
        order(1), order(2, Cancelled="tYES", CancelStatus="csYes"),
        order(3, CancelStatus="csCancellation", DocTotal=Decimal("-36.00")),
    ]
    land(con, sl, "orin")
    assert rows(con, "SELECT DocEntry, _is_cancellation FROM sap_raw.orin ORDER BY 1") == [
        (1, False), (2, False), (3, True)]


def test_full_mode_table_is_replaced_but_unchanged_rows_keep_their_landing_time(con, sl):
    sl.entities["Warehouses"] = [
        {"WarehouseCode": c, "WarehouseName": n, "Inactive": "tNO"}
        for c, n in [("01", "Main DC"), ("02", "London Store"), ("03", "Manchester Store"),
                     ("WHS-WHOLESALE", "Wholesale")]
    ]
    land(con, sl, "owhs")
    assert land(con, sl, "owhs", now=T0 + timedelta(hours=1)).rows_changed == 0
    sl.entities["Warehouses"].pop(2)
    sl.entities["Warehouses"][0]["WarehouseName"] = "Main Distribution Centre"
    t2 = T0 + timedelta(hours=2)
    result = land(con, sl, "owhs", now=t2)
    assert result.rows_changed == 1 and result.main.rows_removed == 1
    assert rows(con, "SELECT WarehouseCode, _landed_at = ? FROM sap_raw.owhs ORDER BY 1", [t2]) == [
        ("01", True), ("02", False), ("WHS-WHOLESALE", False)]
    sl.entities["Warehouses"] = []
    with pytest.raises(LandingError, match="returned no Warehouses"):
        land(con, sl, "owhs", now=t2 + timedelta(hours=1))
    assert rows(con, "SELECT count(*) FROM sap_raw.owhs") == [(3,)]


def test_a_failed_read_changes_nothing_and_keeps_the_watermark(con, sl):
    sl.entities["Orders"] = [order(i) for i in range(1, 6)]
    land(con, sl, "ordr")
    for o in sl.entities["Orders"]:
        o["UpdateTime"] = "11:00:00"
        o["DocTotal"] = Decimal("1.00")
    sl.fail_next = [404]  # a 4xx mid-read is not retried
    sl.expire_after = None
    with pytest.raises(SapB1Error):
        land(con, sl, "ordr", now=T0 + timedelta(hours=1))
    assert rows(con, "SELECT DISTINCT DocTotal FROM sap_raw.ordr") == [(Decimal("36.000000"),)]
    assert rows(con, "SELECT update_time FROM sap_meta.watermarks WHERE entity = 'ordr'") == [
        ("10:00:00",)]


def test_v1_pages_land_the_same(con, make_fake_sl):
    fake = make_fake_sl({"Orders": []}, version="v1", default_page_size=4)
    o = order(1)
    for key in ("DocDate", "DocDueDate", "CreationDate", "UpdateDate"):
        o[key] = o[key][:10]  # v1 dates carry no time part
    fake.entities["Orders"] = [o, copy.deepcopy(o) | {"DocEntry": 2, "DocumentLines": []}]
    result = land(con, fake, "ordr")
    assert result.rows_changed == 2
    assert rows(con, "SELECT DocDate, UpdateDate FROM sap_raw.ordr WHERE DocEntry = 1") == [
        (date(2024, 3, 1), date(2024, 3, 1))]
    assert land(con, fake, "ordr", now=T0 + timedelta(hours=1)).read == "incremental"


def test_a_record_seen_twice_across_pages_lands_once_in_its_latest_version(con, sl):
    sl.entities["Orders"] = [order(1), order(2), order(1, at="10:30:00", DocTotal=Decimal("5"))]
    sl.entities["Orders"][2]["DocNum"] = 99  # "moved" between pages during the read
    result = land(con, sl, "ordr")
    assert result.rows_landed == 2
    assert rows(con, "SELECT DocEntry, DocNum, DocTotal FROM sap_raw.ordr ORDER BY 1") == [
        (1, 99, Decimal("5.000000")), (2, 10002, Decimal("36.000000"))]
    assert rows(con, "SELECT count(*) FROM sap_raw.rdr1 WHERE DocEntry = 1") == [(3,)]


def test_full_refresh_of_items_marks_deleted_items_without_a_separate_scan(con, sl, real_items):
    items = real_items
    sl.entities["Items"] = items
    land(con, sl, "oitm")
    sl.entities["Items"] = items[:4]
    result = land(con, sl, "oitm", now=T0 + timedelta(hours=1), full_refresh=True,
                  settings=_ANY_SHARE())
    assert result.read == "full" and result.keys_marked_deleted == 1
    assert result.tables["itm1"].keys_marked_deleted == 10
    assert not [r for r in sl.requests if r.query.get("$select") == "ItemCode"]
    assert rows(con, "SELECT ItemCode FROM sap_raw.oitm WHERE _deleted_at IS NOT NULL") == [
        (items[4]["ItemCode"],)]


def test_metadata_columns_and_extract_columns(con, sl):
    sl.entities["BusinessPartners"] = [bp("C001")]
    sl.entities["Orders"] = [order(1)]
    land(con, sl, "ocrd")
    land(con, sl, "ordr")
    ocrd = dict(rows(con, "SELECT column_name, data_type FROM information_schema.columns WHERE "
                          "table_schema='sap_raw' AND table_name='ocrd'"))
    ordr = dict(rows(con, "SELECT column_name, data_type FROM information_schema.columns WHERE "
                          "table_schema='sap_raw' AND table_name='ordr'"))
    assert ocrd["_landed_at"] == ocrd["_deleted_at"] == "TIMESTAMP WITH TIME ZONE"
    assert "_is_cancellation" not in ocrd and ordr["_is_cancellation"] == "BOOLEAN"
    assert "_deleted_at" not in ordr
    assert list(ordr)[:3] == ["DocEntry", "DocNum", "DocType"]  # contract order first
    extracted = {c for (c,) in rows(con, "SELECT column_name FROM sap_meta.extract_columns "
                                         "WHERE table_name = 'ordr'")}
    assert {"DocEntry", "DocTotal", "U_SalesChannel", "AddressExtension"} <= extracted
    assert "DocTotalFc" not in extracted  # not sent by this SL: the contract checks will see it
    assert ordr["DocTotalFc"] == "DECIMAL(19,6)"  # yet the column exists, typed, for SQL users
    assert ordr["AddressExtension"] == "JSON"


def test_a_property_whose_values_change_kind_widens_its_column_and_keeps_every_value(con, sl):
    sl.entities["BusinessPartners"] = [bp("C001", Weight=3, Ref=17), bp("C002", Weight=4, Ref=18)]
    land(con, sl, "ocrd")
    assert rows(con, "SELECT typeof(Weight), typeof(Ref) FROM sap_raw.ocrd LIMIT 1") == [
        ("BIGINT", "BIGINT")]
    sl.entities["BusinessPartners"][1].update(Weight=Decimal("4.25"), Ref="R-18", UpdateTime="10:04:00")
    result = land(con, sl, "ocrd", now=T0 + timedelta(hours=1))
    # C001 lands again too: its Ref is now text ("17"), a new representation of the same value
    assert result.rows_changed == 2 and result.rejected_values == 0
    assert rows(con, "SELECT CardCode, Weight, Ref FROM sap_raw.ocrd ORDER BY 1") == [
        ("C001", Decimal("3.000000"), "17"), ("C002", Decimal("4.250000"), "R-18")]
    assert sorted(rows(con, "SELECT column_name, change, old_type, new_type FROM "
                            "sap_meta.schema_changes")) == [
        ("Ref", "type_changed", "BIGINT", "VARCHAR"),
        ("Weight", "type_changed", "BIGINT", "DECIMAL(38,6)")]
    assert rows(con, "SELECT typeof(Weight) FROM sap_history.ocrd LIMIT 1") == [("DECIMAL(38,6)",)]


# ---------------------------------------------------------------------------------------------
# End to end over real HTTP against the demo company emulator (what `make demo` reads)
# ---------------------------------------------------------------------------------------------
def test_end_to_end_against_the_emulator_lands_everything_then_only_changes(tmp_path):
    from sap_ometria_assets.emulators.sap_b1 import SapB1Emulator, generate_company
    from sap_ometria_assets.lib.sap.tables import SAP_TABLES, all_table_names

    def land_all(emulator, now):
        with SapB1Client(emulator.url, emulator.company_db, emulator.username,
                         SecretStr("demo-password"), page_size=200) as client:
            results = {}
            for spec in SAP_TABLES:
                results.update(land_table(con, client, spec, settings=get_settings(),
                                          now=now).tables)
            assert client.logins == 1
        return results

    con = duckdb.connect(str(tmp_path / "e2e.duckdb"))
    with SapB1Emulator(generate_company(scale=0.1, seed=42)) as emulator:
        first = land_all(emulator, T0)
        totals = {t: c.rows_total for t, c in first.items()}
        assert set(totals) == set(all_table_names()) and all(totals.values()), totals
        for table, entity_set in (("ordr", "Orders"), ("ocrd", "BusinessPartners"),
                                  ("orin", "CreditNotes"), ("oitm", "Items")):
            assert totals[table] == emulator.company.header(entity_set).height
        assert rows(con, "SELECT count(*) FROM sap_raw.orin WHERE _is_cancellation") != [(0,)]

        second = land_all(emulator, T0 + timedelta(hours=1))
        assert {t: c.rows_changed for t, c in second.items() if c.rows_changed} == {}
        assert {t: c.rows_total for t, c in second.items()} == totals

        emulator.advance(1)
        third = land_all(emulator, T0 + timedelta(hours=2))
        changed = {t: c.rows_changed for t, c in third.items()}
        assert 0 < changed["ordr"] < totals["ordr"] // 10, changed
        assert changed["ocrd"] < totals["ocrd"] // 10, changed
        # every order SAP holds now is landed, each in its current version, to the penny
        sap = emulator.company.header("Orders").select("DocEntry", "DocTotal", "UpdateDate",
                                                       "UpdateTime").rows()
        expected = {(e, Decimal(repr(t)).quantize(Decimal("0.000001")), d, u.strftime("%H:%M:%S"))
                    for e, t, d, u in sap}
        assert set(rows(con, "SELECT DocEntry, DocTotal, UpdateDate, UpdateTime FROM sap_raw.ordr")) \
            == expected
    con.close()


# ---------------------------------------------------------------------------------------------
# pages fetched while earlier ones are parsed; damaged pages; typing independent of batching
class _Tamper(httpx.BaseTransport):
    """Wraps the fake SL's transport: `edit(page_no, body) -> body` sees every data page served
    (counted over the whole landing, re-fetches included)."""

    def __init__(self, inner: httpx.BaseTransport, edit) -> None:
        self.inner, self.edit, self.served = inner, edit, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        if request.method != "GET" or resp.status_code != 200:
            return resp
        self.served += 1
        return httpx.Response(resp.status_code, headers=resp.headers,
                              content=self.edit(self.served, resp.read()))


def _damaged(body: bytes) -> bytes:
    """Broken between intact ends: the client's end check passes, a parser does not."""
    cut = len(body) // 2
    return body[:cut] + b'"}}{' + body[cut:]


def land_via(con, fake, edit, table: str = "ordr", now: datetime = T0, **kw):
    transport = _Tamper(fake.transport(), edit)
    with SapB1Client(fake.base_url, fake.company, fake.username, SecretStr(fake.password),
                     transport=transport, page_size=4, sleep=lambda s: None) as c:
        settings = kw.pop("settings", None) or _SETTINGS_AHEAD()
        return land_table(con, c, TABLES_BY_NAME[table], settings=settings, now=now, **kw)


def test_a_page_damaged_between_intact_ends_is_fetched_again_and_every_record_lands(con, sl, caplog):
    sl.entities["Orders"] = [order(i) for i in range(1, 31)]          # 8 pages of 4
    result = land_via(con, sl, lambda n, body: _damaged(body) if n == 3 else body)
    assert result.rows_landed == 30 and result.tables["rdr1"].rows_changed == 90
    assert rows(con, "SELECT count(*), count(DISTINCT DocEntry) FROM sap_raw.ordr") == [(30, 30)]
    assert "SAP B1 Orders page 3: the body is not valid JSON" in caplog.text
    assert "fetching it again" in caplog.text


def test_a_page_damaged_on_every_fetch_is_named_and_nothing_lands(con, sl):
    sl.entities["Orders"] = [order(i) for i in range(1, 31)]
    land(con, sl, "ordr")
    for o in sl.entities["Orders"]:
        o.update(UpdateTime="11:00:00", DocTotal=Decimal("1.00"))
    def page2(n, body):  # page 2 of the read holds orders 5..8, whenever it is fetched
        return _damaged(body) if json.loads(body)["value"][0]["DocEntry"] == 5 else body
    with pytest.raises(SapB1Error) as err:
        land_via(con, sl, page2, now=T0 + timedelta(hours=1))
    assert "SAP B1 Orders: page 2" in str(err.value) and "malformed on 4 attempts" in str(err.value)
    assert rows(con, "SELECT DISTINCT DocTotal FROM sap_raw.ordr") == [(Decimal("36.000000"),)]
    assert rows(con, "SELECT update_time FROM sap_meta.watermarks WHERE entity = 'ordr'") == [
        ("10:00:00",)]


def test_a_fetch_failing_after_pages_were_parsed_changes_nothing(con, sl):
    sl.entities["Orders"] = [order(i) for i in range(1, 41)]          # 10 pages of 4

    def fail_late(n, body):
        if n >= 9:  # page 9 and every retry of it
            raise httpx.ConnectError("connection reset")
        return body
    with pytest.raises(SapB1Error) as err:
        land_via(con, sl, fail_late)
    assert "page 9" in str(err.value)
    assert rows(con, "SELECT count(*) FROM information_schema.tables WHERE table_schema = "
                     "'sap_raw' AND table_name = 'ordr'") == [(0,)]
    assert rows(con, "SELECT count(*) FROM sap_meta.watermarks") == [(0,)]


def test_a_property_only_later_pages_fill_is_typed_as_if_read_whole(con, sl):
    """The first page (all the streamed read is typed from) has `Weight` null everywhere; the
    last page carries numbers. The landing must not depend on that: the column is a number and
    every value is kept."""
    sl.entities["Orders"] = [order(i, Weight=None) for i in range(1, 41)]
    sl.entities["Orders"][-1]["Weight"] = 12
    sl.entities["Orders"][-2]["Weight"] = 7
    land(con, sl, "ordr")
    assert rows(con, "SELECT typeof(Weight) FROM sap_raw.ordr LIMIT 1") == [("BIGINT",)]
    assert rows(con, "SELECT DocEntry, Weight FROM sap_raw.ordr WHERE Weight IS NOT NULL "
                     "ORDER BY 1") == [(39, 7), (40, 12)]


def test_first_load_history_then_only_changed_rows_get_versions(con, sl):
    sl.entities["Orders"] = [order(i) for i in range(1, 9)]
    land(con, sl, "ordr")
    assert rows(con, "SELECT count(*), count(*) FILTER (_is_current AND _valid_to IS NULL), "
                     "min(_valid_from) FROM sap_history.ordr") == [(8, 8, T0)]
    assert rows(con, "SELECT count(*) FROM sap_history.rdr1 WHERE _is_current") == [(24,)]
    for o in sl.entities["Orders"][:2]:
        o.update(UpdateTime="11:00:00", DocTotal=Decimal("2.00"))
    result = land(con, sl, "ordr", now=T0 + timedelta(hours=1))
    assert result.read == "incremental" and result.rows_changed == 2
    assert rows(con, "SELECT count(*), count(*) FILTER (_is_current) FROM sap_history.ordr") == [(10, 8)]
    assert rows(con, "SELECT count(*) FROM sap_raw.ordr") == [(8,)]
