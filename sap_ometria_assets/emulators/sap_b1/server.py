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

Package layout: `wire` (constants, views, rendering, `$metadata`), `faults` (`Faults`,
`EmulatorStats`), `sessions` (login, session check, logout), `handler` (the HTTP handler); this
module holds `SapB1Emulator` and the command line.
"""

from __future__ import annotations

import argparse
import collections
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer
from typing import Any

import numpy as np
import orjson
import polars as pl

from sap_ometria_assets.emulators.sap_b1.company import Company, generate_company
from sap_ometria_assets.emulators.sap_b1.faults import EmulatorStats, Faults
from sap_ometria_assets.emulators.sap_b1.handler import _Handler
from sap_ometria_assets.emulators.sap_b1.odata import Query, compile_filter
from sap_ometria_assets.emulators.sap_b1.sessions import SessionsMixin
from sap_ometria_assets.emulators.sap_b1.wire import CHUNK_ROWS, _ChunkCache, _Rendered, _Reply, _View, _build_view


# ---------------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------------

class SapB1Emulator(SessionsMixin):
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
