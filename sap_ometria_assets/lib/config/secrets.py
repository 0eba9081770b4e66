"""The one scrub of secrets, for every text we store or log.

A secret can reach a text in more forms than the one we hold: a key read from a secret file
ends in `\\r\\n` (httpx then shows the header as `b'...\\r'`), a proxy or an API echoes it
URL-encoded or JSON-escaped, an exception shows its `repr`. `scrub` removes each secret in all
of those forms: raw, stripped, `repr`/bytes-escaped, JSON-escaped, URL-encoded (quote and
quote_plus, upper and lower case hex).

Which secrets: the SAP B1 password, the Ometria API key and the alert webhook from the settings,
every secret a client registered (`register`, e.g. the key of the embedded emulator), and any
passed to the call (a session id). Values shorter than `MIN_SECRET_CHARS` are not scrubbed (a
one-letter "secret" would mask every such letter of every text).

Used by the Ometria and SAP clients (error texts), the push (everything Ometria echoes back in
`/push/_errors`, request audit rows) and a logging filter on the product's loggers.
"""

from __future__ import annotations

import json
import logging
import threading
from functools import lru_cache
from urllib.parse import quote, quote_plus

from pydantic import SecretStr

from sap_ometria_assets.lib.config.settings import get_settings

MASK = "**********"
MIN_SECRET_CHARS = 4

_registered: set[str] = set()
_lock = threading.Lock()


def _plain(value: str | SecretStr | None) -> str | None:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value or None


def register(value: str | SecretStr | None) -> None:
    """Scrub `value` from every later text of this process (a key a client was given)."""
    plain = _plain(value)
    if plain and len(plain.strip()) >= MIN_SECRET_CHARS:
        with _lock:
            _registered.add(plain)


@lru_cache(maxsize=256)
def forms(secret: str) -> tuple[str, ...]:
    """Every way `secret` may be written in a text, longest first (so a longer form is masked
    before a shorter one inside it could break it up)."""
    out: set[str] = set()
    for s in {secret, secret.strip()}:
        if len(s) < MIN_SECRET_CHARS:
            continue
        out.add(s)
        out.add(repr(s)[1:-1])                                   # str repr: \r, \n, \\, \x..
        out.add(repr(s.encode("utf-8", "backslashreplace"))[2:-1])  # bytes repr (httpx/h11)
        out.add(json.dumps(s)[1:-1])                             # JSON, non-ASCII escaped
        out.add(json.dumps(s, ensure_ascii=False)[1:-1])
        for enc in (quote(s, safe=""), quote_plus(s, safe=""), quote(s)):
            out.add(enc)
            out.add(_lower_hex(enc))
    return tuple(sorted((f for f in out if len(f) >= MIN_SECRET_CHARS), key=len, reverse=True))


def _lower_hex(text: str) -> str:
    parts = text.split("%")
    return parts[0] + "".join("%" + p[:2].lower() + p[2:] for p in parts[1:])


def known_secrets() -> list[str]:
    """The settings' secrets and every registered one (settings unreadable: registered only)."""
    found: list[str] = []
    try:
        s = get_settings()
        for value in (s.ometria_api_key, s.sap_b1_password, s.sap_ometria_alert_webhook):
            plain = _plain(value)
            if plain:
                found.append(plain)
    except Exception:  # noqa: BLE001 - a broken configuration must not stop a scrub
        pass
    with _lock:
        found.extend(_registered)
    return found


def scrub(text: str | None, *extra: str | SecretStr | None) -> str | None:
    """`text` with every form of every known secret (and of `extra`) replaced by a mask."""
    if not text:
        return text
    secrets = {p for p in (_plain(v) for v in (*known_secrets(), *extra)) if p}
    for secret in secrets:
        for form in forms(secret):
            if form in text:
                text = text.replace(form, MASK)
    return text


def contains_secret(text: str | None, *extra: str | SecretStr | None) -> bool:
    return bool(text) and scrub(text, *extra) != text


class ScrubFilter(logging.Filter):
    """Scrubs a log record's message (with its arguments merged in) before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - leave a malformed record to logging's own error path
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def scrubbed_logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)` with the scrub filter on it."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, ScrubFilter) for f in logger.filters):
        logger.addFilter(ScrubFilter())
    return logger
