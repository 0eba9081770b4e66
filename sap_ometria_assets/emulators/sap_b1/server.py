"""A SAP Business One Service Layer emulator over real HTTP (v2 = OData v4, v1 = OData v3).

It serves a generated `Company` with the Service Layer's protocol as documented in
`../shared/reference/sap_b1_service_layer.md`: `POST /b1s/v2/Login` setting the `B1SESSION` and
`ROUTEID` cookies, a sliding session timeout, `POST /Logout` (204), entity sets with `$filter`,
`$select`, `$orderby`, `$top`, `$skip`, `$count`, server-driven paging (default page size 20,
`Prefer: odata.maxpagesize=N` or `B1S-PageSize`, `@odata.nextLink` keeping the query), single
entities by key, the v1/v2 error shapes and codes (301 invalid session, 100000027 login failed,
-1000 invalid query, -2028 not found).

Speed: a page is assembled from per-record JSON rendered by polars (`struct.json_encode`) in
chunks that are cached; filters and ordering run as polars expressions over the stored columns,
and the row positions of a query are cached so that following next links costs a slice.

`SapB1Emulator.faults` switches failures on for tests: sessions killed mid-paging, 5xx answers,
latency, stalled answers (client timeouts), truncated pages, malformed records, schema changes
and the spelling of next links.

Run it alone: `python -m sap_ometria_assets.emulators.sap_b1.server --port 50000 --scale 1`.
"""

from __future__ import annotations

import argparse
import collections
import hmac
import json
import logging
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import numpy as np
import orjson
import polars as pl

from sap_ometria_assets.emulators.sap_b1.company import Company, generate_company
from sap_ometria_assets.emulators.sap_b1.odata import (
    ODataError,
    Query,
    compile_filter,
    parse_query,
    schema_resolver,
)

log = logging.getLogger(__name__)

SL_VERSION = "1000280"
ROUTE_ID = ".node1"
DEFAULT_PAGE_SIZE = 20
CHUNK_ROWS = 8192

MSG_INVALID_SESSION = "Invalid session or session already timeout."
MSG_LOGIN_FAILED = "Login failed"
MSG_NOT_FOUND = "No matching records found (ODBC -2028)"

_STATUS_TEXT = {
    200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
    405: "Method Not Allowed", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}
_RETYPES = {"string": pl.String, "str": pl.String, "int": pl.Int64, "float": pl.Float64, "bool": pl.Boolean}


# ---------------------------------------------------------------------------------------------
# Faults and statistics
# ---------------------------------------------------------------------------------------------

@dataclass
class SchemaChange:
    drop: list[str] = field(default_factory=list)
    rename: dict[str, str] = field(default_factory=dict)
    add: dict[str, Any] = field(default_factory=dict)
    retype: dict[str, Any] = field(default_factory=dict)


class Faults:
    """Failure switches (thread-safe). Counts refer to data requests (not Login/Logout)."""

    NEXT_LINK_STYLES = ("relative", "absolute_path", "absolute_url")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expire_after: int | None = None
        self._fail: list[tuple[int, int, bool]] = []     # (remaining, status, include_login)
        self._delay_s = 0.0
        self._stall: list[tuple[int, float]] = []         # (remaining, seconds)
        self._pages: dict[tuple[str, int], int] = {}
        self._records: dict[str, dict[str, list[tuple[str, Any]]]] = {}
        self._schema: dict[str, SchemaChange] = {}
        self._style = "relative"
        self._keeps_query = True
        self.generation = 0

    # -- switches ------------------------------------------------------------------------
    def expire_sessions_after(self, n_requests: int) -> None:
        """After `n_requests` more data requests every open session dies (401, code 301)."""
        with self._lock:
            self._expire_after = max(0, int(n_requests))

    def fail_next(self, n: int, status: int = 500, include_login: bool = False) -> None:
        """The next `n` requests answer `status` (5xx from SL, or the Apache proxy's HTML page)."""
        with self._lock:
            self._fail.append((int(n), int(status), include_login))

    def stall_next(self, n: int, seconds: float) -> None:
        """The next `n` data requests answer only after `seconds` (a client timeout, not latency)."""
        with self._lock:
            self._stall.append((int(n), max(0.0, float(seconds))))

    @property
    def delay_s(self) -> float:
        with self._lock:
            return self._delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        with self._lock:
            self._delay_s = max(0.0, float(value))

    def malformed_page(self, entity_set: str, page_index: int, times: int = 1) -> None:
        """Page `page_index` ($skip // page size) of `entity_set` is cut in half (invalid JSON)."""
        with self._lock:
            self._pages[(entity_set, int(page_index))] = int(times)

    def malformed_record(self, entity_set: str, key: Any, property: str, value: Any) -> None:
        """The record with this key is served with `property` set to `value` (any JSON value)."""
        with self._lock:
            self._records.setdefault(entity_set, {}).setdefault(str(key), []).append((property, value))
            self.generation += 1

    def schema_change(self, entity_set: str, drop: Iterable[str] = (), rename: dict[str, str] | None = None,
                      add: dict[str, Any] | None = None, retype: dict[str, Any] | None = None) -> None:
        """Serve `entity_set` with properties dropped, renamed, added or retyped (metadata drift).

        `retype` values: "string", "int", "float", "bool" or a polars dtype.
        """
        with self._lock:
            self._schema[entity_set] = SchemaChange(list(drop), dict(rename or {}), dict(add or {}), dict(retype or {}))
            self.generation += 1

    @property
    def next_link_style(self) -> str:
        return self._style

    @next_link_style.setter
    def next_link_style(self, value: str) -> None:
        if value not in self.NEXT_LINK_STYLES:
            raise ValueError(f"next_link_style must be one of {self.NEXT_LINK_STYLES}")
        self._style = value

    @property
    def next_link_keeps_query(self) -> bool:
        """False: next links carry only $skip/$top (clients must re-apply their own query)."""
        return self._keeps_query

    @next_link_keeps_query.setter
    def next_link_keeps_query(self, value: bool) -> None:
        self._keeps_query = bool(value)

    def clear(self) -> None:
        with self._lock:
            self._expire_after = None
            self._fail.clear()
            self._stall.clear()
            self._delay_s = 0.0
            self._pages.clear()
            self._records.clear()
            self._schema.clear()
            self._style = "relative"
            self._keeps_query = True
            self.generation += 1

    # -- used by the server ----------------------------------------------------------------
    def _take_failure(self, is_login: bool) -> int | None:
        with self._lock:
            for i, (remaining, status, include_login) in enumerate(self._fail):
                if is_login and not include_login:
                    continue
                if remaining <= 1:
                    self._fail.pop(i)
                else:
                    self._fail[i] = (remaining - 1, status, include_login)
                return status
            return None

    def _take_stall(self) -> float:
        with self._lock:
            if not self._stall:
                return 0.0
            remaining, seconds = self._stall[0]
            if remaining <= 1:
                self._stall.pop(0)
            else:
                self._stall[0] = (remaining - 1, seconds)
            return seconds

    def _count_data_request(self) -> bool:
        """True when this request is the one after which sessions must die."""
        with self._lock:
            if self._expire_after is None:
                return False
            if self._expire_after == 0:
                self._expire_after = None
                return True
            self._expire_after -= 1
            return False

    def _take_malformed_page(self, entity_set: str, page_index: int) -> bool:
        with self._lock:
            left = self._pages.get((entity_set, page_index), 0)
            if left <= 0:
                return False
            self._pages[(entity_set, page_index)] = left - 1
            return True

    def _record_patches(self, entity_set: str) -> dict[str, list[tuple[str, Any]]]:
        with self._lock:
            return dict(self._records.get(entity_set, {}))

    def _schema_for(self, entity_set: str) -> SchemaChange | None:
        with self._lock:
            return self._schema.get(entity_set)


class EmulatorStats:
    """What the emulator served (thread-safe counters; read the attributes or `snapshot()`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.logins = 0
            self.failed_logins = 0
            self.logouts = 0
            self.requests = 0
            self.requests_by_entity_set: collections.Counter[str] = collections.Counter()
            self.pages: collections.Counter[str] = collections.Counter()
            self.records_served: collections.Counter[str] = collections.Counter()
            self.errors: collections.Counter[int] = collections.Counter()
            self.bytes_served = 0

    def _add(self, **kw: Any) -> None:
        with self._lock:
            for name, value in kw.items():
                setattr(self, name, getattr(self, name) + value)

    def _count(self, counter: str, key: Any, n: int = 1) -> None:
        with self._lock:
            getattr(self, counter)[key] += n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "logins": self.logins, "failed_logins": self.failed_logins, "logouts": self.logouts,
                "requests": self.requests, "requests_by_entity_set": dict(self.requests_by_entity_set),
                "pages": dict(self.pages), "records_served": dict(self.records_served),
                "errors": dict(self.errors), "bytes_served": self.bytes_served,
            }


# ---------------------------------------------------------------------------------------------
# Views: what an entity set looks like on the wire (after schema faults), per protocol version
# ---------------------------------------------------------------------------------------------

class _Reply(Exception):
    """Raised inside request handling to answer with an error."""

    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _format_expr(expr: pl.Expr, dtype: pl.DataType, version: str) -> pl.Expr:
    date_fmt = "%Y-%m-%dT00:00:00Z" if version == "v2" else "%Y-%m-%d"
    if dtype == pl.Date:
        return expr.dt.strftime(date_fmt)
    if dtype == pl.Time:
        return expr.dt.strftime("%H:%M:%S")
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        fixes = [
            pl.field(f.name).dt.strftime(date_fmt if f.dtype == pl.Date else "%H:%M:%S")
            for f in dtype.inner.fields if f.dtype in (pl.Date, pl.Time)
        ]
        if fixes:
            return expr.list.eval(pl.element().struct.with_fields(fixes))
    return expr


@dataclass
class _View:
    entity_set: str
    props: dict[str, pl.Expr]            # every served property, in order (collections last)
    dtypes: dict[str, pl.DataType]
    scalars: dict[str, tuple[pl.Expr, pl.DataType]]
    collections: set[str]
    key: tuple[str, ...]
    stored: list[str]                     # stored top-level columns (what the ETag hashes)
    sources: dict[str, set[str]]          # property -> stored columns it reads

    def resolver(self):
        return schema_resolver({}, self.scalars, self.collections, self.entity_set)

    def output(self, version: str, names: list[str] | None = None) -> list[pl.Expr]:
        names = list(self.props) if names is None else names
        etag_name = "@odata.etag" if version == "v2" else "odata.etag"
        etag = pl.format('W/"{}"', pl.struct(self.stored).hash(seed=1_000_280).cast(pl.String).str.zfill(20)
                         .str.encode("hex").str.to_uppercase()).alias(etag_name)
        return [etag] + [_format_expr(self.props[n], self.dtypes[n], version).alias(n) for n in names]


def _build_view(company: Company, entity_set: str, change: SchemaChange | None) -> _View:
    props = dict(company.property_exprs(entity_set))
    for c in company.collections(entity_set):
        props[c] = pl.col(c)
    if change:
        for name in change.drop:
            props.pop(name, None)
        for old, new in change.rename.items():
            if old in props:
                props = {(new if k == old else k): (v.alias(new) if k == old else v) for k, v in props.items()}
        for name, target in change.retype.items():
            if name in props:
                dtype = _RETYPES.get(target, target) if isinstance(target, str) else target
                props[name] = props[name].cast(dtype, strict=False).alias(name)
        for name, value in change.add.items():
            props[name] = pl.lit(value).alias(name)
    sample = company.rows(entity_set, positions=np.zeros(0, np.int64))
    dtypes = dict(sample.lazy().select([e.alias(n) for n, e in props.items()]).collect_schema())
    collections_ = {n for n, d in dtypes.items() if isinstance(d, (pl.List, pl.Struct))}
    scalars = {n: (e, dtypes[n]) for n, e in props.items() if n not in collections_}
    stored = [c for c, d in company.header(entity_set).schema.items()]
    sources = {n: set(e.meta.root_names()) for n, e in props.items()}
    return _View(entity_set, props, dtypes, scalars, collections_, company.spec(entity_set).key, stored, sources)


@dataclass
class _Rendered:
    """Records as one buffer of `rec,rec,...,rec,` (arrow memory); record i is buf[off[i]:off[i+1]-1]."""

    buf: Any            # pyarrow.Buffer: sliced through memoryviews, never copied to Python bytes
    off: np.ndarray

    @classmethod
    def of(cls, records: pl.Series) -> _Rendered:
        arr = (records + ",").to_arrow(compat_level=pl.CompatLevel.oldest())  # large_string: one data buffer
        _, offsets, data = arr.buffers()
        off = np.frombuffer(offsets, dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
        return cls(data if data is not None else b"", off)

    @property
    def nbytes(self) -> int:
        return int(self.off[-1] - self.off[0]) + self.off.nbytes

    def run(self, lo: int, hi: int) -> memoryview:
        """Records lo..hi-1, comma-separated (no trailing comma)."""
        return memoryview(self.buf)[int(self.off[lo]): int(self.off[hi]) - 1]

    def record(self, i: int) -> memoryview:
        return memoryview(self.buf)[int(self.off[i]): int(self.off[i + 1]) - 1]


class _ChunkCache:
    """Rendered chunks of CHUNK_ROWS stored rows, least recently used dropped beyond a byte budget.

    A chunk is rendered once even when several requests (or the prefetcher) want it at the same
    time; requests for other chunks do not wait.
    """

    def __init__(self, budget_bytes: int | None):
        self.budget = budget_bytes
        self._lock = threading.Lock()
        self._chunks: collections.OrderedDict[tuple, _Rendered] = collections.OrderedDict()
        self._inflight: dict[tuple, threading.Event] = {}
        self._bytes = 0

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._bytes = 0

    def get(self, key: tuple, build: Callable[[], pl.Series]) -> _Rendered:
        while True:
            with self._lock:
                hit = self._chunks.get(key)
                if hit is not None:
                    self._chunks.move_to_end(key)
                    return hit
                event = self._inflight.get(key)
                if event is None:
                    event = self._inflight[key] = threading.Event()
                    break
            event.wait()  # someone else is rendering it; then look again
        try:
            rendered = _Rendered.of(build())
            with self._lock:
                self._chunks[key] = rendered
                self._bytes += rendered.nbytes
                while self.budget is not None and self._bytes > self.budget and len(self._chunks) > 1:
                    _, old = self._chunks.popitem(last=False)
                    self._bytes -= old.nbytes
            return rendered
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            event.set()

    def has(self, key: tuple) -> bool:
        with self._lock:
            return key in self._chunks or key in self._inflight


# ---------------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------------

class SapB1Emulator:
    """SAP B1 Service Layer emulator serving `company` on http://host:port/b1s/v2 (and /b1s/v1)."""

    def __init__(self, company: Company, *, host: str = "127.0.0.1", port: int = 0, session_timeout_min: float = 30,
                 company_db: str = "SBODEMOGB", username: str = "manager", password: Any = "demo-password",
                 clock: Callable[[], float] = time.monotonic, render_cache_bytes: int | None = 2 << 30,
                 admin: bool = False):
        self._company = company
        self.host = host
        self._port = port
        self.session_timeout_min = session_timeout_min
        self.company_db = company_db
        self.username = username
        secret = password.get_secret_value() if hasattr(password, "get_secret_value") else str(password)
        self._password = secret.encode()
        self.clock = clock
        self.admin = admin
        self.faults = Faults()
        self.stats = EmulatorStats()
        self._sessions: dict[str, float] = {}
        self._sessions_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._views: dict[tuple, _View] = {}
        self._queries: collections.OrderedDict[tuple, np.ndarray | None] = collections.OrderedDict()
        self._render = _ChunkCache(render_cache_bytes)
        self._prefetcher: ThreadPoolExecutor | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> SapB1Emulator:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self.host, self._port), _Handler)
        server.daemon_threads = True
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"sap-b1-emulator-{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        if self._prefetcher is not None:
            self._prefetcher.shutdown(wait=True, cancel_futures=True)
            self._prefetcher = None
        self._server = None
        self._thread = None

    def __enter__(self) -> SapB1Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """v2 service root, e.g. http://127.0.0.1:50123/b1s/v2"""
        return f"http://{self.host}:{self._port}/b1s/v2"

    @property
    def v1_url(self) -> str:
        return f"http://{self.host}:{self._port}/b1s/v1"

    # -- data ----------------------------------------------------------------------------
    @property
    def company(self) -> Company:
        return self._company

    def set_company(self, company: Company) -> None:
        with self._state_lock:
            self._company = company
            self._views.clear()
            self._queries.clear()
        self._render.clear()

    def advance(self, ticks: int = 1, change_fraction: float | None = None) -> Company:
        company = self._company.advance(ticks, change_fraction)
        self.set_company(company)
        return company

    def prerender(self, entity_sets: Iterable[str] | None = None, versions: Iterable[str] = ("v2",)) -> None:
        """Render and cache every record now (benchmarks then time serving, not rendering)."""
        company = self._company
        for es in entity_sets or company.entity_sets():
            n = company.header(es).height
            for version in versions:
                for start in range(0, n, CHUNK_ROWS):
                    self._chunk(company, es, version, start // CHUNK_ROWS)

    def kill_sessions(self) -> None:
        with self._sessions_lock:
            self._sessions.clear()

    # -- sessions ---------------------------------------------------------------------------
    def _login(self, body: dict) -> str | None:
        ok = (
            isinstance(body, dict)
            and hmac.compare_digest(str(body.get("CompanyDB", "")).encode(), self.company_db.encode())
            and hmac.compare_digest(str(body.get("UserName", "")).encode(), self.username.encode())
            and hmac.compare_digest(str(body.get("Password", "")).encode(), self._password)
        )
        if not ok:
            self.stats._add(failed_logins=1)
            return None
        sid = str(uuid.uuid4())
        now = self.clock()
        with self._sessions_lock:
            if len(self._sessions) > 256:  # forget sessions that timed out long ago
                limit = self.session_timeout_min * 60
                self._sessions = {k: v for k, v in self._sessions.items() if now - v <= limit}
            self._sessions[sid] = now
        self.stats._add(logins=1)
        return sid

    def _check_session(self, cookies: dict[str, str]) -> str:
        sid = cookies.get("B1SESSION")
        if not sid or cookies.get("ROUTEID") != ROUTE_ID:
            raise _Reply(401, 301, MSG_INVALID_SESSION)
        now = self.clock()
        with self._sessions_lock:
            last = self._sessions.get(sid)
            if last is None or now - last > self.session_timeout_min * 60:
                self._sessions.pop(sid, None)
                raise _Reply(401, 301, MSG_INVALID_SESSION)
            self._sessions[sid] = now  # sliding expiration
        return sid

    def _logout(self, sid: str) -> None:
        with self._sessions_lock:
            self._sessions.pop(sid, None)
        self.stats._add(logouts=1)

    # -- views, queries, rendering -------------------------------------------------------------
    def _view(self, company: Company, entity_set: str) -> _View:
        gen = self.faults.generation
        key = (company.serial, gen, entity_set)
        with self._state_lock:
            hit = self._views.get(key)
        if hit is None:
            hit = _build_view(company, entity_set, self.faults._schema_for(entity_set))
            with self._state_lock:
                self._views[key] = hit
        return hit

    def _positions(self, company: Company, view: _View, q: Query, ci: bool) -> tuple[np.ndarray | None, int]:
        """Row positions of the result in order (None = all rows in stored order) and their count."""
        frame = company.header(view.entity_set)
        key_order = [(k, False) for k in view.key]
        if not q.filter and (not q.orderby or q.orderby == key_order) and all(k in view.scalars for k in view.key):
            return None, frame.height
        cache_key = (company.serial, self.faults.generation, view.entity_set, q.filter or "", tuple(q.orderby), ci)
        with self._state_lock:
            if cache_key in self._queries:
                self._queries.move_to_end(cache_key)
                pos = self._queries[cache_key]
                return pos, (frame.height if pos is None else len(pos))
        resolve = view.resolver()
        cond = compile_filter(q.filter, resolve, case_insensitive=ci) if q.filter else None
        order = [resolve(name)[0] for name, _ in q.orderby]
        try:
            df = frame.with_row_index("_pos")
            if cond is not None:
                df = df.filter(cond)
            if order:
                # NULL sorts as the smallest value, as in SAP's databases.
                desc = [d for _, d in q.orderby]
                df = df.sort(order, descending=desc, nulls_last=desc, maintain_order=True)
            pos = df["_pos"].to_numpy().astype(np.int64)
        except pl.exceptions.PolarsError as exc:  # e.g. a value that cannot be compared
            raise _Reply(400, -1000, f"Invalid query: {str(exc).splitlines()[0]}") from None
        with self._state_lock:
            self._queries[cache_key] = pos
            while len(self._queries) > 32:
                self._queries.popitem(last=False)
        return pos, len(pos)

    def _render_rows(self, company: Company, view: _View, version: str, positions: np.ndarray,
                     names: list[str] | None = None) -> pl.Series:
        wanted = names if names is not None else list(view.props)
        needed = set().union(*(view.sources[n] for n in wanted)) if wanted else set()
        colls = None if names is None else [c for c in company.collections(view.entity_set) if c in needed]
        raw = company.rows(view.entity_set, positions, columns=colls)
        return raw.select(pl.struct(view.output(version, wanted)).struct.json_encode()).to_series()

    def _chunk(self, company: Company, entity_set: str, version: str, index: int) -> _Rendered:
        view = self._view(company, entity_set)
        key = (company.serial, self.faults.generation, entity_set, version, index)
        n = company.header(entity_set).height

        def build() -> pl.Series:
            return self._render_rows(company, view, version, np.arange(index * CHUNK_ROWS, min(n, (index + 1) * CHUNK_ROWS)))

        return self._render.get(key, build)

    def _payload(self, company: Company, view: _View, version: str, positions: np.ndarray,
                 names: list[str] | None) -> list[bytes | memoryview]:
        """The records at `positions`, comma-joined, as byte parts to send one after the other."""
        if len(positions) == 0:
            return []
        patches = self.faults._record_patches(view.entity_set)
        if names is not None or patches:
            records = self._render_rows(company, view, version, positions, names)
            if patches:
                records = pl.Series(self._patch(company, view, positions, records.to_list(), patches), dtype=pl.String)
            return [_Rendered.of(records).run(0, records.len())]
        chunks = np.unique(positions // CHUNK_ROWS)
        span = int(positions.max() - positions.min() + 1)
        gen = self.faults.generation
        cached = all(self._render.has((company.serial, gen, view.entity_set, version, int(c))) for c in chunks)
        if not cached and (len(positions) == 1 or (span > 2 * len(positions) and len(chunks) > 2)):
            # Scattered rows (an incremental filter, one entity): render just them.
            return [_Rendered.of(self._render_rows(company, view, version, positions)).run(0, len(positions))]
        rendered = {int(c): self._chunk(company, view.entity_set, version, int(c)) for c in chunks}
        if span == len(positions) and bool(np.all(np.diff(positions) == 1)):
            # A run of stored rows (paging in key order): slices of the cached buffers, no copy.
            parts: list[bytes | memoryview] = []
            for c in chunks:
                lo = max(int(positions[0]), int(c) * CHUNK_ROWS) - int(c) * CHUNK_ROWS
                hi = min(int(positions[-1]) + 1, (int(c) + 1) * CHUNK_ROWS) - int(c) * CHUNK_ROWS
                if parts:
                    parts.append(b",")
                parts.append(rendered[int(c)].run(lo, hi))
            self._prefetch(company, view.entity_set, version, int(chunks[-1]) + 1)
            return parts
        # Another order over cached rows ($orderby): slice each record out of its chunk.
        return [b",".join(rendered[p // CHUNK_ROWS].record(p % CHUNK_ROWS) for p in positions.tolist())]

    def _prefetch(self, company: Company, entity_set: str, version: str, index: int) -> None:
        """Render the next chunk of a sequential scan in the background while the client reads."""
        if index * CHUNK_ROWS >= company.header(entity_set).height:
            return
        if self._render.has((company.serial, self.faults.generation, entity_set, version, index)):
            return
        with self._state_lock:
            if self._prefetcher is None:
                self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sap-b1-prefetch")
            self._prefetcher.submit(self._chunk, company, entity_set, version, index)

    def _patch(self, company: Company, view: _View, positions: np.ndarray, texts: list[str],
               patches: dict[str, list[tuple[str, Any]]]) -> list[str]:
        keys = company.header(view.entity_set).select(
            pl.concat_str([pl.col(k).cast(pl.String) for k in view.key], separator=",")
        ).to_series().gather(pl.Series(positions)).to_list()
        for i, key in enumerate(keys):
            for prop, value in patches.get(key, ()):
                rec = orjson.loads(texts[i])
                rec[prop] = value
                texts[i] = orjson.dumps(rec).decode()
        return texts


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

_KEY = re.compile(r"^(?P<set>[A-Za-z_][A-Za-z0-9_]*)\((?P<key>.*)\)$")


def _parse_key(text: str, key_cols: tuple[str, ...], schema: dict[str, pl.DataType]) -> dict[str, Any]:
    parts = [p for p in re.findall(r"(?:[^,']|'(?:[^']|'')*')+", text)]
    values: dict[str, Any] = {}
    if len(parts) == 1 and "=" not in parts[0] and len(key_cols) == 1:
        parts = [f"{key_cols[0]}={parts[0]}"]
    for part in parts:
        name, _, raw = part.partition("=")
        name, raw = name.strip(), raw.strip()
        if name not in key_cols:
            raise _Reply(400, -1000, f"Invalid key '{text}'.")
        if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
            if schema[name] != pl.String:
                raise _Reply(400, -1000, f"Key '{name}' expects a number, got {raw}.")
            values[name] = raw[1:-1].replace("''", "'")
        elif re.fullmatch(r"-?\d+", raw):
            if schema[name] == pl.String:
                raise _Reply(400, -1000, f"Key '{name}' expects a quoted string, got {raw}.")
            values[name] = int(raw)
        else:
            raise _Reply(400, -1000, f"Invalid key value {raw!r}.")
    if set(values) != set(key_cols):
        raise _Reply(400, -1000, f"Invalid key '{text}'.")
    return values


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Apache"
    sys_version = ""
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and benchmarks
        return

    @property
    def emu(self) -> SapB1Emulator:
        return self.server.emulator  # type: ignore[attr-defined]

    # -- plumbing ------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes | list[bytes | memoryview] = b"", content_type: str | None = None,
              headers: list[tuple[str, str]] | None = None) -> None:
        parts = body if isinstance(body, list) else [body]
        length = sum(len(p) for p in parts)
        lines = [f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        for k, v in headers or ():
            lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {length}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if length < 65536:
            self.wfile.write(head + b"".join(parts))
        else:  # big pages go out as they are (slices of the render cache), without joining copies
            self.connection.sendall(head)
            for part in parts:
                self.connection.sendall(part)
        self.emu.stats._add(bytes_served=length)
        if status >= 400:
            self.emu.stats._count("errors", status)

    def _json_headers(self, version: str) -> tuple[str, list[tuple[str, str]]]:
        if version == "v2":
            return "application/json;odata.metadata=minimal;charset=utf-8", [("OData-Version", "4.0")]
        return "application/json;odata=minimalmetadata;charset=utf-8", [("DataServiceVersion", "3.0")]

    def _error(self, version: str, status: int, code: int, message: str) -> None:
        if version == "v2":
            body = {"error": {"code": str(code), "message": message}}
        else:
            body = {"error": {"code": code, "message": {"lang": "en-us", "value": message}}}
        ctype, headers = self._json_headers(version)
        self._send(status, orjson.dumps(body), ctype, headers)

    def _fault_reply(self, version: str, status: int) -> None:
        if status in (502, 503, 504):  # the Apache load balancer in front of the Service Layer
            text = _STATUS_TEXT.get(status, "Error")
            html = (f"<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>{status} {text}"
                    f"</title>\n</head><body>\n<h1>{text}</h1>\n<p>The server is temporarily unable to service "
                    "your request.</p>\n</body></html>\n")
            self._send(status, html.encode(), "text/html; charset=iso-8859-1")
        else:
            self._error(version, status, -1, "Internal error: the request could not be processed (emulated fault).")

    def _cookies(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for header in self.headers.get_all("Cookie") or []:
            for part in header.split(";"):
                name, sep, value = part.strip().partition("=")
                if sep:
                    out[name] = value
        return out

    def _base(self) -> str:
        return f"http://{self.headers.get('Host') or f'{self.emu.host}:{self.emu.port}'}"

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- dispatch ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        emu = self.emu
        split = urlsplit(self.path)
        body = self._body() if method in ("POST", "PATCH", "PUT") else b""
        if split.path.startswith("/_emulator/") and emu.admin:
            return self._admin(method, split.path, body)
        m = re.match(r"^/b1s/(v1|v2)/(.*)$", split.path)
        if not m:
            self._send(404, b"Not Found", "text/plain")
            return
        version, rest = m.group(1), m.group(2)
        emu.stats._add(requests=1)
        delay = emu.faults.delay_s
        if delay:
            time.sleep(delay)
        try:
            if rest == "Login":
                status = emu.faults._take_failure(is_login=True)
                if status:
                    return self._fault_reply(version, status)
                if method != "POST":
                    raise _Reply(405, -5006, "Login requires POST.")
                return self._do_login(version, body)
            status = emu.faults._take_failure(is_login=False)
            if status:
                return self._fault_reply(version, status)
            stall = emu.faults._take_stall()
            if stall:
                time.sleep(stall)
            if emu.faults._count_data_request():
                emu.kill_sessions()
            sid = emu._check_session(self._cookies())
            if rest == "Logout":
                if method != "POST":
                    raise _Reply(405, -5006, "Logout requires POST.")
                emu._logout(sid)
                return self._send(204)
            if method != "GET":
                raise _Reply(405, -5006, "The emulator is read-only: only GET is supported on entity sets.")
            self._do_get(version, rest, split.query)
        except _Reply as r:
            self._error(version, r.status, r.code, r.message)
        except ODataError as exc:
            self._error(version, 400, exc.code, str(exc))
        except Exception as exc:  # an emulator bug must show as an error answer, not a dropped connection
            log.exception("SAP B1 emulator failed on %s %s", method, split.path)
            self._error(version, 500, -1, f"Internal error in the emulator: {type(exc).__name__}: {exc}")

    def _do_login(self, version: str, body: bytes) -> None:
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            raise _Reply(400, -1000, "Invalid JSON in the Login request body.") from None
        sid = self.emu._login(payload)
        if sid is None:
            raise _Reply(401, 100000027, MSG_LOGIN_FAILED)
        root = f"{self._base()}/b1s/{version}"
        if version == "v2":
            out = {"@odata.context": f"{root}/$metadata#B1Sessions/$entity", "SessionId": sid,
                   "Version": SL_VERSION, "SessionTimeout": self.emu.session_timeout_min}
        else:
            out = {"odata.metadata": f"{root}/$metadata#B1Sessions/@Element", "SessionId": sid,
                   "Version": SL_VERSION, "SessionTimeout": self.emu.session_timeout_min}
        ctype, headers = self._json_headers(version)
        headers = headers + [("Set-Cookie", f"B1SESSION={sid}; HttpOnly"), ("Set-Cookie", f"ROUTEID={ROUTE_ID}; path=/b1s")]
        self._send(200, orjson.dumps(out), ctype, headers)

    def _do_get(self, version: str, rest: str, query: str) -> None:
        emu = self.emu
        company = emu.company
        if rest == "$metadata":
            return self._send(200, _metadata(emu, company, version).encode(), "application/xml")
        count_only = rest.endswith("/$count")
        path = rest[: -len("/$count")] if count_only else rest
        key_text = None
        km = _KEY.match(path)
        if km:
            path, key_text = km.group("set"), km.group("key")
        if path not in company.entity_sets():
            raise _Reply(404, -1000, f"Resource not found for the segment '{path}'.")
        emu.stats._count("requests_by_entity_set", path)
        view = emu._view(company, path)
        q = parse_query(parse_qsl(query, keep_blank_values=True))
        if version == "v2" and q.inlinecount:
            raise ODataError("$inlinecount is an OData v3 option: use $count=true on /b1s/v2.")
        if version == "v1" and q.count:
            raise ODataError("$count=true is an OData v4 option: use $inlinecount=allpages on /b1s/v1.")
        ci = (self.headers.get("B1S-CaseInsensitive") or "").lower() == "true"
        if key_text is not None:
            return self._do_entity(version, company, view, key_text, q)
        positions, total = emu._positions(company, view, q, ci)
        if count_only:
            return self._send(200, str(total).encode(), "text/plain;charset=utf-8", [])
        self._do_page(version, company, view, q, positions, total)

    def _page_size(self) -> tuple[int, list[tuple[str, str]]]:
        prefer = self.headers.get("Prefer") or ""
        m = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer)
        if m:
            n = int(m.group(1))
            return n, [("Preference-Applied", f"odata.maxpagesize={n}")]
        raw = self.headers.get("B1S-PageSize")
        if raw is not None:
            if not raw.strip().isdigit():
                raise _Reply(400, -1000, f"Invalid B1S-PageSize '{raw}'.")
            return int(raw), []
        return DEFAULT_PAGE_SIZE, []

    def _do_page(self, version: str, company: Company, view: _View, q: Query, positions, total: int) -> None:
        emu = self.emu
        size, extra_headers = self._page_size()
        end = total if q.top is None else min(total, q.skip + q.top)
        start = min(q.skip, total)
        stop = end if size == 0 else min(end, start + size)
        page = np.arange(start, stop, dtype=np.int64) if positions is None else positions[start:stop]
        names = None
        if q.select is not None:
            unknown = [n for n in q.select if n not in view.props]
            if unknown:
                raise _Reply(400, -1000, f"Property '{unknown[0]}' of '{view.entity_set}' is invalid.")
            names = q.select
        payload = emu._payload(company, view, version, page, names)
        root = f"{self._base()}/b1s/{version}"
        context = f"{root}/$metadata#{view.entity_set}" + (f"({','.join(names)})" if names else "")
        head: dict[str, Any] = {"@odata.context" if version == "v2" else "odata.metadata": context}
        if q.count:
            head["@odata.count"] = total
        if q.inlinecount:
            head["odata.count"] = str(total)  # v3 sends the count as a string
        tail = b"]"
        if stop < end:
            link = self._next_link(version, view.entity_set, q, stop, end)
            tail += b',"' + (b"@odata.nextLink" if version == "v2" else b"odata.nextLink") + b'":' + orjson.dumps(link)
        body: list[bytes | memoryview] = [orjson.dumps(head)[:-1] + b',"value":[', *payload, tail + b"}"]
        page_index = start // size if size else 0
        if emu.faults._take_malformed_page(view.entity_set, page_index):
            whole = b"".join(body)
            body = [whole[: max(1, len(whole) // 2)]]
        emu.stats._count("pages", view.entity_set)
        emu.stats._count("records_served", view.entity_set, len(page))
        ctype, headers = self._json_headers(version)
        self._send(200, body, ctype, headers + extra_headers)

    def _next_link(self, version: str, entity_set: str, q: Query, next_skip: int, end: int) -> str:
        faults = self.emu.faults
        params: list[tuple[str, str]] = []
        if faults.next_link_keeps_query:
            if q.filter:
                params.append(("$filter", q.filter))
            if q.select is not None:
                params.append(("$select", ",".join(q.select)))
            if q.orderby:
                params.append(("$orderby", ",".join(f"{n} desc" if d else n for n, d in q.orderby)))
            if q.count:
                params.append(("$count", "true"))
            if q.inlinecount:
                params.append(("$inlinecount", "allpages"))
            params.extend(q.passthrough.items())
        if q.top is not None:
            params.append(("$top", str(end - next_skip)))
        params.append(("$skip", str(next_skip)))
        qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
        style = faults.next_link_style
        if version == "v1" and style == "relative":
            style = "absolute_path"
        if style == "relative":
            return f"{entity_set}?{qs}"
        path = f"/b1s/{version}/{entity_set}?{qs}"
        return path if style == "absolute_path" else f"{self._base()}{path}"

    def _do_entity(self, version: str, company: Company, view: _View, key_text: str, q: Query) -> None:
        frame = company.header(view.entity_set)
        values = _parse_key(key_text, view.key, frame.schema)
        cond = pl.lit(True)
        for k, v in values.items():
            cond = cond & (pl.col(k) == v)
        pos = frame.with_row_index("_pos").filter(cond)["_pos"].to_numpy().astype(np.int64)
        if len(pos) == 0:
            raise _Reply(404, -2028, MSG_NOT_FOUND)
        names = q.select
        if names is not None:
            unknown = [n for n in names if n not in view.props]
            if unknown:
                raise _Reply(400, -1000, f"Property '{unknown[0]}' of '{view.entity_set}' is invalid.")
        text = b"".join(bytes(p) for p in self.emu._payload(company, view, version, pos, names)).decode()
        root = f"{self._base()}/b1s/{version}"
        if version == "v2":
            head = orjson.dumps({"@odata.context": f"{root}/$metadata#{view.entity_set}/$entity"})
        else:
            head = orjson.dumps({"odata.metadata": f"{root}/$metadata#{view.entity_set}/@Element"})
        body = head[:-1] + b"," + text.encode()[1:]
        etag = orjson.loads(text).get("@odata.etag" if version == "v2" else "odata.etag", "")
        self.emu.stats._count("records_served", view.entity_set)
        ctype, headers = self._json_headers(version)
        self._send(200, body, ctype, headers + ([("ETag", etag)] if etag else []))

    # -- admin (CLI --admin): lets a test drive an emulator running in another process -----------------
    def _admin(self, method: str, path: str, body: bytes) -> None:
        emu = self.emu
        try:
            payload = json.loads(body or b"{}")
            if path == "/_emulator/stats" and method == "GET":
                out: Any = emu.stats.snapshot()
            elif path == "/_emulator/advance" and method == "POST":
                company = emu.advance(int(payload.get("ticks", 1)), payload.get("change_fraction"))
                out = {"ticks": company.ticks, "now": company.now.isoformat(sep=" ")}
            elif path == "/_emulator/faults" and method == "POST":
                for name, kwargs in payload.items():
                    if name in ("delay_s", "next_link_style", "next_link_keeps_query"):
                        setattr(emu.faults, name, kwargs)
                    elif name in ("expire_sessions_after", "fail_next", "stall_next", "malformed_page",
                                  "malformed_record", "schema_change", "clear"):
                        getattr(emu.faults, name)(**(kwargs or {}))
                    else:
                        raise ValueError(f"unknown fault {name!r}")
                out = {"ok": True}
            else:
                return self._send(404, b"Not Found", "text/plain")
        except (ValueError, TypeError) as exc:
            return self._send(400, orjson.dumps({"error": str(exc)}), "application/json")
        self._send(200, orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS), "application/json")


_EDM = {pl.String: "Edm.String", pl.Int32: "Edm.Int32", pl.Int64: "Edm.Int64", pl.Float64: "Edm.Double",
        pl.Boolean: "Edm.Boolean"}


def _edm(dtype: pl.DataType, version: str) -> str:
    if dtype == pl.Date:
        return "Edm.DateTimeOffset" if version == "v2" else "Edm.DateTime"
    if dtype == pl.Time:
        return "Edm.TimeOfDay" if version == "v2" else "Edm.Time"
    if isinstance(dtype, (pl.Enum, pl.Categorical)):
        return "Edm.String"
    return _EDM.get(dtype, "Edm.String")


def _metadata(emu: SapB1Emulator, company: Company, version: str) -> str:
    """A minimal CSDL document: entity sets, their types and properties (UDFs included)."""
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           f'<edmx:Edmx Version="{"4.0" if version == "v2" else "1.0"}" '
           'xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx"><edmx:DataServices>'
           '<Schema Namespace="SAPB1" xmlns="http://docs.oasis-open.org/odata/ns/edm">']
    for es in company.entity_sets():
        view = emu._view(company, es)
        out.append(f'<EntityType Name="{company.spec(es).entity_type}"><Key>'
                   + "".join(f'<PropertyRef Name="{k}"/>' for k in view.key) + "</Key>")
        for name, dtype in view.dtypes.items():
            typ = "Collection(SAPB1.Complex)" if name in view.collections else _edm(dtype, version)
            out.append(f'<Property Name="{name}" Type="{typ}"/>')
        out.append("</EntityType>")
    out.append('<EntityContainer Name="ServiceLayer">')
    out.extend(f'<EntitySet Name="{es}" EntityType="SAPB1.{company.spec(es).entity_type}"/>' for es in company.entity_sets())
    out.append("</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SAP B1 Service Layer emulator serving the generated demo company.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50000, help="0 = any free port (printed on start)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--ticks", type=int, default=0)
    parser.add_argument("--change-fraction", type=float, default=None)
    parser.add_argument("--session-timeout-min", type=float, default=30)
    parser.add_argument("--company-db", default="SBODEMOGB")
    parser.add_argument("--username", default="manager")
    parser.add_argument("--password", default="demo-password")
    parser.add_argument("--render-cache-mb", type=int, default=2048)
    parser.add_argument("--prerender", nargs="?", const="all", default=None, metavar="ENTITY_SETS",
                        help="render records before serving: all entity sets, or a comma-separated list")
    parser.add_argument("--admin", action="store_true", help="enable /_emulator/{stats,advance,faults}")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    company = generate_company(args.scale, args.seed, args.ticks, args.change_fraction)
    emu = SapB1Emulator(company, host=args.host, port=args.port, session_timeout_min=args.session_timeout_min,
                        company_db=args.company_db, username=args.username, password=args.password,
                        render_cache_bytes=args.render_cache_mb << 20, admin=args.admin)
    if args.prerender:
        emu.prerender(None if args.prerender == "all" else args.prerender.split(","))
    emu.start()
    print(f"SAP B1 Service Layer emulator listening on {emu.url} "
          f"(company {args.company_db}, scale {args.scale}, seed {args.seed}, tick {company.ticks}, "
          f"ready in {time.perf_counter() - started:.1f}s)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
