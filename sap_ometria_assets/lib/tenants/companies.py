"""Companies as configuration: one YAML file per tenant in the companies folder.

`companies/<name>.yaml` describes one SAP Business One company and the Ometria account it feeds:
the Service Layer (URL, CompanyDB, user, and the NAME of the environment variable that holds the
password), the Ometria account (URL, the NAME of the variable holding the API key, the account
id that companies sharing one account have in common), mapping and checks files, time zone,
cron strings and the folder of its warehouse. The file name is the company's name: it becomes
the Dagster code location and the `sap_ometria/company` run tag.

Secrets never live in these files. A file with a literal secret (a `password`, `api_key`,
`token`... field) or naming a variable that is not set is refused with an error naming the file
and the field, never the value. No companies folder at all = the single-company product of
today, configured by the environment alone.

`company_settings(company)` turns one file plus the environment into the same `Settings` object
the single-company product uses, so nothing downstream knows about tenants.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sap_ometria_assets.lib.config.errors import validation_problems
from sap_ometria_assets.lib.config.safe_yaml import describe_error, load_yaml_file
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT, Settings, SettingsError, load_settings

COMPANIES_DIR_ENV = "SAP_OMETRIA_COMPANIES_DIR"
DEFAULT_COMPANIES_DIR = Path("companies")

COMPANY_TAG = "sap_ometria/company"
ACCOUNT_TAG = "sap_ometria/ometria_account"

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
# Field names that can only mean "the secret itself" (the *_env fields name a variable instead).
_SECRET_WORDS = re.compile(r"(password|passwd|secret|token|api_key|apikey|^key$|webhook)", re.I)


class CompanyConfigError(ValueError):
    """A company file is missing, unreadable or invalid; the message names file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _env_name(value: str) -> str:
    if not ENV_NAME_RE.match(value):
        # never echo it: a secret pasted here by mistake must not reach a log
        raise ValueError("must be the NAME of an environment variable (A-Z, 0-9 and _, e.g. "
                         "ACME_SAP_PASSWORD), not the secret itself")
    return value


class SapSection(_Strict):
    service_layer_url: str | None = Field(
        default=None, description="Service Layer root; omitted: the embedded demo company.")
    company_db: str = "SBODEMOGB"
    username: str = "manager"
    password_env: str | None = Field(
        default=None, description="Environment variable holding the Service Layer password.")
    page_size: int | None = Field(default=None, ge=1, le=10_000)

    _check_env = field_validator("password_env")(lambda cls, v: None if v is None else _env_name(v))


class DemoSection(_Strict):
    """The embedded demo company (used when `sap.service_layer_url` is omitted)."""

    seed: int = 42
    scale: float = Field(default=1.0, gt=0, le=1000)


class OmetriaSection(_Strict):
    api_url: str | None = Field(default=None, description="Omitted: the embedded emulator.")
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the Ometria API key.")
    account: str | None = Field(
        default=None, description="Ometria account id; companies naming the same account share "
        "its rate limit (one push at a time per account). Omitted: the company's own account.")
    rate_limit_per_s: float | None = Field(default=None, gt=0, le=100)
    collection: str | None = None
    dry_run: bool = False

    _check_env = field_validator("api_key_env")(lambda cls, v: None if v is None else _env_name(v))

    @field_validator("account")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", value):
            raise ValueError("letters, digits, '.', '_' and '-' only (it becomes a run tag)")
        return value


class Schedules(_Strict):
    stock: str | None = None
    sync: str | None = None
    deletion_scan: str | None = None
    reconcile: str | None = None


class CompanyConfig(_Strict):
    """One tenant, as read from `companies/<name>.yaml` (name = file stem)."""

    name: str
    source: str = Field(description="The file it was read from, for messages.")
    display_name: str | None = None
    timezone: str = "Europe/London"
    warehouse: Path = Field(description="Folder of the company's warehouse.duckdb, outbox, "
                            "reports and published lake; relative paths resolve from the project.")
    sap: SapSection = SapSection()
    demo: DemoSection = DemoSection()
    ometria: OmetriaSection = OmetriaSection()
    mapping: Path | None = None
    checks: Path | None = None
    schedules: Schedules = Schedules()
    automation_enabled: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError("the file name must be lowercase letters, digits and _ (it becomes "
                             "a code location and a Python attribute), e.g. acme_uk.yaml")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return Settings._known_zone(value)

    @property
    def ometria_account(self) -> str:
        """The account whose rate limit this company's pushes count against."""
        return self.ometria.account or f"{self.name}"

    def run_tags(self, pushes: bool) -> dict[str, str]:
        """Tags of this company's runs; the run queue limits them (see docs/deployment.md)."""
        tags = {COMPANY_TAG: self.name}
        if pushes:
            tags[ACCOUNT_TAG] = self.ometria_account
        return tags


def companies_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    raw = env.get(COMPANIES_DIR_ENV) or str(DEFAULT_COMPANIES_DIR)
    path = Path(raw)
    return path if path.is_absolute() else PROJECT_ROOT / path


def _literal_secrets(data: Any, prefix: str = "") -> list[str]:
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{prefix}{key}"
            if isinstance(key, str) and _SECRET_WORDS.search(key) and not key.endswith("_env"):
                found.append(where)
            else:
                found.extend(_literal_secrets(value, where + "."))
    return found


def parse_company(data: Any, name: str, source: str) -> CompanyConfig:
    if not isinstance(data, dict):
        raise CompanyConfigError(f"{source}: must be a mapping of settings (got a {type(data).__name__})")
    secrets = _literal_secrets(data)
    if secrets:
        raise CompanyConfigError(
            f"{source}: {', '.join(secrets)}: a secret may not be written in a company file; put "
            "it in an environment variable and name the variable (sap.password_env, "
            "ometria.api_key_env)")
    try:
        return CompanyConfig(name=name, source=source, **data)
    except ValidationError as exc:
        problems = validation_problems(exc, hide_value=lambda key: key.endswith("_env"))
        raise CompanyConfigError(f"{source}: " + "; ".join(problems)) from None
    except TypeError as exc:  # a YAML key that is not a string
        raise CompanyConfigError(f"{source}: {exc}") from None


def load_company(name: str, folder: Path | None = None) -> CompanyConfig:
    """Read and validate `<folder>/<name>.yaml` (folder: SAP_OMETRIA_COMPANIES_DIR or companies/)."""
    folder = folder or companies_dir()
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_companies(folder)) or "none"
        raise CompanyConfigError(f"{path}: no such company file (companies in {folder}: {known})")
    try:
        data = load_yaml_file(path)
    except Exception as exc:  # noqa: BLE001 - every YAML failure becomes one clear message
        raise CompanyConfigError(f"{path}: {describe_error(exc)}") from None
    return parse_company(data, name, str(path))


def list_companies(folder: Path | None = None) -> list[str]:
    """Company names of the folder (file stems, sorted); [] when there is no folder."""
    folder = folder or companies_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.name.startswith("."))


def _secret_from_env(company: CompanyConfig, field: str, var: str | None,
                     environ: dict[str, str]) -> str | None:
    if var is None:
        return None
    value = environ.get(var)
    if value is None or value == "":
        raise CompanyConfigError(f"{company.source}: {field} names {var}, which is not set in "
                                 "the environment")
    return value


def company_settings(company: CompanyConfig, environ: dict[str, str] | None = None) -> Settings:
    """The company's `Settings`: its file for what it names, the environment for the rest
    (page sizes, timeouts, retries...) and for its secrets, by the variable names it gives."""
    env = dict(os.environ if environ is None else environ)
    sap, om = company.sap, company.ometria
    warehouse = company.warehouse if company.warehouse.is_absolute() else PROJECT_ROOT / company.warehouse
    overrides: dict[str, Any] = {
        "sap_b1_service_layer_url": sap.service_layer_url,
        "sap_b1_company_db": sap.company_db,
        "sap_b1_username": sap.username,
        "sap_ometria_duckdb_path": warehouse / "warehouse.duckdb",
        "sap_ometria_outbox_dir": warehouse / "outbox",
        "sap_ometria_demo_dir": warehouse / "demo",
        "sap_ometria_demo_seed": company.demo.seed,
        "sap_ometria_demo_scale": company.demo.scale,
        "sap_ometria_timezone": company.timezone,
        "sap_ometria_mapping": company.mapping,
        "sap_ometria_checks": company.checks,
        "ometria_api_url": om.api_url,
        "ometria_dry_run": om.dry_run,
    }
    password = _secret_from_env(company, "sap.password_env", sap.password_env, env)
    if password is not None:
        overrides["sap_b1_password"] = password
    elif sap.service_layer_url is not None:
        raise CompanyConfigError(f"{company.source}: sap.password_env: required with "
                                 "sap.service_layer_url (the variable holding the password)")
    # the API key is always the company's own: never a key left in the environment for another
    overrides["ometria_api_key"] = _secret_from_env(company, "ometria.api_key_env", om.api_key_env, env)
    if sap.page_size is not None:
        overrides["sap_b1_page_size"] = sap.page_size
    if om.rate_limit_per_s is not None:
        overrides["ometria_rate_limit_per_s"] = om.rate_limit_per_s
    if om.collection is not None:
        overrides["ometria_collection"] = om.collection
    for kind in ("stock", "sync", "deletion_scan", "reconcile"):
        cron = getattr(company.schedules, kind)
        if cron is not None:
            overrides[f"sap_ometria_cron_{kind}"] = cron
    if company.automation_enabled is not None:
        overrides["sap_ometria_automation_enabled"] = company.automation_enabled
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise CompanyConfigError(f"{company.source}: {exc}") from None
