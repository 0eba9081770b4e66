"""What a push reports: `PushResult` (per feed: counted, sent, refused, rejected) and
`ErrorSyncResult` (one read of Ometria's error list), the two ways a push stops early, and the
`Logger` the push functions write to (Dagster's context.log or the module logger)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


class Logger(Protocol):
    def info(self, msg: str) -> Any: ...
    def warning(self, msg: str) -> Any: ...


class PushInputMissingError(RuntimeError):
    """The `ometria.<feed>` table is not there yet."""


class PushAbortedError(RuntimeError):
    """A push stopped early (bad key, Ometria unavailable). `result` holds what was done."""

    def __init__(self, message: str, result: PushResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class ErrorSyncResult:
    fetched: int = 0
    new: int = 0
    matched: int = 0
    unmatched: int = 0
    pending_resolved: int = 0
    unconfirmed: int = 0


@dataclass
class PushResult:
    feed: str
    dry_run: bool
    rows_in_table: int = 0
    held_back: int = 0
    invalid: int = 0                 # pushable rows we cannot key or batch (no id, no payload, another feed's type)
    waiting_for_parent: int = 0      # stock flags of products Ometria does not hold yet
    duplicate_ids: int = 0
    skipped_unchanged: int = 0
    to_send: int = 0
    records_sent: int = 0            # records in acknowledged requests (or outbox lines)
    records_accepted: int = 0
    records_rejected: int = 0        # rejected by Ometria (synchronously or via _errors) this run
    records_failed: int = 0          # refused with a 4xx; not acknowledged, retried next run
    records_unconfirmed: int = 0     # answered with a 2xx that is not Ometria's: sent again
    rejected_outstanding: int = 0    # records of the feed whose current version Ometria rejected
    requests: int = 0                # push requests that reached Ometria (acknowledged or not)
    bytes_sent: int = 0
    duration_s: float = 0.0
    outbox_path: str | None = None
    request_ids: list[str] = field(default_factory=list)
    errors: ErrorSyncResult | None = None
    aborted: str | None = None

    def metadata(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("request_ids", "errors")}
        if self.errors is not None:
            data.update({f"errors_{k}": v for k, v in asdict(self.errors).items()})
        return data
