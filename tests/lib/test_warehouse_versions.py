"""A warehouse written by a newer DuckDB is named as such, not called corrupt."""

import struct

import duckdb
import pytest

from sap_ometria_assets.lib.warehouse.db import WarehouseUnusableError, check_usable

_MASK = (1 << 64) - 1


def _header_checksum(block: bytes) -> int:
    """DuckDB's block checksum (storage/checksum.cpp) over whole 8-byte words."""
    result = 5381
    for (word,) in struct.iter_unpack("<Q", block[: len(block) // 8 * 8]):
        result ^= (word * 0xBF58476D1CE4E5B9) & _MASK
    return result


def _written_by_a_newer_duckdb(path) -> None:
    """A valid empty warehouse whose main header claims storage version 999 (what duckdb 2.x
    writes), with its checksum recomputed so only the version is 'wrong'."""
    duckdb.connect(str(path)).close()
    data = bytearray(path.read_bytes())
    assert data[8:12] == b"DUCK"                 # checksum, magic, then the storage version
    data[12:20] = struct.pack("<Q", 999)
    data[0:8] = struct.pack("<Q", _header_checksum(bytes(data[8:4096])))
    path.write_bytes(bytes(data))


def test_a_warehouse_from_a_newer_duckdb_says_so_and_how_to_get_going(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    _written_by_a_newer_duckdb(path)
    before = path.read_bytes()
    with pytest.raises(WarehouseUnusableError) as err:
        check_usable(path)
    text = str(err.value)
    assert "newer DuckDB" in text and duckdb.__version__ in text
    assert "make clean-demo" in text and "corrupt" not in text
    assert path.read_bytes() == before                             # refused, not touched
