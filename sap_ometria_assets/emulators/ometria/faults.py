"""Fault switches of the Ometria emulator (`Faults`: 429 throttling with Retry-After, 5xx answers,
dropped connections, slow answers, rejections by id or predicate, queue headers) and what it
counts (`Stats`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sap_ometria_assets.emulators.ometria.validation import RejectRule


# --------------------------------------------------------------------------------------
# Faults and counters
# --------------------------------------------------------------------------------------
@dataclass
class Faults:
    """Switches for misbehaviour; all apply to `POST /push` unless noted."""

    throttle_remaining: int = 0          # next n pushes answer 429
    retry_after: str | None = "1"        # Retry-After value sent with 429 (None: header absent)
    max_rate_per_s: float | None = None  # above this rate of pushes: 429 (sliding 1 s window)
    fail_remaining: int = 0              # next n pushes answer `fail_status`
    fail_status: int = 503
    drop_remaining: int = 0              # next n pushes: connection closed without an answer
    delay_s: float = 0.0                 # every request answers this much later
    reject_ids: set[str] = field(default_factory=set)
    reject_if: RejectRule | None = None  # record -> message or (message, path): rejected
    queue_limit: int = 50_000
    queue_remaining: int | None = None   # None: full headroom
    report_rejected_sync: bool = True    # False: `rejected` always 0, errors only in _errors
    errors_shape: str = "wrapper"        # or "flat": documented {error_message, error_path} only

    def throttle(self, n: int = 1, retry_after: str | float | None = 1) -> None:
        self.throttle_remaining = n
        self.retry_after = None if retry_after is None else str(retry_after)

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        self.fail_remaining, self.fail_status = n, status

    def drop_next(self, n: int = 1) -> None:
        self.drop_remaining = n

    def reject(self, ids: set[str] | list[str] | None = None, predicate: RejectRule | None = None) -> None:
        if ids is not None:
            self.reject_ids = set(ids)
        if predicate is not None:
            self.reject_if = predicate

    def reset(self) -> None:
        fresh = Faults()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))


@dataclass
class Stats:
    requests: int = 0                    # every HTTP request
    push_requests: int = 0               # every POST /push that reached the handler
    push_ok: int = 0                     # of which answered 2xx
    records: Counter = field(default_factory=Counter)    # records in 2xx pushes, by @type
    accepted: int = 0
    rejected: int = 0
    bytes: int = 0                       # bytes of push bodies received
    statuses: Counter = field(default_factory=Counter)   # push answers by HTTP status
    push_log: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (request_id, type, ids)
    push_times: list[float] = field(default_factory=list)  # wall-clock arrival of each POST /push

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "push_requests": self.push_requests, "push_ok": self.push_ok,
            "records": dict(self.records), "accepted": self.accepted, "rejected": self.rejected,
            "bytes": self.bytes, "statuses": {str(k): v for k, v in self.statuses.items()},
        }
