"""Service Layer reads behind a path-prefix reverse proxy, and reads that would never end
(next links that never repeat, a server trickling bytes). Loopback fakes only, small deadlines."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from faultkit import assert_nothing_lost, run_sync
from pydantic import SecretStr

from sap_ometria_assets.lib.sap.client import SapB1Client
from sap_ometria_assets.lib.sap.errors import SapB1Error
from sap_ometria_assets.lib.config.settings import get_settings

PREFIX = "/ServiceLayer"
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
        "host"}


@contextmanager
def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _prefix_proxy(upstream: str) -> type[BaseHTTPRequestHandler]:
    """A reverse proxy publishing `upstream` under `/ServiceLayer` (bodies passed unchanged, so
    the Service Layer's absolute-path next links `/b1s/v2/...` lack the prefix)."""
    seen: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        paths = seen

        def log_message(self, *args):  # noqa: D102
            pass

        def _forward(self) -> None:
            self.paths.append(self.path)
            if not self.path.startswith(PREFIX + "/"):
                body = b"<html><title>404 Not Found</title></html>"
                self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            length = int(self.headers.get("Content-Length") or 0)
            content = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            resp = httpx.request(self.command, upstream + self.path[len(PREFIX):],
                                 headers=headers, content=content, timeout=10)
            self.send_response(resp.status_code)
            for k, v in resp.headers.multi_items():
                if k.lower() not in _HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(resp.content)))
            self.end_headers()
            self.wfile.write(resp.content)

        do_GET = do_POST = _forward

    return Proxy


def test_a_sync_behind_a_path_prefix_proxy_follows_absolute_path_next_links(env, company,
                                                                             monkeypatch):
    env.sap.faults.next_link_style = "absolute_path"
    origin = env.sap.url.split("/b1s/")[0]
    handler = _prefix_proxy(origin)
    with _serve(handler) as proxy:
        monkeypatch.setenv("SAP_B1_SERVICE_LAYER_URL", f"{proxy}{PREFIX}/b1s/v2")
        get_settings(refresh=True)
        run = run_sync()
    assert run.success, run.failures
    assert handler.paths and all(p.startswith(PREFIX + "/") for p in handler.paths), [
        p for p in handler.paths if not p.startswith(PREFIX)][:3]
    assert any("%24skip=" in p or "$skip=" in p for p in handler.paths)  # it did page
    assert_nothing_lost(env.db, env.ometria, company)


@pytest.mark.parametrize("link", [
    "/b1s/v1/Orders?$skip=20",                                  # v1 absolute path
    "Orders?$skip=20",                                          # relative
    "https://sap.example:50000/ServiceLayer/b1s/v1/Orders?$skip=20",  # absolute, our host
])
def test_every_next_link_form_keeps_the_proxy_prefix(link):
    sl = SapB1Client("https://sap.example:50000/ServiceLayer/b1s/v1", "C", "u", SecretStr("p"))
    url = sl.resolve_next_link(link, {"$orderby": "DocEntry"})
    assert url.startswith("https://sap.example:50000/ServiceLayer/b1s/v1/Orders?"), url
    assert "skip=20" in url


def test_a_next_link_to_another_host_is_refused_naming_it():
    sl = SapB1Client("https://sap.example:50000/ServiceLayer/b1s/v1", "C", "u", SecretStr("p"))
    with pytest.raises(SapB1Error, match="evil.example"):
        sl.resolve_next_link("https://evil.example/b1s/v1/Orders?$skip=20", {})


class _Fake(BaseHTTPRequestHandler):
    """Login answers; every read answers an empty page linking to a $skip one further on."""

    trickle = False

    def log_message(self, *args):  # noqa: D102
        pass

    def _send(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.trickle:
            for i in range(len(body)):
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(0.1)
        else:
            self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(b'{"SessionId":"s1","Version":"1000","SessionTimeout":30}',
                   {"Set-Cookie": "B1SESSION=s1; path=/b1s"})

    def do_GET(self):  # noqa: N802
        skip = int(self.path.rsplit("skip=", 1)[1]) if "skip=" in self.path else 0
        self._send(b'{"value":[],"@odata.nextLink":"Orders?$skip=%d"}' % (skip + 20))


def test_next_links_that_never_repeat_over_empty_pages_stop_after_a_few_pages():
    with _serve(_Fake) as url, SapB1Client(url + "/b1s/v2", "C", "u", SecretStr("p"),
                                           max_empty_pages=3, sleep=lambda s: None) as sl:
        with pytest.raises(SapB1Error, match="3 pages in a row brought no records"):
            list(sl.pages("Orders"))
        assert sl.requests <= 1 + 3  # login + three pages, not thousands


def test_the_page_count_of_a_read_is_bounded():
    with _serve(_Fake) as url, SapB1Client(url + "/b1s/v2", "C", "u", SecretStr("p"),
                                           max_empty_pages=1000, max_pages=5,
                                           sleep=lambda s: None) as sl:
        with pytest.raises(SapB1Error, match="after 5 pages"):
            list(sl.pages("Orders"))
        with pytest.raises(SapB1Error, match="from its \\$count"):
            list(sl.pages("Orders", max_pages=2))


def test_a_server_trickling_bytes_is_cut_by_the_request_deadline():
    class Trickle(_Fake):
        trickle = True

    with _serve(Trickle) as url, SapB1Client(url + "/b1s/v2", "C", "u", SecretStr("p"),
                                             timeout_s=5, deadline_s=0.5, max_retries=1,
                                             sleep=lambda s: None) as sl:
        with pytest.raises(SapB1Error, match="request deadline"):
            sl.login()
