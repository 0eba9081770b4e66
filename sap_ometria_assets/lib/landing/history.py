"""SCD type 2 history of the tables that keep one (`sap_history.ocrd`, `.ordr`, `.rdr1`).

Each row version carries `_row_hash`, `_valid_from`, `_valid_to` (NULL = current) and
`_is_current`; only changed rows make a new version. Validity is landing time (when this
product learnt the version); SAP's own UpdateDate/UpdateTime are in the row. A first load
(nothing stored, nothing superseded) writes the rows' first versions without comparing anything.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from sap_ometria_assets.lib.landing.plan import Plan, Target, key_join
from sap_ometria_assets.lib.landing.split import ROW_HASH
from sap_ometria_assets.lib.warehouse.sql import fqn, q, table_columns


VALID_FROM, VALID_TO, IS_CURRENT = "_valid_from", "_valid_to", "_is_current"


def ensure_history(con: duckdb.DuckDBPyConnection, target: Target) -> str:
    tbl = fqn("sap_history", target.table)
    raw_cols = table_columns(con, "sap_raw", target.table)
    hist = table_columns(con, "sap_history", target.table)
    if not hist:
        defs = [f"{q(n)} {t}" for n, t in raw_cols.items()]
        defs += [f"{VALID_FROM} TIMESTAMPTZ", f"{VALID_TO} TIMESTAMPTZ", f"{IS_CURRENT} BOOLEAN"]
        con.execute(f"CREATE TABLE {tbl} ({', '.join(defs)})")
    else:
        for name, dtype in raw_cols.items():
            if name not in hist:
                con.execute(f"ALTER TABLE {tbl} ADD COLUMN {q(name)} {dtype}")
            elif hist[name] != dtype:
                con.execute(f"ALTER TABLE {tbl} ALTER COLUMN {q(name)} SET DATA TYPE {dtype}")
    return tbl


def write_history(con: duckdb.DuckDBPyConnection, plan: Plan, target: Target, changed: str,
                  now: datetime, every: bool = False) -> None:
    """SCD2: close the current version of changed rows and add the new one. A first load (no
    history yet) only inserts; `every` (the table held nothing before this landing, so each of
    its rows was just written) needs no scope either."""
    hist = ensure_history(con, target)
    tbl = fqn("sap_raw", target.table)
    if not con.execute(f"SELECT count(*) FROM {hist}").fetchone()[0]:
        scope = "" if every else (
            f" WHERE EXISTS (SELECT 1 FROM {q(changed)} c WHERE {key_join('c', 't', target.key)})"
            if target.parent_key_column is None or target.collection is None else
            f" WHERE EXISTS (SELECT 1 FROM {q(changed)} c WHERE "
            f"c.{q(plan.entity_key)} = t.{q(target.parent_key_column)})")  # type: ignore[arg-type]
        con.execute(
            f"INSERT INTO {hist} BY NAME SELECT t.*, $now::TIMESTAMPTZ AS {VALID_FROM}, "
            f"NULL::TIMESTAMPTZ AS {VALID_TO}, true AS {IS_CURRENT} FROM {tbl} t{scope}",
            {"now": now},
        )
        return
    if target.parent_key_column is None or target.collection is None:
        scope_t = f"EXISTS (SELECT 1 FROM {q(changed)} c WHERE {key_join('c', 't', target.key)})"
        scope_h = f"EXISTS (SELECT 1 FROM {q(changed)} c WHERE {key_join('c', 'h', target.key)})"
    else:
        pk, pkey = q(target.parent_key_column), q(plan.entity_key)  # type: ignore[arg-type]
        scope_t = f"EXISTS (SELECT 1 FROM {q(changed)} c WHERE c.{pkey} = t.{pk})"
        scope_h = f"EXISTS (SELECT 1 FROM {q(changed)} c WHERE c.{pkey} = h.{pk})"
    same = f"{key_join('h', 't', target.key)} AND h.{ROW_HASH} = t.{ROW_HASH}"
    con.execute(
        f"UPDATE {hist} h SET {VALID_TO} = $now, {IS_CURRENT} = false WHERE h.{IS_CURRENT} AND "
        f"{scope_h} AND NOT EXISTS (SELECT 1 FROM {tbl} t WHERE {same})", {"now": now},
    )
    con.execute(
        f"INSERT INTO {hist} BY NAME SELECT t.*, $now::TIMESTAMPTZ AS {VALID_FROM}, "
        f"NULL::TIMESTAMPTZ AS {VALID_TO}, true AS {IS_CURRENT} FROM {tbl} t WHERE {scope_t} "
        f"AND NOT EXISTS (SELECT 1 FROM {hist} h WHERE h.{IS_CURRENT} AND {same})", {"now": now},
    )
