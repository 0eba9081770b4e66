"""Reading back what Ometria holds (for the reconciliation): single records by id, and whole
listings of contacts, orders and products page by page (`limit`/`offset`), bounded so an API
that does not advance cannot keep a run reading forever."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import orjson

from sap_ometria_assets.lib.ometria.errors import OmetriaPagingError

MAX_LIST_LIMIT = 250
# Read-back bound: pages of one listing before we stop and call the read-back unavailable
# (250 records a page: 5 million records). An API that ignores `offset` is caught sooner, by
# its repeated pages.
MAX_READ_BACK_PAGES = 20_000


class ReadBack:
    """The read-back half of `OmetriaClient`: it needs the client's `base_url` and `_get_json`
    (one GET with the client's auth, pacing and retries, answering parsed JSON)."""

    base_url: str

    def _get_json(self, path: str, params: dict[str, Any] | None = None, *,
                  missing_ok: bool = False) -> Any:
        raise NotImplementedError

    def get_contact(self, collection: str, contact_id: str) -> dict | None:
        return self._get_json(f"contacts/{quote(collection, safe='')}/{quote(contact_id, safe='')}",
                              missing_ok=True)

    def get_order(self, order_id: str) -> dict | None:
        return self._get_json(f"orders/{quote(order_id, safe='')}", missing_ok=True)

    def get_product(self, product_id: str) -> dict | None:
        return self._get_json(f"products/{quote(product_id, safe='')}", missing_ok=True)

    def _iter(self, path: str, limit: int, offset: int, extra: dict[str, Any] | None = None,
              max_pages: int | None = None) -> Iterator[dict]:
        """Every record of a listing, page by page (`limit`/`offset`).

        Bounded: a page whose records (by id) are exactly those of a page already read means
        the API is not advancing (it ignores `offset`), and `max_pages` caps the listing; both
        raise `OmetriaPagingError` instead of reading forever. Pages that merely overlap (a
        record inserted while we read shifts the offsets) are fine: the snapshot dedupes."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIST_LIMIT} (Ometria's maximum), got {limit}")
        max_pages = max_pages or MAX_READ_BACK_PAGES
        seen: set[int] = set()
        pages = 0
        while True:
            if pages >= max_pages:
                raise OmetriaPagingError(
                    f"Ometria GET {self.base_url}/{path}: still not at the end after {pages} pages "
                    f"of {limit} (the read-back ceiling); stopped reading.")
            page = self._get_json(path, {"limit": limit, "offset": offset, **(extra or {})})
            pages += 1
            if isinstance(page, dict):
                page = next((page[k] for k in ("data", "results", "items") if isinstance(page.get(k), list)), [])
            if not isinstance(page, list):
                return
            keys = hash(tuple(sorted(
                str(r.get("id")) if isinstance(r, dict) else orjson.dumps(r).decode() for r in page)))
            if page and keys in seen:
                raise OmetriaPagingError(
                    f"Ometria GET {self.base_url}/{path} served the same {len(page)} records again "
                    f"at offset {offset} (page {pages}): the API is not honouring `offset`, so the "
                    "listing cannot be read to its end; stopped reading.")
            seen.add(keys)
            yield from page
            if len(page) < limit:
                return
            offset += len(page)

    def iter_orders(self, limit: int = MAX_LIST_LIMIT, offset: int = 0) -> Iterator[dict]:
        return self._iter("orders", limit, offset)

    def iter_products(self, limit: int = MAX_LIST_LIMIT, offset: int = 0,
                      active: bool | None = None) -> Iterator[dict]:
        extra = None if active is None else {"active": "true" if active else "false"}
        return self._iter("products", limit, offset, extra)

    def iter_contacts(self, collection: str, limit: int = MAX_LIST_LIMIT, offset: int = 0
                      ) -> Iterator[dict]:
        return self._iter(f"contacts/{quote(collection, safe='')}", limit, offset)
