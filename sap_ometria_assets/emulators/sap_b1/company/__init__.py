"""The generated SAP Business One demo company: a UK retailer (local currency GBP, `SBODEMOGB`).

`generate_company(scale, seed, ticks)` builds, deterministically, the data a Service Layer would
serve: business partners with addresses, groups, items with prices and stock per warehouse,
warehouses, UDF declarations, and the document chain sales order (17) -> delivery (15) -> A/R
invoice (13) -> A/R credit memo (14), linked line by line through `BaseType`/`BaseEntry`/
`BaseLine` as SAP does. Property names are the Service Layer's (`lib/sap/tables.py` holds the
contract); values are typed as the Service Layer types them (dates, times, enum member names).

Everything is vectorised (numpy for randomness, polars for the tables): scale 1 (about 2,000 BPs
and 10,000 orders) builds in well under a second, scale 100 (200,000 BPs, 1,000,000 orders,
3,000,000 order lines) in well under a minute.

The company holds what real companies hold and what a sync must survive: invalid, blank and
duplicate emails, nameless customers, leads and suppliers, marketing blocks, frozen partners, UDF
values outside their declared valid values, cancelled orders, partial deliveries, full and partial
credit memos (linked through invoices, and stand-alone), a credit memo larger than its order,
cancellation documents, lines for unknown items, orders for leads, suppliers and unknown card
codes, foreign currencies (`EUR`, `US$`, `SFR`), a few deliberately inconsistent order totals,
items without price or name, inactive and frozen items, stock over several warehouses including
the ring-fenced `WHS-WHOLESALE`, and over-committed stock. `Company.planted` names the keys of
every deliberately planted case.

Every sync exception rule (`lib/sync_exceptions/rules_*.py`) has examples here, at every scale:

| rule | planted (`Company.planted` key) |
|---|---|
| contact_invalid_email / _missing_email / _duplicate_email / _missing_name | `invalid_emails`, `blank_emails`, `duplicate_emails`, `nameless_customers` |
| order_unknown_customer | `orders_for_leads`, `orders_for_suppliers`, `orders_unknown_card_code` |
| line_unknown_item | `unknown_item_lines` (items of a pre-2020 catalogue) |
| product_missing_price_or_title | `items_without_price`, `items_without_name` |
| currency_unmapped | `sfr_customers` / `sfr_orders` (SFR is left out of the default mapping) |
| order_total_mismatch | `inconsistent_order_totals` |
| credit_memo_unlinked / _exceeds_order | `standalone_credit_memos`, `credit_memos_exceeding_order` |
| stock_negative_available | `overcommitted_stock` |
| udf_value_not_allowed | `udf_invalid_values` |
| record_too_large | `oversized_orders` (a 460-line trade pre-order), `oversized_items` (a pasted product page in the web-title memo UDF) |
| ometria_rejected | `unknown_item_lines`: Ometria rejects an order whose line names a product it does not hold (the embedded Ometria emulator checks, as Ometria documents) |
| held_back_other | `email_card_codes`: customers keyed by their email address; Ometria ids must not carry personal data, so they and their orders are held back |
| ometria_stale | nothing to plant: a change Ometria has not acknowledged for `recon.stale_after_hours`. In the demo the stock flag of `oversized_items` can never be sent (Ometria holds no such product), so it turns stale that long after the first sync |

Phone numbers are fictional yet valid for libphonenumber (Ofcom's drama ranges per city, e.g.
0161 496 0xxx, 020 7946 0xxx; ARCEP's 01 99 00 xx xx for France; 555-01xx in the US); a third
of the mobiles are Ofcom's drama mobiles (07700 900xxx), which libphonenumber rejects, next to a
valid landline; `invalid_phones` (about 1 %) hold only an unusable number.

Clock: the company's 'now' is 2026-11-01 09:00 company time plus one hour per tick. A tick is one
hour of business (new and edited partners, new orders, line edits, cancellations, deliveries,
invoices, credit memos, the occasional cancellation document, stock moves, item edits, and one
partner and one item deleted outright), derived only from (seed, tick), so a company advanced
tick by tick equals one generated at that tick count.

The package: `constants` and `schema` (tables, columns, UDFs, entity sets), `helpers` and `amounts`
(prices, tax, rounding), `phones`, `builders` and `generation` (partners, items, documents at tick 0),
`planted` (the awkward cases and exception examples), `finishing` (renumbering, cancellations,
canonical columns, stock), `ticks` (the clock: new and edited records) and `model` (`Company`,
`generate_company`). Every public name is importable from here.
"""

from __future__ import annotations

from sap_ometria_assets.emulators.sap_b1.company.constants import (
    ADJECTIVES, BASE_NOW, BP_GROUPS, BRANDS, CHANNELS, COLOURS, COMPANY_DB, COMPANY_SUFFIX, COMPANY_WORDS,
    COUNTRY_P, CURRENCIES, DAY, DOC_LABEL, DOC_NUM_BASE, DOC_OBJECT_NAME, DOC_TABLES, EPOCH, EPOCH_DAYS,
    EXPENSE_DTYPES, E_CANCEL, E_CUR, E_STATUS, E_TAX, E_YESNO, FIRST, FOREIGN, FREIGHT_NET, GROSS_PRICES,
    HEADER_DTYPES, HEADER_OF, HOUR, LAST, LINE_DTYPES, LOCAL_CURRENCY, MAIL_DOMAINS, NOW_S, OBJECT_CODE, PRODUCTS,
    RATE_BASE, SEASONS, STREETS, UK_CITIES, WAREHOUSES,
)
from sap_ometria_assets.emulators.sap_b1.company.schema import (
    ADDRESS_COLUMNS, BP_COLUMNS, ChildSpec, ENTITY_SPECS, EXPENSE_COLUMNS, EntitySpec, HEADER_COLUMNS,
    ITEM_COLUMNS, ITEM_PRICE_COLUMNS, ITEM_WHS_COLUMNS, LINE_COLUMNS, UDF_DEFS, UDF_VALUE_LABELS, property_exprs,
)
from sap_ometria_assets.emulators.sap_b1.company.phones import (
    DRAMA_PHONE_PREFIX, FOREIGN_PHONE_PREFIX, OTHER_PHONE_PREFIX,
)
from sap_ometria_assets.emulators.sap_b1.company.planted import OVERSIZED_ORDER_LINES, OVERSIZED_TITLE_CHARS
from sap_ometria_assets.emulators.sap_b1.company.finishing import _canon
from sap_ometria_assets.emulators.sap_b1.company.model import Company, generate_company

__all__ = [
    "ADDRESS_COLUMNS", "ADJECTIVES", "BASE_NOW", "BP_COLUMNS", "BP_GROUPS", "BRANDS", "CHANNELS", "COLOURS",
    "COMPANY_DB", "COMPANY_SUFFIX", "COMPANY_WORDS", "COUNTRY_P", "CURRENCIES", "ChildSpec", "Company", "DAY",
    "DOC_LABEL", "DOC_NUM_BASE", "DOC_OBJECT_NAME", "DOC_TABLES", "DRAMA_PHONE_PREFIX", "ENTITY_SPECS", "EPOCH",
    "EPOCH_DAYS", "EXPENSE_COLUMNS", "EXPENSE_DTYPES", "E_CANCEL", "E_CUR", "E_STATUS", "E_TAX", "E_YESNO",
    "EntitySpec", "FIRST", "FOREIGN", "FOREIGN_PHONE_PREFIX", "FREIGHT_NET", "GROSS_PRICES", "HEADER_COLUMNS",
    "HEADER_DTYPES", "HEADER_OF", "HOUR", "ITEM_COLUMNS", "ITEM_PRICE_COLUMNS", "ITEM_WHS_COLUMNS", "LAST",
    "LINE_COLUMNS", "LINE_DTYPES", "LOCAL_CURRENCY", "MAIL_DOMAINS", "NOW_S", "OBJECT_CODE", "OTHER_PHONE_PREFIX",
    "OVERSIZED_ORDER_LINES", "OVERSIZED_TITLE_CHARS", "PRODUCTS", "RATE_BASE", "SEASONS", "STREETS", "UDF_DEFS",
    "UDF_VALUE_LABELS", "UK_CITIES", "WAREHOUSES", "generate_company", "property_exprs",
]
