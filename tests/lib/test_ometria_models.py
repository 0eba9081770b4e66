"""The Ometria record models, and the vectorised checks compiled from them."""

from __future__ import annotations

import json

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sap_ometria_assets.lib.ometria.models import (
    MAX_RECORD_BYTES,
    PayloadSchemaError,
    check_payloads,
    compile_checks,
    validate_payloads,
)
from sap_ometria_assets.lib.transforms.payloads import encode_objects

CONTACT = {"@type": "contact", "@collection": "sap_b1", "id": "C001", "customer_id": "C001",
           "email": "jane@example.com", "phone_number": "+447911123456", "country_id": "GB",
           "marketing_optin": "EXPLICITLY_OPTEDIN", "timestamp_acquired": "2023-04-19T09:00:00+01:00",
           "properties": {"loyalty_tier": "Gold"}, "@merge": True}
ORDER = {"@type": "order", "id": "SO-1", "timestamp": "2024-05-01T14:00:00+01:00", "status": "pending",
         "is_valid": True, "currency": "GBP", "subtotal": 100.0, "discount": 0.0, "shipping": 5.0, "tax": 21.0,
         "grand_total": 126.0, "customer": {"id": "C001", "email": "jane@example.com"},
         "lineitems": [{"product_id": "A", "quantity": 2.0, "unit_price": 50.0, "subtotal": 100.0, "total": 120.0}]}
PRODUCT = {"@type": "product", "id": "A", "title": "T-shirt", "price": 19.99, "currency": "GBP", "is_active": True,
           "attributes": [{"type": "brand", "id": "acme", "label": "Acme"}],
           "listings": [{"store": "uk", "price": 19.99, "currency": "GBP", "is_active": True}], "@merge": True}
STOCK = {"@type": "product", "id": "A", "is_in_stock": False, "@merge": True}


def check(feed: str, record: dict) -> str | None:
    return validate_payloads(feed, pl.Series([json.dumps(record)]))[0]


@pytest.mark.parametrize(("feed", "record"), [("contacts", CONTACT), ("orders", ORDER),
                                              ("products", PRODUCT), ("stock", STOCK)])
def test_good_records_pass(feed, record):
    assert check(feed, record) is None


@pytest.mark.parametrize(
    ("feed", "change", "field"),
    [
        ("contacts", {"marketing_optin": "EXPLICITYLY_OPTEDOUT"}, "marketing_optin"),  # RudderStack's typo
        ("contacts", {"marketing_optin": True}, "marketing_optin"),
        ("contacts", {"id": "jane@example.com"}, "id"),                                # PII in an id
        ("contacts", {"email": "not-an-email"}, "email"),
        ("contacts", {"phone_number": "07911 123456"}, "phone_number"),                # not E.164
        ("contacts", {"timestamp_acquired": "2023-04-19T09:00:00"}, "timestamp_acquired"),  # no offset
        ("orders", {"currency": "SFR"}, "currency"),
        ("orders", {"currency": "gbp"}, "currency"),
        ("orders", {"timestamp": "2024-05-01 14:00"}, "timestamp"),
        ("orders", {"grand_total": None}, "grand_total"),
        ("orders", {"@discount": 5.0}, "@discount"),                                   # the C# client's bug
        ("orders", {"lineitems": [{"quantity": 1.0, "unit_price": 1.0, "subtotal": 1.0, "total": 1.0}]},
         "product_id"),
        ("products", {"is_in_stock": True}, "is_in_stock"),                            # stock feed owns it
        ("products", {"price": -1.0}, "price"),
        ("stock", {"@merge": False}, "@merge"),
    ],
)
def test_bad_records_are_rejected_naming_the_field(feed, change, field):
    record = {**{"contacts": CONTACT, "orders": ORDER, "products": PRODUCT, "stock": STOCK}[feed], **change}
    reason = check(feed, record)
    assert reason is not None and reason.startswith("invalid_payload")
    assert field in reason


def test_nan_and_infinity_are_not_amounts():
    assert check("orders", {**ORDER, "grand_total": float("inf")}) is not None


def test_60kb_limit_is_enforced_by_the_finaliser():
    from sap_ometria_assets.lib.transforms.payloads import finalize

    big = pl.DataFrame({"@type": ["product"], "id": ["A"], "title": ["x" * MAX_RECORD_BYTES], "is_active": [True],
                        "@merge": [True]})
    rows = pl.DataFrame({"record_type": ["product"], "id": ["A"], "sap_object": ["OITM"], "sap_key": ["A"],
                         "_reason": pl.Series([None], dtype=pl.String), "warnings": [[]]},
                        schema_overrides={"warnings": pl.List(pl.String)})
    out = finalize(rows, big, "products", [])
    assert out["held_back_reason"][0] == "record_too_large"


def test_the_finaliser_builds_one_json_object_of_the_rows_type_per_record():
    """What the push and the client rely on instead of parsing records again: every payload is
    a JSON object whose `@type` is its row's record_type."""
    import orjson

    from sap_ometria_assets.lib.transforms.payloads import finalize

    payload = pl.DataFrame({"@type": ["product", "product"], "id": ["A", 'B"\n'],
                            "title": ["Mug", 'quote " and\nbreak'], "is_active": [True, False],
                            "@merge": [True, True]})
    rows = pl.DataFrame({"record_type": ["product", "product"], "id": ["A", 'B"\n'],
                         "sap_object": ["OITM", "OITM"], "sap_key": ["A", "B"],
                         "_reason": pl.Series([None, None], dtype=pl.String), "warnings": [[], []]},
                        schema_overrides={"warnings": pl.List(pl.String)})
    out = finalize(rows, payload, "products", [])
    for record_type, text in out.select("record_type", "payload").rows():
        parsed = orjson.loads(text)
        assert isinstance(parsed, dict) and parsed["@type"] == record_type


def test_a_payload_frame_that_does_not_fit_the_model_is_a_programming_error():
    with pytest.raises(PayloadSchemaError, match="surname"):
        compile_checks("contacts", {"@type": pl.String, "@collection": pl.String, "id": pl.String,
                                    "surname": pl.String, "@merge": pl.Boolean})
    with pytest.raises(PayloadSchemaError, match="grand_total"):
        compile_checks("orders", {"grand_total": pl.String})


# --- the compiled checks agree with pydantic ---------------------------------------------------

_text = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["", " ", "C@1", "GBP", "SFR", "x\ny", "🙂"]))
_num = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5).map(float))
_ts = st.one_of(st.none(), st.sampled_from(["2024-05-01T14:00:00+01:00", "2024-05-01T14:00:00Z",
                                             "2024-13-01T14:00:00+01:00", "2024-05-01T14:00:00", "yesterday"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({
    "id": _text, "timestamp": _ts, "status": _text, "currency": _text, "grand_total": _num, "subtotal": _num,
    "email": st.one_of(st.none(), st.sampled_from(["a@b.co", "bad@", "@x.com", "é@exämple.com", "a b@c.de"])),
    "product_id": _text, "quantity": _num, "unit_price": _num,
}), min_size=1, max_size=8))
def test_compiled_checks_agree_with_pydantic(records):
    frame = pl.DataFrame({
        "@type": ["order"] * len(records),
        "id": [r["id"] for r in records],
        "timestamp": [r["timestamp"] for r in records],
        "status": [r["status"] for r in records],
        "is_valid": [True] * len(records),
        "currency": [r["currency"] for r in records],
        "subtotal": [r["subtotal"] for r in records],
        "discount": [0.0] * len(records),
        "shipping": [0.0] * len(records),
        "tax": [0.0] * len(records),
        "grand_total": [r["grand_total"] for r in records],
        "customer": [{"id": "C1", "email": r["email"]} for r in records],
        "lineitems": [[{"product_id": r["product_id"], "quantity": r["quantity"], "unit_price": r["unit_price"],
                        "subtotal": 1.0, "total": 1.0}] for r in records],
    }, schema_overrides={"id": pl.String, "timestamp": pl.String, "status": pl.String, "currency": pl.String,
                         "subtotal": pl.Float64, "grand_total": pl.Float64})
    encoded = encode_objects(frame)
    checks = compile_checks("orders", frame.schema)
    compiled = frame.select(pl.any_horizontal([e.fill_null(False) for _, e in checks]).alias("bad"))["bad"]
    exact = validate_payloads("orders", encoded)
    assert compiled.to_list() == exact.is_not_null().to_list(), list(zip(encoded.to_list(), exact.to_list()))
    # and the combined check holds back exactly what pydantic rejects
    assert check_payloads("orders", frame, encoded).is_not_null().to_list() == exact.is_not_null().to_list()
