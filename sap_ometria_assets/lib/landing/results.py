"""What one landing reports: rows landed, changed, unchanged, removed and marked deleted per
sap_raw table (`TableCounts`), the read as a whole (`LandResult`: pages, requests, watermarks,
a refused deletion scan), and `LandingError`, a landing refused for a reason a person must see.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class LandingError(RuntimeError):
    """Landing refused or failed for a reason a person must look at; the message says which."""


@dataclass
class TableCounts:
    """What one landing did to one sap_raw table."""

    rows_landed: int = 0       # rows in the extract (after de-duplication by key)
    rows_changed: int = 0      # new or changed rows written
    rows_unchanged: int = 0    # rows whose content hash matched what was stored
    rows_removed: int = 0      # full-mode tables: rows SAP no longer returns
    rows_total: int = 0        # rows in the table afterwards
    keys_marked_deleted: int = 0
    keys_restored: int = 0
    columns_added: list[str] = field(default_factory=list)
    rejected_values: int = 0


@dataclass
class LandResult:
    """Outcome of `land_table` for one registry entry (parent and children)."""

    table: str
    entity_set: str
    read: str                              # "incremental" | "full"
    filter: str | None
    pages: int = 0
    requests: int = 0
    bytes_read: int = 0
    watermark_before: str | None = None
    watermark_after: str | None = None
    duration_s: float = 0.0
    deletion_refused: str | None = None    # why a key scan was not allowed to mark deletions
    tables: dict[str, TableCounts] = field(default_factory=dict)

    @property
    def main(self) -> TableCounts:
        return self.tables[self.table]

    @property
    def rows_landed(self) -> int:
        return self.main.rows_landed

    @property
    def rows_changed(self) -> int:
        return self.main.rows_changed

    @property
    def rows_unchanged(self) -> int:
        return self.main.rows_unchanged

    @property
    def keys_marked_deleted(self) -> int:
        return self.main.keys_marked_deleted

    @property
    def columns_added(self) -> dict[str, list[str]]:
        return {t: c.columns_added for t, c in self.tables.items() if c.columns_added}

    @property
    def rejected_values(self) -> int:
        return sum(c.rejected_values for c in self.tables.values())
