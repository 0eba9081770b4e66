"""Runtime configuration, read once from the environment (and an optional `.env`).

The environment variable names are the product's contract with operators; see `.env.example`
and the README's configuration table. Secrets are `SecretStr` so they never print, log or
serialise by accident: call `.get_secret_value()` only at the moment a request is built.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sap_ometria_assets.lib.config.errors import validation_problems

# Project root = the folder holding pyproject.toml; relative paths in settings resolve against it
# so that `make demo`, the Dagster UI and the tests agree on where `data/` is.
PROJECT_ROOT = Path(__file__).resolve().parents[3]

DEFAULT_OMETRIA_API_URL = "https://api.ometria.com/v2"


class SettingsError(RuntimeError):
    """Raised at start-up when a setting is invalid; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- SAP Business One Service Layer -------------------------------------------------
    sap_b1_service_layer_url: str | None = Field(
        default=None,
        description="Service root, e.g. https://sap:50000/b1s/v2. Unset: the embedded demo company.",
    )
    sap_b1_company_db: str = "SBODEMOGB"
    sap_b1_username: str = "manager"
    sap_b1_password: SecretStr = SecretStr("demo-password")
    sap_b1_ca_bundle: Path | None = Field(
        default=None, description="PEM bundle to trust a self-signed Service Layer certificate."
    )
    sap_b1_verify_tls: bool = Field(
        default=True, description="Never turn off in production; use SAP_B1_CA_BUNDLE instead."
    )
    sap_b1_page_size: int = Field(default=500, ge=1, le=10_000)
    sap_b1_timeout_s: float = Field(default=60.0, gt=0)
    sap_b1_max_retries: int = Field(default=4, ge=0, le=20)
    sap_b1_overlap_minutes: int = Field(
        default=10, ge=0, le=24 * 60,
        description="Incremental reads re-read this many minutes before the watermark.",
    )
    sap_b1_request_deadline_s: float = Field(
        default=600.0, gt=0,
        description="Wall-clock limit of one request including its whole body (the timeout "
        "bounds each socket read only; a server trickling bytes would never trip it).",
    )
    sap_b1_max_pages: int = Field(
        default=100_000, ge=1,
        description="Hard ceiling of pages in one read (reads with a known $count stop sooner).",
    )
    sap_b1_max_empty_pages: int = Field(
        default=3, ge=1, le=1000,
        description="A read stops with an error after this many pages in a row bring no records "
        "but still link to a next page.",
    )
    sap_b1_future_skew_minutes: int = Field(
        default=10, ge=0, le=24 * 60,
        description="Watermarks never move past now (company time zone) plus this allowance; "
        "records dated later land, are listed (future_update_date) and move no watermark.",
    )
    sap_b1_deletion_max_share: float = Field(
        default=0.05, ge=0, le=1,
        description="A deletion scan that would mark more than this share of live master data "
        "deleted marks nothing (deletion_scan_refused) until a person accepts it.",
    )
    sap_b1_accept_deletion_scan: str | None = Field(
        default=None,
        description="Comma-separated tables (e.g. ocrd) whose next deletion scan is accepted "
        "even above SAP_B1_DELETION_MAX_SHARE; 'all' for every table. Unset after use.",
    )

    # --- Warehouse and company ----------------------------------------------------------
    sap_ometria_duckdb_path: Path = Path("data/warehouse.duckdb")
    sap_ometria_duckdb_memory_limit: str = Field(
        default="2GB",
        description="DuckDB memory cap per connection (e.g. 2GB); above it DuckDB spills to disk.",
    )
    sap_ometria_compact_hour_utc: int = Field(
        default=2, ge=-1, le=23,
        description="Hour of the day (UTC) in which syncs compact the warehouse's tables (DuckDB "
        "rewrites row groups holding deleted rows when it checkpoints); in the other hours the "
        "deleted rows stay in place, skipped by readers, until then. -1: every step compacts, "
        "DuckDB's default (x100: 1.5-4 s an hour).",
    )
    sap_ometria_duckdb_lock_wait_s: float = Field(
        default=120.0, ge=0, le=3600,
        description="How long a step waits for another process to release the warehouse file.",
    )
    sap_ometria_snapshot_retention_days: int = Field(
        default=30, ge=1, le=3650,
        description="Days a published snapshot stays queryable (the latest is always kept).",
    )
    sap_ometria_full_pass_hours: float = Field(
        default=24.0, ge=0, le=8760,
        description="Incrementally built tables (contacts, orders, the large reconciliation "
        "tables, the document-local exception rules) are rebuilt in full when their last full "
        "build is older than this many hours; "
        "0 turns the periodic pass off.",
    )
    sap_ometria_timezone: str = Field(
        default="Europe/London",
        description="Company time zone: SAP's timestamps carry no offset (the v2 'Z' is nominal).",
    )
    sap_ometria_mapping: Path | None = Field(
        default=None, description="Mapping YAML; unset uses data/mapping.yaml."
    )
    sap_ometria_outbox_dir: Path = Path("data/outbox")
    sap_ometria_demo_dir: Path = Field(
        default=Path("data/demo"), description="State of the embedded demo emulators."
    )
    sap_ometria_demo_scale: float = Field(default=1.0, gt=0, le=1000)
    sap_ometria_demo_seed: int = 42
    sap_ometria_alert_webhook: SecretStr | None = None
    sap_ometria_checks: Path | None = Field(
        default=None, description="Check thresholds YAML; unset uses data/checks.yaml."
    )

    # --- Automation (schedules, sensors, backfill) ----------------------------------------
    sap_ometria_cron_stock: str = "*/15 * * * *"
    sap_ometria_cron_sync: str = "5 * * * *"
    sap_ometria_cron_deletion_scan: str = "30 2 * * *"
    sap_ometria_cron_reconcile: str = "0 6 * * *"
    sap_ometria_change_sensor_interval_s: int = Field(default=300, ge=30, le=86_400)
    sap_ometria_backfill_start: date = date(2024, 1, 1)
    sap_ometria_backfill_rate_limit_per_s: float = Field(default=1.0, gt=0, le=100)
    sap_ometria_automation_enabled: bool = Field(
        default=True, description="Start schedules and sensors switched on in `make ui`."
    )
    sap_ometria_ui_url: str = Field(
        default="http://127.0.0.1:3000", description="Dagster UI address used in alert links."
    )

    # --- Ometria ------------------------------------------------------------------------
    ometria_api_url: str | None = Field(
        default=None,
        description="Unset: the embedded Ometria emulator (demo). Production: https://api.ometria.com/v2",
    )
    ometria_api_key: SecretStr | None = None
    ometria_dry_run: bool = False
    ometria_rate_limit_per_s: float = Field(default=4.0, gt=0, le=100)
    ometria_timeout_s: float = Field(default=30.0, gt=0)
    ometria_max_retries: int = Field(default=5, ge=0, le=20)
    ometria_ack_every_requests: int = Field(
        default=50, ge=1, le=1000,
        description="Acknowledged requests written to the ledger per transaction (or one second's "
        "worth, whichever comes first). Each is journalled durably before the next request, so a "
        "killed run re-sends at most the batch in flight whatever this is.",
    )
    ometria_collection: str = Field(
        default="sap_b1", validation_alias=AliasChoices("OMETRIA_COLLECTION"),
        description="Contact @collection, so SAP blanks never overwrite web data.",
    )

    @field_validator("sap_ometria_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator(
        "ometria_api_key", "sap_ometria_alert_webhook", "sap_b1_ca_bundle", "sap_ometria_mapping",
        "sap_ometria_checks",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value):
        # `.env.example` lists every variable with an empty value: empty means "not set".
        return None if value == "" else value

    @field_validator("ometria_api_key", "sap_b1_password")
    @classmethod
    def _clean_secret(cls, value: SecretStr | None, info) -> SecretStr | None:
        """Secrets read from files end in a line break: strip it. What is left must be sendable:
        the API key goes into an HTTP header (printable ASCII only), the password into the
        Login body (no control characters). The message never shows the value."""
        if value is None:
            return None
        raw = value.get_secret_value()
        # a password may hold inner or edge spaces on purpose; a file's line ending it never does
        clean = raw.strip() if info.field_name == "ometria_api_key" else raw.strip("\r\n")
        if info.field_name == "ometria_api_key":
            if not clean:
                return None
            if not clean.isascii():
                raise ValueError("contains non-ASCII characters; an API key travels in an HTTP "
                                 "header, which takes printable ASCII only (copy the key again "
                                 "from Ometria's Settings > API keys)")
        if any(ord(c) < 32 or ord(c) == 127 for c in clean):
            raise ValueError("contains control characters (a line break, tab or similar inside "
                             "the value); set it again without them")
        return SecretStr(clean)

    @field_validator("sap_b1_service_layer_url", "ometria_api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    # --- Derived ----------------------------------------------------------------------
    @property
    def uses_embedded_sap(self) -> bool:
        return self.sap_b1_service_layer_url is None

    @property
    def uses_embedded_ometria(self) -> bool:
        return self.ometria_api_url is None

    @property
    def ometria_is_dry_run(self) -> bool:
        """Dry run when asked, or when a real Ometria URL is named without an API key."""
        if self.ometria_dry_run:
            return True
        return (not self.uses_embedded_ometria) and self.ometria_api_key is None

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def duckdb_path(self) -> Path:
        return self.resolve(self.sap_ometria_duckdb_path)

    @property
    def outbox_dir(self) -> Path:
        return self.resolve(self.sap_ometria_outbox_dir)

    @property
    def demo_dir(self) -> Path:
        return self.resolve(self.sap_ometria_demo_dir)

    @property
    def mapping_path(self) -> Path:
        return self.resolve(self.sap_ometria_mapping or Path("data/mapping.yaml"))

    @property
    def checks_path(self) -> Path:
        return self.resolve(self.sap_ometria_checks or Path("data/checks.yaml"))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.sap_ometria_timezone)


def load_settings(**overrides) -> Settings:
    """Read settings; an invalid value raises SettingsError naming the environment variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = validation_problems(
            exc, key=lambda loc: str(loc[0]).upper() if loc else "?",
            # never echo a secret's value back
            hide_value=lambda name: "PASSWORD" in name or "KEY" in name or "WEBHOOK" in name,
        )
        raise SettingsError("Invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def _cached() -> Settings:
    return load_settings()


# One company per process when many are served (a code server or run worker per company, see
# sap_ometria_assets/tenants.py): its settings replace the environment's for the whole process.
_active: Settings | None = None


def activate_settings(settings: Settings | None) -> None:
    """Make `settings` the process's settings (None: back to the environment's)."""
    global _active
    _active = settings


def get_settings(refresh: bool = False) -> Settings:
    """Process-wide settings. Tests call `get_settings(refresh=True)` after changing the env."""
    if _active is not None:
        return _active
    if refresh:
        _cached.cache_clear()
    return _cached()

