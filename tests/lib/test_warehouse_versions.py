"""A warehouse written by a newer DuckDB is named as such, not called corrupt."""

import shutil
from pathlib import Path

import duckdb
import pytest

from sap_ometria_assets.lib.warehouse.db import WarehouseUnusableError, check_usable

# An empty warehouse file written by duckdb 2.0.1 (the version this product used before 1.5.x).
WRITTEN_BY_2_0_1 = Path(__file__).parents[1] / "fixtures" / "warehouse" / "written_by_duckdb_2_0_1.duckdb"


def test_a_warehouse_from_a_newer_duckdb_says_so_and_how_to_get_going(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    shutil.copy(WRITTEN_BY_2_0_1, path)
    with pytest.raises(WarehouseUnusableError) as err:
        check_usable(path)
    text = str(err.value)
    assert "newer DuckDB" in text and duckdb.__version__ in text
    assert "make clean-demo" in text and "corrupt" not in text
    assert path.read_bytes() == WRITTEN_BY_2_0_1.read_bytes()     # refused, not touched
