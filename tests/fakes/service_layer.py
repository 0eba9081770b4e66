"""A small, protocol-faithful SAP B1 Service Layer for unit tests, independent of the demo emulator.

Login/Logout with the B1SESSION and ROUTEID cookies, `$filter/$select/$orderby/$skip/$top`,
`Prefer: odata.maxpagesize`, next links, v1 and v2 shapes, `$count`, with switchable faults. It
serves through `httpx.MockTransport` (`fake.transport()`) or real HTTP on 127.0.0.1
(`fake.serve()`). It has its own small OData reader on purpose: a fake written apart from
`sap_ometria_assets/emulators/sap_b1` catches the client relying on the emulator's conveniences.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

FAKE_PASSWORD = "Pa55-w0rd-SECRET!"
FAKE_SESSION = "0f1e2d3c-SESSION-SECRET-4b5a"


def _dumps(obj: Any) -> bytes:
    """JSON with Decimal written as exact number literals (as SL writes Num(19,6) values)."""

    def walk(o: Any) -> Any:
        if isinstance(o, Decimal):
            return f"\x00DEC:{o}\x00"
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        return o

    text = json.dumps(walk(obj), ensure_ascii=False)
    return re.sub(r'"\\u0000DEC:([^"\\]*)\\u0000"', r"\1", text).encode("utf-8")


_TOKEN = re.compile(r"\s*(?:(\()|(\))|('(?:[^']|'')*')|(-?\d+(?:\.\d+)?)|([A-Za-z_][\w/]*))")


class _Filter:
    """A tiny OData $filter evaluator: and/or/not, parentheses, eq ne gt ge lt le."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, Any]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                raise ValueError(f"cannot parse $filter near {text[pos:pos + 20]!r}")
            pos = m.end()
            if m.group(1):
                self.tokens.append(("(", None))
            elif m.group(2):
                self.tokens.append((")", None))
            elif m.group(3):
                self.tokens.append(("lit", m.group(3)[1:-1].replace("''", "'")))
            elif m.group(4):
                self.tokens.append(("lit", Decimal(m.group(4))))
            else:
                self.tokens.append(("word", m.group(5)))
        self.i = 0
        self.tree = self._or()

    def _peek(self, word: str) -> bool:
        return self.i < len(self.tokens) and self.tokens[self.i] == ("word", word)

    def _or(self):
        left = self._and()
        while self._peek("or"):
            self.i += 1
            left = ("or", left, self._and())
        return left

    def _and(self):
        left = self._not()
        while self._peek("and"):
            self.i += 1
            left = ("and", left, self._not())
        return left

    def _not(self):
        if self._peek("not"):
            self.i += 1
            return ("not", self._not())
        if self.tokens[self.i][0] == "(":
            self.i += 1
            inner = self._or()
            assert self.tokens[self.i][0] == ")"
            self.i += 1
            return inner
        prop = self.tokens[self.i][1]
        op = self.tokens[self.i + 1][1]
        value = self.tokens[self.i + 2][1]
        self.i += 3
        return ("cmp", prop, op, value)

    def __call__(self, row: dict) -> bool:
        return self._eval(self.tree, row)

    def _eval(self, node, row) -> bool:
        kind = node[0]
        if kind == "or":
            return self._eval(node[1], row) or self._eval(node[2], row)
        if kind == "and":
            return self._eval(node[1], row) and self._eval(node[2], row)
        if kind == "not":
            return not self._eval(node[1], row)
        _, prop, op, lit = node
        value = row.get(prop)
        if value is None:
            return op == "ne"
        if isinstance(lit, str) and isinstance(value, str):
            if re.match(r"\d{4}-\d{2}-\d{2}", value) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", lit):
                value = value[:10]
            elif re.fullmatch(r"\d{2}:\d{2}", lit) and re.fullmatch(r"\d{2}:\d{2}:\d{2}", value):
                lit = lit + ":00"
        elif isinstance(lit, Decimal):
            value = Decimal(str(value))
        return {
            "eq": value == lit, "ne": value != lit, "gt": value > lit, "ge": value >= lit,
            "lt": value < lit, "le": value <= lit,
        }[op]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    cookie: str
    prefer: str


class FakeServiceLayer:
    """In-memory Service Layer over `entities` (entity set -> list of property dicts)."""

    def __init__(
        self,
        entities: dict[str, list[dict]] | None = None,
        *,
        version: str = "v2",
        next_link: str = "relative",          # relative | absolute_path | absolute_url | bare
        default_page_size: int = 20,
        max_page_size: int | None = None,
        company: str = "SBODEMOGB",
        username: str = "manager",
        password: str = FAKE_PASSWORD,
    ) -> None:
        self.entities = entities or {}
        self.version = version
        self.next_link = next_link
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        self.company, self.username, self.password = company, username, password
        self.root = f"/b1s/{version}"
        self.sessions: set[str] = set()
        self.requests: list[Recorded] = []
        self.logins = 0
        self.logouts = 0
        # faults
        self.fail_next: list[int] = []        # statuses for the next data requests
        self.expire_after: int | None = None  # drop every session after N more data requests
        self.malformed_next = 0               # next N data pages are cut short
        self.timeouts_next = 0                # next N data requests time out (MockTransport)
        self.host = "sap-server.example.com:50000"
        self.route = ".node1"                 # the load-balancer member holding the sessions
        self._lock = threading.Lock()
        self._session_counter = 0

    # -- protocol ------------------------------------------------------------------------------
    def _error(self, status: int, code: int | str, message: str) -> tuple[int, list, bytes]:
        if self.version == "v1":
            body = {"error": {"code": int(code), "message": {"lang": "en-us", "value": message}}}
        else:
            body = {"error": {"code": str(code), "message": message}}
        return status, [("Content-Type", "application/json")], _dumps(body)

    def _authorised(self, cookie: str) -> bool:
        jar = dict(part.strip().split("=", 1) for part in cookie.split(";") if "=" in part)
        return jar.get("B1SESSION") in self.sessions and jar.get("ROUTEID") == self.route

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, list, bytes]:
        parts = urlsplit(target)
        path = parts.path
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        cookie = headers.get("cookie", "")
        with self._lock:
            self.requests.append(Recorded(method, path, query, cookie, headers.get("prefer", "")))
            if not path.startswith(self.root + "/"):
                return self._error(404, -1, f"unknown path {path}")
            name = path[len(self.root) + 1:]
            if method == "POST" and name == "Login":
                return self._login(body)
            if method == "POST" and name == "Logout":
                if self._authorised(cookie):
                    self.sessions.discard(self._session_of(cookie))
                    self.logouts += 1
                return 204, [], b""
            if method != "GET":
                return self._error(405, -5006, "not supported")
            if self.timeouts_next:
                self.timeouts_next -= 1
                raise httpx.ReadTimeout("read timed out")
            if self.fail_next:
                status = self.fail_next.pop(0)
                return self._error(status, -1, "Internal error (-1) occurred")
            if not self._authorised(cookie):
                return self._error(401, 301, "Invalid session or session already timeout.")
            if self.expire_after is not None:
                if self.expire_after <= 0:
                    self.sessions.clear()
                    self.expire_after = None
                    return self._error(401, 301, "Invalid session or session already timeout.")
                self.expire_after -= 1
            if name.endswith("/$count"):
                rows = self._rows(name[: -len("/$count")], query)
                return 200, [("Content-Type", "text/plain")], str(len(rows)).encode()
            return self._page(name, query, headers)

    @staticmethod
    def _session_of(cookie: str) -> str:
        jar = dict(part.strip().split("=", 1) for part in cookie.split(";") if "=" in part)
        return jar.get("B1SESSION", "")

    def _login(self, body: bytes) -> tuple[int, list, bytes]:
        try:
            creds = json.loads(body)
        except ValueError:
            return self._error(400, -1000, "Invalid login body")
        if (creds.get("CompanyDB"), creds.get("UserName"), creds.get("Password")) != (
                self.company, self.username, self.password):
            return self._error(401, 100000027, "Login failed")
        self._session_counter += 1
        sid = f"{FAKE_SESSION}-{self._session_counter}"
        self.sessions.add(sid)
        self.logins += 1
        ctx = ("odata.metadata", f"https://{self.host}{self.root}/$metadata#B1Sessions/@Element") \
            if self.version == "v1" else \
            ("@odata.context", f"https://{self.host}{self.root}/$metadata#B1Sessions/$entity")
        doc = {ctx[0]: ctx[1], "SessionId": sid, "Version": "1000280", "SessionTimeout": 30}
        return 200, [
            ("Content-Type", "application/json"),
            ("Set-Cookie", f"B1SESSION={sid}; HttpOnly"),
            ("Set-Cookie", f"ROUTEID={self.route}; path=/b1s"),
        ], _dumps(doc)

    def _rows(self, entity_set: str, query: dict[str, str]) -> list[dict]:
        if entity_set not in self.entities:
            raise KeyError(entity_set)
        rows = list(self.entities[entity_set])
        if query.get("$filter"):
            rows = [r for r in rows if _Filter(query["$filter"])(r)]
        return rows

    def _page(self, entity_set: str, query: dict[str, str], headers: dict[str, str]):
        try:
            rows = self._rows(entity_set, query)
        except KeyError:
            return self._error(404, -2028, f"Resource not found for the segment '{entity_set}'")
        except (ValueError, IndexError, AssertionError) as exc:
            return self._error(400, -1000, f"Invalid query: {exc}")
        if query.get("$orderby"):
            for prop in reversed(query["$orderby"].split(",")):
                name = prop.strip().split(" ")[0]
                rows.sort(key=lambda r, n=name: (r.get(n) is None, isinstance(r.get(n), str),
                                                 r.get(n) if r.get(n) is not None else 0))
        skip = int(query.get("$skip", 0))
        size = self.default_page_size
        m = re.search(r"odata\.maxpagesize=(\d+)", headers.get("prefer", ""))
        if m:
            size = int(m.group(1))
        if self.max_page_size:
            size = min(size, self.max_page_size)
        top = int(query["$top"]) if "$top" in query else None
        window = rows[skip:]
        if top is not None:
            window = window[:top]
        page, more = window[:size], len(window) > size
        if query.get("$select"):
            wanted = [s.strip() for s in query["$select"].split(",")]
            page = [{k: r.get(k) for k in wanted} for r in page]
        ctx_key, link_key = ("odata.metadata", "odata.nextLink") if self.version == "v1" else (
            "@odata.context", "@odata.nextLink")
        doc: dict[str, Any] = {ctx_key: f"https://{self.host}{self.root}/$metadata#{entity_set}",
                               "value": page}
        if more:
            keep = {k: v for k, v in query.items() if k not in ("$skip",)}
            if self.next_link == "bare":
                keep = {}
            keep["$skip"] = str(skip + size)
            qs = "&".join(f"{k}={quote(v, safe=chr(39) + ',()$')}" for k, v in keep.items())
            rel = f"{entity_set}?{qs}"
            doc[link_key] = {
                "relative": rel, "bare": rel,
                "absolute_path": f"{self.root}/{rel}",
                "absolute_url": f"https://{self.host}{self.root}/{rel}",
            }[self.next_link]
        body = _dumps(doc)
        if self.malformed_next:
            self.malformed_next -= 1
            body = body[: len(body) // 2]
        ctype = "application/json;odata.metadata=minimal;charset=utf-8" if self.version == "v2" \
            else "application/json"
        return 200, [("Content-Type", ctype)], body

    # -- adapters ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"https://{self.host}{self.root}"

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            target = request.url.raw_path.decode("ascii")
            headers = {k.lower(): v for k, v in request.headers.items()}
            status, hdrs, content = self.handle(request.method, target, headers, request.content)
            return httpx.Response(status, headers=hdrs, content=content)

        return httpx.MockTransport(handler)

    @contextmanager
    def serve(self, tls: tuple[str, str] | None = None) -> Iterator[str]:
        """Serve over real HTTP on 127.0.0.1 (HTTPS with `tls=(certfile, keyfile)`); yields the
        service root URL."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _do(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, hdrs, content = fake.handle(self.command, self.path, headers, body)
                self.send_response(status)
                for k, v in hdrs:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _do

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        scheme = "http"
        if tls:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
            scheme = "https"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        old_host = self.host
        self.host = f"127.0.0.1:{server.server_address[1]}"
        try:
            yield f"{scheme}://{self.host}{self.root}"
        finally:
            server.shutdown()
            server.server_close()
            self.host = old_host




def with_contract_nulls(table: str, record: dict) -> dict:
    """`record` with every contract property of `table` it lacks set to null, as a real Service
    Layer returns every property of an entity (nulls included)."""
    from sap_ometria_assets.lib.sap.tables import contract_columns

    return {**{c: None for c in contract_columns(table) if not c.startswith("_")}, **record}


def company_with_contract_nulls(company: dict[str, list[dict]],
                                keep: tuple[str, ...] = ("Items",)) -> dict[str, list[dict]]:
    """Every entity set of a hand-written `company` (and its line collections) with the contract
    properties it lacks set to null. `keep`: entity sets served as given (recorded samples)."""
    from sap_ometria_assets.lib.sap.tables import SAP_TABLES

    specs = {s.entity_set: s for s in SAP_TABLES if s.entity_set not in keep}
    out = {}
    for entity_set, records in company.items():
        spec = specs.get(entity_set)
        if spec is None:
            out[entity_set] = records
            continue
        padded = []
        for record in records:
            record = with_contract_nulls(spec.table, record)
            for child in spec.children:
                if isinstance(record.get(child.collection), list):
                    record[child.collection] = [with_contract_nulls(child.table, r)
                                                for r in record[child.collection]]
            padded.append(record)
        out[entity_set] = padded
    return out
