"""Thresholds, tolerances and owners for the data checks (`data/checks.yaml`), validated by pydantic.

One file holds every number a controller or CRM manager may want to tune without touching code:
when an exception count turns a check amber (WARN) or red (ERROR), how far an order total may drift
from its lines, when an unacknowledged change counts as stale, how wide the order volume band is,
and how long landed SAP tables may go without a refresh. A bad value is an error at start naming
the file, the key and the value, never a silent default.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sap_ometria_assets.lib.config.errors import validation_problems
from sap_ometria_assets.lib.config.safe_yaml import YamlLimitError, describe_error, load_yaml_file
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.ometria.feeds import OMETRIA_FEEDS
from sap_ometria_assets.lib.ometria.mapping import load_mapping
from sap_ometria_assets.lib.ometria.models import ISO_4217_CODES, MAX_RECORD_BYTES
from sap_ometria_assets.lib.sap.tables import all_table_names
from sap_ometria_assets.lib.sync_exceptions.rule_ids import RULE_IDS

Severity = Literal["WARN", "ERROR"]
Owner = Literal["marketing", "finance", "ops"]
OmetriaAsset = Literal[OMETRIA_FEEDS]  # type: ignore[valid-type]


class ChecksConfigError(ValueError):
    """`data/checks.yaml` is missing a key or holds a bad value; the message names both."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OwnerContact(_Strict):
    team: str
    contact: str | None = None


class Threshold(_Strict):
    """When the open exceptions of one rule on one Ometria asset fail its check.

    Counts are open exceptions; rates are open exceptions per record of the asset (0.02 = 2 %).
    A limit left out is not used. ERROR wins over WARN.
    """

    warn_count: int | None = Field(default=None, ge=1)
    error_count: int | None = Field(default=None, ge=1)
    warn_rate: float | None = Field(default=None, gt=0, le=1)
    error_rate: float | None = Field(default=None, gt=0, le=1)

    def outcome(self, count: int, population: int) -> Severity | None:
        rate = (count / population) if population else (1.0 if count else 0.0)
        if (self.error_count is not None and count >= self.error_count) or (
            self.error_rate is not None and count and rate >= self.error_rate
        ):
            return "ERROR"
        if (self.warn_count is not None and count >= self.warn_count) or (
            self.warn_rate is not None and count and rate >= self.warn_rate
        ):
            return "WARN"
        return None


class AssetThresholds(_Strict):
    default: Threshold = Threshold(warn_count=1)
    rules: dict[str, Threshold] = Field(default_factory=dict)

    def for_rule(self, rule: str) -> Threshold:
        return self.rules.get(rule, self.default)


class RuleOverride(_Strict):
    enabled: bool = True
    severity: Severity | None = None
    owner: Owner | None = None


class ExceptionSettings(_Strict):
    order_total_tolerance: Decimal = Field(default=Decimal("0.01"), ge=0)
    credit_memo_tolerance: Decimal = Field(default=Decimal("0.01"), ge=0)
    ometria_record_limit_bytes: int = Field(
        default=MAX_RECORD_BYTES, gt=0,
        description="Ometria's record size limit, the one the transforms hold records back at "
        "(lib/ometria/models.py); the record_too_large rule flags records over it.",
    )
    unmatched_error_days: int = Field(
        default=7, ge=1,
        description="Ometria errors that name no record stay open this long (nothing can resolve them).",
    )
    held_back_by_design: tuple[str, ...] = Field(
        default=("stock_not_managed",),
        description="Hold-back reason codes that are deliberate, not problems (e.g. no stock flag "
        "for a non-inventory item): a record held back only for these is not an exception.",
    )
    rules: dict[str, RuleOverride] = Field(default_factory=dict)


class ReconSettings(_Strict):
    money_tolerance: Decimal = Field(
        default=Decimal("0.005"), ge=0,
        description="Largest difference still counted as agreeing: below a penny.",
    )
    stale_after_hours: float = Field(default=24, gt=0)
    stale_error_count: int | None = Field(default=None, ge=1)


class VolumeSettings(_Strict):
    trailing_days: int = Field(default=28, ge=3, le=366)
    min_history_days: int = Field(default=7, ge=2)
    band_sigmas: float = Field(default=3.0, gt=0)
    min_band_fraction: float = Field(
        default=0.2, ge=0, le=1,
        description="The band is at least this fraction of the trailing mean either side, so a "
        "very steady history does not make every small wobble a warning.",
    )

    @model_validator(mode="after")
    def _history_fits(self) -> VolumeSettings:
        if self.min_history_days > self.trailing_days:
            raise ValueError("min_history_days must not exceed trailing_days")
        return self


class TrendSettings(_Strict):
    window_days: int = Field(default=14, ge=2, le=366)
    min_points: int = Field(default=3, ge=2)
    min_increase: float = Field(
        default=0.2, ge=0,
        description="A rule's exception rate is rising when it grew by at least this fraction "
        "(0.2 = 20 %) over the window and its fitted slope is positive.",
    )


class FreshnessWindow(_Strict):
    warn_hours: float | None = Field(default=None, gt=0)
    fail_hours: float = Field(gt=0)

    @model_validator(mode="after")
    def _warn_before_fail(self) -> FreshnessWindow:
        if self.warn_hours is not None and self.warn_hours >= self.fail_hours:
            raise ValueError("warn_hours must be smaller than fail_hours")
        return self

    @property
    def fail_window(self) -> timedelta:
        return timedelta(hours=self.fail_hours)

    @property
    def warn_window(self) -> timedelta | None:
        return None if self.warn_hours is None else timedelta(hours=self.warn_hours)


class FreshnessSettings(_Strict):
    default: FreshnessWindow = FreshnessWindow(warn_hours=6, fail_hours=26)
    tables: dict[str, FreshnessWindow] = Field(default_factory=dict)

    def for_table(self, table: str) -> FreshnessWindow:
        return self.tables.get(table, self.default)


class ContractSettings(_Strict):
    new_column_warn_days: float = Field(
        default=7, gt=0,
        description="A column the extract returns beyond the contract stays a WARN this long "
        "after it first appeared, then is taken as known.",
    )
    type_change_min_share: float = Field(
        default=0.5, gt=0, le=1,
        description="A contract column whose values the latest extract could not read for at "
        "least this share of its records has changed type (blocking).",
    )
    type_change_min_rows: int = Field(
        default=5, ge=1,
        description="...and at least this many records (fewer are bad records, not a new type).",
    )


class ChecksConfig(_Strict):
    owners: dict[Owner, OwnerContact] = Field(default_factory=dict)
    exceptions: ExceptionSettings = ExceptionSettings()
    thresholds: dict[OmetriaAsset, AssetThresholds] = Field(default_factory=dict)
    recon: ReconSettings = ReconSettings()
    volume: VolumeSettings = VolumeSettings()
    trend: TrendSettings = TrendSettings()
    freshness: FreshnessSettings = FreshnessSettings()
    contracts: ContractSettings = ContractSettings()

    def thresholds_for(self, asset: str) -> AssetThresholds:
        return self.thresholds.get(asset, AssetThresholds())  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _known_tables(self) -> ChecksConfig:
        unknown = sorted(set(self.freshness.tables) - set(all_table_names()))
        if unknown:
            raise ValueError(f"freshness.tables names tables that are not landed: {unknown}")
        return self


def default_checks_path() -> Path:
    return get_settings().checks_path


def load_checks_config(path: str | Path | None = None) -> ChecksConfig:
    """Read and validate the checks file; errors name the file, the key and the bad value."""
    path = Path(path) if path else default_checks_path()
    try:
        raw = load_yaml_file(path) if path.exists() else {}
    except OSError as exc:
        raise ChecksConfigError(f"{path}: cannot read checks file: {exc.strerror}") from None
    except (yaml.YAMLError, YamlLimitError, UnicodeDecodeError) as exc:
        raise ChecksConfigError(f"{path}: not valid YAML: {describe_error(exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ChecksConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = ChecksConfig.model_validate(raw)
    except ValidationError as exc:
        raise ChecksConfigError(f"{path}: " + "; ".join(validation_problems(exc))) from None
    named = set(config.exceptions.rules)
    for thresholds in config.thresholds.values():
        named |= set(thresholds.rules)
    unknown = sorted(named - set(RULE_IDS))
    if unknown:
        raise ChecksConfigError(
            f"{path}: unknown rule id(s) {unknown}; known rules: {sorted(RULE_IDS)}"
        )
    return config


@lru_cache(maxsize=4)
def _cached(path: str) -> ChecksConfig:
    return load_checks_config(path)


def get_checks_config(path: str | Path | None = None) -> ChecksConfig:
    """Process-wide cached config (the file is read once per path)."""
    return _cached(str(Path(path) if path else default_checks_path()))


# ---------------------------------------------------------------------------------------------
# Facts the checks take from the mapping file (lib/ometria/mapping.py is their source of truth)
# ---------------------------------------------------------------------------------------------
class MappingFacts(_Strict):
    """What the exception rules and reconciliation views need to know from the mapping.

    Defaults equal the mapping's own defaults; `mapping_facts()` reads the real file.
    """

    local_currency: str = "GBP"
    customer_card_types: tuple[str, ...] = ("cCustomer",)
    currency_map: dict[str, str] = Field(default_factory=dict)  # SAP code -> ISO 4217
    pass_through_iso_codes: bool = True
    price_list: int = 1
    # warehouse code -> its stock reaches Ometria (included, or a store channel)
    warehouse_feeds: dict[str, bool] = Field(default_factory=dict)
    warehouse_default_feeds: bool = False
    credit_memo_mode: Literal["negative_order", "refund_on_original"] = "negative_order"
    order_id_template: str = "SO-{DocEntry}"
    cancelled_status: str = "cancelled"
    credit_memo_id_template: str = "CN-{DocEntry}"
    # products.image_url is configured: this sync sends images (else the web platform's feed does)
    sends_image_url: bool = False
    source: str = "mapping defaults"

    def is_currency_mapped(self, code: str) -> bool:
        if code in self.currency_map or code == self.local_currency:
            return True
        if self.pass_through_iso_codes:
            return code in ISO_4217_CODES
        return False

    def mapped_currency_codes(self) -> list[str]:
        """Every code that reaches Ometria as ISO (map keys, local, pass-through ISO codes)."""
        codes = {*self.currency_map, self.local_currency}
        if self.pass_through_iso_codes:
            codes |= set(ISO_4217_CODES)
        return sorted(codes)

    def iso_of(self, code: str) -> str | None:
        if code in self.currency_map:
            return self.currency_map[code]
        return code if self.is_currency_mapped(code) else None


def mapping_facts(mapping_path: Path | None = None) -> MappingFacts:
    """The facts from the validated mapping (`lib/ometria/mapping.py`); a bad mapping raises its error."""
    return facts_from_mapping(load_mapping(mapping_path))


def facts_from_mapping(mapping) -> MappingFacts:
    stock = mapping.stock
    counts = {
        code: rule.rule != "exclude" for code, rule in stock.warehouses.items()
    }
    return MappingFacts(
        local_currency=mapping.currencies.local,
        customer_card_types=tuple(mapping.contacts.card_types),
        currency_map=dict(mapping.currencies.map),
        pass_through_iso_codes=mapping.currencies.pass_through_iso_codes,
        price_list=mapping.products.price_list,
        warehouse_feeds=counts,
        warehouse_default_feeds=stock.default_rule == "include",
        credit_memo_mode=mapping.credit_memos.mode,
        order_id_template=mapping.orders.id_template,
        cancelled_status=mapping.orders.status.cancelled.status,
        credit_memo_id_template=mapping.credit_memos.id_template,
        sends_image_url=mapping.products.image_url is not None,
        source=mapping.source or "mapping",
    )
