"""Fixtures of the fault-injection suite: emulators, environment, a landed baseline.
Helpers (runs, the nothing-lost assertion) are in faultkit.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from faultkit import LAND_AND_TRANSFORM, OMETRIA_KEY, SAP_PASSWORD, SCALE, SEED, Env, run_sync
from sap_ometria_assets.emulators.ometria.server import OmetriaEmulator
from sap_ometria_assets.emulators.sap_b1.company import Company, generate_company
from sap_ometria_assets.emulators.sap_b1.server import SapB1Emulator
from sap_ometria_assets.defs import resources
from sap_ometria_assets.lib.config.settings import get_settings


# ---------------------------------------------------------------------------------------------
# Emulators and environment
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def company() -> Company:
    return generate_company(SCALE, SEED, 0)


@pytest.fixture
def sap(company) -> Iterator[SapB1Emulator]:
    with SapB1Emulator(company, password=SAP_PASSWORD, admin=True) as emu:
        yield emu


@pytest.fixture
def ometria() -> Iterator[OmetriaEmulator]:
    with OmetriaEmulator(api_key=OMETRIA_KEY) as emu:
        yield emu


def _apply(monkeypatch, env: Env) -> None:
    for name, value in env.vars().items():
        monkeypatch.setenv(name, value)
    get_settings(refresh=True)


@pytest.fixture
def fast_retries(monkeypatch) -> list[float]:
    """Short SAP backoff; Ometria's waits (backoff, Retry-After, pacing) recorded, not slept."""
    sleeps: list[float] = []
    monkeypatch.setattr(resources, "RETRY_BACKOFF_S", 0.01)
    monkeypatch.setattr(resources, "SLEEP", sleeps.append)
    return sleeps


@pytest.fixture
def env(tmp_path, monkeypatch, sap, ometria, fast_retries) -> Iterator[Env]:
    e = Env(tmp_path, sap, ometria, fast_retries)
    _apply(monkeypatch, e)
    yield e
    get_settings(refresh=True)


@pytest.fixture(scope="session")
def landed_baseline(tmp_path_factory, company) -> Path:
    """A warehouse with the demo company landed and transformed (nothing pushed), built once;
    Ometria-side fault tests start from a copy of it."""
    base = tmp_path_factory.mktemp("baseline")
    with SapB1Emulator(company, password=SAP_PASSWORD) as emu, pytest.MonkeyPatch.context() as mp:
        _apply(mp, Env(base, emu, None))
        result = run_sync(LAND_AND_TRANSFORM)
        assert result.success, result.failures
    get_settings(refresh=True)
    return base / "warehouse.duckdb"


@pytest.fixture
def landed_env(env, landed_baseline) -> Env:
    """`env` starting from the landed baseline (SAP's watermarks set: the next read is incremental)."""
    shutil.copy(landed_baseline, env.db)
    return env


@pytest.fixture
def push_env(tmp_path, monkeypatch, ometria, fast_retries, landed_baseline) -> Iterator[Env]:
    """A copy of the landed baseline and a fresh Ometria emulator (SAP not needed)."""
    e = Env(tmp_path, None, ometria, fast_retries)
    shutil.copy(landed_baseline, e.db)
    _apply(monkeypatch, e)
    yield e
    get_settings(refresh=True)


