"""Read-back of the Ometria emulator: what tests and reconciliation read of what it accepted
(`records`, `get`, `errors`) and the listing endpoints (`GET /orders`, `/products`, `/contacts/...`,
`/push/_errors`) with limit/offset paging. `OmetriaEmulator` inherits them; they read its store
under its lock.
"""

from __future__ import annotations

from typing import Any

from sap_ometria_assets.emulators.ometria.validation import MAX_LIST_LIMIT


class ReadBackMixin:
    """Read-back of `OmetriaEmulator`."""

    # -- inspection for tests and reconciliation --------------------------------------
    def records(self, kind: str) -> dict[tuple[str, str], dict]:
        """Stored records of a type keyed by (collection, id); collection is "" except contacts."""
        with self._lock:
            return self._store.all(kind)

    def get(self, kind: str, rid: str, collection: str = "") -> dict | None:
        with self._lock:
            return self._store.get(kind, collection, rid)

    def errors(self) -> list[dict]:
        with self._lock:
            return self._store.recent_errors()

    def handle_get(self, parts: list[str], query: dict[str, list[str]]) -> tuple[int, Any]:
        def one(name: str, default: str | None = None) -> str | None:
            return query.get(name, [default])[0]

        if parts == ["push", "_errors"]:
            with self._lock:
                return 200, self._store.recent_errors()
        try:
            limit = int(one("limit", str(MAX_LIST_LIMIT)) or MAX_LIST_LIMIT)
            offset = int(one("offset", "0") or 0)
        except ValueError:
            return 400, {"status": "ERROR", "message": "limit and offset must be integers"}
        if not 1 <= limit <= MAX_LIST_LIMIT or offset < 0:
            return 400, {"status": "ERROR", "message": f"limit must be 1..{MAX_LIST_LIMIT}, offset >= 0"}
        order = one("orderby", "") or ""
        active_raw = one("active")
        active = None if active_raw is None else active_raw.lower() == "true"
        with self._lock:
            if parts == ["contacts"]:
                return 200, self._store.collections()
            if len(parts) == 2 and parts[0] == "contacts":
                return 200, self._store.page("contact", parts[1], limit, offset, order, None)
            if len(parts) == 3 and parts[0] == "contacts":
                doc = self._store.get("contact", parts[1], parts[2])
                return (200, doc) if doc else (404, {"status": "ERROR", "message": "Not found"})
            for plural, kind in (("orders", "order"), ("products", "product")):
                if parts == [plural]:
                    return 200, self._store.page(kind, None, limit, offset, order,
                                                 active if kind == "product" else None)
                if len(parts) == 2 and parts[0] == plural:
                    doc = self._store.get(kind, "", parts[1])
                    return (200, doc) if doc else (404, {"status": "ERROR", "message": "Not found"})
        return 404, {"status": "ERROR", "message": "Unknown endpoint"}
