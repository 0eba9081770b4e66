"""The HTTP request handler of the Service Layer emulator: routing of `/b1s/v1` and `/b1s/v2`, login
and logout, entity sets with paging and next links, single entities, `$count`, `$metadata`,
error answers in the v1/v2 shapes, and the `/_emulator` admin endpoints.
"""

from __future__ import annotations

import json
import logging
import re
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import numpy as np
import orjson
import polars as pl

from sap_ometria_assets.emulators.sap_b1.company import Company
from sap_ometria_assets.emulators.sap_b1.odata import ODataError, Query, parse_query
from sap_ometria_assets.emulators.sap_b1.wire import (
    DEFAULT_PAGE_SIZE, MSG_LOGIN_FAILED, MSG_NOT_FOUND, ROUTE_ID, SL_VERSION, _KEY, _Reply, _STATUS_TEXT,
    _View, _metadata, _parse_key,
)


# `SapB1Emulator` appears in annotations only, which are never evaluated here: server.py imports
# this module, so importing it back would make a cycle.


log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Apache"
    sys_version = ""
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and benchmarks
        return

    @property
    def emu(self) -> SapB1Emulator:
        return self.server.emulator  # type: ignore[attr-defined]

    # -- plumbing ------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes | list[bytes | memoryview] = b"", content_type: str | None = None,
              headers: list[tuple[str, str]] | None = None) -> None:
        parts = body if isinstance(body, list) else [body]
        length = sum(len(p) for p in parts)
        lines = [f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        for k, v in headers or ():
            lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {length}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if length < 65536:
            self.wfile.write(head + b"".join(parts))
        else:  # big pages go out as they are (slices of the render cache), without joining copies
            self.connection.sendall(head)
            for part in parts:
                self.connection.sendall(part)
        self.emu.stats._add(bytes_served=length)
        if status >= 400:
            self.emu.stats._count("errors", status)

    def _json_headers(self, version: str) -> tuple[str, list[tuple[str, str]]]:
        if version == "v2":
            return "application/json;odata.metadata=minimal;charset=utf-8", [("OData-Version", "4.0")]
        return "application/json;odata=minimalmetadata;charset=utf-8", [("DataServiceVersion", "3.0")]

    def _error(self, version: str, status: int, code: int, message: str) -> None:
        if version == "v2":
            body = {"error": {"code": str(code), "message": message}}
        else:
            body = {"error": {"code": code, "message": {"lang": "en-us", "value": message}}}
        ctype, headers = self._json_headers(version)
        self._send(status, orjson.dumps(body), ctype, headers)

    def _fault_reply(self, version: str, status: int) -> None:
        if status in (502, 503, 504):  # the Apache load balancer in front of the Service Layer
            text = _STATUS_TEXT.get(status, "Error")
            html = (f"<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>{status} {text}"
                    f"</title>\n</head><body>\n<h1>{text}</h1>\n<p>The server is temporarily unable to service "
                    "your request.</p>\n</body></html>\n")
            self._send(status, html.encode(), "text/html; charset=iso-8859-1")
        else:
            self._error(version, status, -1, "Internal error: the request could not be processed (emulated fault).")

    def _cookies(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for header in self.headers.get_all("Cookie") or []:
            for part in header.split(";"):
                name, sep, value = part.strip().partition("=")
                if sep:
                    out[name] = value
        return out

    def _base(self) -> str:
        return f"http://{self.headers.get('Host') or f'{self.emu.host}:{self.emu.port}'}"

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- dispatch ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        emu = self.emu
        split = urlsplit(self.path)
        body = self._body() if method in ("POST", "PATCH", "PUT") else b""
        if split.path.startswith("/_emulator/") and emu.admin:
            return self._admin(method, split.path, body)
        m = re.match(r"^/b1s/(v1|v2)/(.*)$", split.path)
        if not m:
            self._send(404, b"Not Found", "text/plain")
            return
        version, rest = m.group(1), m.group(2)
        emu.stats._add(requests=1)
        delay = emu.faults.delay_s
        if delay:
            time.sleep(delay)
        try:
            if rest == "Login":
                status = emu.faults._take_failure(is_login=True)
                if status:
                    return self._fault_reply(version, status)
                if method != "POST":
                    raise _Reply(405, -5006, "Login requires POST.")
                return self._do_login(version, body)
            status = emu.faults._take_failure(is_login=False)
            if status:
                return self._fault_reply(version, status)
            stall = emu.faults._take_stall()
            if stall:
                time.sleep(stall)
            if emu.faults._count_data_request():
                emu.kill_sessions()
            sid = emu._check_session(self._cookies())
            if rest == "Logout":
                if method != "POST":
                    raise _Reply(405, -5006, "Logout requires POST.")
                emu._logout(sid)
                return self._send(204)
            if method != "GET":
                raise _Reply(405, -5006, "The emulator is read-only: only GET is supported on entity sets.")
            self._do_get(version, rest, split.query)
        except _Reply as r:
            self._error(version, r.status, r.code, r.message)
        except ODataError as exc:
            self._error(version, 400, exc.code, str(exc))
        except Exception as exc:  # an emulator bug must show as an error answer, not a dropped connection
            log.exception("SAP B1 emulator failed on %s %s", method, split.path)
            self._error(version, 500, -1, f"Internal error in the emulator: {type(exc).__name__}: {exc}")

    def _do_login(self, version: str, body: bytes) -> None:
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            raise _Reply(400, -1000, "Invalid JSON in the Login request body.") from None
        sid = self.emu._login(payload)
        if sid is None:
            raise _Reply(401, 100000027, MSG_LOGIN_FAILED)
        root = f"{self._base()}/b1s/{version}"
        if version == "v2":
            out = {"@odata.context": f"{root}/$metadata#B1Sessions/$entity", "SessionId": sid,
                   "Version": SL_VERSION, "SessionTimeout": self.emu.session_timeout_min}
        else:
            out = {"odata.metadata": f"{root}/$metadata#B1Sessions/@Element", "SessionId": sid,
                   "Version": SL_VERSION, "SessionTimeout": self.emu.session_timeout_min}
        ctype, headers = self._json_headers(version)
        headers = headers + [("Set-Cookie", f"B1SESSION={sid}; HttpOnly"), ("Set-Cookie", f"ROUTEID={ROUTE_ID}; path=/b1s")]
        self._send(200, orjson.dumps(out), ctype, headers)

    def _do_get(self, version: str, rest: str, query: str) -> None:
        emu = self.emu
        company = emu.company
        if rest == "$metadata":
            return self._send(200, _metadata(emu, company, version).encode(), "application/xml")
        count_only = rest.endswith("/$count")
        path = rest[: -len("/$count")] if count_only else rest
        key_text = None
        km = _KEY.match(path)
        if km:
            path, key_text = km.group("set"), km.group("key")
        if path not in company.entity_sets():
            raise _Reply(404, -1000, f"Resource not found for the segment '{path}'.")
        emu.stats._count("requests_by_entity_set", path)
        view = emu._view(company, path)
        q = parse_query(parse_qsl(query, keep_blank_values=True))
        if version == "v2" and q.inlinecount:
            raise ODataError("$inlinecount is an OData v3 option: use $count=true on /b1s/v2.")
        if version == "v1" and q.count:
            raise ODataError("$count=true is an OData v4 option: use $inlinecount=allpages on /b1s/v1.")
        ci = (self.headers.get("B1S-CaseInsensitive") or "").lower() == "true"
        if key_text is not None:
            return self._do_entity(version, company, view, key_text, q)
        positions, total = emu._positions(company, view, q, ci)
        if count_only:
            return self._send(200, str(total).encode(), "text/plain;charset=utf-8", [])
        self._do_page(version, company, view, q, positions, total)

    def _page_size(self) -> tuple[int, list[tuple[str, str]]]:
        prefer = self.headers.get("Prefer") or ""
        m = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer)
        if m:
            n = int(m.group(1))
            return n, [("Preference-Applied", f"odata.maxpagesize={n}")]
        raw = self.headers.get("B1S-PageSize")
        if raw is not None:
            if not raw.strip().isdigit():
                raise _Reply(400, -1000, f"Invalid B1S-PageSize '{raw}'.")
            return int(raw), []
        return DEFAULT_PAGE_SIZE, []

    def _do_page(self, version: str, company: Company, view: _View, q: Query, positions, total: int) -> None:
        emu = self.emu
        size, extra_headers = self._page_size()
        end = total if q.top is None else min(total, q.skip + q.top)
        start = min(q.skip, total)
        stop = end if size == 0 else min(end, start + size)
        page = np.arange(start, stop, dtype=np.int64) if positions is None else positions[start:stop]
        names = None
        if q.select is not None:
            unknown = [n for n in q.select if n not in view.props]
            if unknown:
                raise _Reply(400, -1000, f"Property '{unknown[0]}' of '{view.entity_set}' is invalid.")
            names = q.select
        payload = emu._payload(company, view, version, page, names)
        root = f"{self._base()}/b1s/{version}"
        context = f"{root}/$metadata#{view.entity_set}" + (f"({','.join(names)})" if names else "")
        head: dict[str, Any] = {"@odata.context" if version == "v2" else "odata.metadata": context}
        if q.count:
            head["@odata.count"] = total
        if q.inlinecount:
            head["odata.count"] = str(total)  # v3 sends the count as a string
        tail = b"]"
        if stop < end:
            link = self._next_link(version, view.entity_set, q, stop, end)
            tail += b',"' + (b"@odata.nextLink" if version == "v2" else b"odata.nextLink") + b'":' + orjson.dumps(link)
        body: list[bytes | memoryview] = [orjson.dumps(head)[:-1] + b',"value":[', *payload, tail + b"}"]
        page_index = start // size if size else 0
        if emu.faults._take_malformed_page(view.entity_set, page_index):
            whole = b"".join(body)
            body = [whole[: max(1, len(whole) // 2)]]
        emu.stats._count("pages", view.entity_set)
        emu.stats._count("records_served", view.entity_set, len(page))
        ctype, headers = self._json_headers(version)
        self._send(200, body, ctype, headers + extra_headers)

    def _next_link(self, version: str, entity_set: str, q: Query, next_skip: int, end: int) -> str:
        faults = self.emu.faults
        params: list[tuple[str, str]] = []
        if faults.next_link_keeps_query:
            if q.filter:
                params.append(("$filter", q.filter))
            if q.select is not None:
                params.append(("$select", ",".join(q.select)))
            if q.orderby:
                params.append(("$orderby", ",".join(f"{n} desc" if d else n for n, d in q.orderby)))
            if q.count:
                params.append(("$count", "true"))
            if q.inlinecount:
                params.append(("$inlinecount", "allpages"))
            params.extend(q.passthrough.items())
        if q.top is not None:
            params.append(("$top", str(end - next_skip)))
        params.append(("$skip", str(next_skip)))
        qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
        style = faults.next_link_style
        if version == "v1" and style == "relative":
            style = "absolute_path"
        if style == "relative":
            return f"{entity_set}?{qs}"
        path = f"/b1s/{version}/{entity_set}?{qs}"
        return path if style == "absolute_path" else f"{self._base()}{path}"

    def _do_entity(self, version: str, company: Company, view: _View, key_text: str, q: Query) -> None:
        frame = company.header(view.entity_set)
        values = _parse_key(key_text, view.key, frame.schema)
        cond = pl.lit(True)
        for k, v in values.items():
            cond = cond & (pl.col(k) == v)
        pos = frame.with_row_index("_pos").filter(cond)["_pos"].to_numpy().astype(np.int64)
        if len(pos) == 0:
            raise _Reply(404, -2028, MSG_NOT_FOUND)
        names = q.select
        if names is not None:
            unknown = [n for n in names if n not in view.props]
            if unknown:
                raise _Reply(400, -1000, f"Property '{unknown[0]}' of '{view.entity_set}' is invalid.")
        text = b"".join(bytes(p) for p in self.emu._payload(company, view, version, pos, names)).decode()
        root = f"{self._base()}/b1s/{version}"
        if version == "v2":
            head = orjson.dumps({"@odata.context": f"{root}/$metadata#{view.entity_set}/$entity"})
        else:
            head = orjson.dumps({"odata.metadata": f"{root}/$metadata#{view.entity_set}/@Element"})
        body = head[:-1] + b"," + text.encode()[1:]
        etag = orjson.loads(text).get("@odata.etag" if version == "v2" else "odata.etag", "")
        self.emu.stats._count("records_served", view.entity_set)
        ctype, headers = self._json_headers(version)
        self._send(200, body, ctype, headers + ([("ETag", etag)] if etag else []))

    # -- admin (CLI --admin): lets a test drive an emulator running in another process -----------------
    def _admin(self, method: str, path: str, body: bytes) -> None:
        emu = self.emu
        try:
            payload = json.loads(body or b"{}")
            if path == "/_emulator/stats" and method == "GET":
                out: Any = emu.stats.snapshot()
            elif path == "/_emulator/advance" and method == "POST":
                company = emu.advance(int(payload.get("ticks", 1)), payload.get("change_fraction"))
                out = {"ticks": company.ticks, "now": company.now.isoformat(sep=" ")}
            elif path == "/_emulator/faults" and method == "POST":
                for name, kwargs in payload.items():
                    if name in ("delay_s", "next_link_style", "next_link_keeps_query"):
                        setattr(emu.faults, name, kwargs)
                    elif name in ("expire_sessions_after", "fail_next", "stall_next", "malformed_page",
                                  "malformed_record", "schema_change", "clear"):
                        getattr(emu.faults, name)(**(kwargs or {}))
                    else:
                        raise ValueError(f"unknown fault {name!r}")
                out = {"ok": True}
            else:
                return self._send(404, b"Not Found", "text/plain")
        except (ValueError, TypeError) as exc:
            return self._send(400, orjson.dumps({"error": str(exc)}), "application/json")
        self._send(200, orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS), "application/json")
