"""The SAP -> Ometria mapping file: pydantic models, loading and the check against SAP's UDFs.

The mapping is the only place where an installation's choices live (which BPs are customers,
UDFs -> properties, segment rules, order states, currencies, credit memo mode, warehouse rules,
order ids). `load_mapping(path)` validates it strictly; every error names the file, the key path
and the bad value. `validate_against_cufd(mapping, cufd)` then checks the mapped UDFs against the
UDFs the SAP company actually declares (UserFieldsMD), so a typo is an error at start rather
than a property that silently stays empty forever.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sap_ometria_assets.lib.ometria.links import ProductLink
from sap_ometria_assets.lib.ometria.models import ISO_4217_CODES
from sap_ometria_assets.lib.config.errors import validation_problems
from sap_ometria_assets.lib.config.safe_yaml import YamlLimitError, describe_error, load_yaml_file
from sap_ometria_assets.lib.config.settings import get_settings


class MappingError(ValueError):
    """The mapping file is missing, unreadable, invalid, or disagrees with SAP's UDFs."""


UDF_NAME = r"^U_[A-Za-z0-9_]+$"
IDENTIFIER = r"^[A-Za-z][A-Za-z0-9_]*$"
UdfName = Annotated[str, Field(pattern=UDF_NAME)]
Identifier = Annotated[str, Field(pattern=IDENTIFIER, max_length=64)]
ValueType = Literal["string", "integer", "number", "boolean", "date"]
CardType = Literal["cCustomer", "cLid", "cSupplier"]

# Standard Ometria fields a UDF may set directly (everything else goes into `properties`).
CONTACT_FIELDS = ("date_of_birth", "gender", "timezone")
ORDER_FIELDS = ("coupon_code", "payment_method", "shipping_method")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UdfMapping(_Strict):
    """One SAP user-defined field sent to Ometria."""

    sap_field: UdfName
    ometria_property: Identifier | None = None
    ometria_field: str | None = None
    type: ValueType = "string"
    value_map: dict[str, str | int | float | bool] | None = None
    allowed_values: list[str] | None = None
    if_empty: Literal["omit", "empty_string"] = "omit"

    @model_validator(mode="after")
    def _one_target(self) -> UdfMapping:
        if (self.ometria_property is None) == (self.ometria_field is None):
            raise ValueError("give exactly one of ometria_property or ometria_field")
        if self.if_empty == "empty_string" and self.type != "string":
            raise ValueError("if_empty: empty_string needs type: string")
        return self

    @property
    def target(self) -> str:
        return self.ometria_property or self.ometria_field  # type: ignore[return-value]


class UdfMappings(_Strict):
    BusinessPartner: list[UdfMapping] = Field(default_factory=list)
    Order: list[UdfMapping] = Field(default_factory=list)

    @model_validator(mode="after")
    def _targets(self) -> UdfMappings:
        for section, allowed in (("BusinessPartner", CONTACT_FIELDS), ("Order", ORDER_FIELDS)):
            seen: set[str] = set()
            for i, m in enumerate(getattr(self, section)):
                if m.ometria_field is not None and m.ometria_field not in allowed:
                    raise ValueError(
                        f"{section}[{i}].ometria_field: {m.ometria_field!r} is not one of {list(allowed)}"
                    )
                if m.target in seen:
                    raise ValueError(f"{section}[{i}]: {m.target!r} is mapped twice")
                seen.add(m.target)
        return self


class Currencies(_Strict):
    local: str
    map: dict[str, str] = Field(default_factory=dict)
    pass_through_iso_codes: bool = True

    @field_validator("local")
    @classmethod
    def _local_iso(cls, v: str) -> str:
        if v not in ISO_4217_CODES:
            raise ValueError(f"{v!r} is not an ISO 4217 currency code")
        return v

    @field_validator("map")
    @classmethod
    def _targets_iso(cls, v: dict[str, str]) -> dict[str, str]:
        for sap_code, iso in v.items():
            if iso not in ISO_4217_CODES:
                raise ValueError(f"{sap_code!r} maps to {iso!r}, which is not an ISO 4217 code")
        return v


class MarketingOptin(_Strict):
    send: bool = True
    optin_udf: UdfName | None = None
    opted_in_values: list[str] = Field(default_factory=lambda: ["Y"])
    opted_out_values: list[str] = Field(default_factory=lambda: ["N"])
    send_timestamps: bool = False

    @model_validator(mode="after")
    def _disjoint(self) -> MarketingOptin:
        both = set(self.opted_in_values) & set(self.opted_out_values)
        if both:
            raise ValueError(f"values both opted in and out: {sorted(both)}")
        return self


class SegmentCondition(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    group: str | int | None = None
    udf: UdfName | None = None
    equals: str | None = None
    in_: list[str] | None = Field(default=None, alias="in")

    @model_validator(mode="after")
    def _shape(self) -> SegmentCondition:
        if (self.group is None) == (self.udf is None):
            raise ValueError("a condition has either `group` or `udf`")
        if self.udf is not None and (self.equals is None) == (self.in_ is None):
            raise ValueError("a `udf` condition needs exactly one of `equals` or `in`")
        if self.group is not None and (self.equals is not None or self.in_ is not None):
            raise ValueError("a `group` condition takes no `equals`/`in`")
        return self

    @property
    def values(self) -> list[str]:
        return [self.equals] if self.equals is not None else list(self.in_ or [])


class SegmentRule(_Strict):
    segment: str = Field(min_length=1)
    when_any: list[SegmentCondition] = Field(min_length=1)


class Segments(_Strict):
    property: Identifier | None = "segment"
    default: str | None = None
    rules: list[SegmentRule] = Field(default_factory=list)


class Contacts(_Strict):
    card_types: list[CardType] = Field(default_factory=lambda: ["cCustomer"], min_length=1)
    lowercase_email: bool = True
    require_email: bool = False
    phone_fields: list[str] = Field(default_factory=lambda: ["Cellular", "Phone1"])
    phone_default_region: str = Field(default="GB", pattern=r"^[A-Z]{2}$")
    marketing_optin: MarketingOptin = Field(default_factory=MarketingOptin)
    on_deleted: Literal["hold_back", "opt_out"] = "hold_back"
    group_property: Identifier | None = "customer_group"
    segments: Segments = Field(default_factory=Segments)


class StatusRule(_Strict):
    status: str = Field(min_length=1, pattern=r"^[a-z_]+$")
    is_valid: bool


ORDER_STATES = (
    "open_undelivered",
    "open_partly_delivered",
    "open_delivered",
    "closed_undelivered",
    "closed_partly_delivered",
    "closed_delivered",
    "cancelled",
)


class OrderStatuses(_Strict):
    open_undelivered: StatusRule = StatusRule(status="pending", is_valid=True)
    open_partly_delivered: StatusRule = StatusRule(status="shipped", is_valid=True)
    open_delivered: StatusRule = StatusRule(status="shipped", is_valid=True)
    closed_undelivered: StatusRule = StatusRule(status="complete", is_valid=True)
    closed_partly_delivered: StatusRule = StatusRule(status="complete", is_valid=True)
    closed_delivered: StatusRule = StatusRule(status="complete", is_valid=True)
    cancelled: StatusRule = StatusRule(status="cancelled", is_valid=False)


class Channel(_Strict):
    udf: UdfName | None = None
    value_map: dict[str, str] = Field(default_factory=dict)
    default: str | None = None


def _check_id_template(value: str) -> str:
    fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    if fields != ["DocEntry"]:
        raise ValueError(
            f"must contain {{DocEntry}} exactly once and no other placeholder (got fields {fields}); "
            "ids must come from the immutable DocEntry, never from DocNum or other editable fields"
        )
    if "@" in value:
        raise ValueError("ids must not contain '@'")
    return value


class Orders(_Strict):
    id_template: str = "SO-{DocEntry}"
    channel: Channel = Field(default_factory=Channel)
    status: OrderStatuses = Field(default_factory=OrderStatuses)

    @field_validator("id_template")
    @classmethod
    def _template(cls, v: str) -> str:
        return _check_id_template(v)


class CreditMemos(_Strict):
    mode: Literal["negative_order", "refund_on_original"] = "negative_order"
    id_template: str = "CN-{DocEntry}"
    negative_order_status: str = Field(default="complete", pattern=r"^[a-z_]+$")

    @field_validator("id_template")
    @classmethod
    def _template(cls, v: str) -> str:
        return _check_id_template(v)


class AttributeMapping(_Strict):
    sap_field: UdfName
    type: Identifier
    value_map: dict[str, str] | None = None


class Products(_Strict):
    price_list: int = 1
    title_udf: UdfName | None = None
    attributes: list[AttributeMapping] = Field(default_factory=list)
    url: ProductLink | None = None
    image_url: ProductLink | None = None


class WarehouseRule(_Strict):
    rule: Literal["include", "exclude", "channel"]
    channel: Identifier | None = None
    count_in_available: bool = False

    @model_validator(mode="after")
    def _channel(self) -> WarehouseRule:
        if (self.rule == "channel") != (self.channel is not None):
            raise ValueError("`channel` is required with rule: channel and only allowed there")
        if self.count_in_available and self.rule != "channel":
            raise ValueError("count_in_available only applies to rule: channel")
        return self


class Stock(_Strict):
    in_stock_threshold: float = Field(default=0, ge=0)
    default_rule: Literal["include", "exclude"] = "exclude"
    warehouses: dict[str, WarehouseRule] = Field(default_factory=dict)

    @property
    def channels(self) -> list[str]:
        return sorted({w.channel for w in self.warehouses.values() if w.channel})


class Mapping(_Strict):
    """The whole mapping file."""

    version: Literal[1] = 1
    store: str = Field(min_length=1)
    currencies: Currencies
    contacts: Contacts = Field(default_factory=Contacts)
    udfs: UdfMappings = Field(default_factory=UdfMappings)
    orders: Orders = Field(default_factory=Orders)
    credit_memos: CreditMemos = Field(default_factory=CreditMemos)
    products: Products = Field(default_factory=Products)
    stock: Stock = Field(default_factory=Stock)
    source: str | None = Field(default=None, exclude=True)  # file it came from (for messages)

    @model_validator(mode="after")
    def _distinct_ids(self) -> Mapping:
        if self.orders.id_template == self.credit_memos.id_template:
            raise ValueError(
                "orders.id_template and credit_memos.id_template are equal: an order and a credit "
                "memo with the same DocEntry would overwrite each other in Ometria"
            )
        return self


def parse_mapping(data: Any, source: str = "<mapping>") -> Mapping:
    """Validate an already-parsed mapping document; errors name `source`, key path and value."""
    if not isinstance(data, dict):
        raise MappingError(f"{source}: the mapping must be a YAML mapping at top level, got {type(data).__name__}")
    try:
        mapping = Mapping.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {problem}" for problem in validation_problems(exc)]
        raise MappingError("Invalid mapping file\n" + "\n".join(lines)) from None
    return mapping.model_copy(update={"source": source})


def load_mapping(path: str | Path | None = None) -> Mapping:
    """Load and validate the mapping YAML (default: `settings.mapping_path`)."""
    if path is None:
        path = get_settings().mapping_path
    path = Path(path)
    try:
        data = load_yaml_file(path)
    except FileNotFoundError:
        raise MappingError(f"{path}: mapping file not found (set SAP_OMETRIA_MAPPING)") from None
    except OSError as exc:
        raise MappingError(f"{path}: cannot read mapping file: {exc.strerror}") from None
    except (yaml.YAMLError, YamlLimitError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path}: not valid YAML: {describe_error(exc)}") from None
    return parse_mapping(data, source=str(path))


# ---------------------------------------------------------------------------------------------
# Against SAP's declared UDFs (CUFD / UserFieldsMD)
# ---------------------------------------------------------------------------------------------

_NUMERIC_TYPES = {"db_Numeric", "db_Float"}


def mapped_udfs(mapping: Mapping) -> list[tuple[str, str, str, UdfMapping | None]]:
    """Every UDF the mapping reads: (key path, CUFD table, U_ field, its UdfMapping if any)."""
    out: list[tuple[str, str, str, UdfMapping | None]] = []
    for i, m in enumerate(mapping.udfs.BusinessPartner):
        out.append((f"udfs.BusinessPartner.{i}.sap_field", "OCRD", m.sap_field, m))
    for i, m in enumerate(mapping.udfs.Order):
        out.append((f"udfs.Order.{i}.sap_field", "ORDR", m.sap_field, m))
        out.append((f"udfs.Order.{i}.sap_field", "ORIN", m.sap_field, m))
    mo = mapping.contacts.marketing_optin
    if mo.send and mo.optin_udf:
        out.append(("contacts.marketing_optin.optin_udf", "OCRD", mo.optin_udf, None))
    for r, rule in enumerate(mapping.contacts.segments.rules):
        for c, cond in enumerate(rule.when_any):
            if cond.udf:
                out.append((f"contacts.segments.rules.{r}.when_any.{c}.udf", "OCRD", cond.udf, None))
    if mapping.orders.channel.udf:
        out.append(("orders.channel.udf", "ORDR", mapping.orders.channel.udf, None))
    if mapping.products.title_udf:
        out.append(("products.title_udf", "OITM", mapping.products.title_udf, None))
    for i, a in enumerate(mapping.products.attributes):
        out.append((f"products.attributes.{i}.sap_field", "OITM", a.sap_field, None))
    for key in ("url", "image_url"):
        link = getattr(mapping.products, key)
        if link and link.udf:
            out.append((f"products.{key}.udf", "OITM", link.udf, None))
        for f in (link.fields if link else []):
            if f.startswith("U_") and f != link.udf:
                out.append((f"products.{key}.template", "OITM", f, None))
    return out


def _valid_values(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return []
    if not isinstance(raw, list):
        return []
    return [str(v["Value"]) for v in raw if isinstance(v, dict) and v.get("Value") is not None]


def validate_against_cufd(mapping: Mapping, cufd: pl.DataFrame) -> Mapping:
    """Check every mapped UDF exists in SAP's UserFieldsMD with a compatible type.

    Returns the mapping with `allowed_values` filled from SAP's valid values where the file gave
    none. Raises MappingError listing every problem (file, key path, UDF) at once.
    """
    source = mapping.source or "<mapping>"
    declared: dict[tuple[str, str], dict] = {}
    if cufd.height:
        for row in cufd.select(
            pl.col("TableName").cast(pl.String),
            pl.col("Name").cast(pl.String),
            pl.col("Type").cast(pl.String) if "Type" in cufd.columns else pl.lit(None, pl.String).alias("Type"),
            (pl.col("ValidValuesMD").cast(pl.String) if "ValidValuesMD" in cufd.columns
             else pl.lit(None, pl.String).alias("ValidValuesMD")),
        ).iter_rows(named=True):
            declared[(str(row["TableName"]).upper(), "U_" + str(row["Name"]))] = row
    problems: list[str] = []
    for path, table, field, m in mapped_udfs(mapping):
        row = declared.get((table, field))
        if row is None:
            problems.append(
                f"{source}: {path}: {field!r} is not a user-defined field of {table} in SAP "
                f"(UserFieldsMD has {sorted(f for t, f in declared if t == table) or 'none'})"
            )
            continue
        if m is None:
            continue
        sap_type = row.get("Type")
        if m.type == "date" and sap_type not in (None, "db_Date"):
            problems.append(f"{source}: {path}: {field!r} is {sap_type} in SAP, mapped as type date")
        if m.type in ("integer", "number") and sap_type not in (None, *_NUMERIC_TYPES) and not m.value_map:
            problems.append(
                f"{source}: {path}: {field!r} is {sap_type} in SAP, mapped as type {m.type} without a value_map"
            )
        sap_values = _valid_values(row.get("ValidValuesMD"))
        if m.allowed_values and sap_values:
            unknown = sorted(set(m.allowed_values) - set(sap_values))
            if unknown:
                problems.append(
                    f"{source}: {path}: allowed_values {unknown} are not valid values of {field!r} "
                    f"in SAP ({sap_values})"
                )
    if problems:
        raise MappingError("Mapping does not match SAP's user-defined fields\n" + "\n".join(problems))

    def resolved(items: list[UdfMapping], table: str) -> list[UdfMapping]:
        out = []
        for m in items:
            if m.allowed_values is None:
                values = _valid_values(declared[(table, m.sap_field)].get("ValidValuesMD"))
                if values:
                    m = m.model_copy(update={"allowed_values": values})
            out.append(m)
        return out

    udfs = UdfMappings(
        BusinessPartner=resolved(mapping.udfs.BusinessPartner, "OCRD"),
        Order=resolved(mapping.udfs.Order, "ORDR"),
    )
    return mapping.model_copy(update={"udfs": udfs})

