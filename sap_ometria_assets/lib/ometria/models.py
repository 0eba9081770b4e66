"""Pydantic models of the Ometria records this product pushes, and batch validation of payloads.

The models encode what we know Ometria accepts (see docs/ometria reference notes): required
fields, ISO 8601 timestamps with an explicit offset, ISO 4217 currencies, the two documented
`marketing_optin` values (spelt correctly: RudderStack's list misspells the opt-out value),
E.164 phone numbers, ids without PII, and the 60 KB record limit. `extra="forbid"` catches a
builder that emits a field Ometria does not know (the C# client's `@discount` bug).

Every payload in the `ometria.*` tables is validated with `validate_payloads`; a record that fails
keeps its row with `held_back_reason` set, so it is never sent and never lost.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any, Literal

import annotated_types as at
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

# Active ISO 4217 codes usable for sales (precious metals, test and fund codes left out) plus
# HRK (replaced by EUR in 2023) so that older documents still validate.
ISO_4217_CODES: frozenset[str] = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP
    GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES
    KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR
    MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB
    RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY
    TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL
    """.split()
)

# Ometria: "Record is too large" above 60 KB per record. Counted in UTF-8 bytes of the JSON we
# send, with the conservative decimal reading of "KB".
MAX_RECORD_BYTES = 60_000

MARKETING_OPTIN_VALUES = ("EXPLICITLY_OPTEDIN", "EXPLICITLY_OPTEDOUT")

ISO_TIMESTAMP = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?"
    r"(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)
ISO_DATE = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$"
EMAIL = r"^[^@\s\"(),:;<>\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
E164 = r"^\+[1-9]\d{6,14}$"

# Ids: non-empty, no '@' (Ometria: ids must not contain PII such as an email address).
RecordId = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^@\s]([^@]*[^@\s])?$")]
Timestamp = Annotated[str, StringConstraints(pattern=ISO_TIMESTAMP)]
Currency = Literal[tuple(sorted(ISO_4217_CODES))]  # type: ignore[valid-type]
Email = Annotated[str, StringConstraints(max_length=254, pattern=EMAIL)]
Amount = Annotated[float, Field(allow_inf_nan=False)]
Text = Annotated[str, StringConstraints(min_length=1)]
# Product `url` / `image_url`: an absolute http(s) URL (scheme, host name, optional port, then a
# path, query or fragment without spaces or characters that must be percent-encoded). Ometria
# documents no length limit for them (reference: "Max field lengths ... not found"); 2048 is ours,
# what browsers and email clients reliably take.
HTTP_SITE = r"https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?"
HTTP_URL = rf"^{HTTP_SITE}(?:[/?#][^\s\"<>\\^`{{|}}]*)?$"
MAX_URL_LENGTH = 2048
Url = Annotated[str, StringConstraints(max_length=MAX_URL_LENGTH, pattern=HTTP_URL)]
PropertyValue = str | int | float | bool | None


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class ContactRecord(_Record):
    type: Literal["contact"] = Field(alias="@type")
    collection: Text = Field(alias="@collection")
    id: RecordId
    customer_id: RecordId | None = None
    email: Email | None = None
    prefix: str | None = None
    firstname: str | None = None
    middlename: str | None = None
    lastname: str | None = None
    phone_number: Annotated[str, StringConstraints(pattern=E164)] | None = None
    country_id: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None
    date_of_birth: Annotated[str, StringConstraints(pattern=ISO_DATE)] | None = None
    gender: Literal["m", "f", "o"] | None = None
    timezone: str | None = None
    store_ids: list[Text] | None = None
    marketing_optin: Literal["EXPLICITLY_OPTEDIN", "EXPLICITLY_OPTEDOUT"] | None = None
    timestamp_acquired: Timestamp | None = None
    timestamp_subscribed: Timestamp | None = None
    timestamp_unsubscribed: Timestamp | None = None
    properties: dict[str, PropertyValue] | None = None
    merge: bool = Field(alias="@merge")


class OrderCustomer(_Record):
    id: RecordId | None = None
    email: Email | None = None
    firstname: str | None = None
    lastname: str | None = None


class OrderLineItem(_Record):
    product_id: RecordId
    sku: str | None = None
    variant_id: RecordId | None = None
    quantity: Amount
    unit_price: Amount
    subtotal: Amount
    discount: Amount | None = None
    tax: Amount | None = None
    total: Amount
    quantity_refunded: Amount | None = None
    refunded: Amount | None = None


class OrderRecord(_Record):
    type: Literal["order"] = Field(alias="@type")
    id: RecordId
    timestamp: Timestamp
    status: Text
    is_valid: bool
    currency: Currency
    store: Text | None = None
    channel: Text | None = None
    subtotal: Amount
    discount: Amount
    shipping: Amount
    tax: Amount
    grand_total: Amount
    coupon_code: str | None = None
    payment_method: str | None = None
    shipping_method: str | None = None
    customer: OrderCustomer | None = None
    lineitems: list[OrderLineItem] = Field(default_factory=list)
    properties: dict[str, PropertyValue] | None = None


class ProductAttribute(_Record):
    type: Text
    id: Text
    label: Text


class ProductListing(_Record):
    store: Text
    title: str | None = None
    price: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    currency: Currency | None = None
    is_active: bool


class ProductRecord(_Record):
    """A product from OITM. No `is_in_stock`: the stock feed owns that flag."""

    type: Literal["product"] = Field(alias="@type")
    id: RecordId
    sku: str | None = None
    title: str | None = None
    price: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    currency: Currency | None = None
    is_active: bool
    url: Url | None = None
    image_url: Url | None = None
    attributes: list[ProductAttribute] | None = None
    listings: list[ProductListing] | None = None
    merge: Literal[True] = Field(alias="@merge")


class StockRecord(_Record):
    """The partial product update carrying only the stock flag (Ometria's Magento pattern)."""

    type: Literal["product"] = Field(alias="@type")
    id: RecordId
    is_in_stock: bool
    merge: Literal[True] = Field(alias="@merge")


MODELS: dict[str, type[BaseModel]] = {
    "contacts": ContactRecord,
    "orders": OrderRecord,
    "products": ProductRecord,
    "stock": StockRecord,
}

_ADAPTERS: dict[str, TypeAdapter] = {}


def _adapter(feed: str) -> TypeAdapter:
    if feed not in _ADAPTERS:
        _ADAPTERS[feed] = TypeAdapter(list[MODELS[feed]])  # type: ignore[index]
    return _ADAPTERS[feed]


def _describe(err: dict) -> str:
    path = ".".join(str(p) for p in err["loc"][1:]) or "(record)"
    return f"{path}: {err['msg']}"


def validate_payloads(feed: str, payloads: pl.Series, batch_size: int = 20_000) -> pl.Series:
    """Validate JSON payloads against the feed's model; returns one reason per payload (null = ok).

    Batches are validated as one JSON array each (pydantic-core parses and validates in Rust);
    only a failing batch is looked at record by record, through the error locations.
    """
    adapter = _adapter(feed)
    values = payloads.to_list()
    reasons: list[str | None] = [None] * len(values)
    for start in range(0, len(values), batch_size):
        chunk = values[start:start + batch_size]
        missing = [i for i, v in enumerate(chunk) if v is None]
        for i in missing:
            reasons[start + i] = "invalid_payload: no payload"
        body = "[" + ",".join(v if v is not None else "null" for v in chunk) + "]"
        try:
            adapter.validate_json(body)
            continue
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
        if any(not e["loc"] or not isinstance(e["loc"][0], int) for e in errors):
            # the array itself did not parse: look at each record alone
            for i, v in enumerate(chunk):
                if v is None:
                    continue
                try:
                    adapter.validate_json("[" + v + "]")
                except ValidationError as single:
                    reasons[start + i] = "invalid_payload: " + "; ".join(
                        _describe(e) if e["loc"] else e["msg"] for e in single.errors(include_url=False)[:3]
                    )
            continue
        by_record: dict[int, list[str]] = {}
        for e in errors:
            by_record.setdefault(e["loc"][0], []).append(_describe(e))
        for i, msgs in by_record.items():
            if reasons[start + i] is None:
                reasons[start + i] = "invalid_payload: " + "; ".join(msgs[:3])
    return pl.Series("validation_error", reasons, dtype=pl.String)


# ---------------------------------------------------------------------------------------------
# The same models, compiled to vectorised polars checks
# ---------------------------------------------------------------------------------------------
# pydantic builds Python objects for every record it validates (~40 us per order with three
# lines), far too slow for a million orders. The checks below are derived from the models
# themselves (field requiredness, Literal values, string patterns and lengths, numeric bounds,
# finiteness, nested models and lists of models, forbidden extra fields), so the models stay the
# single statement of the rules, and run over the payload columns before encoding. pydantic then
# re-validates the encoded JSON of the flagged records and of a sample of the others, so a
# divergence between the two would still hold a record back rather than let it through (a
# property test checks that they agree).

Check = tuple[str, pl.Expr]  # (message, expression true where the record fails)


class PayloadSchemaError(TypeError):
    """The payload frame a transform built does not fit its Ometria model (a programming error)."""


def _unwrap(annotation: Any) -> tuple[Any, list[Any], bool]:
    """-> (base type, constraint metadata, nullable)."""
    metadata: list[Any] = []
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            base, *extra = typing.get_args(annotation)
            for m in extra:
                metadata.extend(m.metadata if isinstance(m, FieldInfo) else [m])
            annotation = base
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            nullable = nullable or len(args) < len(typing.get_args(annotation))
            if len(args) == 1:
                annotation = args[0]
            else:
                return tuple(args), metadata, nullable  # a union of scalars (property values)
        else:
            return annotation, metadata, nullable


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _scalar_checks(value: pl.Expr, base: Any, metadata: list[Any], dtype: pl.DataType, path: str) -> list[Check]:
    checks: list[Check] = []
    origin = typing.get_origin(base)
    if dtype == pl.Null:  # an all-null column: give it the model's type so the checks apply
        literal = typing.get_args(base) if origin is Literal else ()
        target = (pl.Boolean if base is bool or (literal and isinstance(literal[0], bool))
                  else pl.Float64 if base in (float, int) else pl.String)
        value = value.cast(target)
    if origin is Literal:
        allowed = list(typing.get_args(base))
        if all(isinstance(a, bool) for a in allowed):
            if dtype not in (pl.Boolean, pl.Null):
                raise PayloadSchemaError(f"{path}: model expects a boolean, payload column is {dtype}")
        elif dtype not in (pl.String, pl.Null):
            raise PayloadSchemaError(f"{path}: model expects a string, payload column is {dtype}")
        shown = allowed if len(allowed) <= 5 else "an allowed value"
        checks.append((f"{path}: must be {shown}", ~value.is_in(allowed)))
        return checks
    if base is str:
        if dtype not in (pl.String, pl.Null):
            raise PayloadSchemaError(f"{path}: model expects a string, payload column is {dtype}")
    elif base in (float, int):
        if not (dtype.is_numeric() or dtype == pl.Null):
            raise PayloadSchemaError(f"{path}: model expects a number, payload column is {dtype}")
        if dtype.is_float():
            checks.append((f"{path}: must be a finite number", ~value.is_finite()))
    elif base is bool:
        if dtype not in (pl.Boolean, pl.Null):
            raise PayloadSchemaError(f"{path}: model expects a boolean, payload column is {dtype}")
    elif isinstance(base, tuple):  # union of scalars: any JSON scalar will do
        if isinstance(dtype, (pl.Struct, pl.List)):
            raise PayloadSchemaError(f"{path}: model expects a scalar, payload column is {dtype}")
    else:  # pragma: no cover - a model field type this compiler does not know
        raise PayloadSchemaError(f"{path}: unsupported model type {base!r}")
    for m in metadata:
        if isinstance(m, StringConstraints):
            if m.min_length is not None:
                checks.append((f"{path}: must have at least {m.min_length} characters",
                               value.str.len_chars() < m.min_length))
            if m.max_length is not None:
                checks.append((f"{path}: must have at most {m.max_length} characters",
                               value.str.len_chars() > m.max_length))
            if m.pattern is not None:
                checks.append((f"{path}: has an invalid format", ~value.str.contains(m.pattern)))
        elif isinstance(m, at.Ge):
            checks.append((f"{path}: must be >= {m.ge}", value < m.ge))
        elif isinstance(m, at.Le):
            checks.append((f"{path}: must be <= {m.le}", value > m.le))
        elif isinstance(m, at.Gt):
            checks.append((f"{path}: must be > {m.gt}", value <= m.gt))
        elif isinstance(m, at.Lt):
            checks.append((f"{path}: must be < {m.lt}", value >= m.lt))
        elif isinstance(m, at.MinLen):
            checks.append((f"{path}: must have at least {m.min_length} characters", value.str.len_chars() < m.min_length))
        elif isinstance(m, at.MaxLen):
            checks.append((f"{path}: must have at most {m.max_length} characters", value.str.len_chars() > m.max_length))
    return checks


def _model_checks(model: type[BaseModel], fields: dict[str, pl.DataType], get: Callable[[str], pl.Expr],
                  path: str) -> list[Check]:
    by_alias = {(f.alias or name): f for name, f in model.model_fields.items()}
    extra = sorted(set(fields) - set(by_alias))
    if extra:
        raise PayloadSchemaError(f"{path or model.__name__}: fields {extra} are not in {model.__name__}")
    checks: list[Check] = []
    for key, info in by_alias.items():
        where = f"{path}.{key}" if path else key
        base, metadata, nullable = _unwrap(info.annotation)
        metadata = list(info.metadata) + metadata
        if key not in fields:
            if info.is_required():
                checks.append((f"{where}: required", pl.lit(True)))
            continue
        dtype = fields[key]
        value = get(key)
        if info.is_required() and not nullable:
            checks.append((f"{where}: required", value.is_null()))
        checks.extend(_value_checks(value, base, metadata, dtype, where))
    return checks


def _value_checks(value: pl.Expr, base: Any, metadata: list[Any], dtype: pl.DataType, path: str) -> list[Check]:
    if _is_model(base):
        if not isinstance(dtype, pl.Struct):
            raise PayloadSchemaError(f"{path}: model expects an object, payload column is {dtype}")
        inner = {f.name: f.dtype for f in dtype.fields}
        return [(m, value.is_not_null() & e) for m, e in
                _model_checks(base, inner, lambda k: value.struct.field(k), path)]
    origin = typing.get_origin(base)
    if origin is list:
        if not isinstance(dtype, pl.List):
            raise PayloadSchemaError(f"{path}: model expects a list, payload column is {dtype}")
        (item,) = typing.get_args(base)
        item_base, item_meta, _ = _unwrap(item)
        element_checks = _value_checks(pl.element(), item_base, item_meta, dtype.inner, f"{path}[]")
        element_null = [(f"{path}[]: required", pl.element().is_null())]
        return [(m, value.list.eval(e.fill_null(False)).list.any()) for m, e in element_null + element_checks]
    if origin is dict:
        if not isinstance(dtype, pl.Struct):
            raise PayloadSchemaError(f"{path}: model expects an object, payload column is {dtype}")
        _, value_type = typing.get_args(base)
        vbase, vmeta, _ = _unwrap(value_type)
        checks: list[Check] = []
        for f in dtype.fields:
            checks.extend(_value_checks(value.struct.field(f.name), vbase, vmeta, f.dtype, f"{path}.{f.name}"))
        return checks
    return _scalar_checks(value, base, metadata, dtype, path)


@lru_cache(maxsize=64)
def _compiled(feed: str, schema_items: tuple[tuple[str, pl.DataType], ...]) -> tuple[Check, ...]:
    return tuple(_model_checks(MODELS[feed], dict(schema_items), pl.col, ""))


def compile_checks(feed: str, schema: pl.Schema | dict[str, pl.DataType]) -> list[Check]:
    """The feed's model as (message, failing-row expression) pairs over a payload frame."""
    return list(_compiled(feed, tuple(dict(schema).items())))


# One payload in SAMPLE_EVERY is re-validated by pydantic besides the flagged ones. The sample is
# chosen by a hash of the payload, not by row position, so a full, sliced or incremental build
# holds back exactly the same records.
SAMPLE_EVERY = 64


def check_payloads(feed: str, frame: pl.DataFrame, encoded: pl.Series) -> pl.Series:
    """Validate every payload: compiled checks on all rows, pydantic on the flagged ones and on
    a content-chosen sample of one in SAMPLE_EVERY.

    Returns one reason per row (`invalid_payload: <field>: <problem>`), null when valid.
    """
    if frame.height == 0:
        return pl.Series("validation_error", [], dtype=pl.String)
    checks = compile_checks(feed, frame.schema)
    reasons = frame.select(
        pl.coalesce(
            [pl.when(expr.fill_null(False)).then(pl.lit(f"invalid_payload: {msg}")) for msg, expr in checks]
            or [pl.lit(None, pl.String)]
        ).alias("r")
    )["r"].cast(pl.String)
    flagged = reasons.is_not_null()
    sample = encoded.hash(seed=0) % SAMPLE_EVERY == 0
    recheck = (flagged | sample).arg_true()
    exact = validate_payloads(feed, encoded.gather(recheck))
    # the compiled message (short, stable: "email: has an invalid format") wins; pydantic's is
    # used where only pydantic objects. A record either side rejects is held back.
    merged = reasons.clone().scatter(recheck, reasons.gather(recheck).fill_null(exact))
    return merged.rename("validation_error")
