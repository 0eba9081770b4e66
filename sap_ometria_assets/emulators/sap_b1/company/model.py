"""The `Company` (its tables, planted cases, counters and clock; how each entity set is served:
properties, collections, rows) and `generate_company`, which builds one at any tick.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from sap_ometria_assets.emulators.sap_b1.company.constants import BASE_NOW, DOC_TABLES
from sap_ometria_assets.emulators.sap_b1.company.generation import _generate_base
from sap_ometria_assets.emulators.sap_b1.company.schema import ENTITY_SPECS, ChildSpec, EntitySpec, property_exprs
from sap_ometria_assets.emulators.sap_b1.company.ticks import _apply_tick


# ---------------------------------------------------------------------------------------------
# The company
# ---------------------------------------------------------------------------------------------

_SERIALS = itertools.count(1)


@dataclass
class Company:
    """A generated SAP B1 company at a given tick: stored tables plus how they are served.

    `tables` maps SAP table names (OCRD, CRD1, ORDR, RDR1, RDR3, ..., OITM, ITM1, OITW, OWHS,
    OCRG, CUFD) to flat polars frames sorted by key. `frame(entity_set)` gives the entity set as the
    Service Layer shows it (standard properties, UDFs, collections as list-of-struct columns);
    `records(entity_set)` the same as Python dicts. `planted` names the keys of each planted case.
    """

    scale: float
    seed: int
    ticks: int
    tables: dict[str, pl.DataFrame]
    planted: dict[str, list]
    counters: dict[str, int]
    change_fraction: float | None = None
    # Unique in the process (unlike id()): caches of served data are keyed on it.
    serial: int = field(default_factory=lambda: next(_SERIALS), repr=False, compare=False)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    # -- clock -------------------------------------------------------------------------------
    @property
    def now(self) -> dt.datetime:
        """Company wall-clock time (no time zone: SAP stores none)."""
        return BASE_NOW + dt.timedelta(hours=self.ticks)

    # -- serving shapes ------------------------------------------------------------------------
    @staticmethod
    def entity_sets() -> list[str]:
        return list(ENTITY_SPECS)

    @staticmethod
    def spec(entity_set: str) -> EntitySpec:
        return ENTITY_SPECS[entity_set]

    def table(self, name: str) -> pl.DataFrame:
        return self.tables[name]

    def header(self, entity_set: str) -> pl.DataFrame:
        """The stored top-level rows of an entity set (no collections, no computed properties)."""
        return self.tables[ENTITY_SPECS[entity_set].table]

    def property_exprs(self, entity_set: str) -> dict[str, pl.Expr]:
        """Top-level scalar properties (name -> expression over `header(entity_set)`), in order."""
        spec = ENTITY_SPECS[entity_set]
        cols = [c for c, d in self.header(entity_set).schema.items() if not isinstance(d, pl.List)]
        return property_exprs(cols, spec.extras)

    def collections(self, entity_set: str) -> list[str]:
        spec = ENTITY_SPECS[entity_set]
        stored = [c for c, d in self.header(entity_set).schema.items() if isinstance(d, pl.List)]
        return stored + [c.collection for c in spec.children]

    def _child_index(self, entity_set: str, child: ChildSpec) -> tuple[np.ndarray, np.ndarray]:
        key = ("child_index", entity_set, child.collection)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        spec = ENTITY_SPECS[entity_set]
        parent = self.header(entity_set).select(pl.col(spec.key[0]).alias("_k"))
        ctab = self.tables[child.table]
        # Children of one parent are stored contiguously (in collection order): a start and a count.
        grp = (
            ctab.select(pl.col(child.parent_key).alias("_k")).with_row_index("_i")
            .group_by("_k").agg(_start=pl.col("_i").min(), _n=pl.len(), _end=pl.col("_i").max())
        )
        if grp.height and (grp["_end"] - grp["_start"] + 1 != grp["_n"]).any():
            raise AssertionError(f"{child.table} rows of one {child.parent_key} are not contiguous")
        joined = parent.join(grp, on="_k", how="left", maintain_order="left").with_columns(
            pl.col("_start").fill_null(0), pl.col("_n").fill_null(0)
        )
        out = (joined["_start"].to_numpy().astype(np.int64), joined["_n"].to_numpy().astype(np.int64))
        with self._lock:
            self._cache[key] = out
        return out

    def _collection(self, entity_set: str, child: ChildSpec, positions: np.ndarray | None) -> pl.Series:
        starts, counts = self._child_index(entity_set, child)
        if positions is not None:
            starts, counts = starts[positions], counts[positions]
        total = int(counts.sum())
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        idx = np.repeat(starts - offsets[:-1], counts) + np.arange(total, dtype=np.int64)
        ctab = self.tables[child.table]
        props = property_exprs(list(ctab.columns), child.extras, hidden=child.hidden)
        rows = ctab.gather(pl.Series(idx)).select(list(props.values()))
        values = rows.to_struct("_").to_arrow()
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        arr = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values)
        return pl.Series(child.collection, arr)

    def rows(self, entity_set: str, positions=None, columns: list[str] | None = None) -> pl.DataFrame:
        """Stored top-level rows at `positions` (all if None) plus requested collections.

        `columns` limits the collections built (None = all). Scalar properties are not computed
        here: select `property_exprs(entity_set)` over the result.
        """
        spec = ENTITY_SPECS[entity_set]
        head = self.header(entity_set)
        pos = None if positions is None else np.asarray(positions, dtype=np.int64)
        if pos is not None:
            head = head.gather(pl.Series(pos))
        cols = []
        for child in spec.children:
            if columns is None or child.collection in columns:
                cols.append(self._collection(entity_set, child, pos))
        return head.with_columns(cols) if cols else head

    def frame(self, entity_set: str) -> pl.DataFrame:
        """The whole entity set as the Service Layer shows it (cached)."""
        key = ("frame", entity_set)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        raw = self.rows(entity_set)
        props = self.property_exprs(entity_set)
        out = raw.select(list(props.values()) + [pl.col(c) for c in self.collections(entity_set)])
        with self._lock:
            self._cache[key] = out
        return out

    @property
    def frames(self) -> dict[str, pl.DataFrame]:
        return {name: self.frame(name) for name in ENTITY_SPECS}

    def records(self, entity_set: str) -> list[dict]:
        return self.frame(entity_set).to_dicts()

    def summary(self) -> dict[str, Any]:
        t = self.tables
        docs = {}
        for es, (header, lines, _) in DOC_TABLES.items():
            hd = t[header]
            docs[es] = hd.height
            docs[f"{es}.lines"] = t[lines].height
            docs[f"{es}.cancellation_documents"] = int((hd["CancelStatus"] == "csCancellation").sum())
            docs[f"{es}.cancelled"] = int((hd["CancelStatus"] == "csYes").sum())
        bp = t["OCRD"]
        return {
            "now": self.now.isoformat(sep=" "),
            "ticks": self.ticks,
            "scale": self.scale,
            "seed": self.seed,
            "BusinessPartners": bp.height,
            "BusinessPartners.customers": int((bp["CardType"] == "cCustomer").sum()),
            "BusinessPartners.leads": int((bp["CardType"] == "cLid").sum()),
            "BusinessPartners.suppliers": int((bp["CardType"] == "cSupplier").sum()),
            "BPAddresses": t["CRD1"].height,
            "BusinessPartnerGroups": t["OCRG"].height,
            **docs,
            "Items": t["OITM"].height,
            "ItemPrices": t["ITM1"].height,
            "ItemWarehouseInfoCollection": t["OITW"].height,
            "Warehouses": t["OWHS"].height,
            "UserFieldsMD": t["CUFD"].height,
            "planted": {k: len(v) for k, v in self.planted.items()},
        }

    # -- clock ------------------------------------------------------------------------------
    def advance(self, ticks: int = 1, change_fraction: float | None = None) -> Company:
        """A new company `ticks` hours later (this one is left unchanged)."""
        if ticks < 0:
            raise ValueError("ticks must be >= 0")
        tables = dict(self.tables)
        counters = dict(self.counters)
        cf = change_fraction if change_fraction is not None else self.change_fraction
        for t in range(self.ticks + 1, self.ticks + ticks + 1):
            _apply_tick(tables, counters, self.planted, self.scale, self.seed, t, cf)
        return Company(self.scale, self.seed, self.ticks + ticks, tables, self.planted, counters, cf)


# ---------------------------------------------------------------------------------------------
# Initial generation
# ---------------------------------------------------------------------------------------------

def generate_company(scale: float = 1.0, seed: int = 42, ticks: int = 0,
                     change_fraction: float | None = None) -> Company:
    """The demo company `ticks` hours after 2026-11-01 09:00; deterministic for its arguments.

    `change_fraction` (benchmarks) makes every tick also edit that fraction of the business
    partners, orders and items.
    """
    if scale <= 0:
        raise ValueError("scale must be > 0")
    if ticks < 0:
        raise ValueError("ticks must be >= 0")
    if change_fraction is not None and not 0 < change_fraction <= 1:
        raise ValueError("change_fraction must be in (0, 1]")
    tables, planted, counters = _generate_base(scale, seed)
    company = Company(scale, seed, 0, tables, planted, counters, change_fraction)
    return company.advance(ticks, change_fraction) if ticks else company
