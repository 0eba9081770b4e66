"""Alerts: a record in `ops.alerts` for every failed run and failed ERROR check, and a
Slack-compatible message to `SAP_OMETRIA_ALERT_WEBHOOK` when one is configured.

This module holds what an alert is (`Alert`, its `ops.alerts` row) and how it is told (the
Slack-compatible message and the webhook POST); `spool.py` beside it queues and delivers them.

The webhook URL carries its own secret (Slack puts the token in the path): it is only read at
the moment of the POST and never appears in logs, exceptions, alert rows or spool files.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

import httpx
from pydantic import SecretStr
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from sap_ometria_assets.lib.config.secrets import scrub

log = logging.getLogger(__name__)

AlertKind = Literal["run_failure", "check_failure"]

ALERTS_DDL = """
CREATE TABLE IF NOT EXISTS ops.alerts (
    alert_id   VARCHAR PRIMARY KEY,
    raised_at  TIMESTAMPTZ NOT NULL,
    kind       VARCHAR NOT NULL,
    job_name   VARCHAR,
    run_id     VARCHAR,
    asset_key  VARCHAR,
    check_name VARCHAR,
    severity   VARCHAR NOT NULL,
    message    VARCHAR NOT NULL,
    delivered  BOOLEAN NOT NULL
)
"""

# First retry of a failed webhook POST after this many seconds, doubling (bounded attempts).
WEBHOOK_BACKOFF_S = 0.5

# Slack rejects section texts over 3,000 characters; keep well inside.
_MAX_SECTION_CHARS = 2_800


@dataclass(frozen=True)
class Alert:
    """One row of `ops.alerts`. `delivered` = the webhook acknowledged it."""

    alert_id: str
    raised_at: datetime
    kind: AlertKind
    job_name: str | None
    run_id: str | None
    asset_key: str | None
    check_name: str | None
    severity: str
    message: str
    delivered: bool = False

    def to_json(self) -> str:
        data = asdict(self)
        data["raised_at"] = self.raised_at.isoformat()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Alert:
        data = json.loads(text)
        data["raised_at"] = datetime.fromisoformat(data["raised_at"])
        return cls(**data)


def make_alert(
    kind: AlertKind,
    *,
    severity: str,
    message: str,
    job_name: str | None = None,
    run_id: str | None = None,
    asset_key: str | None = None,
    check_name: str | None = None,
    raised_at: datetime | None = None,
) -> Alert:
    """An alert whose id is derived from what failed, so a sensor that evaluates the same run
    twice (daemon restart, tick retry) produces the same row instead of a second page."""
    identity = "|".join([kind, job_name or "", run_id or "", asset_key or "", check_name or ""])
    return Alert(
        alert_id=hashlib.sha256(identity.encode()).hexdigest()[:24],
        raised_at=raised_at or datetime.now(UTC),
        kind=kind,
        job_name=job_name,
        run_id=run_id,
        asset_key=asset_key,
        check_name=check_name,
        severity=severity,
        message=scrub(message) or message,
    )


# ---------------------------------------------------------------------------------------------
# Slack-compatible message
# ---------------------------------------------------------------------------------------------

def slack_message(alerts: Sequence[Alert], ui_url: str | None = None) -> dict:
    """`{"text": ..., "blocks": [...]}`: `text` is the notification/fallback line, the blocks
    carry one section per alert with a link to the run in the Dagster UI."""
    if not alerts:
        raise ValueError("slack_message needs at least one alert")
    first = alerts[0]
    title = _title(first)
    if len(alerts) > 1:
        title += f" (+{len(alerts) - 1} more)"
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": False}}
    ]
    for alert in alerts:
        lines = [f"*{alert.severity}* · `{alert.kind}`"]
        if alert.job_name:
            lines.append(f"*Job:* `{alert.job_name}`")
        if alert.asset_key:
            lines.append(f"*Asset:* `{alert.asset_key}`")
        if alert.check_name:
            lines.append(f"*Check:* `{alert.check_name}`")
        if alert.run_id:
            run = f"`{alert.run_id}`"
            if ui_url:
                run = f"<{ui_url.rstrip('/')}/runs/{alert.run_id}|{alert.run_id[:8]}>"
            lines.append(f"*Run:* {run}")
        body = "\n".join(lines) + "\n" + alert.message
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body[:_MAX_SECTION_CHARS]}})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "sap-ometria-assets · alerts are also in `ops.alerts`; "
                    "docs/operations.md says who owns each one.",
                }
            ],
        }
    )
    return {"text": f"{title}: {first.message.splitlines()[0][:300]}", "blocks": blocks}


def _title(alert: Alert) -> str:
    if alert.kind == "run_failure":
        return f"SAP→Ometria run failed: {alert.job_name or 'run'}"
    return f"SAP→Ometria check failed: {alert.asset_key or ''} {alert.check_name or ''}".strip()


class WebhookError(RuntimeError):
    """The webhook did not accept the message. The text never contains the URL."""


class _Retryable(WebhookError):
    pass


def post_webhook(
    url: SecretStr,
    payload: dict,
    *,
    timeout_s: float = 10.0,
    attempts: int = 3,
    backoff_s: float | None = None,
    transport: httpx.BaseTransport | None = None,
) -> None:
    """POST `payload` as JSON; retries 429/5xx/network errors a bounded number of times.

    Raises WebhookError with the status or error class, never the URL (it holds the token)."""

    @retry(
        retry=retry_if_exception_type(_Retryable),
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential(multiplier=WEBHOOK_BACKOFF_S if backoff_s is None else backoff_s, max=4),
        reraise=True,
    )
    def _send(sender: httpx.BaseTransport) -> None:
        request = httpx.Request(
            "POST", url.get_secret_value(), json=payload,
            extensions={"timeout": httpx.Timeout(timeout_s).as_dict()},
        )
        try:
            response = sender.handle_request(request)
            try:
                body = response.read()
            finally:
                response.close()
        except httpx.HTTPError as exc:
            # str(exc) may embed the URL: report the class only.
            raise _Retryable(f"webhook unreachable ({type(exc).__name__})") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"webhook answered HTTP {response.status_code}")
        if response.status_code >= 300:
            raise WebhookError(
                f"webhook refused the message: HTTP {response.status_code} {body[:200]!r}"
            )

    # The transport is used directly, not through httpx.Client: the client logs every request
    # line, URL included, at INFO, and this URL is a secret.
    if transport is not None:
        _send(transport)
        return
    with httpx.HTTPTransport() as owned:
        _send(owned)


def write_alerts(con, alerts: Sequence[Alert]) -> None:
    """Insert alerts into `ops.alerts`; an alert already there keeps its row, except that
    `delivered` can only go from false to true."""
    con.execute(ALERTS_DDL)
    if not alerts:
        return
    rows = [
        (a.alert_id, a.raised_at, a.kind, a.job_name, a.run_id, a.asset_key, a.check_name,
         a.severity, a.message, a.delivered)
        for a in alerts
    ]
    con.executemany(
        """
        INSERT INTO ops.alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (alert_id) DO UPDATE SET delivered = ops.alerts.delivered OR excluded.delivered
        """,
        rows,
    )
