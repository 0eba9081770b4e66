"""Delivery of alerts: a spool folder between the sensors and the DuckDB file.

Alerts are raised by sensors, which run in the Dagster daemon while a sync may be holding the
DuckDB file. So an alert is first written to a small spool folder beside the warehouse
(`<warehouse>.alerts_pending/<alert_id>.json`), then posted to the webhook (people hear about it
at once, whatever DuckDB is doing). The sensors stop there (they never open the working
warehouse); the next run's publish step flushes the spool into `ops.alerts` (and so into the
snapshot it publishes). Callers inside a run copy it at once with a bounded wait for the lock;
when the lock is not free in time the alert stays in the spool for the next flush. The spool
remembers that the webhook already had an alert, so nobody is paged twice. Nothing is lost and nothing blocks a run. When
the warehouse's folder is unusable, alerts wait in a private fallback folder (or go to stderr).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import httpx
from pydantic import SecretStr

from sap_ometria_assets.lib.automation.alerts import Alert, WebhookError, post_webhook, slack_message, write_alerts
from sap_ometria_assets.lib.warehouse import db as warehouse
from sap_ometria_assets.lib.warehouse.db import WarehouseLockedError

log = logging.getLogger(__name__)


def spool_dir_for(duckdb_path: Path) -> Path:
    """Pending alerts live beside the warehouse they are destined for."""
    return duckdb_path.with_name(duckdb_path.name.split(".")[0] + ".alerts_pending")


def fallback_spool_dir_for(duckdb_path: Path) -> Path:
    """Where alerts wait when the warehouse's folder is unusable (read-only, a file, full): a
    private folder (mode 700) under the system temp directory, one per warehouse path."""
    digest = hashlib.sha256(str(Path(duckdb_path).resolve()).encode()).hexdigest()[:12]
    base = Path(tempfile.gettempdir()) / f"sap_ometria-{os.getuid()}"
    return base / f"{Path(duckdb_path).name.split('.')[0]}-{digest}.alerts_pending"


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = directory / f".probe.{os.getpid()}"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
        return True
    except OSError:
        return False


def usable_spool(duckdb_path: Path) -> AlertSpool | None:
    """The spool beside the warehouse, else the private fallback (logged), else None."""
    primary = spool_dir_for(duckdb_path)
    if _writable(primary):
        return AlertSpool(primary)
    fallback = fallback_spool_dir_for(duckdb_path)
    if _writable(fallback.parent) and _writable(fallback):
        os.chmod(fallback.parent, 0o700)
        log.error("alert spool %s is not writable; alerts wait in %s instead", primary, fallback)
        return AlertSpool(fallback)
    log.error("neither %s nor %s is writable: alerts go to stderr only", primary, fallback)
    return None


def _to_stderr(alerts: Sequence[Alert], why: str) -> None:
    """The last resort: the alert text on stderr (no secret is ever in an alert)."""
    for alert in alerts:
        print(f"ALERT [{alert.severity}] {alert.kind} {alert.asset_key or alert.job_name or ''}: "
              f"{alert.message} ({why})", file=sys.stderr)


class AlertSpool:
    """One JSON file per pending alert, written atomically (several sensors may flush at once;
    rows are keyed on alert_id, so a double flush is harmless), and an empty marker file per
    alert the webhook has had, so the same failure raised again never pages twice."""

    # Markers only need to outlive a sensor's re-evaluation of the same run.
    MARKER_TTL_S = 30 * 24 * 3600

    def __init__(self, directory: Path):
        self.directory = directory
        self.sent_dir = directory / "sent"

    def was_sent(self, alert_id: str) -> bool:
        return (self.sent_dir / alert_id).exists()

    def mark_sent(self, alert_ids: Iterable[str]) -> None:
        self.sent_dir.mkdir(parents=True, exist_ok=True)
        for alert_id in alert_ids:
            (self.sent_dir / alert_id).touch()

    def prune_markers(self, now: float | None = None) -> None:
        if not self.sent_dir.exists():
            return
        cutoff = (now if now is not None else time.time()) - self.MARKER_TTL_S
        for marker in self.sent_dir.iterdir():
            try:
                if marker.stat().st_mtime < cutoff:
                    marker.unlink(missing_ok=True)
            except FileNotFoundError:
                continue

    def put(self, alert: Alert) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{alert.alert_id}.json"
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(alert.to_json(), encoding="utf-8")
        os.replace(tmp, target)

    def pending(self) -> list[Alert]:
        if not self.directory.exists():
            return []
        alerts = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                alerts.append(Alert.from_json(path.read_text(encoding="utf-8")))
            except FileNotFoundError:  # flushed by a concurrent sensor meanwhile
                continue
            except (ValueError, TypeError, KeyError) as exc:
                # Keep the bad file for a human; never let it block the other alerts.
                bad = path.with_suffix(".unreadable")
                os.replace(path, bad)
                log.error("unreadable pending alert moved to %s: %s", bad.name, exc)
        return sorted(alerts, key=lambda a: a.raised_at)

    def remove(self, alert_ids: Iterable[str]) -> None:
        for alert_id in alert_ids:
            (self.directory / f"{alert_id}.json").unlink(missing_ok=True)


@dataclass(frozen=True)
class FlushOutcome:
    written: int      # copied into ops.alerts this time
    pending: int      # still in the spool (DuckDB was locked)
    delivered: int    # posted to the webhook this time
    delivery_errors: tuple[str, ...] = ()


def raise_alerts(
    alerts: Sequence[Alert],
    *,
    duckdb_path: Path,
    webhook: SecretStr | None,
    ui_url: str | None = None,
    lock_wait_s: float = 5.0,
    webhook_transport: httpx.BaseTransport | None = None,
    write_warehouse: bool = True,
    echo_stderr: bool = True,
) -> FlushOutcome:
    """Queue new alerts, then flush everything pending (see module docstring).
    `write_warehouse=False` posts and keeps the alerts in the spool without opening DuckDB (the
    alert sensors, which never open the working warehouse: the next run's publish writes them;
    a warehouse refused as damaged, then `echo_stderr` prints them too)."""
    spool = usable_spool(duckdb_path)
    if spool is None:
        return _deliver_unspooled(alerts, duckdb_path=duckdb_path, webhook=webhook, ui_url=ui_url,
                                  webhook_transport=webhook_transport)
    for alert in alerts:
        spool.put(alert)
    return flush_alerts(
        duckdb_path=duckdb_path, webhook=webhook, ui_url=ui_url, lock_wait_s=lock_wait_s,
        webhook_transport=webhook_transport, spool=spool, write_warehouse=write_warehouse,
        echo_stderr=echo_stderr,
    )


def _deliver_unspooled(alerts: Sequence[Alert], *, duckdb_path: Path, webhook: SecretStr | None,
                       ui_url: str | None, webhook_transport: httpx.BaseTransport | None
                       ) -> FlushOutcome:
    """No folder to queue in: post the alerts and print them; nothing reaches ops.alerts."""
    errors: list[str] = []
    delivered = 0
    if alerts and webhook is not None and webhook.get_secret_value():
        try:
            post_webhook(webhook, slack_message(alerts, ui_url), transport=webhook_transport)
            delivered = len(alerts)
        except WebhookError as exc:
            errors.append(str(exc))
    _to_stderr(alerts, f"not recorded in ops.alerts of {duckdb_path}: no writable spool")
    return FlushOutcome(0, len(alerts), delivered, tuple(errors))


def flush_alerts(
    *,
    duckdb_path: Path,
    webhook: SecretStr | None,
    ui_url: str | None = None,
    lock_wait_s: float = 5.0,
    webhook_transport: httpx.BaseTransport | None = None,
    spool: AlertSpool | None = None,
    write_warehouse: bool = True,
    echo_stderr: bool = True,
) -> FlushOutcome:
    """Post undelivered pending alerts (one message), then move the spool into `ops.alerts`.

    Opens DuckDB only when something is pending, and waits at most `lock_wait_s` for it. A
    warehouse that cannot be opened keeps the alerts queued and prints them on stderr."""
    if spool is None:
        # the folder beside the warehouse, unless only the fallback holds alerts (left there
        # while the warehouse's folder was unusable)
        primary, fallback = spool_dir_for(duckdb_path), fallback_spool_dir_for(duckdb_path)
        use_fallback = (not (primary.is_dir() and any(primary.glob("*.json")))
                        and fallback.is_dir() and any(fallback.glob("*.json")))
        spool = AlertSpool(fallback if use_fallback else primary)
    pending = spool.pending()
    if not pending:
        return FlushOutcome(written=0, pending=0, delivered=0)

    delivered_now = 0
    errors: list[str] = []
    pending = [
        replace(a, delivered=True) if not a.delivered and spool.was_sent(a.alert_id) else a
        for a in pending
    ]
    undelivered = [a for a in pending if not a.delivered]
    if webhook is not None and webhook.get_secret_value() and undelivered:
        try:
            post_webhook(webhook, slack_message(undelivered, ui_url), transport=webhook_transport)
        except WebhookError as exc:
            errors.append(str(exc))
            log.warning("alert webhook failed: %s", exc)
        else:
            delivered_ids = {a.alert_id for a in undelivered}
            spool.mark_sent(delivered_ids)
            pending = [replace(a, delivered=True) if a.alert_id in delivered_ids else a for a in pending]
            for alert in pending:
                if alert.alert_id in delivered_ids:
                    spool.put(alert)
            delivered_now = len(delivered_ids)
    spool.prune_markers()
    if not write_warehouse:
        if echo_stderr:
            _to_stderr(pending, f"queued in {spool.directory}; the warehouse was not opened")
        return FlushOutcome(0, len(pending), delivered_now, tuple(errors))

    try:
        with warehouse.connect(duckdb_path, wait_s=lock_wait_s) as con:
            write_alerts(con, pending)
    except WarehouseLockedError:
        log.info("warehouse locked by a run: %d alert(s) stay queued in the spool", len(pending))
        return FlushOutcome(0, len(pending), delivered_now, tuple(errors))
    except (OSError, duckdb.Error) as exc:
        cause = f"warehouse {duckdb_path} unusable: {str(exc).splitlines()[0][:200]}"
        log.error("%s; %d alert(s) stay queued in %s", cause, len(pending), spool.directory)
        _to_stderr(pending, f"{cause}; queued in {spool.directory}")
        return FlushOutcome(0, len(pending), delivered_now, (*errors, cause))
    spool.remove(a.alert_id for a in pending)
    return FlushOutcome(len(pending), 0, delivered_now, tuple(errors))
