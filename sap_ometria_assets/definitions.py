"""Entry point of the code location: everything under `defs/` is discovered automatically.

Jobs run in-process: DuckDB allows one writer per file, and a process per step would cost
about a second of imports each (see docs/contracts.md).
"""

from pathlib import Path

import dagster as dg

from sap_ometria_assets.lib.quality.drift import apply_freshness


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    merged = dg.Definitions.merge(loaded, dg.Definitions(executor=dg.in_process_executor))
    # freshness windows come from data/checks.yaml, so they are applied to the whole set here
    return apply_freshness(merged)
