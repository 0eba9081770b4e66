"""SAP B1 Service Layer client: session, paging, retries, errors, secrets, TLS."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess

import httpx
import pytest
from pydantic import SecretStr

from sap_ometria_assets.lib.sap.client import SapB1Client
from sap_ometria_assets.lib.sap.errors import SapB1Error, parse_error_body
from sap_ometria_assets.lib.sap.paging import find_next_link, tail_next_link
from sap_ometria_assets.defs.resources import SapB1Resource
from sap_ometria_assets.lib.config.settings import get_settings

PASSWORD = "Pa55-w0rd-SECRET!"


def _orders(n: int) -> list[dict]:
    return [
        {"DocEntry": i, "DocNum": 5000 + i, "CardCode": f"C{i % 7:03d}",
         "DocumentStatus": "bost_Open" if i % 3 else "bost_Close",
         "UpdateDate": "2024-03-01T00:00:00Z", "UpdateTime": "10:00:00"}
        for i in range(1, n + 1)
    ]


@pytest.fixture
def sleeps() -> list[float]:
    return []


def _client(fake, sleeps, **kwargs) -> SapB1Client:
    kwargs.setdefault("page_size", 10)
    return SapB1Client(fake.base_url, fake.company, fake.username, SecretStr(fake.password),
                       transport=fake.transport(), sleep=sleeps.append, **kwargs)


def _rows(pages: list[bytes]) -> list[dict]:
    return [row for page in pages for row in json.loads(page)["value"]]


def test_login_sends_credentials_and_both_cookies_then_logs_out(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(3)})
    with _client(fake, sleeps) as sl:
        assert not sl.is_logged_in  # lazy: no licence session until something is read
        pages = list(sl.iter_pages("Orders", orderby="DocEntry"))
        assert sl.login_info and sl.login_info.version == "1000280"
        assert sl.login_info.session_timeout_min == 30
    assert [r["DocEntry"] for r in _rows(pages)] == [1, 2, 3]
    login, read, logout = fake.requests
    assert (login.method, login.path) == ("POST", "/b1s/v2/Login")
    assert "B1SESSION=" in read.cookie and "ROUTEID=.node1" in read.cookie
    assert (logout.method, logout.path) == ("POST", "/b1s/v2/Logout")
    assert "B1SESSION=" in logout.cookie
    assert fake.logins == 1 and fake.logouts == 1 and not fake.sessions


def test_paging_across_many_pages_with_prefer_header_and_stable_order(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": list(reversed(_orders(95)))})
    with _client(fake, sleeps, page_size=10) as sl:
        pages = list(sl.iter_pages("Orders", orderby="DocEntry"))
    assert len(pages) == 10
    assert [r["DocEntry"] for r in _rows(pages)] == list(range(1, 96))
    reads = [r for r in fake.requests if r.method == "GET"]
    assert all(r.prefer == "odata.maxpagesize=10" for r in reads)
    assert all(r.query.get("$orderby") == "DocEntry" for r in reads)
    assert fake.logins == 1  # one session for the whole read


def test_session_expiring_in_the_middle_of_paging_logs_in_again_and_loses_nothing(
        make_fake_sl, sleeps, caplog):
    fake = make_fake_sl({"Orders": _orders(60)})
    fake.expire_after = 3  # the session dies after the third page
    with caplog.at_level(logging.INFO), _client(fake, sleeps, page_size=10) as sl:
        pages = list(sl.iter_pages("Orders", orderby="DocEntry"))
    assert [r["DocEntry"] for r in _rows(pages)] == list(range(1, 61))
    assert fake.logins == 2
    assert "session expired" in caplog.text
    rejected = [r for r in fake.requests if r.method == "GET"]
    # page 4 was asked twice: once with the dead session, once with the new one
    assert [r.query.get("$skip") for r in rejected].count("30") == 2


def test_session_rejected_again_right_after_relogin_is_a_clear_error(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(5)})
    with _client(fake, sleeps) as sl:
        sl.login()
        fake.sessions.clear()
        original = fake._login

        def login_then_forget(body):
            status, headers, content = original(body)
            fake.sessions.clear()
            return status, headers, content

        fake._login = login_then_forget
        with pytest.raises(SapB1Error) as err:
            list(sl.iter_pages("Orders"))
    assert err.value.http_status == 401 and err.value.sap_code == "301"
    assert "rejected a fresh session" in str(err.value)


def test_5xx_is_retried_with_growing_backoff(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(25)})
    fake.fail_next = [503, 502, 500]
    with _client(fake, sleeps, max_retries=4) as sl:
        pages = list(sl.iter_pages("Orders", orderby="DocEntry"))
    assert len(_rows(pages)) == 25
    assert len(sleeps) == 3
    assert sleeps[0] < 2.0 and sleeps[2] >= 2.0  # 0.5 * 2^n plus jitter


def test_5xx_beyond_the_retry_budget_raises_with_status_and_sl_message(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(5)})
    fake.fail_next = [503] * 10
    with _client(fake, sleeps, max_retries=2) as sl, pytest.raises(SapB1Error) as err:
        list(sl.iter_pages("Orders"))
    assert err.value.http_status == 503
    assert "Internal error (-1) occurred" in str(err.value)
    assert "3 attempts" in str(err.value)
    assert len(sleeps) == 2


def test_timeouts_are_retried(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(5)})
    fake.timeouts_next = 2
    with _client(fake, sleeps) as sl:
        assert len(_rows(list(sl.iter_pages("Orders")))) == 5
    assert len(sleeps) == 2


def test_other_4xx_raise_at_once_with_sap_code_and_message(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(5)})
    with _client(fake, sleeps) as sl, pytest.raises(SapB1Error) as err:
        list(sl.iter_pages("Ordres"))
    assert err.value.http_status == 404
    assert err.value.sap_code == "-2028"
    assert "Resource not found for the segment 'Ordres'" in str(err.value)
    assert sleeps == []  # a 404 is not worth retrying


def test_bad_credentials_fail_once_with_the_sl_message_and_no_password(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(5)})
    with SapB1Client(fake.base_url, fake.company, fake.username, SecretStr("wrong-" + PASSWORD),
                     transport=fake.transport(), sleep=sleeps.append) as sl, \
            pytest.raises(SapB1Error) as err:
        list(sl.iter_pages("Orders"))
    assert err.value.sap_code == "100000027" and "Login failed" in str(err.value)
    assert PASSWORD not in str(err.value) and PASSWORD not in repr(err.value)
    assert [r.path for r in fake.requests] == ["/b1s/v2/Login"]  # not hammered


def test_password_and_session_never_appear_in_logs_errors_or_reprs(make_fake_sl, sleeps, caplog):
    fake = make_fake_sl({"Orders": _orders(30)})
    fake.expire_after = 1
    fake.fail_next = [503]
    with caplog.at_level(logging.DEBUG):
        with _client(fake, sleeps) as sl:
            list(sl.iter_pages("Orders"))
            text = repr(sl) + str(sl)
            fake.fail_next = [500] * 10
            with pytest.raises(SapB1Error) as err:
                list(sl.iter_pages("Orders"))
        text += str(err.value) + repr(err.value)
    sessions = [r.cookie.split("B1SESSION=")[1].split(";")[0] for r in fake.requests
                if "B1SESSION=" in r.cookie]
    assert sessions  # the sessions did exist
    for secret in [PASSWORD, *sessions]:
        assert secret not in caplog.text
        assert secret not in text
        for record in caplog.records:
            assert secret not in str(record.args)


def test_a_server_message_echoing_the_password_is_scrubbed(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(5)}, password="something-else")
    original = fake._error
    fake._error = lambda status, code, message: original(status, code, f"bad password {PASSWORD}")
    with SapB1Client(fake.base_url, fake.company, fake.username, SecretStr(PASSWORD),
                     transport=fake.transport(), sleep=sleeps.append) as sl, \
            pytest.raises(SapB1Error) as err:
        sl.login()
    assert PASSWORD not in str(err.value) and "***" in str(err.value)


@pytest.mark.parametrize("form", ["relative", "absolute_path", "absolute_url", "bare"])
def test_every_next_link_form_is_followed_and_our_filter_kept(make_fake_sl, sleeps, form):
    fake = make_fake_sl({"Orders": _orders(50)}, next_link=form)
    flt = "DocumentStatus eq 'bost_Open'"
    with _client(fake, sleeps, page_size=7) as sl:
        pages = list(sl.iter_pages("Orders", filter=flt, select="DocEntry,DocumentStatus",
                                   orderby="DocEntry"))
    rows = _rows(pages)
    assert [r["DocEntry"] for r in rows] == [i for i in range(1, 51) if i % 3]
    assert all(set(r) == {"DocEntry", "DocumentStatus"} for r in rows)
    reads = [r for r in fake.requests if r.method == "GET"]
    assert len(reads) == len(pages) > 1
    for r in reads:  # "bare" links drop everything but $skip: ours are re-applied
        assert r.path == "/b1s/v2/Orders"
        assert (r.query["$filter"], r.query["$select"], r.query["$orderby"]) == (
            flt, "DocEntry,DocumentStatus", "DocEntry")


def test_v1_service_layer_is_read_too(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(23)}, version="v1")
    with _client(fake, sleeps, page_size=10) as sl:
        pages = list(sl.iter_pages("Orders", orderby="DocEntry"))
        with pytest.raises(SapB1Error) as err:
            list(sl.iter_pages("Nope"))
    assert b'"odata.nextLink"' in pages[0]
    assert len(_rows(pages)) == 23
    assert err.value.sap_code == "-2028" and "Nope" in str(err.value)


def test_error_body_shapes():
    v1 = b'{"error":{"code":301,"message":{"lang":"en-us","value":"Invalid session."}}}'
    v2 = b'{"error":{"code":"-2039","message":"Another user modified","details":[{"code":"","message":"ETag"}]}}'
    assert parse_error_body(v1) == ("301", "Invalid session.")
    assert parse_error_body(v2) == ("-2039", "Another user modified; ETag")
    assert parse_error_body(b"<html>proxy error</html>") == (None, "<html>proxy error</html>")


def test_malformed_page_is_fetched_again(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(30)})
    fake.malformed_next = 2
    with _client(fake, sleeps) as sl:
        assert [r["DocEntry"] for r in _rows(list(sl.iter_pages("Orders", orderby="DocEntry")))] \
            == list(range(1, 31))


def test_persistently_malformed_page_names_entity_set_and_page(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(30)})
    with _client(fake, sleeps, max_page_retries=2) as sl:
        pages = sl.iter_pages("Orders", orderby="DocEntry")
        next(pages)
        fake.malformed_next = 5
        with pytest.raises(SapB1Error) as err:
            next(pages)
    message = str(err.value)
    assert "Orders" in message and "page 2" in message and "3 attempts" in message


def test_next_link_found_without_full_parse_and_not_fooled_by_values():
    tricky = (b'{"@odata.context":"x","value":[{"Remarks":"see \\"@odata.nextLink\\": \\"no\\""},'
              b'{"Remarks":"@odata.nextLink"}],"@odata.nextLink":"Orders?$skip=20"}')
    assert json.loads(tricky)["@odata.nextLink"] == "Orders?$skip=20"
    assert find_next_link(tricky) == "Orders?$skip=20"
    only_value = b'{"value":[{"Remarks":"@odata.nextLink"}]}'
    assert find_next_link(only_value) is None
    v1 = b'{"odata.metadata":"x","value":[],"odata.nextLink":"/b1s/v1/Orders?$skip=20"}'
    assert find_next_link(v1) == "/b1s/v1/Orders?$skip=20"
    spaced = b'{"value" : [ ] ,\n\t"@odata.nextLink" : "Orders?$filter=A%20eq%201&$skip=5"\n}'
    assert find_next_link(spaced) == "Orders?$filter=A%20eq%201&$skip=5"
    assert find_next_link(b'{"value":[],"@odata.nextLink":null}') is None


def test_a_page_cut_anywhere_never_passes_the_end_check():
    """Pages are not parsed whole on the common path: their end (next link, then `}`) is what
    proves they arrived whole. No prefix of a page, whatever its values hold, passes that check."""
    page = json.dumps({
        "@odata.context": "$metadata#Orders",
        "value": [{"DocEntry": 1, "Remarks": "x\\"},
                  {"DocEntry": 2, "Remarks": 'ends "@odata.nextLink":"Orders?$skip=9"}'},
                  {"DocEntry": 3, "Nested": {"@odata.nextLink": "no"}, "Lines": [{"A": 1}],
                   "Lines@odata.nextLink": "Orders(3)/Lines?$skip=1"}],
        "@odata.nextLink": "Orders?$skip=3&$filter=A%20eq%20'b'",
    }).encode() + b"\n"
    assert json.loads(page)["@odata.nextLink"] == tail_next_link(page) == find_next_link(page)
    for cut in range(len(page.rstrip())):
        assert tail_next_link(page[:cut]) is None, page[:cut]
    v1 = b'{"odata.metadata":"x","value":[] , "odata.nextLink" : "/b1s/v1/Orders?$skip=20" }'
    assert tail_next_link(v1) == "/b1s/v1/Orders?$skip=20"
    # a last page (no link) is left to the full validation
    assert tail_next_link(b'{"value":[{"A":"@odata.nextLink"}]}') is None


def _damage_middle(body: bytes) -> bytes:
    """Break the JSON between the page's intact ends (both ends still look right)."""
    cut = len(body) // 2
    return body[:cut] + b"\x00}{" + body[cut:]


class _Tamper(httpx.BaseTransport):
    """Wraps a fake SL transport; `damage(request_no, request, body) -> body` edits data pages."""

    def __init__(self, inner: httpx.BaseTransport, damage) -> None:
        self.inner, self.damage, self.count = inner, damage, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        if request.method != "GET" or resp.status_code != 200:
            return resp
        self.count += 1
        body = self.damage(self.count, request, resp.read())
        return httpx.Response(resp.status_code, headers=resp.headers, content=body)


def test_refetch_validates_a_page_whole_and_fetches_it_again_until_sound(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(30)})
    bad_on = {2, 4, 5}  # request 2 (page 2) damaged; its re-fetches 4 and 5 too, 6 is sound
    tamper = _Tamper(fake.transport(), lambda n, req, body: _damage_middle(body) if n in bad_on else body)
    with SapB1Client(fake.base_url, fake.company, fake.username, SecretStr(fake.password),
                     transport=tamper, page_size=10, sleep=sleeps.append) as sl:
        pages = list(sl.pages("Orders", orderby="DocEntry"))
        assert [p.number for p in pages] == [1, 2, 3]
        assert sl.page_problem(pages[1].body).startswith("the body is not valid JSON")
        again = sl.refetch(pages[1])
        assert again.number == 2 and not sl.page_problem(again.body)
        assert [r["DocEntry"] for r in json.loads(again.body)["value"]] == list(range(11, 21))
        assert len(sleeps) == 2  # two damaged re-fetches, with backoff between
        bad_on.update(range(7, 20))
        with pytest.raises(SapB1Error) as err:
            sl.refetch(pages[2])
    assert "Orders: page 3" in str(err.value) and "4 attempts" in str(err.value)


def test_count(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(40)})
    with _client(fake, sleeps) as sl:
        assert sl.count("Orders") == 40
        assert sl.count("Orders", "DocumentStatus eq 'bost_Close'") == 13


def test_a_link_back_to_a_page_already_read_stops_instead_of_looping(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(30)})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Login"):
            return httpx.Response(200, headers=[("Set-Cookie", "B1SESSION=abcd"),
                                                ("Set-Cookie", "ROUTEID=.node1")], json={})
        return httpx.Response(200, json={"value": [], "@odata.nextLink": "Orders?$skip=0"})

    with SapB1Client(fake.base_url, "C", "U", SecretStr(PASSWORD), sleep=sleeps.append,
                     transport=httpx.MockTransport(handler)) as sl, pytest.raises(SapB1Error) as err:
        list(sl.iter_pages("Orders"))
    assert "links back" in str(err.value)


def _self_signed(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "sl.crt", tmp_path / "sl.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


def test_tls_verified_by_default_and_ca_bundle_setting_trusts_a_self_signed_sl(
        make_fake_sl, sleeps, tmp_path, monkeypatch):
    cert, key = _self_signed(tmp_path)
    fake = make_fake_sl({"Orders": _orders(3)})
    with fake.serve(tls=(cert, key)) as url:
        monkeypatch.setenv("SAP_B1_SERVICE_LAYER_URL", url)
        monkeypatch.setenv("SAP_B1_PASSWORD", PASSWORD)
        monkeypatch.setenv("SAP_B1_MAX_RETRIES", "0")
        untrusted = SapB1Client.from_settings(get_settings(refresh=True), sleep=sleeps.append)
        with untrusted, pytest.raises(SapB1Error) as err:
            list(untrusted.iter_pages("Orders"))
        assert "connection error" in str(err.value)
        monkeypatch.setenv("SAP_B1_CA_BUNDLE", cert)
        with SapB1Client.from_settings(get_settings(refresh=True)) as trusted:
            assert len(_rows(list(trusted.iter_pages("Orders")))) == 3


def test_a_ca_bundle_that_cannot_be_read_is_named(make_fake_sl, tmp_path, monkeypatch):
    monkeypatch.setenv("SAP_B1_SERVICE_LAYER_URL", "https://sap.example.com:50000/b1s/v2")
    monkeypatch.setenv("SAP_B1_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="SAP_B1_CA_BUNDLE"):
        SapB1Client.from_settings(get_settings(refresh=True))


def test_a_route_re_pinned_by_the_load_balancer_is_followed(make_fake_sl, sleeps):
    fake = make_fake_sl({"Orders": _orders(30)})
    original = fake._page

    def repin(*args):
        fake.route = ".node2"  # the session moved to another member, which says so
        status, headers, body = original(*args)
        return status, [*headers, ("Set-Cookie", "ROUTEID=.node2; path=/b1s")], body

    with _client(fake, sleeps) as sl:
        pages = sl.iter_pages("Orders", orderby="DocEntry")
        next(pages)
        fake._page = repin
        next(pages)
        fake._page = original
        assert len(_rows(list(pages))) == 10
    assert "ROUTEID=.node1" in fake.requests[1].cookie
    assert "ROUTEID=.node2" in fake.requests[3].cookie
    assert fake.logins == 1  # followed, not lost


def test_resource_reuses_one_session_and_logs_out_at_teardown(make_fake_sl, monkeypatch):
    fake = make_fake_sl({"Orders": _orders(12)})
    with fake.serve() as url:
        monkeypatch.setenv("SAP_B1_PASSWORD", PASSWORD)
        get_settings(refresh=True)
        resource = SapB1Resource(service_layer_url=url, page_size=5)
        with resource.client() as first:
            assert len(_rows(list(first.iter_pages("Orders")))) == 12
        with resource.client() as second:
            assert second is first
            assert second.count("Orders") == 12
        assert fake.logins == 1 and fake.logouts == 0
        resource.close()
        assert fake.logouts == 1
        assert "Pa55" not in repr(resource)
