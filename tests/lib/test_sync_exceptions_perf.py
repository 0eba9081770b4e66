"""The short cuts the checks take at scale give the answers of the long way.

- `plain_email_sql`: an address it calls surely valid is valid for email-validator too, so the
  `contact_invalid_email` rule may skip the library for it;
- `recon.amount`: the DECIMAL(18,4) first cast gives what TRY_CAST(... AS DECIMAL(19,4)) gives;
- `record_too_large`: a record whose size the layer did not store is still measured.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import duckdb
import pytest

from sap_ometria_assets.lib.quality.checks_config import ChecksConfig, MappingFacts
from sap_ometria_assets.lib.recon.build import _macros
from sap_ometria_assets.lib.sync_exceptions.rule import RuleContext
from sap_ometria_assets.lib.sync_exceptions.rules_contacts import plain_email_sql
from sap_ometria_assets.lib.sync_exceptions.rules_ometria import OMETRIA_RULES
from sap_ometria_assets.lib.sync_exceptions.sources import prepare_sources
from sap_ometria_assets.lib.transforms.people import _rfc_valid

ADDRESSES = [
    "evelyn_fisher66980@example.net", "a.b+c@mail.example.co.uk", "x@y.io", "A_B-C@abc.de",
    "a@b.test", "a@b.local", "a@localhost", "a@b.c.arpa", "a@x.invalid", "a@y.onion",
    "a@xn--nxasmq6b.com", "a@ab--cd.com", "a@-ab.com", "a@ab-.com", "a@a-.b.com", "a@123.com",
    "a@example.c0m", "a@example.1", "a..b@example.com", ".a@example.com", "a.@example.com",
    "a@example..com", "a@example.com.", "a@Example.com", "a@" + "b" * 63 + ".com",
    "a@" + "b" * 64 + ".com", "x" * 64 + "@example.com", "x" * 65 + "@example.com",
    "x" * 240 + "@example.com", "info@example", "tom smith@example.net", "mary@@example.com",
    "😀love@example.org", "a@exämple.com", "a@example.com\u200b", "\"a\"@example.com",
    "a!#$%&'*/=?^`{|}~@example.com", "a@e.x", "a@e.xy", "a@e." + "z" * 63, "a@e." + "z" * 64,
    "a@sub.domain.example.museum", "a@b_c.com",
]


def test_an_address_called_plain_is_valid_for_email_validator():
    con = duckdb.connect()
    plain = dict(con.execute(
        f"SELECT e, {plain_email_sql('e')} FROM unnest(?) t(e)", [ADDRESSES]).fetchall())
    called_plain = [a for a in ADDRESSES if plain[a]]
    assert "evelyn_fisher66980@example.net" in called_plain  # the short cut does apply
    assert [a for a in called_plain if not _rfc_valid(a)] == []


@pytest.mark.parametrize("text", [
    "119.94", "-0.00005", "1.23455", "12.3456789", "99999999999999.9999", "99999999999999.99995",
    "999999999999999.1", "123456789012345678.5", "1e3", "-1.5e-3", " 12 ", "+5", ".5", "5.", "abc",
    "", None, "0x10", "1e30",
])
def test_recon_amount_equals_the_wide_cast(text):
    con = duckdb.connect()
    con.execute("CREATE SCHEMA recon")
    for sql in _macros():
        con.execute(sql)
    got, wide = con.execute("SELECT recon.amount($t), TRY_CAST($t AS DECIMAL(19,4))",
                            {"t": text}).fetchall()[0]
    assert got == wide
    assert con.execute("SELECT typeof(recon.amount('1'))").fetchall()[0][0] == "DECIMAL(19,4)"


def test_record_too_large_measures_a_payload_without_a_stored_size():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA ometria")
    con.execute("""CREATE TABLE ometria.orders AS SELECT * FROM (VALUES
        ('order', 'SO-1', 'ORDR', '1', repeat('x', 70000), 'h1', NULL::INTEGER, NULL),
        ('order', 'SO-2', 'ORDR', '2', '{}', 'h2', 70000, NULL),
        ('order', 'SO-3', 'ORDR', '3', repeat('x', 70000), 'h3', 2, NULL),
        ('order', 'SO-4', 'ORDR', '4', '{}', 'h4', NULL::INTEGER, NULL))
        t(record_type, id, sap_object, sap_key, payload, payload_hash, payload_bytes, held_back_reason)""")
    facts, config = MappingFacts(), ChecksConfig()
    present = prepare_sources(con, facts)
    ctx = RuleContext(con=con, config=config, facts=facts,
                      now=datetime(2026, 1, 1, tzinfo=timezone.utc), present=present)
    rule = next(r for r in OMETRIA_RULES if r.id == "record_too_large")
    keys = sorted(r[0] for r in con.execute(f"SELECT record_key FROM ({rule.sql(ctx)})").fetchall())
    assert keys == ["1", "2"]


def test_sent_orders_value_refunds_as_the_macros_do():
    # refunded amounts are parsed only when the payload text can hold the key (spelt plainly
    # or with an escape); every payload is still valued as recon.order_net values it
    from sap_ometria_assets.lib.recon.views import view_specs

    payloads = [
        '{"id":"SO-1","grand_total":100.5,"lineitems":[{"refunded":20.25},{"refunded":"1.5"}]}',
        '{"id":"SO-2","grand_total":100.5,"lineitems":[{"refunde\\u0064":7}]}',
        '{"id":"SO-3","grand_total":99,"lineitems":[{"total":99}]}',
        '{"id":"SO-4","grand_total":50,"is_valid":false,"lineitems":[{"refunded":5}]}',
        '{"id":"SO-5","grand_total":10}',
    ]
    con = duckdb.connect()
    con.execute("CREATE SCHEMA recon; CREATE SCHEMA ometria; CREATE SCHEMA ometria_push")
    for sql in _macros():
        con.execute(sql)
    con.execute("CREATE TABLE ometria.orders AS SELECT 'SO-' || i AS id, 'ORDR' AS sap_object, "
                "CAST(i AS VARCHAR) AS sap_key, p AS payload, 'h' || i AS payload_hash "
                "FROM unnest(?) WITH ORDINALITY t(p, i)", [payloads])
    con.execute("CREATE TABLE ometria_push.ledger AS SELECT 'orders' AS feed, id, payload_hash, "
                "'r1' AS request_id, now() AS acknowledged_at, false AS dry_run, "
                "'accepted' AS status FROM ometria.orders")
    spec = next(s for s in view_specs(MappingFacts(), ChecksConfig(), False) if s.name == "sent_orders")
    got = dict(con.execute(f"SELECT id, net FROM ({spec.sql})").fetchall())
    want = dict(con.execute("SELECT id, recon.order_net(payload) FROM ometria.orders").fetchall())
    assert got == want
    assert got["SO-1"] == Decimal("78.75") and got["SO-2"] == Decimal("93.5")
