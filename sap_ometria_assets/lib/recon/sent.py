"""The two large reconciliation tables, kept up to date by their differences.

`recon.sent_orders` (every acknowledged order payload, valued as Ometria values it) and
`recon.ometria_records` (every Ometria-ready record with its payload hash) hold a row per order
or record: over a million at 200,000 customers. A sync changes about one in a hundred, so
after their first build they are refreshed (lib/warehouse/refresh.py): a row is re-valued only
when its ledger entry changed (new payload hash, new request, new acknowledgement), and a
periodic full pass rebuilds them from scratch to prove the refreshed table equals the full one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sap_ometria_assets.lib.ometria.feeds import OMETRIA_FEEDS


@dataclass(frozen=True)
class RefreshSpec:
    """How a recon table is refreshed instead of rebuilt (see refresh_table)."""

    identity: tuple[str, ...]
    identity_sql: str
    rows_sql: Callable[[str], str]


@dataclass
class ViewSpec:
    name: str
    comment: str
    sql: str
    needs: tuple[str, ...] = ()
    refresh: RefreshSpec | None = None


# An order payload parsed once, not once per value (the recon.order_* macros parse it again for
# each): `_j` = customer id, currency, status, timestamp, grand_total, is_valid; `_r` = the
# lines' refunded amounts. ORDER_VALUES values them exactly as the macros do.
# A payload whose text holds neither the key "refunded" nor a \u escape (a key could be spelt
# with one) has no refunded amounts: its lines are not parsed a second time (half the parsing).
def order_parts(payload: str) -> str:
    return (f"json_extract_string({payload}, ['$.customer.id', '$.currency', '$.status', '$.timestamp', "
            f"'$.grand_total', '$.is_valid']) AS _j, CASE WHEN contains({payload}, '\"refunded\"') "
            f"OR contains({payload}, '\\u') THEN json_extract_string({payload}, '$.lineitems[*].refunded') "
            f"END AS _r")


ORDER_VALUES = """_j[1] AS card_code, _j[2] AS currency, _j[3] AS status,
                   TRY_CAST(substr(_j[4], 1, 10) AS DATE) AS day, recon.amount(_j[5]) AS grand_total,
                   CASE WHEN coalesce(_j[6] <> 'false', true) THEN recon.amount(_j[5])
                        - coalesce(list_sum(list_transform(_r, lambda x: recon.amount(x))), 0) ELSE 0 END AS net"""

SENT_IDENTITY = ("id", "sap_object", "sap_key", "payload_hash", "request_id", "acknowledged_at")


def sent_orders_spec(ledger_has_payload: bool) -> ViewSpec:
    """Acknowledged order payloads: the ledger's payload (or, on a ledger of before payloads were
    kept, the current one when its hash is the acknowledged one)."""
    sent_payload = "g.payload" if ledger_has_payload else "o.payload"
    sent_match = "" if ledger_has_payload else " AND g.payload_hash = o.payload_hash"
    joined = f"""ometria.orders o
                  JOIN ometria_push.ledger g ON g.feed = 'orders' AND g.id = CAST(o.id AS VARCHAR)
                       AND NOT coalesce(g.dry_run, false)
                       AND coalesce(g.status, 'accepted') = 'accepted'{sent_match}"""
    identity = (f"o.id, o.sap_object, CAST(o.sap_key AS VARCHAR) AS sap_key, g.payload_hash, "
                f"g.request_id, g.acknowledged_at")
    full = f"""
            SELECT id, sap_object, sap_key, payload_hash, {ORDER_VALUES}, request_id, acknowledged_at
            FROM (SELECT {identity}, {order_parts(sent_payload)}
                  FROM {joined})"""

    def rows(relation: str) -> str:
        # the payloads of the changed rows only, fetched by rowid (1 GB of payloads at x100)
        order_join = "" if ledger_has_payload else " JOIN ometria.orders o ON o.rowid = n._order_row"
        return f"""
            SELECT id, sap_object, sap_key, payload_hash, {ORDER_VALUES}, request_id, acknowledged_at
            FROM (SELECT n.id, n.sap_object, n.sap_key, n.payload_hash, n.request_id,
                         n.acknowledged_at, {order_parts(sent_payload)}
                  FROM {relation} n JOIN ometria_push.ledger g ON g.rowid = n._ledger_row{order_join})"""

    order_row = "" if ledger_has_payload else ", o.rowid AS _order_row"
    return ViewSpec(
        "sent_orders",
        "Sent side: order payloads (orders and negative orders for credit memos) that the push "
        "ledger says Ometria accepted (status accepted, not dry run)" + ("" if ledger_has_payload else
        " in their current version (a changed, not yet acknowledged order is left out and "
        "shows in recon.stale_records)") + ". net = how Ometria values it: grand_total - "
        "refunded for valid orders, 0 for invalid (cancelled, fully refunded) ones. payload_hash "
        "= the acknowledged payload's hash (ometria_push.ledger).",
        full,
        needs=("ometria.orders", "ometria_push.ledger"),
        refresh=RefreshSpec(
            SENT_IDENTITY,
            f"SELECT {identity}, g.rowid AS _ledger_row{order_row} FROM {joined}",
            rows,
        ),
    )


RECORD_COLUMNS = ("feed", "record_type", "id", "sap_object", "sap_key", "payload_hash",
                  "held_back_reason")


def ometria_records_spec() -> ViewSpec:
    union = " UNION ALL ".join(
        f"SELECT '{feed}' AS feed, record_type, CAST(id AS VARCHAR) AS id, sap_object, "
        f"CAST(sap_key AS VARCHAR) AS sap_key, payload_hash, held_back_reason FROM ometria.{feed}"
        for feed in OMETRIA_FEEDS
    )
    return ViewSpec(
        "ometria_records",
        "Every Ometria-ready record of the four feeds (contacts, orders, products, stock) with "
        "its SAP source and current payload hash.",
        union,
        needs=tuple(f"ometria.{feed}" for feed in OMETRIA_FEEDS),
        refresh=RefreshSpec(RECORD_COLUMNS, union,
                            lambda relation: f"SELECT {', '.join(RECORD_COLUMNS)} FROM {relation}"),
    )
