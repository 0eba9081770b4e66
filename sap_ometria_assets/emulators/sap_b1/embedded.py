"""The embedded demo SAP B1 company: used whenever `SAP_B1_SERVICE_LAYER_URL` is unset.

`ensure_embedded_sap(settings)` starts, once per process, a Service Layer emulator on 127.0.0.1 (any
free port, daemon thread) serving the demo company at `SAP_OMETRIA_DEMO_SCALE` /
`SAP_OMETRIA_DEMO_SEED` and at the company clock stored in `<demo_dir>/sap_clock.json`. Every
process (a Dagster run, the CLI, a test) therefore sees the same company for the same clock.

`advance_demo_clock(settings, ticks)` moves the clock on by `ticks` hours of business (new and
edited partners and orders, deliveries, invoices, credit memos, deletions...) so an incremental
sync has something to land. Generated companies are cached under `<demo_dir>/sap_company/` (one
parquet file per table) so a clock far from zero does not replay every hour in every process.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from pydantic import SecretStr

from sap_ometria_assets.emulators.sap_b1 import company as company_module
from sap_ometria_assets.emulators.sap_b1.company import Company, generate_company
from sap_ometria_assets.emulators.sap_b1.server import SapB1Emulator

CLOCK_FILE = "sap_clock.json"
CACHE_DIR = "sap_company"

_LOCK = threading.RLock()
_RUNNING: dict[tuple, SapB1Emulator] = {}


@dataclass(frozen=True)
class EmbeddedSap:
    """Where the embedded Service Layer listens and how to log in (the password stays secret)."""

    url: str
    company_db: str
    username: str
    password: SecretStr
    ticks: int = 0
    emulator: SapB1Emulator | None = field(default=None, repr=False, compare=False)


def clock_path(settings) -> Path:
    return Path(settings.demo_dir) / CLOCK_FILE


def read_demo_clock(settings) -> int:
    """Ticks (hours) the demo company has advanced; 0 when the clock file is absent or unreadable."""
    try:
        data = json.loads(clock_path(settings).read_text())
        return max(0, int(data.get("ticks", 0)))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


def _key(settings) -> tuple:
    return (float(settings.sap_ometria_demo_scale), int(settings.sap_ometria_demo_seed),
            settings.sap_b1_company_db, settings.sap_b1_username,
            hashlib.sha256(settings.sap_b1_password.get_secret_value().encode()).hexdigest())


# -- company cache --------------------------------------------------------------------------

def _generator_fingerprint() -> str:
    """Changes whenever the generator's code changes, so stale caches are never used."""
    digest = hashlib.sha256()
    for source in sorted(Path(company_module.__file__).parent.glob("*.py")):  # the company package
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def _cache_root(settings) -> Path:
    return Path(settings.demo_dir) / CACHE_DIR


def _cache_name(scale: float, seed: int, ticks: int) -> str:
    return f"{_generator_fingerprint()}-s{scale:g}-seed{seed}-t{ticks}"


def _save(settings, company: Company) -> None:
    root = _cache_root(settings)
    target = root / _cache_name(company.scale, company.seed, company.ticks)
    if target.exists():
        return
    # A cache is an optimisation: failing to write one (read-only disk, a race with another
    # process writing the same one) must never fail a run.
    tmp: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        for name, frame in company.tables.items():
            frame.write_parquet(tmp / f"{name}.parquet", compression="lz4")
        meta = {"scale": company.scale, "seed": company.seed, "ticks": company.ticks,
                "change_fraction": company.change_fraction, "planted": company.planted,
                "counters": company.counters}
        (tmp / "meta.json").write_text(json.dumps(meta))
        os.replace(tmp, target)
    except OSError:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    # Keep only the newest cache of this company.
    for old in root.iterdir():
        if old != target and old.is_dir() and not old.name.startswith(".tmp-"):
            shutil.rmtree(old, ignore_errors=True)


def _load_cached(settings, scale: float, seed: int, ticks: int) -> Company | None:
    """The cached company closest below `ticks` (advanced to `ticks`), or None."""
    root = _cache_root(settings)
    if not root.is_dir():
        return None
    prefix = f"{_generator_fingerprint()}-s{scale:g}-seed{seed}-t"
    best: tuple[int, Path] | None = None
    for entry in root.iterdir():
        if entry.name.startswith(prefix):
            try:
                t = int(entry.name[len(prefix):])
            except ValueError:
                continue
            if t <= ticks and (best is None or t > best[0]):
                best = (t, entry)
    if best is None:
        return None
    try:
        meta = json.loads((best[1] / "meta.json").read_text())
        tables = {p.stem: pl.read_parquet(p) for p in best[1].glob("*.parquet")}
    except (OSError, ValueError, pl.exceptions.PolarsError):
        return None
    company_module._canon(tables)
    planted = {k: [tuple(v) if isinstance(v, list) else v for v in vals] for k, vals in meta["planted"].items()}
    company = Company(scale, seed, best[0], tables, planted, meta["counters"], meta.get("change_fraction"))
    return company.advance(ticks - best[0]) if ticks > best[0] else company


def load_demo_company(settings, ticks: int | None = None) -> Company:
    """The demo company at `ticks` (default: the stored clock), from the cache when possible."""
    ticks = read_demo_clock(settings) if ticks is None else ticks
    scale, seed = float(settings.sap_ometria_demo_scale), int(settings.sap_ometria_demo_seed)
    company = _load_cached(settings, scale, seed, ticks)
    if company is None:
        company = generate_company(scale, seed, ticks)
    _save(settings, company)
    return company


# -- public API -----------------------------------------------------------------------------

def ensure_embedded_sap(settings) -> EmbeddedSap:
    """Start (once per process) the embedded Service Layer for the demo company; return its address."""
    key = _key(settings)
    with _LOCK:
        ticks = read_demo_clock(settings)
        emu = _RUNNING.get(key)
        if emu is None:
            emu = SapB1Emulator(
                load_demo_company(settings, ticks), host="127.0.0.1", port=0,
                company_db=settings.sap_b1_company_db, username=settings.sap_b1_username,
                password=settings.sap_b1_password,
            ).start()
            _RUNNING[key] = emu
        elif emu.company.ticks != ticks:  # another process moved the clock
            if ticks > emu.company.ticks:
                emu.advance(ticks - emu.company.ticks)
            else:
                emu.set_company(load_demo_company(settings, ticks))
        return EmbeddedSap(url=emu.url, company_db=settings.sap_b1_company_db, username=settings.sap_b1_username,
                           password=SecretStr(settings.sap_b1_password.get_secret_value()),
                           ticks=emu.company.ticks, emulator=emu)


def advance_demo_clock(settings, ticks: int = 1) -> int:
    """Move the demo company's clock on by `ticks` hours; returns the new tick count.

    An embedded emulator already running in this process for the same company advances too.
    """
    if ticks < 0:
        raise ValueError("ticks must be >= 0")
    with _LOCK:
        new = read_demo_clock(settings) + ticks
        now = company_module.BASE_NOW + dt.timedelta(hours=new)
        _write_json_atomic(clock_path(settings), {"ticks": new, "company_now": now.isoformat(sep=" ")})
        emu = _RUNNING.get(_key(settings))
        if emu is not None and emu.company.ticks != new:
            if new > emu.company.ticks:
                emu.advance(new - emu.company.ticks)
            else:
                emu.set_company(load_demo_company(settings, new))
        return new


def stop_embedded_sap() -> None:
    """Stop every embedded emulator of this process (tests)."""
    with _LOCK:
        for emu in _RUNNING.values():
            emu.stop()
        _RUNNING.clear()
