"""SAP Business One Service Layer client: reads of entity sets, page by page (v2 first, v1 tolerated).

`SapB1Client` is a Service Layer session (lib/sap/session.py: login, retries, errors) that reads:

- Paging: `Prefer: odata.maxpagesize=N` and the next link (`@odata.nextLink` in v2,
  `odata.nextLink` in v1) until there is none, resolved against our service root with our
  `$filter/$select/$orderby` re-applied (lib/sap/paging.py).
- Bounds: a read takes at most `max_pages` pages (SAP_B1_MAX_PAGES, or what a `$count` implies),
  stops after SAP_B1_MAX_EMPTY_PAGES empty pages in a row that still link on, and refuses a next
  link back to a page already read.
- Pages come back as raw bytes, each checked where truncation shows (lib/sap/paging.py); a
  malformed page is fetched again a bounded number of times, then `SapB1Error` names the entity
  set and the page. `refetch` fetches a page again validated whole (for a page the landing's
  parser found damaged).

`SapB1Resource` is the Dagster resource handing out one client per run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import SecretStr

from sap_ometria_assets.lib.config.settings import Settings, get_settings
from sap_ometria_assets.lib.sap.errors import SapB1Error
from sap_ometria_assets.lib.sap.paging import (
    EMPTY_PAGE,
    Page,
    PageChecker,
    build_query,
    find_next_link,
    intact_page_link,
    resolve_next_link,
    short_url,
)
from sap_ometria_assets.lib.sap.session import SapB1Session

class SapB1Client(SapB1Session):
    """A Service Layer session: `with SapB1Client(...) as sl: for page in sl.iter_pages("Orders"): ...`.

    The connection arguments are `SapB1Session`'s (`base_url` the service root, e.g.
    `https://sap:50000/b1s/v2`; `verify`, `transport`, `sleep`, retries, deadline); the reading
    ones: `page_size` (`odata.maxpagesize`), `max_page_retries` (fetches of a malformed page),
    `max_pages` and `max_empty_pages` (the read bounds).
    """

    def __init__(self, base_url: str, company_db: str, username: str, password: SecretStr, *,
                 page_size: int = 500, max_page_retries: int = 3, max_pages: int = 100_000,
                 max_empty_pages: int = 3, **connection: Any) -> None:
        super().__init__(base_url, company_db, username, password, **connection)
        self.page_size = int(page_size)
        self.max_page_retries = int(max_page_retries)
        self.max_pages = int(max_pages)
        self.max_empty_pages = int(max_empty_pages)
        self._pages = PageChecker()  # whole-page validation, its DuckDB opened when first needed

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> SapB1Client:
        """A client for the Service Layer named by SAP_B1_* settings (not the embedded demo)."""
        settings = settings or get_settings()
        if settings.sap_b1_service_layer_url is None:
            raise ValueError(
                "SAP_B1_SERVICE_LAYER_URL is not set (the embedded demo company is used then); "
                "use SapB1Resource.client(), which starts the demo Service Layer."
            )
        return cls(settings.sap_b1_service_layer_url, **settings_kwargs(settings), **kwargs)

    def close(self) -> None:
        """Log out (if logged in) and release connections. Safe to call twice."""
        try:
            super().close()
        finally:
            self._pages.close()

    def entity_url(self, entity_set: str, options: dict[str, str | None] | None = None) -> str:
        pairs = [(k, v) for k, v in (options or {}).items() if v not in (None, "")]
        query = build_query(pairs)  # type: ignore[arg-type]
        return self._url(entity_set) + (f"?{query}" if query else "")

    def resolve_next_link(self, link: str, ours: dict[str, str | None]) -> str:
        """Absolute URL of the next page, against this client's service root
        (`paging.resolve_next_link`: proxy prefixes kept, other hosts refused)."""
        return resolve_next_link(self.base_url, link, ours)

    def iter_pages(
        self,
        entity_set: str,
        *,
        select: str | Sequence[str] | None = None,
        filter: str | None = None,  # noqa: A002 - the OData name
        orderby: str | Sequence[str] | None = None,
        page_size: int | None = None,
    ) -> Iterator[bytes]:
        """Raw JSON bytes of every page of `entity_set`, following next links until none.

        Pass a stable `orderby` (the key): `$skip` paging has no snapshot, so rows inserted during
        a long read shift pages; ordering on the key plus de-duplication by key keeps it exact.
        """
        for page in self.pages(entity_set, select=select, filter=filter, orderby=orderby,
                               page_size=page_size):
            yield page.body

    def pages(
        self,
        entity_set: str,
        *,
        select: str | Sequence[str] | None = None,
        filter: str | None = None,  # noqa: A002 - the OData name
        orderby: str | Sequence[str] | None = None,
        page_size: int | None = None,
        max_pages: int | None = None,
    ) -> Iterator[Page]:
        """Like `iter_pages`, with each page's number and URL (so a page can be `refetch`ed).

        Bounded: at most `max_pages` pages (default: the client's `max_pages` ceiling; callers
        knowing the collection's `$count` pass what it implies), and a read stops with
        `SapB1Error` after `max_empty_pages` pages in a row that bring no record yet link on
        (a next link with an ever-growing `$skip` past the end never repeats exactly)."""
        limit = min(int(max_pages), self.max_pages) if max_pages else self.max_pages
        size = int(page_size or self.page_size)
        ours: dict[str, str | None] = {
            "$filter": filter,
            "$select": select if isinstance(select, str) or select is None else ",".join(select),
            "$orderby": orderby if isinstance(orderby, str) or orderby is None else ",".join(orderby),
        }
        url: str | None = self.entity_url(entity_set, ours)
        seen: set[str] = set()
        number = 0
        empty_run = 0
        while url is not None:
            number += 1
            seen.add(url)
            body, link = self._fetch_page(url, size, entity_set, number)
            yield Page(entity_set, number, url, size, body)
            if link is None:
                return
            empty_run = empty_run + 1 if EMPTY_PAGE.match(body) else 0
            if empty_run >= self.max_empty_pages:
                raise SapB1Error(
                    f"SAP B1 {entity_set}: {empty_run} pages in a row brought no records but "
                    f"linked on (last {short_url(url)}); stopping instead of paging past the end "
                    "(SAP_B1_MAX_EMPTY_PAGES)", entity_set=entity_set,
                )
            if number >= limit:
                raise SapB1Error(
                    f"SAP B1 {entity_set}: still linking to a next page after {number} pages, the "
                    f"most this read may take ({'from its $count' if max_pages and limit == int(max_pages) else 'SAP_B1_MAX_PAGES'}); "
                    "stopping instead of paging without end", entity_set=entity_set,
                )
            url = self.resolve_next_link(link, ours)
            if url in seen:
                raise SapB1Error(
                    f"SAP B1 {entity_set}: page {number} links back to a page already read "
                    f"({short_url(url)}); stopping instead of looping", entity_set=entity_set,
                )

    def refetch(self, page: Page) -> Page:
        """Fetch `page` again, validating it whole (for a page the parser found damaged); raises
        `SapB1Error` naming the entity set and page when it stays malformed."""
        body, _ = self._fetch_page(page.url, page.page_size, page.entity_set, page.number,
                                   strict=True)
        return Page(page.entity_set, page.number, page.url, page.page_size, body)

    def _fetch_page(self, url: str, page_size: int, entity_set: str, page: int, *,
                    strict: bool = False) -> tuple[bytes, str | None]:
        what = f"read of {entity_set} page {page}"
        headers = {"Prefer": f"odata.maxpagesize={page_size}"}
        problem = ""
        for attempt in range(self.max_page_retries + 1):
            resp = self.get(url, headers=headers, what=what, entity_set=entity_set)
            body = resp.content
            link = None if strict else intact_page_link(body)
            if link is not None:
                return body, link
            problem = self.page_problem(body)
            if not problem:
                return body, find_next_link(body)
            if attempt < self.max_page_retries:
                delay = min(self._backoff_max_s, self._backoff_s * (2**attempt))
                self.log.warning(
                    "SAP B1 %s: %s; fetching it again (%d of %d) in %.1fs",
                    what, problem, attempt + 1, self.max_page_retries, delay,
                )
                self._sleep(delay)
        raise SapB1Error(
            f"SAP B1 {entity_set}: page {page} ({short_url(url)}) was malformed on "
            f"{self.max_page_retries + 1} attempts: {problem}",
            entity_set=entity_set,
        )

    def page_problem(self, body: bytes) -> str:
        """'' when `body` is a valid collection page (validated whole), else what is wrong."""
        return self._pages.problem(body)

    def count(self, entity_set: str, filter: str | None = None) -> int:  # noqa: A002
        """`GET {entity_set}/$count` (with an optional $filter)."""
        url = self.entity_url(f"{entity_set}/$count", {"$filter": filter})
        resp = self.get(url, what=f"count of {entity_set}", entity_set=entity_set)
        text = resp.text.strip().lstrip("\ufeff")
        try:
            return int(text)
        except ValueError:
            raise SapB1Error(
                f"SAP B1 count of {entity_set}: expected a number, got {text[:60]!r}",
                http_status=resp.status_code, entity_set=entity_set,
            ) from None


def settings_kwargs(settings: Settings) -> dict[str, Any]:
    verify: bool | str = settings.sap_b1_verify_tls
    if settings.sap_b1_ca_bundle is not None:
        verify = str(settings.resolve(settings.sap_b1_ca_bundle))
    return {
        "company_db": settings.sap_b1_company_db,
        "username": settings.sap_b1_username,
        "password": settings.sap_b1_password,
        "page_size": settings.sap_b1_page_size,
        "verify": verify,
        "timeout_s": settings.sap_b1_timeout_s,
        "max_retries": settings.sap_b1_max_retries,
        "deadline_s": settings.sap_b1_request_deadline_s,
        "max_pages": settings.sap_b1_max_pages,
        "max_empty_pages": settings.sap_b1_max_empty_pages,
    }
