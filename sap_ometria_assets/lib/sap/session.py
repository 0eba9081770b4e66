"""A Service Layer session: login, cookies, requests with retries and a deadline, errors.

Protocol facts follow `shared/reference/sap_b1_service_layer.md` (v2 first, v1 tolerated):

- `POST {root}/Login` with CompanyDB/UserName/Password sets two cookies, `B1SESSION` and
  `ROUTEID` (the load-balancer member holding the session). Both go on every later request.
  One session per client, logged in lazily on the first request and logged out (`POST Logout`)
  when the client closes: every login occupies a licence session, so never one per request.
- An expired or unknown session answers HTTP 401 with error code 301. The session logs in again
  once and repeats the same request, also in the middle of paging.
- 5xx answers, 429, timeouts and connection errors are retried a bounded number of times with
  exponential backoff and jitter (tenacity). Other 4xx raise `SapB1Error` (lib/sap/errors.py)
  with the HTTP status, the SAP error code and the Service Layer's own message.
- Each request's whole body must arrive within SAP_B1_REQUEST_DEADLINE_S (wall clock over the
  streamed body: httpx's timeout bounds each socket read only).

Secrets: the password is a `SecretStr` and is only unwrapped to build the Login body; the session
id lives in a private attribute. Neither appears in logs, reprs or exception messages (error texts
from the server are scrubbed of both as well).

`SapB1Client` (lib/sap/client.py) reads entity sets over this session.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.cookiejar import CookieJar, CookiePolicy
from http.cookies import SimpleCookie
from typing import Any, Self

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
from sap_ometria_assets.lib.sap.errors import SapB1Error, parse_error_body

_log = secret_scrub.scrubbed_logger(__name__)

SESSION_COOKIE = "B1SESSION"
ROUTE_COOKIE = "ROUTEID"
SESSION_EXPIRED_CODE = "301"


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


@dataclass(frozen=True)
class LoginInfo:
    """What the Service Layer said at login (never the session id)."""

    version: str | None
    session_timeout_min: int | None


class SapB1Session:
    """One logged-in Service Layer session (the base of `SapB1Client`).

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
        verify: bool | str = True,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        logger: Any = None,
        transport: httpx.BaseTransport | None = None,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        deadline_s: float = 600.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"Service Layer URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.company_db = company_db
        self.username = username
        self._password = password if isinstance(password, SecretStr) else SecretStr(str(password))
        secret_scrub.register(self._password)
        self.max_retries = int(max_retries)
        self.deadline_s = float(deadline_s)
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Log out (if logged in) and release connections. Safe to call twice."""
        try:
            self.logout()
        finally:
            self._http.close()

    def __repr__(self) -> str:
        state = "logged in" if self._session_id else "no session"
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, company_db={self.company_db!r}, "
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


def _no_cookie_jar():
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
