"""Service Layer errors: `SapB1Error` (HTTP status, SAP error code, the Service Layer's own
message) and `parse_error_body`, which reads the code and message from either error shape
(v1 `{"error":{"code":301,"message":{"value":...}}}`, v2 `{"error":{"code":"-1000","message":...}}`)
or, from a proxy's HTML error page, its title.
"""

from __future__ import annotations

import re

import orjson

_HTML_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


class SapB1Error(RuntimeError):
    """A Service Layer request failed; carries the HTTP status, SAP error code and SL message."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        sap_code: str | None = None,
        sap_message: str | None = None,
        entity_set: str | None = None,
    ) -> None:
        details = []
        if http_status is not None:
            details.append(f"HTTP {http_status}")
        if sap_code:
            details.append(f"SAP code {sap_code}")
        if sap_message:
            details.append(f"Service Layer says: {sap_message}")
        super().__init__(message + (f" ({'; '.join(details)})" if details else ""))
        self.http_status = http_status
        self.sap_code = sap_code
        self.sap_message = sap_message
        self.entity_set = entity_set


def parse_error_body(content: bytes) -> tuple[str | None, str | None]:
    """(SAP code, message) from a v1 or v2 error body; (None, text excerpt) when it is not JSON."""
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        text = content.decode("utf-8", "replace").strip()
        # A proxy's HTML error page: its title says it all, and a log line stays one line.
        title = _HTML_TITLE.search(text)
        if title:
            return None, " ".join(title.group(1).split())[:300] or None
        return None, (" ".join(text.split())[:300] or None)
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return None, None
    code = err.get("code")
    message = err.get("message")
    if isinstance(message, dict):  # v1: {"lang": "en-us", "value": "..."}
        message = message.get("value")
    parts = [str(message)] if message not in (None, "") else []
    for detail in err.get("details") or []:
        if isinstance(detail, dict) and detail.get("message"):
            parts.append(str(detail["message"]))
    return (None if code in (None, "") else str(code)), ("; ".join(parts) or None)
