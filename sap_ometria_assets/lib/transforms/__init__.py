"""Pure polars transforms from sap_raw-shaped frames to Ometria-ready tables.

One module per Ometria feed (`contacts`, `orders` with `refunds` for the credit memos, `products`,
`stock`); what they share is split by idea: `values` (money in cents, text, dates, currencies),
`frames` (required columns, one row per key), `localtime` (company time zone), `people` (emails,
names, phones), `udfs` (user-defined fields), `documents` (SAP document headers and lines, for
orders and credit memos) and `payloads` (encoding, hashing, validation). No I/O in those: the
assets in `defs/ometria` read the warehouse and write the results. The exceptions are
`incremental`, which selects in DuckDB SQL the orders and credit memos a run must rebuild (work
proportional to what SAP changed), and `orders_build`, which reads, builds and writes the orders
tables for the `ometria/orders` asset and the backfill.
"""
