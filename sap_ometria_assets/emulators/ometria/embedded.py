"""The embedded Ometria emulator of the demo: started once per process on a free local port,
keeping what it was sent in `<SAP_OMETRIA_DEMO_DIR>/ometria.sqlite`, so a second `make demo`
(or the reconciliation) sees what the first one pushed.

Pushes still travel over HTTP through the real client: the demo exercises the same code,
rate limit and retries as production, only the far end is local. It validates as strictly as
Ometria documents, including that an order line's product must already be in Ometria
(`known_products_only`): the demo company's orders with lines for items SAP no longer knows are
rejected by Ometria, as they would be for real, and show as `ometria_rejected` exceptions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from sap_ometria_assets.emulators.ometria.server import OmetriaEmulator

DEMO_API_KEY = "demo-key"


@dataclass(frozen=True)
class EmbeddedOmetria:
    url: str
    api_key: SecretStr
    emulator: OmetriaEmulator


_lock = threading.Lock()
_running: dict[Path, EmbeddedOmetria] = {}


def ensure_embedded_ometria(settings) -> EmbeddedOmetria:
    """The process's emulator for `settings.demo_dir` (started on first use)."""
    store = (Path(settings.demo_dir) / "ometria.sqlite").resolve()
    with _lock:
        found = _running.get(store)
        if found is not None:
            return found
        emulator = OmetriaEmulator(api_key=DEMO_API_KEY, store_path=store, known_products_only=True).start()
        embedded = EmbeddedOmetria(url=emulator.url, api_key=SecretStr(DEMO_API_KEY), emulator=emulator)
        _running[store] = embedded
        return embedded


def stop_embedded_ometria() -> None:
    """Stop every embedded emulator of this process (tests; the demo just exits)."""
    with _lock:
        for embedded in _running.values():
            embedded.emulator.stop()
        _running.clear()
