"""Small vectorised helpers shared by the initial generation and the clock ticks: dates and times
of epoch seconds, picking words and choices with numpy, times of day, exchange rates per document,
seeded generators, row masks and the table sizes a scale asks for.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sap_ometria_assets.emulators.sap_b1.company.constants import DAY, EPOCH_DAYS, HOUR, RATE_BASE, WAREHOUSES


# ---------------------------------------------------------------------------------------------
# Small vectorised helpers
# ---------------------------------------------------------------------------------------------

def _date_of(col: str | pl.Expr) -> pl.Expr:
    e = pl.col(col) if isinstance(col, str) else col
    return ((e // DAY) + EPOCH_DAYS).cast(pl.Int32).cast(pl.Date)


def _time_of(col: str | pl.Expr) -> pl.Expr:
    e = pl.col(col) if isinstance(col, str) else col
    return ((e % DAY) * 1_000_000_000).cast(pl.Int64).cast(pl.Time)


def _pick(words, idx: np.ndarray, dtype: pl.DataType = pl.String) -> pl.Series:
    return pl.Series(values=list(words), dtype=dtype).gather(pl.Series(np.asarray(idx, dtype=np.int64)))


def _choice(rng: np.random.Generator, options, n: int, p=None) -> np.ndarray:
    """Indices into `options` (weights normalised)."""
    if p is not None:
        p = np.asarray(p, dtype=float)
        p = p / p.sum()
    return rng.choice(len(options), size=n, p=p)


def _tod(rng: np.random.Generator, n: int, store: np.ndarray | None = None) -> np.ndarray:
    """Seconds since midnight, weighted to business hours (stores 09:00-18:00)."""
    weights = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 2, 4, 6, 7, 7, 8, 7, 6, 6, 6, 6, 6, 7, 8, 7, 5, 3], float)
    hours = rng.choice(24, size=n, p=weights / weights.sum())
    if store is not None:
        hours = np.where(store, rng.integers(9, 18, size=n), hours)
    return hours * HOUR + rng.integers(0, HOUR, size=n)


def _doc_rate(cur: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Daily exchange rate (GBP per unit of the document currency, 4 decimals; 1 for GBP)."""
    day = t // DAY
    return np.where(cur == 0, 1.0, np.round(RATE_BASE[cur] * (1 + 0.03 * np.sin(day / 45.0 + cur)), 4))


def _rng(seed: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, *salt])


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    frames = [f for f in frames if f is not None]
    return pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]


def _warehouse_codes(scale: float) -> list[str]:
    return [w[0] for w in WAREHOUSES[: (6 if scale >= 10 else 4)]]


def _counts(scale: float) -> dict[str, int]:
    return {
        "bps": max(150, round(2000 * scale)),
        "items": max(40, round(300 * scale ** 0.912)),
        "orders": max(300, round(10_000 * scale)),
        "credit_linked": max(25, round(800 * scale)),
        "credit_standalone": max(8, round(200 * scale)),
    }


def _mask(n: int, idx) -> pl.Series:
    m = np.zeros(n, bool)
    m[np.asarray(idx, dtype=np.int64)] = True
    return pl.Series(m)


def _seed_of(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31))
