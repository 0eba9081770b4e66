"""The three systems every asset talks to, as Dagster resources: the DuckDB warehouse
(`warehouse`), SAP Business One's Service Layer (`sap_b1`) and Ometria's Data API (`ometria`).

Each resource is configured explicitly: its fields (URL, company database, user, page size,
rate...) override the environment for one run, and a field left unset takes its value from the
settings (`lib/config/settings.py`, i.e. the environment and `.env`) when the run starts, so
loading the definitions needs no secret. Secrets (SAP_B1_PASSWORD, OMETRIA_API_KEY) are never
fields: they are read from the settings only, as `SecretStr`, so no run config, metadata or log
can carry them.

This is the one place that chooses between a real system and the demo's embedded emulator: with
no Service Layer URL the demo company is started and used, with no Ometria URL the Ometria
emulator is. Code under `lib/` only ever gets a URL and credentials. Whether a push is a dry run
is decided here too (`OmetriaResource.is_dry_run`); everything else asks it.

Tests hand any object with the same methods to `dg.materialize(resources=...)`: the assets use
nothing else of a resource.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from pydantic import Field, PrivateAttr

from sap_ometria_assets.emulators.ometria.embedded import ensure_embedded_ometria
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.ometria.client import OmetriaClient
from sap_ometria_assets.lib.ometria.errors import OmetriaAuthError
from sap_ometria_assets.lib.ometria.ratelimit import Sleep
from sap_ometria_assets.lib.sap.client import SapB1Client, settings_kwargs
from sap_ometria_assets.lib.warehouse.db import connect

# Backoff base and sleep of the clients these resources build. Module attributes so the
# fault-injection tests can shorten the backoff and record Ometria's waits (a 429's
# Retry-After) without sleeping; None = time.sleep.
RETRY_BACKOFF_S = 0.5
SLEEP: Sleep | None = None
# The demo's Ometria emulator is local: no need to wait at Ometria's pace unless asked to.
EMBEDDED_RATE_LIMIT_PER_S = 50.0


# ---------------------------------------------------------------------------------------------
# Warehouse
# ---------------------------------------------------------------------------------------------
class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file (SAP_OMETRIA_DUCKDB_PATH unless set explicitly)."""

    duckdb_path: str | None = Field(
        default=None, description="The warehouse file; unset: SAP_OMETRIA_DUCKDB_PATH.")

    @property
    def path(self) -> Path:
        if self.duckdb_path:
            return Path(self.duckdb_path)
        return get_settings().duckdb_path

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with connect(self.path, read_only=read_only) as con:
            yield con


# ---------------------------------------------------------------------------------------------
# SAP Business One
# ---------------------------------------------------------------------------------------------
class SapB1Resource(dg.ConfigurableResource):
    """The SAP Business One Service Layer (SAP_B1_* settings; the embedded demo company when
    SAP_B1_SERVICE_LAYER_URL is unset). The password only ever comes from the environment.

    One Service Layer session serves every SAP read of a run: the first `client()` logs in, later
    ones reuse the session, and the session is logged out when the run's resources are torn down.
    """

    service_layer_url: str | None = Field(
        default=None, description="Service Layer root, e.g. https://sap:50000/b1s/v2; unset: "
        "SAP_B1_SERVICE_LAYER_URL, and with that unset too the embedded demo company.")
    company_db: str | None = Field(default=None, description="Unset: SAP_B1_COMPANY_DB.")
    username: str | None = Field(default=None, description="Unset: SAP_B1_USERNAME.")
    page_size: int | None = Field(default=None, description="Unset: SAP_B1_PAGE_SIZE.")

    _client: SapB1Client | None = PrivateAttr(default=None)

    def _build_client(self, logger: Any = None) -> SapB1Client:
        settings = get_settings()
        kwargs = settings_kwargs(settings)
        url = self.service_layer_url or settings.sap_b1_service_layer_url
        if url is None:
            # Imported only for the demo: the generated company is ~0.3 s of imports (and its
            # data) that a run against a real Service Layer never needs.
            from sap_ometria_assets.emulators.sap_b1.embedded import ensure_embedded_sap

            embedded = ensure_embedded_sap(settings)
            url = embedded.url
            kwargs.update(
                company_db=embedded.company_db, username=embedded.username,
                password=embedded.password,
            )
        if self.company_db:
            kwargs["company_db"] = self.company_db
        if self.username:
            kwargs["username"] = self.username
        if self.page_size:
            kwargs["page_size"] = self.page_size
        return SapB1Client(url, logger=logger, backoff_s=RETRY_BACKOFF_S, **kwargs)

    @contextmanager
    def client(self, logger: Any = None) -> Iterator[SapB1Client]:
        """The run's Service Layer client (logged in on first use, logged out at teardown)."""
        if self._client is None:
            self._client = self._build_client(logger)
        elif logger is not None:
            self._client.log = logger
        yield self._client

    def close(self) -> None:
        """Log out the cached session (done automatically at the end of a Dagster run)."""
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Ometria
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OmetriaTarget:
    """Where pushes go, for logs and metadata (never the key)."""

    url: str | None
    dry_run: bool
    embedded: bool
    collection: str
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.dry_run:
            return "dry run (outbox only, nothing sent)"
        return f"{'embedded emulator ' if self.embedded else ''}{self.url}"


class OmetriaResource(dg.ConfigurableResource):
    """Ometria Data API, configured from the environment (`OMETRIA_API_URL`, `OMETRIA_API_KEY`,
    `OMETRIA_DRY_RUN`, `OMETRIA_RATE_LIMIT_PER_S`, ...). With no URL it pushes to the embedded
    emulator of the demo; with `OMETRIA_DRY_RUN=1`, or a real URL but no key, nothing is sent and
    the requests are written to the outbox for review."""

    dry_run: bool | None = Field(
        default=None,
        description="Override OMETRIA_DRY_RUN for this run (true: write the outbox, send nothing).",
    )
    rate_limit_per_s: float | None = Field(
        default=None, description="Override OMETRIA_RATE_LIMIT_PER_S for this run (e.g. a slow backfill).",
    )

    def is_dry_run(self) -> bool:
        """The one answer to "is this a dry run?": this run's override, else the settings'
        (OMETRIA_DRY_RUN, or a real Ometria URL without an API key)."""
        if self.dry_run is not None:
            return self.dry_run
        return get_settings().ometria_is_dry_run

    def target(self, client: OmetriaClient | None = None) -> OmetriaTarget:
        """What a push goes to; pass the open client to name the embedded emulator's URL."""
        settings = get_settings()
        url = client.base_url if client is not None else settings.ometria_api_url
        return OmetriaTarget(url=url, dry_run=self.is_dry_run(), embedded=settings.uses_embedded_ometria,
                             collection=settings.ometria_collection)

    @contextmanager
    def open_client(self) -> Iterator[OmetriaClient | None]:
        """A client for the configured account, or None in dry run (no HTTP at all)."""
        settings = get_settings()
        if self.is_dry_run():
            yield None
            return
        if settings.uses_embedded_ometria:
            embedded = ensure_embedded_ometria(settings)
            url, key = embedded.url, embedded.api_key
        else:
            url = settings.ometria_api_url
            key = settings.ometria_api_key
            if key is None or not key.get_secret_value():
                raise OmetriaAuthError("OMETRIA_API_KEY is not set; set it, or OMETRIA_DRY_RUN=1.")
        rate = self.rate_limit_per_s or settings.ometria_rate_limit_per_s
        if (self.rate_limit_per_s is None and settings.uses_embedded_ometria
                and "ometria_rate_limit_per_s" not in settings.model_fields_set):
            rate = EMBEDDED_RATE_LIMIT_PER_S
        client = OmetriaClient(
            url,
            key,
            rate_limit_per_s=rate,
            timeout_s=settings.ometria_timeout_s,
            max_retries=settings.ometria_max_retries,
            backoff_initial_s=RETRY_BACKOFF_S,
            sleep=SLEEP,
        )
        try:
            yield client
        finally:
            client.close()


@dg.definitions
def resources() -> dg.Definitions:
    """Every resource, each reading its unset fields from the settings when a run starts."""
    return dg.Definitions(resources={
        "warehouse": WarehouseResource(),
        "sap_b1": SapB1Resource(),
        "ometria": OmetriaResource(),
    })
