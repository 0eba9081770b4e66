"""A misbehaving front for the Ometria emulator (loopback only), for faults the emulator itself
does not play: a 200 with an HTML page instead of Ometria's answer, a listing that ignores
`offset`, a read-back endpoint answering 404, an errors list echoing text back.

Requests are forwarded to the emulator unchanged unless a hook says otherwise. Each hook gets the
method, path and query and returns None (forward) or (status, content type, body bytes)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

Answer = tuple[int, str, bytes]
Hook = Callable[[str, str, dict[str, str], bytes], "Answer | None"]


class OmetriaProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")  # e.g. http://127.0.0.1:1234/v2
        split = urlsplit(self.upstream)
        self._origin = f"{split.scheme}://{split.netloc}"
        self.hooks: list[Hook] = []
        self.drop_query: set[str] = set()     # query parameters removed before forwarding
        self.rewrite_body: Callable[[str, bytes], bytes] | None = None  # (path, body) -> body
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=10)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                query = dict(parse_qsl(split.query))
                with proxy._lock:
                    key = f"{method} {split.path}"
                    proxy.counts[key] = proxy.counts.get(key, 0) + 1
                for hook in proxy.hooks:
                    answer = hook(method, split.path, query, body)
                    if answer is not None:
                        self._send(*answer)
                        return
                kept = {k: v for k, v in query.items() if k not in proxy.drop_query}
                url = proxy._origin + split.path + (("?" + urlencode(kept)) if kept else "")
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("x-ometria-auth", "content-type", "accept")}
                r = proxy._client.request(method, url, content=body or None, headers=headers)
                content = r.content
                if proxy.rewrite_body is not None:
                    content = proxy.rewrite_body(split.path, content)
                self._send(r.status_code, r.headers.get("Content-Type", "application/json"), content)

            def _send(self, status: int, ctype: str, content: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v2"

    def count(self, method: str, suffix: str) -> int:
        return sum(n for k, n in self.counts.items() if k.startswith(method + " ") and k.endswith(suffix))

    def __enter__(self) -> OmetriaProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()
