"""The Service Layer emulator over real HTTP: protocol, paging, query options, faults, v1/v2 shapes."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import polars as pl
import pytest

from sap_ometria_assets.emulators.sap_b1 import (
    SapB1Emulator,
    advance_demo_clock,
    ensure_embedded_sap,
    generate_company,
    read_demo_clock,
    stop_embedded_sap,
)
from sap_ometria_assets.lib.config.settings import get_settings

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "sap"
LOGIN = {"CompanyDB": "SBODEMOGB", "UserName": "manager", "Password": "demo-password"}
INCREMENTAL = "(UpdateDate gt '2026-10-31') or (UpdateDate eq '2026-10-31' and UpdateTime ge '10:15')"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def company():
    return generate_company(0.1, seed=42)


@pytest.fixture(scope="module")
def server(company):
    clock = FakeClock()
    with SapB1Emulator(company, clock=clock) as emu:
        emu.test_clock = clock
        yield emu


@pytest.fixture()
def emu(server, company):
    server.faults.clear()
    server.set_company(company)
    server.stats.reset()
    yield server
    server.faults.clear()


def _client(emu: SapB1Emulator, version: str = "v2") -> httpx.Client:
    client = httpx.Client(base_url=(emu.url if version == "v2" else emu.v1_url) + "/", timeout=10)
    r = client.post("Login", json=LOGIN)
    assert r.status_code == 200, r.text
    return client


def _follow(client: httpx.Client, url: str, page_size: int | None = None, key: str = "@odata.nextLink"):
    headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
    pages = []
    while url:
        r = client.get(url, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body)
        url = body.get(key)
        if url and url.startswith("/"):
            url = str(client.base_url.copy_with(path=url.split("?")[0], query=url.split("?", 1)[1].encode()))
    return pages


# -- login and sessions ------------------------------------------------------------------------------

def test_login_sets_both_cookies_and_answers_like_the_real_service_layer(emu):
    r = httpx.post(emu.url + "/Login", json=LOGIN)
    assert r.status_code == 200
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("B1SESSION="))
    assert "HttpOnly" in session
    assert "ROUTEID=.node1; path=/b1s" in cookies
    body = r.json()
    sample = json.loads((SAMPLES / "service_layer_v2_login_real.json").read_text())
    assert body.keys() == sample.keys()
    assert body["@odata.context"].endswith("/b1s/v2/$metadata#B1Sessions/$entity")
    assert body["SessionId"] == session.split(";")[0].split("=", 1)[1]
    assert body["SessionTimeout"] == 30 and isinstance(body["Version"], str)
    assert r.headers["OData-Version"] == "4.0"
    assert emu.stats.logins == 1


@pytest.mark.parametrize("field,value", [("Password", "wrong"), ("UserName", "nobody"), ("CompanyDB", "SBODEMOUS")])
def test_bad_credentials_fail_with_code_100000027(emu, field, value):
    r = httpx.post(emu.url + "/Login", json={**LOGIN, field: value})
    assert r.status_code == 401
    assert r.json() == {"error": {"code": "100000027", "message": "Login failed"}}
    assert "set-cookie" not in r.headers and emu.stats.failed_logins == 1


def test_every_request_needs_both_cookies(emu):
    client = _client(emu)
    expected = {"error": {"code": "301", "message": "Invalid session or session already timeout."}}
    assert client.get("Items", params={"$top": 1}).status_code == 200
    session_only = httpx.get(emu.url + "/Items", cookies={"B1SESSION": client.cookies["B1SESSION"]})
    assert session_only.status_code == 401 and session_only.json() == expected
    nothing = httpx.get(emu.url + "/Items")
    assert nothing.status_code == 401 and nothing.json() == expected
    assert httpx.post(emu.url + "/login", json=LOGIN).status_code == 401  # routes are case-sensitive


def test_logout_ends_the_session(emu):
    client = _client(emu)
    assert client.post("Logout").status_code == 204
    r = client.get("Orders")
    assert r.status_code == 401 and r.json()["error"]["code"] == "301"
    assert emu.stats.logouts == 1


def test_session_timeout_slides_with_use(emu):
    client = _client(emu)
    emu.test_clock.now += 29 * 60
    assert client.get("Warehouses").status_code == 200
    emu.test_clock.now += 29 * 60  # 58 minutes after login, 29 after the last request
    assert client.get("Warehouses").status_code == 200
    emu.test_clock.now += 31 * 60
    r = client.get("Warehouses")
    assert r.status_code == 401 and r.json()["error"]["code"] == "301"


# -- paging --------------------------------------------------------------------------------------------

def test_paging_with_next_links_returns_every_record_once(emu, company):
    client = _client(emu)
    pages = _follow(client, "BusinessPartners?$select=CardCode", page_size=7)
    codes = [rec["CardCode"] for p in pages for rec in p["value"]]
    assert len(pages) == -(-company.tables["OCRD"].height // 7) > 20
    assert sorted(codes) == sorted(company.tables["OCRD"]["CardCode"].to_list()) and len(set(codes)) == len(codes)
    r = client.get("BusinessPartners", headers={"Prefer": "odata.maxpagesize=7"})
    assert r.headers["Preference-Applied"] == "odata.maxpagesize=7"
    assert len(client.get("Orders").json()["value"]) == 20  # the default page size
    assert len(client.get("Orders", headers={"B1S-PageSize": "35"}).json()["value"]) == 35
    assert emu.stats.pages["BusinessPartners"] == len(pages) + 1


def test_next_link_keeps_the_filter_and_is_relative_by_default(emu, company):
    client = _client(emu)
    first = client.get("Orders", params={"$filter": "DocumentStatus eq 'bost_Open'", "$select": "DocEntry,DocumentStatus"},
                       headers={"Prefer": "odata.maxpagesize=10"}).json()
    link = first["@odata.nextLink"]
    assert link.startswith("Orders?") and "%24filter=" not in link and "$filter=" in link and "$skip=10" in link
    pages = [first] + _follow(client, link, page_size=10)
    got = [r["DocEntry"] for p in pages for r in p["value"]]
    expected = company.tables["ORDR"].filter(pl.col("DocumentStatus") == "bost_Open")["DocEntry"].to_list()
    assert got == expected and all(r["DocumentStatus"] == "bost_Open" for p in pages for r in p["value"])


@pytest.mark.parametrize("style", ["absolute_path", "absolute_url"])
def test_next_link_styles(emu, style):
    emu.faults.next_link_style = style
    client = _client(emu)
    link = client.get("Items", headers={"Prefer": "odata.maxpagesize=5"}).json()["@odata.nextLink"]
    prefix = "/b1s/v2/Items?" if style == "absolute_path" else emu.url + "/Items?"
    assert link.startswith(prefix) and "$skip=5" in link
    next_page = client.get(link if style == "absolute_url" else emu.url.split("/b1s")[0] + link,
                           headers={"Prefer": "odata.maxpagesize=5"})
    assert next_page.status_code == 200 and len(next_page.json()["value"]) == 5


# -- query options -----------------------------------------------------------------------------------

def _expected_incremental(frame: pl.DataFrame) -> list:
    minute = pl.col("UpdateTime").dt.hour().cast(pl.Int32) * 60 + pl.col("UpdateTime").dt.minute()
    return frame.filter((pl.col("UpdateDate") > dt.date(2026, 10, 31))
                        | ((pl.col("UpdateDate") == dt.date(2026, 10, 31)) & (minute >= 10 * 60 + 15)))


def test_incremental_filter_on_update_date_and_time(emu, company):
    client = _client(emu)
    pages = _follow(client, f"BusinessPartners?$filter={INCREMENTAL}&$select=CardCode,UpdateDate,UpdateTime", page_size=50)
    got = sorted(r["CardCode"] for p in pages for r in p["value"])
    expected = sorted(_expected_incremental(company.tables["OCRD"])["CardCode"].to_list())
    assert got == expected and got
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}T00:00:00Z", r["UpdateDate"]) for p in pages for r in p["value"])
    # Time literals count to the minute (SAP: only HH:MM is effective); seconds are ignored.
    with_seconds = client.get("BusinessPartners/$count", params={"$filter": INCREMENTAL.replace("'10:15'", "'10:15:59'")})
    assert int(with_seconds.text) == len(expected)
    bare = client.get("BusinessPartners/$count", params={"$filter": "UpdateDate ge 2026-10-31"})
    quoted = client.get("BusinessPartners/$count", params={"$filter": "UpdateDate ge '2026-10-31T00:00:00'"})
    since = company.tables["OCRD"].filter(pl.col("UpdateDate") >= dt.date(2026, 10, 31)).height
    assert int(bare.text) == int(quoted.text) == since


def test_filter_functions_enum_codes_and_null(emu, company):
    client = _client(emu)
    bp = company.tables["OCRD"]

    def count(flt: str, **headers) -> int:
        r = client.get("BusinessPartners/$count", params={"$filter": flt}, headers=headers)
        assert r.status_code == 200, r.text
        return int(r.text)

    assert count("CardType eq 'C'") == count("CardType eq 'cCustomer'") == (bp["CardType"] == "cCustomer").sum()
    assert count("EmailAddress eq null") == bp["EmailAddress"].is_null().sum()
    assert count("startswith(CardCode,'C0') and not (Frozen eq 'tYES')") == bp.filter(
        pl.col("CardCode").str.starts_with("C0") & (pl.col("Frozen") != "tYES")).height
    assert count("contains(EmailAddress,'@example.co.uk')") == count("substringof('@example.co.uk',EmailAddress)") > 0
    assert count("endswith(EmailAddress,'.')") >= 1
    assert count("CardName eq 'O''Brien'") == 0  # '' escapes a quote
    upper = count("contains(EmailAddress,'FAMILY')")
    assert upper < count("contains(EmailAddress,'FAMILY')", **{"B1S-CaseInsensitive": "true"})


def test_select_orderby_top_skip(emu, company):
    client = _client(emu)
    r = client.get("BusinessPartners", params={"$select": "CardCode,CardName", "$orderby": "CardName desc,CardCode",
                                                "$top": 5, "$skip": 3})
    body = r.json()
    assert "@odata.nextLink" not in body
    assert body["@odata.context"].endswith("$metadata#BusinessPartners(CardCode,CardName)")
    expected = company.tables["OCRD"].sort(["CardName", "CardCode"], descending=[True, False],
                                           nulls_last=[True, False]).slice(3, 5)
    assert [r["CardCode"] for r in body["value"]] == expected["CardCode"].to_list()
    assert all(set(rec) == {"@odata.etag", "CardCode", "CardName"} for rec in body["value"])
    lines = client.get("Orders", params={"$select": "DocEntry,DocumentLines", "$top": 2}).json()["value"]
    assert all(set(o) == {"@odata.etag", "DocEntry", "DocumentLines"} and o["DocumentLines"] for o in lines)
    assert all(line["DocEntry"] == o["DocEntry"] and "LineNum" in line for o in lines for line in o["DocumentLines"])
    count = client.get("Orders/$count", params={"$filter": "DocTotal gt 100"})
    assert int(count.text) == (company.tables["ORDR"]["DocTotal"] > 100).sum()


@pytest.mark.parametrize("params", [
    {"$filter": "DocTotal eq"}, {"$filter": "DocTotal gt 'abc'"}, {"$filter": "Nope eq 1"},
    {"$filter": "UpdateDate gt '2026-13-45'"}, {"$orderby": "Nope"}, {"$top": "-1"}, {"$select": "Nope"},
    {"$expand": "DocumentLines"}, {"$filter": "DocumentLines/ItemCode eq 'X'"},
])
def test_invalid_queries_answer_400_with_code_minus_1000(emu, params):
    r = _client(emu).get("Orders", params=params)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "-1000" and isinstance(err["message"], str) and err["message"]


def test_single_entities_by_key_and_not_found(emu, company):
    client = _client(emu)
    code = company.tables["OCRD"]["CardCode"][5]
    r = client.get(f"BusinessPartners('{code}')")
    assert r.status_code == 200 and r.json()["CardCode"] == code
    assert r.json()["@odata.context"].endswith("$metadata#BusinessPartners/$entity")
    assert r.headers["ETag"] == r.json()["@odata.etag"]
    order = client.get("Orders(7)").json()
    assert order["DocEntry"] == 7 and all(line["DocEntry"] == 7 for line in order["DocumentLines"])
    udf = client.get("UserFieldsMD(TableName='OCRD',FieldID=2)").json()
    assert udf["Name"] == "LoyaltyTier"
    missing = client.get("Orders(99999999)")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "-2028"
    unknown = client.get("Nonsense")
    assert unknown.status_code == 404 and set(unknown.json()["error"]) == {"code", "message"}


# -- faults ----------------------------------------------------------------------------------------------

def test_session_killed_mid_paging_gives_401_301_and_a_new_login_resumes(emu):
    client = _client(emu)
    emu.faults.expire_sessions_after(2)
    first = client.get("Orders", headers={"Prefer": "odata.maxpagesize=5"}).json()
    second = client.get(first["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=5"}).json()
    third = client.get(second["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=5"})
    assert third.status_code == 401
    assert third.json() == {"error": {"code": "301", "message": "Invalid session or session already timeout."}}
    assert client.post("Login", json=LOGIN).status_code == 200
    again = client.get(second["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=5"})
    assert again.status_code == 200 and again.json()["value"][0]["DocEntry"] == 11


def test_fail_next_answers_5xx_then_recovers(emu):
    client = _client(emu)
    emu.faults.fail_next(2, status=503)
    first, second, third = (client.get("Warehouses") for _ in range(3))
    assert first.status_code == second.status_code == 503 and "text/html" in first.headers["content-type"]
    assert third.status_code == 200
    emu.faults.fail_next(1, status=500)
    r = client.get("Warehouses")
    assert r.status_code == 500 and r.json()["error"]["code"] == "-1"
    emu.faults.fail_next(1, status=502, include_login=True)
    assert httpx.post(emu.url + "/Login", json=LOGIN).status_code == 502
    assert emu.stats.errors[503] == 2


def test_malformed_page_and_record(emu, company):
    client = _client(emu)
    emu.faults.malformed_page("Items", 1)
    ok = client.get("Items", headers={"Prefer": "odata.maxpagesize=5"})
    bad = client.get(ok.json()["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=5"})
    with pytest.raises(ValueError):
        json.loads(bad.content)
    retry = client.get(ok.json()["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=5"})
    assert len(retry.json()["value"]) == 5  # the fault fires once
    emu.faults.malformed_record("Orders", 3, "DocTotal", "12,50")
    emu.faults.malformed_record("Orders", 3, "UpdateDate", "2026-02-30T00:00:00Z")
    recs = client.get("Orders", params={"$top": 4}).json()["value"]
    assert recs[2]["DocTotal"] == "12,50" and recs[2]["UpdateDate"] == "2026-02-30T00:00:00Z"
    assert isinstance(recs[1]["DocTotal"], float)


def test_schema_change_drops_renames_adds_and_retypes(emu):
    client = _client(emu)
    emu.faults.schema_change("BusinessPartners", drop=["EmailAddress"], rename={"Cellular": "MobilePhone"},
                             add={"U_NewField": "x"}, retype={"GroupCode": "string"})
    rec = client.get("BusinessPartners", params={"$top": 1}).json()["value"][0]
    assert "EmailAddress" not in rec and "Cellular" not in rec and "MobilePhone" in rec
    assert rec["U_NewField"] == "x" and isinstance(rec["GroupCode"], str)
    r = client.get("BusinessPartners", params={"$filter": "EmailAddress eq 'x'"})
    assert r.status_code == 400  # a dropped property cannot be filtered either


def test_delay_slows_answers(emu):
    emu.faults.delay_s = 0.05
    client = _client(emu)
    r = client.get("Warehouses")
    assert r.status_code == 200 and r.elapsed.total_seconds() >= 0.05


# -- shapes -----------------------------------------------------------------------------------------------

def _json_type(value):
    return None if value is None else type(value)


def test_items_look_like_the_real_v2_sample(emu):
    sample = json.loads((SAMPLES / "service_layer_v2_items_real.json").read_text())
    body = _client(emu).get("Items", params={"$top": 5}).json()
    assert body["@odata.context"].endswith("/b1s/v2/$metadata#Items") and len(body["value"]) == 5
    real, ours = sample["value"][0], body["value"][0]
    common = (set(real) & set(ours)) - {"ItemPrices", "ItemWarehouseInfoCollection"}
    assert {"ItemCode", "ItemName", "ItemsGroupCode", "QuantityOnStock", "Valid", "UpdateDate", "UpdateTime",
            "CreateDate", "@odata.etag"} <= common
    for item in body["value"]:
        for name in common:
            if _json_type(real[name]) and _json_type(item[name]):
                assert _json_type(real[name]) is _json_type(item[name]), name
        assert re.fullmatch(r'W/"[0-9A-F]{40}"', item["@odata.etag"])
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T00:00:00Z", item["UpdateDate"])
        assert re.fullmatch(r"\d{2}:\d{2}:\d{2}", item["UpdateTime"])
        for coll in ("ItemPrices", "ItemWarehouseInfoCollection"):
            assert item[coll], coll
            mine = item[coll][0]
            theirs = real[coll][0]
            shared = set(mine) & set(theirs)
            assert shared, coll
            for name in shared:
                if _json_type(theirs[name]) and _json_type(mine[name]):
                    assert _json_type(theirs[name]) is _json_type(mine[name]), (coll, name)
            assert set(mine) - set(theirs) <= {"Price", "Currency"} | set(theirs)
        assert "ItemCode" not in item["ItemPrices"][0]
        assert item["ItemWarehouseInfoCollection"][0]["ItemCode"] == item["ItemCode"]


def test_v1_shapes(emu, company):
    client = _client(emu, "v1")
    page = client.get("Orders", params={"$select": "DocEntry,DocDate,DocTime"}, headers={"Prefer": "odata.maxpagesize=3"}).json()
    assert page["odata.metadata"].endswith("/b1s/v1/$metadata#Orders(DocEntry,DocDate,DocTime)")
    assert page["odata.nextLink"].startswith("/b1s/v1/Orders?") and "$skip=3" in page["odata.nextLink"]
    rec = page["value"][0]
    assert "odata.etag" in rec and re.fullmatch(r"\d{4}-\d{2}-\d{2}", rec["DocDate"])
    counted = client.get("Orders", params={"$inlinecount": "allpages", "$top": 1}).json()
    assert counted["odata.count"] == str(company.tables["ORDR"].height)
    err = client.get("Orders", params={"$filter": "nonsense eq"}).json()
    assert err["error"]["code"] == -1000 and err["error"]["message"]["lang"] == "en-us"
    expired = httpx.get(emu.v1_url + "/Orders")
    assert expired.json() == {"error": {"code": 301, "message": {
        "lang": "en-us", "value": "Invalid session or session already timeout."}}}


def test_advance_while_running_serves_new_and_edited_records(emu, company):
    client = _client(emu)
    flt = "(UpdateDate gt '2026-11-01') or (UpdateDate eq '2026-11-01' and UpdateTime ge '09:00')"
    before = int(client.get("Orders/$count", params={"$filter": flt}).text)
    emu.advance(1)
    after = _follow(client, f"Orders?$filter={flt}&$select=DocEntry,UpdateTime", page_size=3)
    got = [r for p in after for r in p["value"]]
    assert before == 0 and len(got) >= 3
    assert all("09:00:00" <= r["UpdateTime"] < "10:00:00" for r in got)
    assert emu.stats.records_served["Orders"] == len(got)


# -- CLI and embedded ----------------------------------------------------------------------------------

def test_cli_serves_the_demo_company_until_stopped():
    proc = subprocess.Popen(
        [sys.executable, "-m", "sap_ometria_assets.emulators.sap_b1.server", "--port", "0", "--scale", "0.05",
         "--admin"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"(http://\S+/b1s/v2)", line).group(1)
        client = httpx.Client(base_url=url + "/", timeout=10)
        assert client.post("Login", json=LOGIN).status_code == 200
        assert len(client.get("Warehouses").json()["value"]) == 4
        admin = url.replace("/b1s/v2", "/_emulator")
        assert httpx.post(admin + "/faults", json={"fail_next": {"n": 1, "status": 503}}).status_code == 200
        assert client.get("Warehouses").status_code == 503
        assert httpx.get(admin + "/stats").json()["logins"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_embedded_demo_company_follows_the_demo_clock(monkeypatch):
    monkeypatch.setenv("SAP_OMETRIA_DEMO_SCALE", "0.05")
    settings = get_settings(refresh=True)
    try:
        sap = ensure_embedded_sap(settings)
        assert sap.url.startswith("http://127.0.0.1:") and sap.url.endswith("/b1s/v2")
        assert "demo-password" not in repr(sap)
        client = httpx.Client(base_url=sap.url + "/")
        login = {"CompanyDB": sap.company_db, "UserName": sap.username, "Password": sap.password.get_secret_value()}
        assert client.post("Login", json=login).status_code == 200
        assert sap.ticks == 0 and read_demo_clock(settings) == 0
        assert advance_demo_clock(settings, 2) == 2
        assert json.loads((settings.demo_dir / "sap_clock.json").read_text())["ticks"] == 2
        again = ensure_embedded_sap(settings)
        assert again.url == sap.url and again.ticks == 2  # same emulator, advanced in place
        n = client.get("BusinessPartners/$count", params={"$filter": "UpdateDate ge '2026-11-01' and UpdateTime ge '09:00'"})
        assert int(n.text) > 0
    finally:
        stop_embedded_sap()


def test_metadata_describes_entity_sets_with_their_udfs(emu):
    r = _client(emu).get("$metadata")
    assert r.status_code == 200 and r.text.startswith("<?xml")
    assert '<EntitySet Name="Orders" EntityType="SAPB1.Document"/>' in r.text
    assert '<Property Name="U_LoyaltyTier" Type="Edm.String"/>' in r.text
    assert '<Property Name="UpdateDate" Type="Edm.DateTimeOffset"/>' in r.text
    assert '<Property Name="UpdateTime" Type="Edm.TimeOfDay"/>' in r.text


def test_filter_compiler_precedence_literals_and_errors():
    from sap_ometria_assets.emulators.sap_b1.odata import ODataError, compile_filter, schema_resolver

    frame = pl.DataFrame({
        "Name": ["O'Brien", "Smith", None, "Jones"],
        "N": [1, 2, 3, 4],
        "D": [dt.date(2026, 10, 30), dt.date(2026, 10, 31), dt.date(2026, 10, 31), dt.date(2026, 11, 1)],
        "T": [dt.time(10, 15, 59), dt.time(10, 14, 59), dt.time(10, 15, 0), dt.time(0, 0)],
    })
    resolve = schema_resolver(frame.schema)

    def rows(text: str) -> list[int]:
        return frame.filter(compile_filter(text, resolve))["N"].to_list()

    assert rows("Name eq 'O''Brien'") == [1]
    assert rows("N eq 1 or N eq 2 and N eq 3") == [1]          # and binds tighter than or
    assert rows("(N eq 1 or N eq 2) and N eq 2") == [2]
    assert rows("not (N gt 2)") == [1, 2]
    assert rows("Name ne 'Smith'") == [1, 4]                     # null is neither equal nor unequal
    assert rows("Name eq null") == [3]
    assert rows("D eq '2026-10-31'") == rows("D eq 2026-10-31") == rows("D eq '20261031'") == [2, 3]
    assert rows("D eq datetime'2026-10-31T23:59:59'") == [2, 3]  # the time part of a date literal is ignored
    assert rows("T ge '10:15'") == rows("T ge '10:15:30'") == rows("T ge '1015'") == [1, 3]
    assert rows("2 lt N") == [3, 4]
    for bad in ("N eq", "N eq 'x'", "Nope eq 1", "D gt 'soon'", "T lt '25:00'", "startswith(N,'1')",
                "N eq 1 N eq 2", "Name EQ 'x'", "(N eq 1"):
        with pytest.raises(ODataError):
            rows(bad)
