"""How entities look on the wire: the Service Layer's constants (version, route id, page size,
messages), the `_Reply` error, views of an entity set after schema faults and per protocol version
(v2 = OData v4, v1 = OData v3) with the formatting of dates, times and numbers, the cache of
rendered JSON chunks, entity keys in URLs, and `$metadata`.
"""

from __future__ import annotations

import collections
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from sap_ometria_assets.emulators.sap_b1.company import Company
from sap_ometria_assets.emulators.sap_b1.faults import SchemaChange
from sap_ometria_assets.emulators.sap_b1.odata import schema_resolver


# `SapB1Emulator` appears in annotations only, which are never evaluated here: server.py imports
# this module, so importing it back would make a cycle.


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
