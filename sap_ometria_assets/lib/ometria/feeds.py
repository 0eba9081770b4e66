"""The four Ometria feeds this product fills, in the order every step walks them.

Each feed is one Ometria-ready table (`ometria.<feed>`), one push asset (`ometria_push/<feed>`)
and one `feed` value in the push ledger, the exception rules and the reconciliation tables.
"""

OMETRIA_FEEDS = ("contacts", "orders", "products", "stock")
