"""Shared test fixtures.

Every test gets its own warehouse, demo and outbox folders under `tmp_path` (autouse), so no test
touches `data/` and tests never see each other's DuckDB files.

`fake_sl` / `make_fake_sl` hand out `tests/fakes/service_layer.FakeServiceLayer`, a small
Service Layer written apart from the demo emulator (`sap_ometria_assets/emulators/sap_b1`); it
keeps unit tests small and makes faults exact.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from sap_ometria_assets.lib.config.settings import get_settings
from tests.fakes.service_layer import FakeServiceLayer


# Real Service Layer responses (see their README for provenance and licence), shipped with the tests.
SAP_SAMPLE_DIRS = (Path(__file__).resolve().parent / "fixtures" / "sap",)


def sap_sample(name: str) -> Path:
    """Path of a recorded Service Layer response, e.g. `service_layer_v2_items_real.json`."""
    for folder in SAP_SAMPLE_DIRS:
        if (folder / name).is_file():
            return folder / name
    pytest.fail(f"recorded Service Layer sample {name} not found in {[str(d) for d in SAP_SAMPLE_DIRS]}")


@pytest.fixture
def real_items() -> list[dict]:
    """The 5 items of a real v2 `GET /Items` page (352 properties, 60 UDFs), Decimal amounts."""
    return json.loads(sap_sample("service_layer_v2_items_real.json").read_bytes(),
                      parse_float=Decimal)["value"]


@pytest.fixture(autouse=True)
def _isolated_paths(tmp_path, monkeypatch):
    """Warehouse, demo state and outbox of each test live in its own tmp_path."""
    monkeypatch.setenv("SAP_OMETRIA_DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("SAP_OMETRIA_DEMO_DIR", str(tmp_path / "demo"))
    monkeypatch.setenv("SAP_OMETRIA_OUTBOX_DIR", str(tmp_path / "outbox"))
    get_settings(refresh=True)
    yield



@pytest.fixture
def fake_sl() -> FakeServiceLayer:
    return FakeServiceLayer()


@pytest.fixture
def make_fake_sl():
    """The FakeServiceLayer class, for tests that build their own."""
    return FakeServiceLayer
