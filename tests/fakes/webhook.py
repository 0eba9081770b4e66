"""A Slack-like incoming-webhook endpoint on 127.0.0.1 that records what it is sent (bodies and
paths), answering 200 or the statuses it is told to, in order. Serves from construction until
`close()` (or the end of a `with` block)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pydantic import SecretStr


class WebhookReceiver:
    def __init__(self, path: str = "/hook", statuses: list[int] | None = None) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self._path = path
        self._statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length", "0"))
                receiver.paths.append(self.path)
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                status = receiver._statuses.pop(0) if receiver._statuses else 200
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"server_error")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self._path}"

    @property
    def secret_url(self) -> SecretStr:
        """The URL as settings hold it (a webhook URL carries its own secret)."""
        return SecretStr(self.url)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
