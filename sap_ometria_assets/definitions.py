"""Entry point of the code location: everything under `defs/` is discovered automatically.

Jobs run in-process: DuckDB allows one writer per file, and a process per step would cost
about a second of imports each (see docs/contracts.md).
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    return dg.Definitions.merge(loaded, dg.Definitions(executor=dg.in_process_executor))
