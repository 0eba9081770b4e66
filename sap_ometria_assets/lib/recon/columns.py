"""What each column of `recon.customer_net_revenue` means: the reconciliation table finance
opens first (per customer and currency, SAP vs what was sent vs what Ometria holds).

Column -> (DuckDB type, description), in the order `lib/recon/views.py` selects them; the
Dagster catalog shows them on the `recon/views` asset and a test checks them against the view.
"""

from __future__ import annotations

_MONEY = "DECIMAL(19,2)"

CUSTOMER_NET_REVENUE: dict[str, tuple[str, str]] = {
    "card_code": ("VARCHAR", "Customer's business partner code (OCRD.CardCode)"),
    "currency": ("VARCHAR", "Currency of the amounts (ISO code as sent to Ometria)"),
    "sap_orders": (_MONEY, "Live SAP sales orders of the customer, in currency"),
    "sap_credit_memos": (_MONEY, "Live SAP credit memos of the customer, in currency (negative)"),
    "sap_net": (_MONEY, "SAP net revenue: orders minus credit memos, in currency"),
    "sap_net_local": (_MONEY, "SAP net revenue in the company currency"),
    "sent_net": (_MONEY, "Net revenue of the order versions Ometria acknowledged (the ledger)"),
    "ometria_net": (_MONEY, "Net revenue of the orders Ometria holds, read back "
                            "(empty when the read-back was unavailable)"),
    "sent_difference": ("DECIMAL(20,2)", "sent_net - sap_net"),
    "ometria_difference": ("DECIMAL(20,2)", "ometria_net - sap_net"),
    "status": ("VARCHAR", "agrees (to the penny), explained (see explanation) or differs "
                          "(nobody knows why: investigate)"),
    "explanation": ("VARCHAR", "Open exceptions or unacknowledged orders that explain a difference"),
}
