"""What the Ometria Data API accepts: its limits (records a call, bytes a record, list page sizes),
the record types, the directives (`@merge`, `@force_optin`, ... : instructions, not data), and the
validation of one record (`validate_record`: ids, currencies, timestamps with offsets, emails,
phone numbers as libphonenumber judges them, line items).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

import phonenumbers


MAX_RECORDS = 100
MAX_RECORD_BYTES = 60 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_LIST_LIMIT = 250
MAX_ERRORS_KEPT = 100
_CURSORS_KEPT = 256  # page ends remembered for keyset pagination (a few listings read at once)
KNOWN_TYPES = ("contact", "order", "product", "custom_event")
# Instructions to the API, not data: not stored with the record.
DIRECTIVES = ("@merge", "@force_optin", "@add_to_lists", "@remove_from_lists")
OPTIN_VALUES = ("EXPLICITLY_OPTEDIN", "EXPLICITLY_OPTEDOUT", "NOT_SPECIFIED")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

RejectRule = Callable[[dict], "str | tuple[str, str] | None"]


class _BadRequest(Exception):
    pass


# --------------------------------------------------------------------------------------
# Field validation (what Ometria reports asynchronously)
# --------------------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int | float):
        return True
    if isinstance(v, str):
        try:
            float(v)
            return True
        except ValueError:
            return False
    return False


def _is_iso_with_offset(v: Any) -> bool:
    if not isinstance(v, str) or "T" not in v:
        return False
    try:
        return datetime.fromisoformat(v).tzinfo is not None
    except ValueError:
        return False


def _nonempty_str(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _is_valid_phone(v: Any) -> bool:
    """E.164 and valid for Google's libphonenumber, the validator Ometria documents."""
    return isinstance(v, str) and bool(_E164.match(v)) and _libphonenumber_valid(v)


@lru_cache(maxsize=65_536)  # ~90 us a number in pure Python; pushes repeat numbers a lot
def _libphonenumber_valid(v: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(v, None))
    except phonenumbers.NumberParseException:
        return False


def line_product_ids(rec: dict) -> list[tuple[int, str]]:
    """(line index, product_id) of an order's line items that name a product."""
    items = rec.get("lineitems")
    if not isinstance(items, list):
        return []
    return [(i, item["product_id"]) for i, item in enumerate(items)
            if isinstance(item, dict) and _nonempty_str(item.get("product_id"))]


def validate_record(rec: dict) -> list[tuple[str, str]]:
    """Field problems of one record as (error_message, error_path); empty = valid."""
    problems: list[tuple[str, str]] = []
    bad = "not a valid value"
    kind = rec.get("@type")
    merge = rec.get("@merge") is True
    if not _nonempty_str(rec.get("id")):
        problems.append(("id is required and must be a non-empty string", "root > id"))
    if kind == "contact":
        email, customer_id = rec.get("email"), rec.get("customer_id")
        if not merge and not (_nonempty_str(email) or _nonempty_str(customer_id)):
            problems.append(("email or customer_id is required", "root > email"))
        if email is not None and not (isinstance(email, str) and _EMAIL.match(email)):
            problems.append((bad, "root > email"))
        if "marketing_optin" in rec and rec["marketing_optin"] not in OPTIN_VALUES:
            problems.append((bad, "root > marketing_optin"))
        phone = rec.get("phone_number")
        if phone is not None and not _is_valid_phone(phone):
            problems.append((bad, "root > phone_number"))
        for ts in ("timestamp_acquired", "timestamp_subscribed", "timestamp_unsubscribed"):
            if ts in rec and rec[ts] is not None and not _is_iso_with_offset(rec[ts]):
                problems.append((bad, f"root > {ts}"))
    elif kind == "order":
        if not merge or "timestamp" in rec:
            if not _is_iso_with_offset(rec.get("timestamp")):
                problems.append((bad, "root > timestamp"))
        if not merge or "currency" in rec:
            if not (isinstance(rec.get("currency"), str) and _CURRENCY.match(rec["currency"])):
                problems.append((bad, "root > currency"))
        if not merge or "grand_total" in rec:
            if not _is_number(rec.get("grand_total")):
                problems.append((bad, "root > grand_total"))
        if "customer" in rec and rec["customer"] is not None and not isinstance(rec["customer"], dict):
            problems.append((bad, "root > customer"))
        items = rec.get("lineitems")
        if items is not None:
            if not isinstance(items, list):
                problems.append((bad, "root > lineitems"))
            else:
                for i, item in enumerate(items):
                    if not isinstance(item, dict) or not _nonempty_str(item.get("product_id")) \
                            or not _is_number(item.get("quantity")) \
                            or not (_is_number(item.get("unit_price")) or _is_number(item.get("subtotal"))):
                        problems.append((bad, f"root > lineitems > {i}"))
    elif kind == "product":
        if not merge:
            if not _nonempty_str(rec.get("title")):
                problems.append(("title is required", "root > title"))
            if not _is_number(rec.get("price")):
                problems.append(("price is required", "root > price"))
        elif "price" in rec and not _is_number(rec["price"]):
            problems.append((bad, "root > price"))
        for flag in ("is_in_stock", "is_active", "is_variant"):
            if flag in rec and not isinstance(rec[flag], bool):
                problems.append((bad, f"root > {flag}"))
    elif kind == "custom_event":
        if not _nonempty_str(rec.get("event_type")):
            problems.append((bad, "root > event_type"))
        if not _is_iso_with_offset(rec.get("timestamp")):
            problems.append((bad, "root > timestamp"))
    return problems
