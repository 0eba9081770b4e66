"""The `ometria_push` assets as Dagster runs them: configured from the environment, pushing
over HTTP to the emulator (or the embedded one), in dependency order, with the metadata an
operator reads in the UI."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import contextmanager

import dagster as dg
import duckdb
import polars as pl
import pytest

from sap_ometria_assets.defs.ometria_push import assets as push_assets
from sap_ometria_assets.emulators.ometria.embedded import ensure_embedded_ometria, stop_embedded_ometria
from sap_ometria_assets.emulators.ometria.server import OmetriaEmulator
from sap_ometria_assets.defs.resources import OmetriaResource, OmetriaTarget, WarehouseResource
from sap_ometria_assets.lib.config.settings import get_settings
from sap_ometria_assets.lib.ometria.answers import PushError, PushResponse

KEY = "sk-defs-test-5d0e"
ASSETS = [push_assets.contacts, push_assets.products, push_assets.orders, push_assets.stock,
          push_assets.errors]


def _write(con, feed, records):
    payloads = [json.dumps(r, separators=(",", ":")) for r in records]
    frame = pl.DataFrame({
        "record_type": [r["@type"] for r in records], "id": [r["id"] for r in records],
        "sap_object": "X", "sap_key": [r["id"] for r in records], "payload": payloads,
        "payload_hash": [hashlib.sha256(p.encode()).hexdigest() for p in payloads],
        "payload_bytes": [len(p.encode()) for p in payloads],
        "held_back_reason": [None] * len(records),
    }, schema_overrides={"held_back_reason": pl.String})
    con.execute("CREATE SCHEMA IF NOT EXISTS ometria")
    con.register("_f", frame)
    con.execute(f"CREATE OR REPLACE TABLE ometria.{feed} AS SELECT * FROM _f")
    con.unregister("_f")


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SAP_OMETRIA_DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("SAP_OMETRIA_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("SAP_OMETRIA_DEMO_DIR", str(tmp_path / "demo"))
    monkeypatch.setenv("OMETRIA_RATE_LIMIT_PER_S", "100")
    monkeypatch.setenv("OMETRIA_DRY_RUN", "0")
    for name in ("OMETRIA_API_URL", "OMETRIA_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    _write(con, "contacts", [{"@type": "contact", "@collection": "sap_b1", "id": f"C{i}",
                              "email": f"c{i}@example.com"} for i in range(150)])
    _write(con, "products", [{"@type": "product", "id": f"P{i}", "title": f"Item {i}", "price": 5.0}
                             for i in range(30)])
    _write(con, "stock", [{"@type": "product", "id": f"P{i}", "is_in_stock": i % 2 == 0, "@merge": True}
                          for i in range(30)])
    _write(con, "orders", [{"@type": "order", "id": f"O{i}", "timestamp": "2024-05-01T10:00:00+01:00",
                            "currency": "GBP", "grand_total": 10.0, "customer": {"id": f"C{i % 150}"}}
                           for i in range(120)])
    con.close()
    get_settings(refresh=True)
    yield tmp_path
    stop_embedded_ometria()
    monkeypatch.undo()
    get_settings(refresh=True)


def run(instance=None):
    result = dg.materialize(ASSETS, resources={"ometria": OmetriaResource(), "warehouse": WarehouseResource()},
                            instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False)
    metadata = {
        ev.asset_key.to_user_string(): {k: v.value for k, v in
                                        ev.event_specific_data.materialization.metadata.items()}
        for ev in result.get_asset_materialization_events()
    }
    return result, metadata


def test_pushes_run_in_dependency_order_and_a_rerun_sends_nothing(env, monkeypatch):
    with OmetriaEmulator(api_key=KEY) as emu:
        monkeypatch.setenv("OMETRIA_API_URL", emu.url)
        monkeypatch.setenv("OMETRIA_API_KEY", KEY)
        get_settings(refresh=True)

        result, md = run()
        assert result.success
        kinds = [kind for _, kind, _ in emu.stats.push_log]
        first_order = kinds.index("order")
        assert set(kinds[:first_order]) == {"contact", "product"} and "contact" not in kinds[first_order:]
        assert md["ometria_push/contacts"]["records_sent"] == 150
        assert md["ometria_push/contacts"]["requests"] == 2
        assert md["ometria_push/orders"]["records_sent"] == 120
        assert md["ometria_push/stock"]["records_sent"] == 30
        assert md["ometria_push/orders"]["dagster/row_count"] == 120
        assert md["ometria_push/orders"]["dry_run"] is False
        assert md["ometria_push/errors"]["records_rejected_outstanding"] == 0
        assert KEY not in json.dumps(md, default=str)

        requests = emu.stats.requests
        result, md = run()
        assert result.success and emu.stats.requests == requests
        assert all(md[f"ometria_push/{f}"]["records_sent"] == 0 for f in ("contacts", "products", "orders", "stock"))
        assert md["ometria_push/orders"]["skipped_unchanged"] == 120


def test_dry_run_writes_the_outbox_and_sends_nothing(env, monkeypatch):
    with OmetriaEmulator(api_key=KEY) as emu:
        monkeypatch.setenv("OMETRIA_API_URL", emu.url)
        monkeypatch.delenv("OMETRIA_API_KEY", raising=False)  # a real URL without a key: dry run
        get_settings(refresh=True)
        result, md = run()
        assert result.success and emu.stats.requests == 0
    run_id = result.run_id
    outbox = env / "outbox"
    assert sorted(p.name for p in outbox.iterdir()) == sorted(
        f"{run_id}-{f}.ndjson" for f in ("contacts", "orders", "products", "stock"))
    assert len((outbox / f"{run_id}-contacts.ndjson").read_text().splitlines()) == 2
    assert md["ometria_push/contacts"]["dry_run"] is True
    assert md["ometria_push/contacts"]["outbox_path"] == str(outbox / f"{run_id}-contacts.ndjson")


def test_the_demo_pushes_to_the_embedded_emulator_and_keeps_its_state(env):
    result, md = run()
    assert result.success
    assert md["ometria_push/orders"]["target"].startswith("embedded emulator http://127.0.0.1:")
    embedded = ensure_embedded_ometria(get_settings())
    requests = embedded.emulator.stats.requests
    store = env / "demo" / "ometria.sqlite"
    with sqlite3.connect(store) as db:
        assert dict(db.execute("SELECT type, count(*) FROM records GROUP BY type").fetchall()) == {
            "contact": 150, "order": 120, "product": 30}
    result, md = run()
    assert result.success and embedded.emulator.stats.requests == requests


def test_a_refused_key_fails_the_push_with_a_clear_message_and_blocks_orders(env, monkeypatch):
    with OmetriaEmulator(api_key=KEY) as emu:
        monkeypatch.setenv("OMETRIA_API_URL", emu.url)
        monkeypatch.setenv("OMETRIA_API_KEY", "expired-key-123")
        get_settings(refresh=True)
        result, _ = run()
    assert not result.success
    failures = [ev for ev in result.all_events if ev.is_step_failure]
    messages = " ".join(ev.event_specific_data.error.message for ev in failures)
    assert "OMETRIA_API_KEY" in messages and "expired-key-123" not in messages
    assert emu.stats.records["order"] == 0


def test_asset_graph_expresses_the_push_order():
    defs = dg.Definitions(assets=ASSETS, resources={"ometria": OmetriaResource(),
                                                    "warehouse": WarehouseResource()})
    graph = defs.resolve_asset_graph()

    def parents(key: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey.from_user_string(key)).parent_keys}

    assert parents("ometria_push/orders") == {"ometria/orders", "ometria_push/contacts", "ometria_push/products"}
    assert parents("ometria_push/stock") == {"ometria/stock", "ometria_push/products"}
    assert parents("ometria_push/contacts") == {"ometria/contacts"}
    spec = graph.get(dg.AssetKey.from_user_string("ometria_push/orders"))
    assert spec.group_name == "ometria_push" and "ometria" in spec.kinds


# --------------------------------------------------------------------------------------
# The resource seam: a plain fake in place of Ometria
# --------------------------------------------------------------------------------------
class RecordingClient:
    """Stands in for OmetriaClient: takes every push, answers like Ometria, sends nothing."""

    base_url = "fake://ometria"

    def __init__(self) -> None:
        self.pushes: list[tuple[str, list[str]]] = []

    def push(self, records, record_type: str) -> PushResponse:
        ids = [json.loads(r)["id"] for r in records]
        self.pushes.append((record_type, ids))
        return PushResponse(request_id=f"fake-{len(self.pushes)}", http_status=202,
                            accepted=len(records), rejected=0, record_type=record_type,
                            record_count=len(records), bytes_sent=sum(map(len, records)),
                            duration_ms=1.0, attempts=1)

    def fetch_errors(self) -> list[PushError]:
        return []


class FakeOmetria:
    """A plain object with the three methods the push assets use: no Dagster resource class,
    no settings, no emulator."""

    def __init__(self) -> None:
        self.client = RecordingClient()

    def is_dry_run(self) -> bool:
        return False

    def target(self, client=None) -> OmetriaTarget:
        return OmetriaTarget(url=self.client.base_url, dry_run=False, embedded=False,
                             collection="sap_b1")

    @contextmanager
    def open_client(self):
        yield self.client


def test_a_push_asset_materialises_with_a_plain_fake_ometria(env):
    fake = FakeOmetria()
    result = dg.materialize([push_assets.contacts],
                            resources={"ometria": fake, "warehouse": WarehouseResource()},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert [(t, len(ids)) for t, ids in fake.client.pushes] == [("contact", 100), ("contact", 50)]
    assert {i for _, ids in fake.client.pushes for i in ids} == {f"C{i}" for i in range(150)}
    md = result.asset_materializations_for_node("ometria_push__contacts")[0].metadata
    assert md["target"].value == "fake://ometria" and md["records_sent"].value == 150
    assert md["dagster/row_count"].value == 150
    # nothing changed: the second run sends nothing
    dg.materialize([push_assets.contacts], resources={"ometria": fake, "warehouse": WarehouseResource()},
                   instance=dg.DagsterInstance.ephemeral())
    assert len(fake.client.pushes) == 2
