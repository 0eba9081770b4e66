"""SAP Business One Service Layer emulator and the generated demo company (UK retailer, SBODEMOGB).

- `generate_company(scale, seed, ticks)` -> `Company` (the company/ package)
- `SapB1Emulator(company, ...)`: real HTTP Service Layer v1/v2 with fault switches (server.py; faults.py, wire.py,
  sessions.py and handler.py beside it)
- `ensure_embedded_sap(settings)` / `advance_demo_clock(settings, ticks)` (embedded.py)

Names are imported lazily so that `python -m sap_ometria_assets.emulators.sap_b1.server` runs the
server module once (not also as a package attribute).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BASE_NOW": "company",
    "Company": "company",
    "generate_company": "company",
    "ODataError": "odata",
    "compile_filter": "odata",
    "parse_query": "odata",
    "SapB1Emulator": "server",
    "Faults": "server",
    "EmulatorStats": "server",
    "EmbeddedSap": "embedded",
    "ensure_embedded_sap": "embedded",
    "advance_demo_clock": "embedded",
    "read_demo_clock": "embedded",
    "load_demo_company": "embedded",
    "stop_embedded_sap": "embedded",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return __all__
