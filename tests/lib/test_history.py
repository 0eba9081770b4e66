"""sap_history by SAP's own change time: `valid_from`/`valid_to` from UpdateDate + UpdateTime in
the company time zone, lines on their document's time, fallbacks, clamping, deletions, stock,
and the in-place migration of history tables written before these columns existed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import duckdb
import pytest

from tests.lib.test_landing import _ANY_SHARE, _SETTINGS_AHEAD, bp, land, order, rows

T0 = datetime(2024, 7, 10, 12, 0, tzinfo=UTC)    # landing clock, after every SAP time below
LONDON = "Europe/London"                          # July: BST, UTC+1


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def as_of(con, table: str, at: datetime, where: str, cols: str) -> list[tuple]:
    """The one query an analyst writes: the version SAP held at `at`."""
    return rows(con, f"SELECT {cols} FROM sap_history.{table} WHERE {where} AND valid_from <= ? "
                     "AND (valid_to IS NULL OR valid_to > ?) ORDER BY ALL", [at, at])


def overlaps(con, table: str, key: list[str]) -> int:
    """Pairs of versions of one key whose SAP intervals overlap (must be none)."""
    same = " AND ".join(f'a."{k}" = b."{k}"' for k in key)
    return rows(con, f"SELECT count(*) FROM sap_history.{table} a JOIN sap_history.{table} b ON "
                     f"{same} AND a.rowid < b.rowid WHERE a.valid_from < coalesce(b.valid_to, "
                     "'infinity') AND b.valid_from < coalesce(a.valid_to, 'infinity')")[0][0]


def settings(**extra):
    return _SETTINGS_AHEAD().model_copy(update={"sap_ometria_timezone": LONDON, **extra})


def hland(con, sl, table, now=T0, **kw):
    kw.setdefault("settings", settings())
    return land(con, sl, table, now=now, **kw)


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "hist.duckdb"))
    yield c
    c.close()


@pytest.fixture
def sl(make_fake_sl):
    return make_fake_sl({}, default_page_size=4)


def test_a_bp_renamed_after_the_first_sync_reads_its_old_name_by_sap_time(con, sl):
    sl.entities["BusinessPartners"] = [bp("C001", "2024-07-01", "10:00:00", CardName="Old Name"),
                                       bp("C002", "2024-07-01", "10:05:00")]
    hland(con, sl, "ocrd")
    edited = sl.entities["BusinessPartners"][0]
    edited.update(CardName="New Name", UpdateDate="2024-07-03T00:00:00Z", UpdateTime="14:35:12")
    edited["BPAddresses"][1]["Street"] = "2 New Road"            # moved house in the same edit
    t1 = T0 + timedelta(hours=6)
    hland(con, sl, "ocrd", now=t1)
    c001 = "CardCode = 'C001'"
    # 14:35:12 London summer time is 13:35:12 UTC
    assert as_of(con, "ocrd", utc("2024-07-03T13:35:11"), c001, "CardName") == [("Old Name",)]
    assert as_of(con, "ocrd", utc("2024-07-03T13:35:12"), c001, "CardName") == [("New Name",)]
    assert as_of(con, "ocrd", utc("2024-07-01T08:59:59"), c001, "CardName") == []  # 10:00 BST
    assert as_of(con, "ocrd", utc("2024-07-02T00:00:00"), c001, "CardName") == [("Old Name",)]
    # the address as SAP had it: from the BP's own change time
    ship = "BPCode = 'C001' AND AddressType = 'bo_ShipTo'"
    assert as_of(con, "crd1", utc("2024-07-02T00:00:00"), ship, "Street") == [("1 High St",)]
    assert as_of(con, "crd1", utc("2024-07-04T00:00:00"), ship, "Street") == [("2 New Road",)]
    # landing times are still there beside SAP's
    assert rows(con, "SELECT CardName, _valid_from, _valid_to, _is_current, valid_from, valid_to, "
                     "valid_from_source FROM sap_history.ocrd WHERE CardCode = 'C001' "
                     "ORDER BY _valid_from") == [
        ("Old Name", T0, t1, False, utc("2024-07-01T09:00:00"), utc("2024-07-03T13:35:12"), "sap"),
        ("New Name", t1, None, True, utc("2024-07-03T13:35:12"), None, "sap"),
    ]
    assert rows(con, "SELECT count(*) FROM sap_history.ocrd WHERE CardCode = 'C002'") == [(1,)]
    assert overlaps(con, "crd1", ["BPCode", "AddressName", "AddressType"]) == 0


def test_lines_take_their_documents_time_and_two_edits_make_three_intervals(con, sl):
    sl.entities["Orders"] = [order(1, "2024-07-01", "10:00:00"), order(2, "2024-07-01", "11:00:00")]
    hland(con, sl, "ordr")
    doc = sl.entities["Orders"][0]
    doc.update(UpdateDate="2024-07-02T00:00:00Z", UpdateTime="11:00:00", DocTotal=Decimal("20.00"))
    doc["DocumentLines"][1]["Quantity"] = Decimal("2.0")
    hland(con, sl, "ordr", now=T0 + timedelta(hours=1))
    doc.update(UpdateDate="2024-07-03T00:00:00Z", UpdateTime="0930", DocTotal=Decimal("10.00"))
    del doc["DocumentLines"][2]
    hland(con, sl, "ordr", now=T0 + timedelta(hours=2))
    v1, v2, v3 = utc("2024-07-01T09:00:00"), utc("2024-07-02T10:00:00"), utc("2024-07-03T08:30:00")
    assert rows(con, "SELECT DocTotal, valid_from, valid_to FROM sap_history.ordr WHERE DocEntry = 1 "
                     "ORDER BY valid_from") == [
        (Decimal("36.000000"), v1, v2), (Decimal("20.000000"), v2, v3), (Decimal("10.000000"), v3, None)]
    assert rows(con, "SELECT LineNum, Quantity, valid_from, valid_to FROM sap_history.rdr1 WHERE "
                     "DocEntry = 1 ORDER BY LineNum, valid_from") == [
        (0, Decimal("1.000000"), v1, None),                        # never changed: one version
        (1, Decimal("1.000000"), v1, v2), (1, Decimal("2.000000"), v2, None),
        (2, Decimal("1.000000"), v1, v3),                          # removed by the second edit
    ]
    # as SAP had it between the edits: the first edit's lines, all three of them
    assert as_of(con, "rdr1", utc("2024-07-02T12:00:00"), "DocEntry = 1", "LineNum, Quantity") == [
        (0, Decimal("1.000000")), (1, Decimal("2.000000")), (2, Decimal("1.000000"))]
    assert overlaps(con, "ordr", ["DocEntry"]) == 0
    assert overlaps(con, "rdr1", ["DocEntry", "LineNum"]) == 0
    assert rows(con, "SELECT count(*) FROM sap_history.ordr WHERE DocEntry = 2") == [(1,)]


def test_time_formats_missing_update_time_and_missing_update_date(con, sl):
    sl.entities["BusinessPartners"] = [
        bp("C001", "2024-07-01", "143512"),        # HHMMSS without colons
        bp("C002", "2024-07-01", None),            # no UpdateTime: start of the day
        bp("C003", "2024-07-01", "14:35"),         # HH:MM
        bp("C004", "2024-07-01", "nonsense"),      # unreadable: start of the day
        bp("C005", UpdateDate=None, UpdateTime=None),  # no UpdateDate: the landing time
    ]
    hland(con, sl, "ocrd")
    assert rows(con, "SELECT CardCode, valid_from, valid_from_source FROM sap_history.ocrd "
                     "ORDER BY 1") == [
        ("C001", utc("2024-07-01T13:35:12"), "sap"),
        ("C002", utc("2024-06-30T23:00:00"), "sap_day"),
        ("C003", utc("2024-07-01T13:35:00"), "sap"),
        ("C004", utc("2024-06-30T23:00:00"), "sap_day"),
        ("C005", T0, "landed"),
    ]
    assert rows(con, "SELECT count(*) FROM sap_raw.ocrd") == [(5,)]
    # the BP without UpdateDate changes: its next version starts at that landing time
    sl.entities["BusinessPartners"][4]["CardName"] = "Renamed"
    t1 = T0 + timedelta(hours=1)
    hland(con, sl, "ocrd", now=t1, full_refresh=True)
    assert rows(con, "SELECT CardName, valid_from, valid_to, valid_from_source FROM "
                     "sap_history.ocrd WHERE CardCode = 'C005' ORDER BY valid_from") == [
        ("Customer C005", T0, t1, "landed"), ("Renamed", t1, None, "landed")]


def test_sap_time_going_backwards_keeps_the_version_and_never_overlaps(con, sl):
    sl.entities["BusinessPartners"] = [bp("C001", "2024-07-05", "10:00:00")]
    hland(con, sl, "ocrd")
    sl.entities["BusinessPartners"][0].update(CardName="Later edit, earlier clock",
                                              UpdateDate="2024-07-04T00:00:00Z")
    hland(con, sl, "ocrd", now=T0 + timedelta(hours=1), full_refresh=True)
    first = utc("2024-07-05T09:00:00")
    assert rows(con, "SELECT CardName, valid_from, valid_to, valid_from_source FROM sap_history.ocrd "
                     "ORDER BY _valid_from") == [
        ("Customer C001", first, first, "sap"),                    # empty interval, still kept
        ("Later edit, earlier clock", first, None, "clamped")]
    assert overlaps(con, "ocrd", ["CardCode"]) == 0
    assert overlaps(con, "crd1", ["BPCode", "AddressName", "AddressType"]) == 0


def test_a_deletion_closes_the_interval_at_its_landing_and_a_return_reopens_it(con, sl):
    sl.entities["BusinessPartners"] = [bp(f"C{i:03d}", "2024-07-01", "10:00:00") for i in range(1, 5)]
    hland(con, sl, "ocrd")
    gone = sl.entities["BusinessPartners"].pop(1)
    t1 = T0 + timedelta(hours=1)
    hland(con, sl, "ocrd", now=t1, deletion_scan=True,
          settings=_ANY_SHARE().model_copy(update={"sap_ometria_timezone": LONDON}))
    assert rows(con, "SELECT valid_to, _valid_to, _is_current FROM sap_history.ocrd "
                     "WHERE CardCode = 'C002'") == [(t1, t1, False)]
    assert rows(con, "SELECT count(*) FROM sap_history.crd1 WHERE BPCode = 'C002' AND valid_to = ? "
                     "AND NOT _is_current", [t1]) == [(2,)]
    assert as_of(con, "ocrd", t1 + timedelta(minutes=1), "true", "CardCode") == [
        ("C001",), ("C003",), ("C004",)]
    sl.entities["BusinessPartners"].append(gone)
    t2 = T0 + timedelta(hours=2)
    hland(con, sl, "ocrd", now=t2, deletion_scan=True)
    # back with its old UpdateDate: the new version starts where the deletion ended it
    assert rows(con, "SELECT valid_from, valid_to, valid_from_source FROM sap_history.ocrd "
                     "WHERE CardCode = 'C002' ORDER BY _valid_from") == [
        (utc("2024-07-01T09:00:00"), t1, "sap"), (t1, None, "clamped")]
    assert rows(con, "SELECT count(*) FROM sap_history.crd1 WHERE BPCode = 'C002' AND _is_current "
                     "AND valid_from = ?", [t1]) == [(2,)]
    assert overlaps(con, "crd1", ["BPCode", "AddressName", "AddressType"]) == 0


def _items(stock: dict[str, Decimal]) -> list[dict]:
    return [{"ItemCode": "SKU1", "ItemName": "Shirt", "UpdateDate": "2024-07-01T00:00:00Z",
             "UpdateTime": "10:00:00", "ItemPrices": [{"PriceList": 1, "Price": Decimal("9.5")}],
             "ItemWarehouseInfoCollection": [
                 {"ItemCode": "SKU1", "WarehouseCode": w, "InStock": q, "Committed": Decimal("0"),
                  "Ordered": Decimal("0"), "Locked": "tNO"} for w, q in stock.items()]}]


def test_stock_per_warehouse_keeps_one_version_per_sync_that_changed_it(con, sl):
    sl.entities["Items"] = _items({"01": Decimal("5"), "02": Decimal("7")})
    hland(con, sl, "oitm")
    hland(con, sl, "oitw")
    sl.entities["Items"] = _items({"01": Decimal("4")})           # one sold, warehouse 02 emptied
    t1 = T0 + timedelta(hours=1)
    hland(con, sl, "oitw", now=t1)
    hland(con, sl, "oitw", now=t1 + timedelta(hours=1))           # nothing changed: no version
    assert rows(con, "SELECT WarehouseCode, InStock, valid_from, valid_to, valid_from_source "
                     "FROM sap_history.oitw ORDER BY 1, 3") == [
        ("01", Decimal("5.000000"), T0, t1, "landed"), ("01", Decimal("4.000000"), t1, None, "landed"),
        ("02", Decimal("7.000000"), T0, t1, "landed")]
    assert rows(con, "SELECT ItemCode, valid_from, valid_from_source FROM sap_history.oitm") == [
        ("SKU1", utc("2024-07-01T09:00:00"), "sap")]
    assert rows(con, "SELECT PriceList, valid_from FROM sap_history.itm1") == [
        (1, utc("2024-07-01T09:00:00"))]


def test_every_document_type_keeps_history_of_headers_lines_and_expenses(con, sl):
    for entity, table in (("DeliveryNotes", "odln"), ("Invoices", "oinv"), ("CreditNotes", "orin")):
        doc = order(1, "2024-07-01", "10:00:00")
        doc["DocumentAdditionalExpenses"] = [{"DocEntry": 1, "LineNum": 0, "ExpenseCode": 1,
                                              "LineTotal": Decimal("4.95")}]
        sl.entities[entity] = [doc]
        hland(con, sl, table)
        lines = {"odln": "dln1", "oinv": "inv1", "orin": "rin1"}[table]
        for t in (table, lines, lines[:3] + "3"):
            assert rows(con, f"SELECT min(valid_from), max(valid_from), count(*) FILTER "
                             f"(_is_current) > 0 FROM sap_history.{t}") == [
                (utc("2024-07-01T09:00:00"), utc("2024-07-01T09:00:00"), True)], t


def test_a_history_table_new_to_an_existing_warehouse_starts_with_every_stored_row(con, sl):
    sl.entities["Invoices"] = [order(i, "2024-07-01", f"10:0{i}:00") for i in range(1, 4)]
    hland(con, sl, "oinv")
    con.execute("DROP TABLE sap_history.oinv")       # as if history had never been kept for it
    con.execute("DROP TABLE sap_history.inv1")
    sl.entities["Invoices"][0]["DocTotal"] = Decimal("1.00")
    sl.entities["Invoices"][0]["UpdateTime"] = "12:00:00"
    t1 = T0 + timedelta(hours=1)
    hland(con, sl, "oinv", now=t1)
    assert rows(con, "SELECT DocEntry, _valid_from, valid_from FROM sap_history.oinv ORDER BY 1") == [
        (1, t1, utc("2024-07-01T11:00:00")), (2, T0, utc("2024-07-01T09:02:00")),
        (3, T0, utc("2024-07-01T09:03:00"))]
    assert rows(con, "SELECT count(*), count(valid_from) FROM sap_history.inv1") == [(9, 9)]


def _history(con) -> dict[str, list[tuple]]:
    out = {}
    for t in ("ocrd", "crd1", "ordr", "rdr1"):
        out[t] = rows(con, f"SELECT * EXCLUDE (_landed_at) FROM sap_history.{t} ORDER BY ALL")
    return out


def _two_syncs_with_edits(con, sl) -> None:
    sl.entities["BusinessPartners"] = [bp(f"C{i:03d}", "2024-07-01", "10:00:00") for i in range(1, 4)]
    sl.entities["Orders"] = [order(1, "2024-07-01", "10:00:00"), order(2, "2024-07-01", "10:30:00")]
    hland(con, sl, "ocrd")
    hland(con, sl, "ordr")
    sl.entities["BusinessPartners"][0].update(CardName="Renamed", UpdateDate="2024-07-02T00:00:00Z")
    sl.entities["BusinessPartners"][1].update(CardName="Skewed", UpdateDate="2024-06-20T00:00:00Z")
    gone = sl.entities["BusinessPartners"].pop(2)
    doc = sl.entities["Orders"][0]
    doc.update(UpdateDate="2024-07-02T00:00:00Z", UpdateTime="11:00:00", DocTotal=Decimal("5"))
    del doc["DocumentLines"][2]
    t1 = T0 + timedelta(hours=1)
    hland(con, sl, "ocrd", now=t1, full_refresh=True,
          settings=_ANY_SHARE().model_copy(update={"sap_ometria_timezone": LONDON}))
    hland(con, sl, "ordr", now=t1)
    sl.entities["BusinessPartners"].append(gone)
    hland(con, sl, "ocrd", now=t1 + timedelta(hours=1), deletion_scan=True)


def test_an_old_shape_history_is_migrated_in_place_keeping_every_version(con, sl, tmp_path):
    _two_syncs_with_edits(con, sl)
    expected = _history(con)
    versions = {t: len(v) for t, v in expected.items()}
    assert versions == {"ocrd": 6, "crd1": 8, "ordr": 3, "rdr1": 6}
    for t in expected:        # what a warehouse written before SAP's validity existed holds
        for col in ("valid_from", "valid_to", "valid_from_source"):
            con.execute(f"ALTER TABLE sap_history.{t} DROP COLUMN {col}")
    # the next landings (nothing changed in SAP) migrate; nothing is read again in full
    assert hland(con, sl, "ocrd", now=T0 + timedelta(hours=5)).read == "incremental"
    assert hland(con, sl, "ordr", now=T0 + timedelta(hours=5)).read == "incremental"
    assert _history(con) == expected
    assert overlaps(con, "ocrd", ["CardCode"]) == 0 and overlaps(con, "rdr1", ["DocEntry", "LineNum"]) == 0
