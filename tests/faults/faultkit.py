"""Shared pieces of the fault-injection suite (fixtures are in conftest.py).

Fault injection over both emulators, through real HTTP and real Dagster runs.

Every fault test ends with `assert_nothing_lost(...)`: whatever went wrong on the way, every
SAP record the sync is responsible for ends either acknowledged by Ometria exactly as the
Ometria-ready tables have it (the emulator's stored record compared with `ometria.*.payload`),
or listed as an open exception in `ops.sync_exceptions`; and Ometria holds no order twice.

Speed: a small demo company (scale 0.02: 150 business partners, 300 orders, 40 items), pages of
50 records so every read pages, retry backoffs shortened through the client modules' hooks,
Ometria's waits recorded instead of slept. Runs execute only the steps a fault needs (landing,
transforms, push, exceptions; contract checks only where a schema fault is tested).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from sap_ometria_assets.emulators.ometria.server import OmetriaEmulator
from sap_ometria_assets.emulators.ometria.validation import DIRECTIVES
from sap_ometria_assets.emulators.sap_b1.company import Company
from sap_ometria_assets.emulators.sap_b1.server import SapB1Emulator
from sap_ometria_assets.defs.sap_raw.checks import landing_checks

SCALE, SEED = 0.02, 7
# Distinctive secrets: the secrets test searches every output for them.
SAP_PASSWORD = "SapPw-7Qx!fault-Zebra"
OMETRIA_KEY = "omkey-51f0c9-FAULTS-Giraffe"
PAGE_SIZE = 50
FEEDS = ("contacts", "products", "orders", "stock")
# Hold-back reasons that are decisions, not problems (data/checks.yaml held_back_by_design).
BY_DESIGN = {"stock_not_managed"}


@dataclass
class Env:
    tmp: Path
    sap: SapB1Emulator | None
    ometria: OmetriaEmulator | None
    sleeps: list[float] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.tmp / "warehouse.duckdb"

    def vars(self) -> dict[str, str]:
        """The environment of a sync against these emulators (also for subprocesses)."""
        out = {
            "SAP_OMETRIA_DUCKDB_PATH": str(self.db),
            "SAP_OMETRIA_DEMO_DIR": str(self.tmp / "demo"),
            "SAP_OMETRIA_OUTBOX_DIR": str(self.tmp / "outbox"),
            "SAP_B1_PASSWORD": SAP_PASSWORD,
            "SAP_B1_PAGE_SIZE": str(PAGE_SIZE),
            "SAP_B1_MAX_RETRIES": "3",
            "SAP_B1_TIMEOUT_S": "5",
            "OMETRIA_API_KEY": OMETRIA_KEY,
            "OMETRIA_RATE_LIMIT_PER_S": "100",
            "OMETRIA_MAX_RETRIES": "3",
            "OMETRIA_TIMEOUT_S": "5",
            "OMETRIA_DRY_RUN": "0",
        }
        if self.sap is not None:
            out["SAP_B1_SERVICE_LAYER_URL"] = self.sap.url
        if self.ometria is not None:
            out["OMETRIA_API_URL"] = self.ometria.url
        return out



# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------
LAND_AND_TRANSFORM = ("sap_raw", "ometria")
SYNC = ("sap_raw", "ometria", "ometria_push", "ops")
PUSH = ("ometria_push", "ops")


@cache
def _defs() -> dg.Definitions:
    from sap_ometria_assets.definitions import defs

    return defs()


@cache
def _job(groups: tuple[str, ...]) -> dg.JobDefinition:
    # Checks cost a step each, so the separate check steps are left out; the landing's contract
    # and schema_drift checks and ops' own check belong to their assets' steps and always run.
    selection = dg.AssetSelection.groups(*[g for g in groups if g != "ops"]).without_checks()
    if "sap_raw" in groups:
        selection = selection | landing_checks()
    if "ops" in groups:
        selection = selection | dg.AssetSelection.groups("ops")
    name = "faults_" + "_".join(groups)
    job = dg.define_asset_job(name, selection=selection)
    return dg.Definitions.merge(_defs(), dg.Definitions(jobs=[job])).resolve_job_def(name)


@dataclass
class Run:
    result: dg.ExecuteInProcessResult
    instance: dg.DagsterInstance

    def messages(self) -> list[str]:
        """Every log line of the run (what the operator reads in the UI)."""
        return [e.user_message for e in self.instance.all_logs(self.result.run_id) if e.user_message]

    @property
    def success(self) -> bool:
        return self.result.success

    @property
    def failures(self) -> dict[str, str]:
        """step key -> error message of every failed step."""
        out = {}
        for ev in self.result.all_events:
            if ev.is_step_failure:
                err, parts = ev.event_specific_data.error, []
                while err is not None:  # Dagster wraps the cause; the operator reads the chain
                    parts.append(err.message.strip())
                    err = err.cause
                out[ev.step_key] = "\n".join(parts)
        return out

    @property
    def succeeded(self) -> set[str]:
        return {ev.step_key for ev in self.result.all_events if ev.event_type_value == "STEP_SUCCESS"}

    def metadata(self, key: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for ev in self.result.get_asset_materialization_events():
            if ev.asset_key.to_user_string() == key:
                out = {k: v.value for k, v in ev.event_specific_data.materialization.metadata.items()}
        return out

    def checks(self) -> dict[str, Any]:
        """"table/check" -> the check evaluation."""
        return {f"{e.asset_key.path[-1]}/{e.check_name}": e
                for e in self.result.get_asset_check_evaluations()}


def run_sync(groups: tuple[str, ...] = SYNC, *,
             instance: dg.DagsterInstance | None = None) -> Run:
    job = _job(tuple(groups))
    instance = instance or dg.DagsterInstance.ephemeral()
    return Run(job.execute_in_process(instance=instance, raise_on_error=False), instance)


# ---------------------------------------------------------------------------------------------
# Nothing lost
# ---------------------------------------------------------------------------------------------
@dataclass
class LossReport:
    acknowledged: dict[str, set[str]]          # feed -> ids Ometria holds exactly as prepared
    excepted: dict[str, set[str]]              # feed -> ids not in Ometria, listed as exceptions
    exceptions: dict[str, set[str]]            # rule -> record keys of open exceptions


def _rows(con, sql: str, params: list | None = None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


def _exists(con, schema: str, table: str) -> bool:
    return bool(_rows(con, "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? "
                           "AND table_name = ?", [schema, table])[0][0])


def _company_keys(company: Company, entity_set: str, key: str) -> set[str]:
    return {str(v) for v in company.header(entity_set)[key].to_list()}


def assert_nothing_lost(db: Path, ometria: OmetriaEmulator, company: Company | None = None,
                        *, feeds: Iterable[str] = FEEDS) -> LossReport:
    """Every SAP record reached Ometria as prepared, or is an open exception; nothing doubled.

    1. (with `company`) every business partner, order and item SAP holds was landed, or its key
       is listed in `sap_meta.rejected_values`;
    2. every landed customer, (non-cancellation) order and item has its Ometria-ready record;
    3. each Ometria-ready record is held by the Ometria emulator exactly as its `payload` says
       (products together with their stock flag) with an `accepted` ledger row of the same
       hash; or, when not, its SAP key has an open row in `ops.sync_exceptions`. Records held
       back by design (a non-stock item's flag) are the one allowed exception to listing;
    4. Ometria holds no order the sync did not prepare, and no SAP document twice.
    """
    con = duckdb.connect(str(db), read_only=True)
    try:
        problems: list[str] = []
        rejected_keys: dict[str, set[str]] = {}
        if _exists(con, "sap_meta", "rejected_values"):
            for table, key in _rows(con, "SELECT lower(table_name), record_key FROM sap_meta.rejected_values"):
                rejected_keys.setdefault(table, set()).add(str(key))

        # 1. SAP -> sap_raw
        if company is not None:
            for entity_set, table, key in (("BusinessPartners", "ocrd", "CardCode"),
                                           ("Orders", "ordr", "DocEntry"), ("Items", "oitm", "ItemCode")):
                landed = {str(r[0]) for r in _rows(con, f'SELECT "{key}" FROM sap_raw.{table}')}
                missing = _company_keys(company, entity_set, key) - landed - rejected_keys.get(table, set())
                if missing:
                    problems.append(f"{len(missing)} {entity_set} in SAP never landed: {sorted(missing)[:5]}")
            # ...with the values SAP holds (a column lost to a rename must come back after the fix)
            for entity_set, table, key, column, sql_value in (
                    ("BusinessPartners", "ocrd", "CardCode", "EmailAddress", '"EmailAddress"'),
                    ("Orders", "ordr", "DocEntry", "DocTotal", 'round(CAST("DocTotal" AS DOUBLE), 2)'),
                    ("Orders", "ordr", "DocEntry", "DocDate", 'CAST("DocDate" AS VARCHAR)'),
                    ("Items", "oitm", "ItemCode", "ItemName", '"ItemName"')):
                frame = company.header(entity_set)
                values = frame[column].to_list()
                if column == "DocTotal":
                    values = [None if v is None else round(v, 2) for v in values]
                elif column == "DocDate":
                    values = [None if v is None else v.isoformat() for v in values]
                sap_values = {str(k): v for k, v in zip(frame[key].to_list(), values)}
                landed = {str(k): v for k, v in _rows(con, f'SELECT "{key}", {sql_value} FROM sap_raw.{table}')}
                wrong = sorted(k for k, v in landed.items()
                               if k in sap_values and v != sap_values[k] and k not in rejected_keys.get(table, set()))
                if wrong:
                    k = wrong[0]
                    problems.append(f"{len(wrong)} {table} rows differ from SAP in {column}, e.g. {k}: "
                                    f"landed {landed[k]!r}, SAP {sap_values[k]!r}")

        # 2. sap_raw -> ometria.*
        coverage = {
            "contacts": "SELECT CAST(\"CardCode\" AS VARCHAR) FROM sap_raw.ocrd WHERE \"CardType\" = 'cCustomer'",
            "orders": "SELECT CAST(\"DocEntry\" AS VARCHAR) FROM sap_raw.ordr WHERE NOT coalesce(\"_is_cancellation\", false)",
            "products": "SELECT CAST(\"ItemCode\" AS VARCHAR) FROM sap_raw.oitm",
        }
        for feed, sql in coverage.items():
            if feed not in feeds:
                continue
            prepared = {r[0] for r in _rows(con, f"SELECT sap_key FROM ometria.{feed}")}
            missing = {r[0] for r in _rows(con, sql)} - prepared
            if missing:
                problems.append(f"{len(missing)} landed {feed} have no Ometria-ready record: {sorted(missing)[:5]}")

        # 3. ometria.* -> Ometria, or an open exception
        exceptions: dict[str, set[str]] = {}
        open_keys: set[str] = set()
        if _exists(con, "ops", "sync_exceptions"):
            for rule, key in _rows(con, "SELECT rule, record_key FROM ops.sync_exceptions WHERE resolved_at IS NULL"):
                exceptions.setdefault(rule, set()).add(key)
                open_keys.add(key)
                open_keys.add(key.rsplit("/", 1)[0])  # lines and stock rows name their parent first
        ledger: dict[tuple[str, str], tuple[str, str]] = {}
        if _exists(con, "ometria_push", "ledger"):
            ledger = {(f, i): (h, s) for f, i, h, s in _rows(
                con, "SELECT feed, id, payload_hash, status FROM ometria_push.ledger")}
        stored = {kind: ometria.records(kind) for kind in ("contact", "order", "product")}
        stock = {}
        if "stock" in feeds:
            stock = {i: json.loads(p) for i, p in _rows(
                con, "SELECT id, payload FROM ometria.stock WHERE held_back_reason IS NULL")}
        acknowledged: dict[str, set[str]] = {}
        excepted: dict[str, set[str]] = {}
        for feed in feeds:
            rows = _rows(con, f"SELECT id, sap_key, payload, payload_hash, held_back_reason FROM ometria.{feed}")
            for rid, sap_key, payload, phash, reason in rows:
                if reason is not None:
                    if set(r.split(":", 1)[0] for r in reason.split("; ")) <= BY_DESIGN:
                        continue
                    if sap_key in open_keys:
                        excepted.setdefault(feed, set()).add(rid)
                    else:
                        problems.append(f"{feed} {rid} (SAP {sap_key}) held back ({reason}) but not listed "
                                        "in ops.sync_exceptions")
                    continue
                doc = json.loads(payload)
                kind = doc["@type"]
                collection = str(doc.get("@collection") or "default") if kind == "contact" else ""
                expected = {k: v for k, v in doc.items() if k not in DIRECTIVES}
                if feed == "products" and rid in stock:
                    expected.update({k: v for k, v in stock[rid].items() if k not in DIRECTIVES})
                held = stored[kind].get((collection, rid))
                if feed == "stock":
                    held_ok = held is not None and all(held.get(k) == v for k, v in expected.items())
                else:
                    held_ok = held == expected
                ack_ok = ledger.get((feed, rid)) == (phash, "accepted")
                if held_ok and ack_ok:
                    acknowledged.setdefault(feed, set()).add(rid)
                elif sap_key in open_keys:
                    excepted.setdefault(feed, set()).add(rid)
                else:
                    why = ("Ometria does not hold it" if held is None else
                           "Ometria holds another version" if not held_ok else
                           f"ledger says {ledger.get((feed, rid), 'nothing')}")
                    problems.append(f"{feed} {rid} (SAP {sap_key}) lost: {why}, and no open exception")

        # 4. no strays, no doubles
        if "orders" in feeds:
            prepared = {r[0] for r in _rows(con, "SELECT id FROM ometria.orders")}
            strays = {rid for (_, rid) in stored["order"]} - prepared
            if strays:
                problems.append(f"Ometria holds {len(strays)} orders the sync never prepared: {sorted(strays)[:5]}")
            doubled = _rows(con, "SELECT sap_object, sap_key, count(*) FROM ometria.orders GROUP BY ALL HAVING count(*) > 1")
            if doubled:
                problems.append(f"SAP documents prepared as several Ometria orders: {doubled[:5]}")
            ids = Counter(rid for (_, rid) in stored["order"])
            if any(n > 1 for n in ids.values()):
                problems.append("Ometria holds an order id twice")
        assert not problems, "Records lost on the way to Ometria:\n- " + "\n- ".join(problems)
        return LossReport(acknowledged, excepted, exceptions)
    finally:
        con.close()


def query(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()
