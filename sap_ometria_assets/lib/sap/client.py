"""SAP Business One Service Layer client: login, paging, retries, errors (v2 first, v1 tolerated).

Protocol facts follow `shared/reference/sap_b1_service_layer.md`:

- `POST {root}/Login` with CompanyDB/UserName/Password sets two cookies, `B1SESSION` and
  `ROUTEID` (the load-balancer member holding the session). Both go on every later request.
  One session per client, logged in lazily on the first request and logged out (`POST Logout`)
  when the client closes: every login occupies a licence session, so never one per request.
- An expired or unknown session answers HTTP 401 with error code 301. The client logs in again
  once and repeats the same request, also in the middle of paging.
- 5xx answers, 429, timeouts and connection errors are retried a bounded number of times with
  exponential backoff and jitter (tenacity). Other 4xx raise `SapB1Error` with the HTTP status,
  the SAP error code and the Service Layer's own message, from either error shape
  (v1 `{"error":{"code":301,"message":{"value":...}}}`, v2 `{"error":{"code":"-1000","message":...}}`).
- Paging: `Prefer: odata.maxpagesize=N` and the next link (`@odata.nextLink` in v2,
  `odata.nextLink` in v1) until there is none. Relative (`Orders?$skip=20`), absolute-path
  (`/b1s/v2/Orders?$skip=20`) and absolute-URL links resolve against our service root, keeping
  a reverse proxy's path prefix (`https://host/ServiceLayer/b1s/v1`); an absolute link naming
  another host is refused (`SapB1Error` naming it). SL can drop the query options from its next
  links, so our `$filter/$select/$orderby` are always re-applied.
- Bounds: a read takes at most `max_pages` pages (SAP_B1_MAX_PAGES, or what a `$count` implies),
  stops after SAP_B1_MAX_EMPTY_PAGES empty pages in a row that still link on, and each request's
  whole body must arrive within SAP_B1_REQUEST_DEADLINE_S (wall clock over the streamed body:
  httpx's timeout bounds each socket read only).
- Pages come back as raw bytes: parsing JSON into columns is DuckDB's job (lib/landing/land.py), so
  the client never parses a page whole on the common path. A truncated page would otherwise look
  like a last page and silently end the read, so each page is checked where truncation shows:
  it must open as a collection (`{..."value":[`) and end with its next link and the closing `}`
  (read backwards from the end, a few bytes). A page without a next link there (the last page of
  a read, one per read) is validated whole (DuckDB's `json_valid`, a C parser building no Python
  objects). A malformed page is fetched again a bounded number of times, then `SapB1Error` names
  the entity set and the page. Damage inside a page whose both ends are intact is left to the
  parser: DuckDB names the file, and `refetch` (full validation) fetches that page again.

Secrets: the password is a `SecretStr` and is only unwrapped to build the Login body; the session
id lives in a private attribute. Neither appears in logs, reprs or exception messages (error texts
from the server are scrubbed of both as well).
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.cookiejar import CookiePolicy
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import orjson
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from sap_ometria_assets.lib.config import secrets as secret_scrub
from sap_ometria_assets.lib.config.settings import Settings, get_settings

_log = secret_scrub.scrubbed_logger(__name__)

SESSION_COOKIE = "B1SESSION"
ROUTE_COOKIE = "ROUTEID"
SESSION_EXPIRED_CODE = "301"
_OUR_QUERY_OPTIONS = ("$filter", "$select", "$orderby")
_NEXT_LINK_KEYS = (b'"@odata.nextLink"', b'"odata.nextLink"')
# Characters left as they are in query values: OData literals are quoted with ', lists use ,
# and paths use / ; everything else (spaces above all) is percent-encoded as SL expects.
_QUERY_SAFE = "',()/:$@*"
# The start of a Service Layer collection page: optional context annotation, then `value: [`.
_HTML_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
# Backoff base of the clients the Dagster resource builds (attempt n waits about base * 2**n).
# A module attribute so the fault-injection tests can shorten it; production keeps SL's pace.
RETRY_BACKOFF_S = 0.5
_PAGE_START = re.compile(
    rb'\s*\{\s*(?:"(?:@odata\.context|odata\.metadata)"\s*:\s*"(?:[^"\\]|\\.)*"\s*,\s*)?"value"\s*:\s*\['
)
# The end of a page that has a next page: `"@odata.nextLink": "<link>" }` (v1: `odata.nextLink`).
_PAGE_END = re.compile(
    rb'"(?:@odata\.nextLink|odata\.nextLink)"\s*:\s*"((?:[^"\\]|\\.)*)"\s*\}\s*\Z'
)
_TAIL_BYTES = 8192
# A page whose `value` array is empty.
_EMPTY_PAGE = re.compile(_PAGE_START.pattern + rb"\s*\]")


class SapB1Error(RuntimeError):
    """A Service Layer request failed; carries the HTTP status, SAP error code and SL message."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        sap_code: str | None = None,
        sap_message: str | None = None,
        entity_set: str | None = None,
    ) -> None:
        details = []
        if http_status is not None:
            details.append(f"HTTP {http_status}")
        if sap_code:
            details.append(f"SAP code {sap_code}")
        if sap_message:
            details.append(f"Service Layer says: {sap_message}")
        super().__init__(message + (f" ({'; '.join(details)})" if details else ""))
        self.http_status = http_status
        self.sap_code = sap_code
        self.sap_message = sap_message
        self.entity_set = entity_set


class _Transient(Exception):
    """Internal: a failure worth retrying (5xx, 429, timeout, connection error)."""

    def __init__(self, reason: str, response: httpx.Response | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response


class _RejectAllCookies(CookiePolicy):
    """httpx's cookie jar stays empty: the client sends exactly the two SL cookies it manages."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie, request):  # noqa: D102
        return False

    def return_ok(self, cookie, request):  # noqa: D102
        return False

    def domain_return_ok(self, domain, request):  # noqa: D102
        return False

    def path_return_ok(self, path, request):  # noqa: D102
        return False


def parse_error_body(content: bytes) -> tuple[str | None, str | None]:
    """(SAP code, message) from a v1 or v2 error body; (None, text excerpt) when it is not JSON."""
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        text = content.decode("utf-8", "replace").strip()
        # A proxy's HTML error page: its title says it all, and a log line stays one line.
        title = _HTML_TITLE.search(text)
        if title:
            return None, " ".join(title.group(1).split())[:300] or None
        return None, (" ".join(text.split())[:300] or None)
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return None, None
    code = err.get("code")
    message = err.get("message")
    if isinstance(message, dict):  # v1: {"lang": "en-us", "value": "..."}
        message = message.get("value")
    parts = [str(message)] if message not in (None, "") else []
    for detail in err.get("details") or []:
        if isinstance(detail, dict) and detail.get("message"):
            parts.append(str(detail["message"]))
    return (None if code in (None, "") else str(code)), ("; ".join(parts) or None)


def odata_quote(value: str) -> str:
    """Percent-encode a query option value the way the Service Layer expects (%20 for spaces)."""
    return quote(value, safe=_QUERY_SAFE)


def _build_query(pairs: Sequence[tuple[str, str]]) -> str:
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


@dataclass(frozen=True)
class LoginInfo:
    """What the Service Layer said at login (never the session id)."""

    version: str | None
    session_timeout_min: int | None


class SapB1Client:
    """A Service Layer session: `with SapB1Client(...) as sl: for page in sl.iter_pages("Orders"): ...`.

    `base_url` is the service root, e.g. `https://sap:50000/b1s/v2` (v1 roots work too).
    `verify` is True (system CAs), a CA bundle path for self-signed SL certificates, or False
    (never in production). `transport` lets tests plug an `httpx.MockTransport`; `sleep` lets them
    replace the backoff clock.
    """

    def __init__(
        self,
        base_url: str,
        company_db: str,
        username: str,
        password: SecretStr,
        *,
        page_size: int = 500,
        verify: bool | str = True,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        logger: Any = None,
        transport: httpx.BaseTransport | None = None,
        max_page_retries: int = 3,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        deadline_s: float = 600.0,
        max_pages: int = 100_000,
        max_empty_pages: int = 3,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"Service Layer URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self.company_db = company_db
        self.username = username
        self._password = password if isinstance(password, SecretStr) else SecretStr(str(password))
        secret_scrub.register(self._password)
        self.page_size = int(page_size)
        self.max_retries = int(max_retries)
        self.max_page_retries = int(max_page_retries)
        self.deadline_s = float(deadline_s)
        self.max_pages = int(max_pages)
        self.max_empty_pages = int(max_empty_pages)
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._sleep = sleep
        self.log = logger or _log
        if verify is False:
            self.log.warning(
                "TLS certificate verification is OFF for the SAP B1 Service Layer at %s; "
                "set SAP_B1_CA_BUNDLE to trust a self-signed certificate instead.", self.base_url
            )
        ssl_verify: ssl.SSLContext | bool
        if isinstance(verify, str):
            try:
                ssl_verify = ssl.create_default_context(cafile=verify)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"SAP_B1_CA_BUNDLE {verify!r} cannot be used as a CA bundle: {exc}"
                ) from None
        else:
            ssl_verify = verify
        self._http = httpx.Client(
            verify=ssl_verify,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            cookies=httpx.Cookies(_no_cookie_jar()),
            headers={"Accept": "application/json"},
        )
        self._session_id: str | None = None
        self._route_id: str | None = None
        self._login_lock = threading.Lock()
        self.login_info: LoginInfo | None = None
        self.logins = 0
        self.requests = 0
        self._validator = None  # DuckDB connection for json_valid, created when first needed
        self._validator_lock = threading.Lock()

    # ------------------------------------------------------------------------------------------
    # construction, lifetime
    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> SapB1Client:
        """A client for the Service Layer named by SAP_B1_* settings (not the embedded demo)."""
        settings = settings or get_settings()
        if settings.sap_b1_service_layer_url is None:
            raise ValueError(
                "SAP_B1_SERVICE_LAYER_URL is not set (the embedded demo company is used then); "
                "use SapB1Resource.client(), which starts the demo Service Layer."
            )
        return cls(settings.sap_b1_service_layer_url, **_settings_kwargs(settings), **kwargs)

    def __enter__(self) -> SapB1Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Log out (if logged in) and release connections. Safe to call twice."""
        try:
            self.logout()
        finally:
            self._http.close()
            if self._validator is not None:
                self._validator.close()
                self._validator = None

    def __repr__(self) -> str:
        state = "logged in" if self._session_id else "no session"
        return (
            f"SapB1Client(base_url={self.base_url!r}, company_db={self.company_db!r}, "
            f"username={self.username!r}, {state})"
        )

    __str__ = __repr__

    @property
    def is_logged_in(self) -> bool:
        return self._session_id is not None

    # ------------------------------------------------------------------------------------------
    # session
    # ------------------------------------------------------------------------------------------
    def login(self) -> LoginInfo:
        """`POST Login`; keeps B1SESSION and ROUTEID. Failed logins are not retried (slow, licences)."""
        with self._login_lock:
            body = orjson.dumps(
                {
                    "CompanyDB": self.company_db,
                    "UserName": self.username,
                    "Password": self._password.get_secret_value(),
                }
            )
            resp = self._send(
                "POST", self._url("Login"), what="Login",
                content=body, headers={"Content-Type": "application/json"},
            )
            if resp.status_code != 200:
                code, message = parse_error_body(resp.content)
                raise SapB1Error(
                    f"Login to the SAP B1 Service Layer at {self.base_url} failed for user "
                    f"{self.username!r} on company {self.company_db!r}",
                    http_status=resp.status_code, sap_code=code, sap_message=self._scrub(message),
                )
            cookies = _set_cookies(resp)
            try:
                doc = orjson.loads(resp.content) if resp.content else {}
            except orjson.JSONDecodeError:
                doc = {}
            session = cookies.get(SESSION_COOKIE) or (doc.get("SessionId") if isinstance(doc, dict) else None)
            if not session:
                raise SapB1Error(
                    f"Login to the SAP B1 Service Layer at {self.base_url} returned no session "
                    "(neither a B1SESSION cookie nor a SessionId)",
                    http_status=resp.status_code,
                )
            self._session_id = str(session)
            self._route_id = cookies.get(ROUTE_COOKIE)
            self.logins += 1
            if not isinstance(doc, dict):
                doc = {}
            timeout = str(doc.get("SessionTimeout", ""))
            self.login_info = LoginInfo(
                version=str(doc["Version"]) if doc.get("Version") else None,
                session_timeout_min=int(timeout) if timeout.isdigit() else None,
            )
            self.log.info(
                "Logged in to SAP B1 Service Layer %s, company %s as %s (SL version %s, session "
                "timeout %s min, route %s)",
                self.base_url, self.company_db, self.username, self.login_info.version or "?",
                self.login_info.session_timeout_min or "?", "pinned" if self._route_id else "none",
            )
            return self.login_info

    def logout(self) -> None:
        """`POST Logout` frees the licence session; failures are logged, never raised."""
        if self._session_id is None:
            return
        try:
            resp = self._http.post(self._url("Logout"), headers=self._auth_headers({}))
            self.requests += 1
            if resp.status_code >= 400 and resp.status_code != 401:
                code, message = parse_error_body(resp.content)
                self.log.warning(
                    "Logout from the SAP B1 Service Layer answered HTTP %s (%s)",
                    resp.status_code, self._scrub(message) or code or "no message",
                )
            else:
                self.log.info("Logged out of SAP B1 Service Layer %s", self.base_url)
        except httpx.HTTPError as exc:
            self.log.warning("Logout from the SAP B1 Service Layer failed: %s", type(exc).__name__)
        finally:
            self._session_id = None
            self._route_id = None

    def _update_route(self, resp: httpx.Response) -> None:
        """A load balancer may re-pin the session to another member (a new ROUTEID)."""
        if resp.status_code < 400 and "set-cookie" in resp.headers:
            cookies = _set_cookies(resp)
            self._route_id = cookies.get(ROUTE_COOKIE, self._route_id)
            self._session_id = cookies.get(SESSION_COOKIE, self._session_id)

    def _auth_headers(self, headers: dict[str, str]) -> dict[str, str]:
        cookie = f"{SESSION_COOKIE}={self._session_id}"
        if self._route_id:
            cookie += f"; {ROUTE_COOKIE}={self._route_id}"
        return {**headers, "Cookie": cookie}

    def _scrub(self, text: str | None) -> str | None:
        """Remove the password and session id from text that came from elsewhere."""
        return secret_scrub.scrub(text, self._password, self._session_id, self._route_id)

    # ------------------------------------------------------------------------------------------
    # requests
    # ------------------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _send(
        self, method: str, url: str, *, what: str, headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """One request with bounded retries on transient failures; returns any final response."""

        def attempt() -> httpx.Response:
            self.requests += 1
            try:
                resp = self._request_within_deadline(method, url, headers, content)
            except httpx.TimeoutException as exc:
                raise _Transient(f"timeout ({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                raise _Transient(f"connection error ({type(exc).__name__})") from None
            if resp.status_code >= 500 or resp.status_code == 429:
                code, message = parse_error_body(resp.content)
                reason = f"HTTP {resp.status_code}" + (f" {self._scrub(message)}" if message else "")
                raise _Transient(reason, resp)
            return resp

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.log.warning(
                "SAP B1 %s: %s; retry %d of %d in %.1fs",
                what, getattr(exc, "reason", exc), state.attempt_number, self.max_retries,
                state.next_action.sleep if state.next_action else 0.0,
            )

        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait_exponential(multiplier=self._backoff_s, max=self._backoff_max_s)
            + wait_random(0, self._backoff_s),
            retry=retry_if_exception_type(_Transient),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Transient as exc:
            status = exc.response.status_code if exc.response is not None else None
            code = message = None
            if exc.response is not None:
                code, message = parse_error_body(exc.response.content)
            raise SapB1Error(
                f"SAP B1 Service Layer {what} failed after {self.max_retries + 1} attempts: {exc.reason}",
                http_status=status, sap_code=code, sap_message=self._scrub(message),
            ) from None

    def _request_within_deadline(self, method: str, url: str, headers: dict[str, str] | None,
                                 content: bytes | None) -> httpx.Response:
        """The request with its whole body read within `deadline_s` of wall-clock time (httpx's
        timeout bounds each socket read only: a server trickling a byte a second never trips
        it). Past the deadline: `_Transient` (retried, bounded like any timeout)."""
        deadline = time.monotonic() + self.deadline_s
        request = self._http.build_request(method, url, headers=headers, content=content)
        resp = self._http.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            for chunk in resp.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise _Transient(
                        f"no complete answer within the {self.deadline_s:g}s request deadline "
                        f"(SAP_B1_REQUEST_DEADLINE_S; {sum(map(len, chunks))} bytes received)")
        finally:
            resp.close()
        # the body as read (already decoded: the encoding headers no longer apply)
        headers = [(k, v) for k, v in resp.headers.multi_items()
                   if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
        return httpx.Response(resp.status_code, headers=headers, content=b"".join(chunks),
                              request=request)

    @staticmethod
    def _session_expired(resp: httpx.Response) -> bool:
        if resp.status_code == 401:
            return True
        if resp.status_code >= 400:
            code, _ = parse_error_body(resp.content)
            return code == SESSION_EXPIRED_CODE
        return False

    def get(self, url: str, *, headers: dict[str, str] | None = None, what: str = "request",
            entity_set: str | None = None) -> httpx.Response:
        """An authenticated GET: logs in when needed, re-logs in once on an expired session."""
        if self._session_id is None:
            self.login()
        resp = self._send("GET", url, what=what, headers=self._auth_headers(headers or {}))
        self._update_route(resp)
        if self._session_expired(resp):
            self.log.warning(
                "SAP B1 session expired or was rejected during %s; logging in again and repeating "
                "the request", what,
            )
            self._session_id = None
            self.login()
            resp = self._send("GET", url, what=what, headers=self._auth_headers(headers or {}))
            if self._session_expired(resp):
                code, message = parse_error_body(resp.content)
                raise SapB1Error(
                    f"SAP B1 {what}: the Service Layer rejected a fresh session",
                    http_status=resp.status_code, sap_code=code,
                    sap_message=self._scrub(message), entity_set=entity_set,
                )
        if resp.status_code >= 400:
            code, message = parse_error_body(resp.content)
            raise SapB1Error(
                f"SAP B1 {what} failed", http_status=resp.status_code, sap_code=code,
                sap_message=self._scrub(message), entity_set=entity_set,
            )
        return resp

    # ------------------------------------------------------------------------------------------
    # reading
    # ------------------------------------------------------------------------------------------
    def entity_url(self, entity_set: str, options: dict[str, str | None] | None = None) -> str:
        pairs = [(k, v) for k, v in (options or {}).items() if v not in (None, "")]
        query = _build_query(pairs)  # type: ignore[arg-type]
        return self._url(entity_set) + (f"?{query}" if query else "")

    def resolve_next_link(self, link: str, ours: dict[str, str | None]) -> str:
        """Absolute URL of the next page: our root (with any reverse-proxy path prefix), SL's
        paging, our query options. Absolute URLs must name our host (else `SapB1Error` naming
        it); an absolute path (`/b1s/v1/Orders?$skip=20`) is SL's own root, so the part of our
        root before it (`/ServiceLayer` behind a proxy) is kept; relative links join our root."""
        parts = urlsplit(link)
        root = urlsplit(self.base_url).path.rstrip("/")
        if parts.scheme or parts.netloc:
            ours_netloc = urlsplit(self.base_url).netloc.lower()
            if parts.netloc.lower() != ours_netloc:
                raise SapB1Error(
                    f"SAP B1: a next link names another host, {parts.netloc!r} (ours is "
                    f"{ours_netloc!r}); not following it ({_short(link)})"
                )
            path = _with_prefix(root, parts.path)
        elif link.startswith("/"):
            path = _with_prefix(root, parts.path)
        else:
            path = root + "/" + parts.path
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if not (k in ours and ours[k] not in (None, ""))]
        forced = [(k, v) for k, v in ours.items() if v not in (None, "")]
        query = _build_query(forced + kept)  # type: ignore[operator]
        return f"{self._origin}{path}" + (f"?{query}" if query else "")

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
            empty_run = empty_run + 1 if _EMPTY_PAGE.match(body) else 0
            if empty_run >= self.max_empty_pages:
                raise SapB1Error(
                    f"SAP B1 {entity_set}: {empty_run} pages in a row brought no records but "
                    f"linked on (last {_short(url)}); stopping instead of paging past the end "
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
                    f"({_short(url)}); stopping instead of looping", entity_set=entity_set,
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
            link = None if strict else self._intact_page_link(body)
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
            f"SAP B1 {entity_set}: page {page} ({_short(url)}) was malformed on "
            f"{self.max_page_retries + 1} attempts: {problem}",
            entity_set=entity_set,
        )

    @staticmethod
    def _intact_page_link(body: bytes) -> str | None:
        """The next link of a page whose both ends are intact (cheap), else None."""
        if not _PAGE_START.match(body):
            return None
        return tail_next_link(body)

    def page_problem(self, body: bytes) -> str:
        """'' when `body` is a valid collection page (validated whole), else what is wrong."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return "the body is not valid UTF-8"
        with self._validator_lock:
            if self._validator is None:
                import duckdb

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


def _short(url: str) -> str:
    return url if len(url) <= 200 else url[:197] + "..."


def _no_cookie_jar():
    from http.cookiejar import CookieJar

    return CookieJar(policy=_RejectAllCookies())


def _set_cookies(resp: httpx.Response) -> dict[str, str]:
    """Cookies from the response's Set-Cookie headers (names as sent, first value wins)."""
    found: dict[str, str] = {}
    for header in resp.headers.get_list("set-cookie"):
        jar = SimpleCookie()
        try:
            jar.load(header)
        except Exception:  # noqa: BLE001 - a cookie we cannot parse is not one of ours
            continue
        for name, morsel in jar.items():
            found.setdefault(name, morsel.value)
    return found


def _settings_kwargs(settings: Settings) -> dict[str, Any]:
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
