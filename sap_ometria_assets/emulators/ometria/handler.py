"""The HTTP request handler of the Ometria emulator: authentication by `X-Ometria-Auth`, body limits,
and routing of `POST /push`, the read-back `GET`s and `/_emulator` controls to the emulator.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sap_ometria_assets.emulators.ometria.validation import MAX_BODY_BYTES

# `OmetriaEmulator` appears in annotations only, which are never evaluated here: server.py imports
# this module, so importing it back would make a cycle.


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server_version = "OmetriaEmulator/1.0"
    emulator: OmetriaEmulator  # set on the bound subclass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.emulator.verbose:
            super().log_message(format, *args)

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            return None
        return self.rfile.read(length) if length else b""

    def _route(self, method: str) -> None:
        emu = self.emulator
        with emu._lock:
            emu.stats.requests += 1
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.split("/") if p]
        raw = self._body() if method == "POST" else b""
        if emu.faults.delay_s > 0:
            time.sleep(emu.faults.delay_s)
        if raw is None:
            self.close_connection = True
            self._reply(413, {"status": "ERROR", "message": "Payload invalid: request too large"})
            return
        if self.headers.get("X-Ometria-Auth") != emu.api_key:
            if parts[:2] == ["v2", "push"] and method == "POST":
                with emu._lock:
                    emu.stats.push_requests += 1
                    emu.stats.statuses[403] += 1
            self._reply(403, {"status": "ERROR", "message": "Forbidden: invalid or missing X-Ometria-Auth"})
            return
        if parts[:1] == ["_emulator"] and len(parts) == 2:
            self._reply(*emu.handle_admin(method, parts[1], raw))
            return
        if parts[:1] != ["v2"]:
            self._reply(404, {"status": "ERROR", "message": "Unknown endpoint"})
            return
        parts = parts[1:]
        if method == "POST" and parts == ["push"]:
            with emu._lock:
                emu.stats.push_requests += 1
                emu.stats.push_times.append(time.time())  # the account's observed request rate
            status, body, headers = emu.handle_push(raw)
            with emu._lock:
                emu.stats.statuses[status] += 1
            if status == -1:
                self.close_connection = True
                try:
                    self.connection.shutdown(2)
                except OSError:
                    pass
                return
            self._reply(status, body, headers)
            return
        if method == "GET":
            self._reply(*emu.handle_get(parts, parse_qs(split.query)))
            return
        self._reply(405, {"status": "ERROR", "message": f"{method} not allowed here"})

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")
