"""The one scrub: every form a secret takes in a text is masked."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

from sap_ometria_assets.lib.config.secrets import MASK, contains_secret, scrub
from sap_ometria_assets.lib.config.settings import get_settings

SECRET = "k3y/with+odd=chars\"and\\slash"


def test_every_form_of_a_secret_is_masked():
    raw = SECRET + "\r\n"
    texts = [
        f"header {raw}",
        f"LocalProtocolError: Illegal header value {raw.encode()!r}",
        f"repr {raw!r}",
        f"json {json.dumps({'k': SECRET})}",
        f"url ?k={quote(SECRET, safe='')} and {quote_plus(SECRET)} and {quote(SECRET, safe='').lower()}",
    ]
    for text in texts:
        clean = scrub(text, raw)
        assert MASK in clean and not contains_secret(clean, raw), clean
        assert "k3y" not in clean


def test_settings_secrets_are_scrubbed_without_being_passed(monkeypatch):
    monkeypatch.setenv("SAP_B1_PASSWORD", "Pw!-settings-only")
    get_settings(refresh=True)
    try:
        assert scrub("login failed for Pw%21-settings-only") == f"login failed for {MASK}"
    finally:
        monkeypatch.delenv("SAP_B1_PASSWORD")
        get_settings(refresh=True)


def test_short_values_are_not_treated_as_secrets():
    assert scrub("a b c", "a") == "a b c"
