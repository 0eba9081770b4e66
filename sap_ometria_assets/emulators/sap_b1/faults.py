"""Fault switches of the Service Layer emulator (`Faults`: expired sessions, 5xx answers, stalls,
latency, truncated pages, malformed records, schema changes, next-link spelling) and what it
counts (`EmulatorStats`).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


# ---------------------------------------------------------------------------------------------
# Faults and statistics
# ---------------------------------------------------------------------------------------------

@dataclass
class SchemaChange:
    drop: list[str] = field(default_factory=list)
    rename: dict[str, str] = field(default_factory=dict)
    add: dict[str, Any] = field(default_factory=dict)
    retype: dict[str, Any] = field(default_factory=dict)


class Faults:
    """Failure switches (thread-safe). Counts refer to data requests (not Login/Logout)."""

    NEXT_LINK_STYLES = ("relative", "absolute_path", "absolute_url")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expire_after: int | None = None
        self._fail: list[tuple[int, int, bool]] = []     # (remaining, status, include_login)
        self._delay_s = 0.0
        self._stall: list[tuple[int, float]] = []         # (remaining, seconds)
        self._pages: dict[tuple[str, int], int] = {}
        self._records: dict[str, dict[str, list[tuple[str, Any]]]] = {}
        self._schema: dict[str, SchemaChange] = {}
        self._style = "relative"
        self._keeps_query = True
        self.generation = 0

    # -- switches ------------------------------------------------------------------------
    def expire_sessions_after(self, n_requests: int) -> None:
        """After `n_requests` more data requests every open session dies (401, code 301)."""
        with self._lock:
            self._expire_after = max(0, int(n_requests))

    def fail_next(self, n: int, status: int = 500, include_login: bool = False) -> None:
        """The next `n` requests answer `status` (5xx from SL, or the Apache proxy's HTML page)."""
        with self._lock:
            self._fail.append((int(n), int(status), include_login))

    def stall_next(self, n: int, seconds: float) -> None:
        """The next `n` data requests answer only after `seconds` (a client timeout, not latency)."""
        with self._lock:
            self._stall.append((int(n), max(0.0, float(seconds))))

    @property
    def delay_s(self) -> float:
        with self._lock:
            return self._delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        with self._lock:
            self._delay_s = max(0.0, float(value))

    def malformed_page(self, entity_set: str, page_index: int, times: int = 1) -> None:
        """Page `page_index` ($skip // page size) of `entity_set` is cut in half (invalid JSON)."""
        with self._lock:
            self._pages[(entity_set, int(page_index))] = int(times)

    def malformed_record(self, entity_set: str, key: Any, property: str, value: Any) -> None:
        """The record with this key is served with `property` set to `value` (any JSON value)."""
        with self._lock:
            self._records.setdefault(entity_set, {}).setdefault(str(key), []).append((property, value))
            self.generation += 1

    def schema_change(self, entity_set: str, drop: Iterable[str] = (), rename: dict[str, str] | None = None,
                      add: dict[str, Any] | None = None, retype: dict[str, Any] | None = None) -> None:
        """Serve `entity_set` with properties dropped, renamed, added or retyped (metadata drift).

        `retype` values: "string", "int", "float", "bool" or a polars dtype.
        """
        with self._lock:
            self._schema[entity_set] = SchemaChange(list(drop), dict(rename or {}), dict(add or {}), dict(retype or {}))
            self.generation += 1

    @property
    def next_link_style(self) -> str:
        return self._style

    @next_link_style.setter
    def next_link_style(self, value: str) -> None:
        if value not in self.NEXT_LINK_STYLES:
            raise ValueError(f"next_link_style must be one of {self.NEXT_LINK_STYLES}")
        self._style = value

    @property
    def next_link_keeps_query(self) -> bool:
        """False: next links carry only $skip/$top (clients must re-apply their own query)."""
        return self._keeps_query

    @next_link_keeps_query.setter
    def next_link_keeps_query(self, value: bool) -> None:
        self._keeps_query = bool(value)

    def clear(self) -> None:
        with self._lock:
            self._expire_after = None
            self._fail.clear()
            self._stall.clear()
            self._delay_s = 0.0
            self._pages.clear()
            self._records.clear()
            self._schema.clear()
            self._style = "relative"
            self._keeps_query = True
            self.generation += 1

    # -- used by the server ----------------------------------------------------------------
    def _take_failure(self, is_login: bool) -> int | None:
        with self._lock:
            for i, (remaining, status, include_login) in enumerate(self._fail):
                if is_login and not include_login:
                    continue
                if remaining <= 1:
                    self._fail.pop(i)
                else:
                    self._fail[i] = (remaining - 1, status, include_login)
                return status
            return None

    def _take_stall(self) -> float:
        with self._lock:
            if not self._stall:
                return 0.0
            remaining, seconds = self._stall[0]
            if remaining <= 1:
                self._stall.pop(0)
            else:
                self._stall[0] = (remaining - 1, seconds)
            return seconds

    def _count_data_request(self) -> bool:
        """True when this request is the one after which sessions must die."""
        with self._lock:
            if self._expire_after is None:
                return False
            if self._expire_after == 0:
                self._expire_after = None
                return True
            self._expire_after -= 1
            return False

    def _take_malformed_page(self, entity_set: str, page_index: int) -> bool:
        with self._lock:
            left = self._pages.get((entity_set, page_index), 0)
            if left <= 0:
                return False
            self._pages[(entity_set, page_index)] = left - 1
            return True

    def _record_patches(self, entity_set: str) -> dict[str, list[tuple[str, Any]]]:
        with self._lock:
            return dict(self._records.get(entity_set, {}))

    def _schema_for(self, entity_set: str) -> SchemaChange | None:
        with self._lock:
            return self._schema.get(entity_set)


class EmulatorStats:
    """What the emulator served (thread-safe counters; read the attributes or `snapshot()`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.logins = 0
            self.failed_logins = 0
            self.logouts = 0
            self.requests = 0
            self.requests_by_entity_set: collections.Counter[str] = collections.Counter()
            self.pages: collections.Counter[str] = collections.Counter()
            self.records_served: collections.Counter[str] = collections.Counter()
            self.errors: collections.Counter[int] = collections.Counter()
            self.bytes_served = 0

    def _add(self, **kw: Any) -> None:
        with self._lock:
            for name, value in kw.items():
                setattr(self, name, getattr(self, name) + value)

    def _count(self, counter: str, key: Any, n: int = 1) -> None:
        with self._lock:
            getattr(self, counter)[key] += n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "logins": self.logins, "failed_logins": self.failed_logins, "logouts": self.logouts,
                "requests": self.requests, "requests_by_entity_set": dict(self.requests_by_entity_set),
                "pages": dict(self.pages), "records_served": dict(self.records_served),
                "errors": dict(self.errors), "bytes_served": self.bytes_served,
            }
