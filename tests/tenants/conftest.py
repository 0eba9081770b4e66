"""One throwaway PostgreSQL server for every tenants test (see tests/tenants/postgres.py)."""

from __future__ import annotations

import pytest

from tests.tenants.postgres import postgres_server


@pytest.fixture(scope="session")
def pg_url():
    with postgres_server() as url:
        yield url
