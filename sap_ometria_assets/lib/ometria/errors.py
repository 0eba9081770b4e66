"""The ways a call to Ometria's Data API can fail, as exceptions carrying what the audit needs.

`OmetriaError` and its kinds (bad key, refused request, unavailable, unconfirmed answer,
read-back paging) come from a response; `OmetriaBatchError` is a batch our own code built
wrong (a bug upstream), raised before anything is sent.
"""

from __future__ import annotations

from typing import Any


class OmetriaError(RuntimeError):
    """A call to Ometria that did not succeed. Carries what the audit trail needs."""

    def __init__(self, message: str, *, http_status: int | None = None, attempts: int = 1,
                 duration_ms: float | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.attempts = attempts
        self.duration_ms = duration_ms


class OmetriaAuthError(OmetriaError):
    """403: the API key is missing, wrong or revoked. Never retried; stops the run."""


class OmetriaRequestError(OmetriaError):
    """A 4xx other than 403/429: Ometria refused this request as it stands (not retried)."""


class OmetriaUnavailableError(OmetriaError):
    """Retries exhausted (5xx, timeouts, connection errors, 429) or a Retry-After too long to wait."""


class OmetriaUnconfirmedError(OmetriaError):
    """A 2xx whose body is not Ometria's push answer (`{"status": "OK", "request_id": ...,
    "accepted": n, "rejected": m}`): an HTML page of a proxy or captive portal, an empty body, a
    wrong URL. We cannot tell whether Ometria received the batch, so it is not counted as
    delivered: recorded as unconfirmed and sent again."""

    def __init__(self, message: str, *, reason: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.reason = reason


class OmetriaPagingError(OmetriaError):
    """A read-back listing that does not advance (the API ignores `offset` and serves a page
    already seen) or passes the page ceiling: stopped instead of looping."""


class OmetriaBatchError(ValueError):
    """The caller built a batch the API would refuse (size, mixed types): a bug upstream."""

