"""Service Layer paging: the next link of a page, where it leads, and whether a page is whole.

- **Next links** (`@odata.nextLink` in v2, `odata.nextLink` in v1) are found without parsing the
  page (`find_next_link`, `tail_next_link`). Relative (`Orders?$skip=20`), absolute-path
  (`/b1s/v2/Orders?$skip=20`) and absolute-URL links resolve against our service root, keeping
  a reverse proxy's path prefix (`https://host/ServiceLayer/b1s/v1`); an absolute link naming
  another host is refused (`SapB1Error` naming it). SL can drop the query options from its next
  links, so our `$filter/$select/$orderby` are always re-applied (`resolve_next_link`).
- **Page integrity** (this module is its one owner; the landing asks it through the client).
  Pages come back as raw bytes: parsing JSON into columns is DuckDB's job (lib/landing/), so a
  page is never parsed whole on the common path. A truncated page would otherwise look like a
  last page and silently end the read, so each page is checked where truncation shows: it must
  open as a collection (`{..."value":[`) and end with its next link and the closing `}` (read
  backwards from the end, a few bytes: `intact_page_link`). A page without a next link there
  (the last page of a read, one per read) is validated whole (`PageChecker`: DuckDB's
  `json_valid`, a C parser building no Python objects, in a small DuckDB of its own). Damage
  inside a page whose both ends are intact is left to the parser: DuckDB names the file, and the
  client's `refetch` (validated whole) fetches that page again.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

import duckdb
import orjson

from sap_ometria_assets.lib.sap.errors import SapB1Error

_NEXT_LINK_KEYS = (b'"@odata.nextLink"', b'"odata.nextLink"')
# Characters left as they are in query values: OData literals are quoted with ', lists use ,
# and paths use / ; everything else (spaces above all) is percent-encoded as SL expects.
_QUERY_SAFE = "',()/:$@*"
# The start of a Service Layer collection page: optional context annotation, then `value: [`.
_PAGE_START = re.compile(
    rb'\s*\{\s*(?:"(?:@odata\.context|odata\.metadata)"\s*:\s*"(?:[^"\\]|\\.)*"\s*,\s*)?"value"\s*:\s*\['
)
# The end of a page that has a next page: `"@odata.nextLink": "<link>" }` (v1: `odata.nextLink`).
_PAGE_END = re.compile(
    rb'"(?:@odata\.nextLink|odata\.nextLink)"\s*:\s*"((?:[^"\\]|\\.)*)"\s*\}\s*\Z'
)
_TAIL_BYTES = 8192
# A page whose `value` array is empty.
EMPTY_PAGE = re.compile(_PAGE_START.pattern + rb"\s*\]")


def odata_quote(value: str) -> str:
    """Percent-encode a query option value the way the Service Layer expects (%20 for spaces)."""
    return quote(value, safe=_QUERY_SAFE)


def build_query(pairs: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{odata_quote(k)}={odata_quote(v)}" for k, v in pairs)


def find_next_link(body: bytes) -> str | None:
    """The top-level next link of a page, without parsing the whole page.

    Sound for valid JSON: a `"` followed by `@odata.nextLink"` is either escaped (preceded by a
    backslash, so inside a string) or opens a string token, because a closing quote can never be
    followed by `@` or `o`. Such a token followed by `:` is a key, and Service Layer entities
    have no property of that name (nested annotations are prefixed, `Lines@odata.nextLink`), so
    a single key occurrence is the top-level annotation. Anything ambiguous falls back to a full
    parse.
    """
    candidates: list[int] = []
    for needle in _NEXT_LINK_KEYS:
        first = body.find(needle)
        if first < 0:
            continue
        if body.rfind(needle) != first:  # several occurrences: let a real parser decide
            return _next_link_by_parsing(body)
        if first > 0 and body[first - 1 : first] == b"\\":
            continue  # inside a string value
        candidates.append(first + len(needle))
    if not candidates:
        return None
    if len(candidates) > 1:
        return _next_link_by_parsing(body)
    pos = candidates[0]
    tail = body[pos : pos + 8192].decode("utf-8", "replace").lstrip()
    if not tail.startswith(":"):
        return None  # the text was a value, not a key
    try:
        value, _ = json.JSONDecoder().raw_decode(tail[1:].lstrip())
    except json.JSONDecodeError:
        return _next_link_by_parsing(body)
    return value if isinstance(value, str) and value else None


def _next_link_by_parsing(body: bytes) -> str | None:
    doc = orjson.loads(body)
    if not isinstance(doc, dict):
        return None
    link = doc.get("@odata.nextLink") or doc.get("odata.nextLink")
    return link if isinstance(link, str) and link else None


def tail_next_link(body: bytes) -> str | None:
    """The next link when the page *ends* with it (`..."@odata.nextLink":"<link>"}`), else None.

    Read from the end, so it costs a few bytes, and it rules out truncation: a body cut short
    cannot end with a complete next link and the closing brace. Sound for the reason given in
    `find_next_link`: the match must start at a real (unescaped) quote that opens a key right
    after an array (`],`, as after `value`), a string value cannot hold an unescaped quote, and
    no Service Layer entity has a property named `@odata.nextLink` (nested annotations are
    prefixed, `Lines@odata.nextLink`), so that key is a member of the object the last `}`
    closes: the page itself. Any other layout returns None (and is validated whole).
    """
    start = max(0, len(body) - _TAIL_BYTES)
    match = _PAGE_END.search(body, start)
    if match is None:
        return None
    at = match.start()
    backslashes = 0
    while at - backslashes - 1 >= 0 and body[at - backslashes - 1] == 0x5C:  # '\\'
        backslashes += 1
    if backslashes % 2:
        return None  # an escaped quote: inside a string
    # The link must follow the `value` array (`],`): Service Layer pages end that way.
    before = body[max(0, at - 64):at].rstrip()
    if not before.endswith(b",") or not before[:-1].rstrip().endswith(b"]"):
        return None
    try:
        link = json.loads(b'"' + match.group(1) + b'"')
    except json.JSONDecodeError:
        return None
    return link if isinstance(link, str) and link else None


@dataclass(frozen=True)
class Page:
    """One page of a read: its number (from 1), the URL it was fetched from, its raw bytes."""

    entity_set: str
    number: int
    url: str
    page_size: int
    body: bytes


def resolve_next_link(base_url: str, link: str, ours: dict[str, str | None]) -> str:
    """Absolute URL of the next page: our root (with any reverse-proxy path prefix), SL's
    paging, our query options. Absolute URLs must name our host (else `SapB1Error` naming
    it); an absolute path (`/b1s/v1/Orders?$skip=20`) is SL's own root, so the part of our
    root before it (`/ServiceLayer` behind a proxy) is kept; relative links join our root."""
    parts = urlsplit(link)
    root = urlsplit(base_url).path.rstrip("/")
    if parts.scheme or parts.netloc:
        ours_netloc = urlsplit(base_url).netloc.lower()
        if parts.netloc.lower() != ours_netloc:
            raise SapB1Error(
                f"SAP B1: a next link names another host, {parts.netloc!r} (ours is "
                f"{ours_netloc!r}); not following it ({short_url(link)})"
            )
        path = _with_prefix(root, parts.path)
    elif link.startswith("/"):
        path = _with_prefix(root, parts.path)
    else:
        path = root + "/" + parts.path
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if not (k in ours and ours[k] not in (None, ""))]
    forced = [(k, v) for k, v in ours.items() if v not in (None, "")]
    query = build_query(forced + kept)  # type: ignore[operator]
    origin = urlsplit(base_url)
    return f"{origin.scheme}://{origin.netloc}{path}" + (f"?{query}" if query else "")


def _with_prefix(root: str, path: str) -> str:
    """`path` (an absolute path SL wrote, knowing only its own root) under our `root`: when our
    root ends with a part `path` starts with (`/ServiceLayer/b1s/v1` and `/b1s/v1/Orders`), the
    prefix before that part (a reverse proxy's) is put in front."""
    if path == root or path.startswith(root + "/"):
        return path
    segments = [s for s in root.split("/") if s]
    for i in range(len(segments)):
        tail = "/" + "/".join(segments[i:])
        if path == tail or path.startswith(tail + "/"):
            return "/" + "/".join(segments[:i]) + path if i else path
    return root + "/" + path.lstrip("/")


def short_url(url: str) -> str:
    return url if len(url) <= 200 else url[:197] + "..."


def intact_page_link(body: bytes) -> str | None:
    """The next link of a page whose both ends are intact (cheap), else None."""
    if not _PAGE_START.match(body):
        return None
    return tail_next_link(body)


class PageChecker:
    """Whole-page validation (`problem`), in a small DuckDB of its own, opened on first use:
    `json_valid` checks a page of megabytes without building a Python object, where a Python
    parse would build every record. Not the warehouse connection: pages are checked by the
    fetching thread while the landing's thread uses that one, and the client also serves reads
    with no warehouse at all. Safe to share between threads (one page at a time)."""

    def __init__(self) -> None:
        self._validator: duckdb.DuckDBPyConnection | None = None
        self._validator_lock = threading.Lock()

    def problem(self, body: bytes) -> str:
        """'' when `body` is a valid collection page (validated whole), else what is wrong."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return "the body is not valid UTF-8"
        with self._validator_lock:
            if self._validator is None:
                # its own small instance: a page at a time needs little, and the default
                # (80% of RAM) would let it grow beside the warehouse's
                self._validator = duckdb.connect(
                    ":memory:", config={"memory_limit": "256MB", "threads": 1})
            valid = self._validator.execute("SELECT json_valid($1)", [text]).fetchone()[0]
        if not valid:
            return f"the body is not valid JSON ({len(body)} bytes, starts {body[:40]!r})"
        if _PAGE_START.match(body):
            return ""
        # Valid JSON with an unusual layout: check the structure the slow way.
        doc = orjson.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("value"), list):
            return ""
        return "valid JSON but not a collection page (no top-level `value` array)"

    def close(self) -> None:
        with self._validator_lock:
            if self._validator is not None:
                self._validator.close()
                self._validator = None
