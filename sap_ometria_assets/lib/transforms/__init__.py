"""Pure polars transforms from sap_raw-shaped frames to Ometria-ready tables.

One module per Ometria feed; `common` holds what they share (money in cents, time zones,
payload encoding, hashing, validation). No I/O here: the assets in `defs/ometria` read the
warehouse and write the results. The exception is `incremental`, which selects in DuckDB SQL the
orders and credit memos a run must rebuild (work proportional to what SAP changed).
"""

from sap_ometria_assets.lib.transforms.contacts import build_contacts
from sap_ometria_assets.lib.transforms.orders import OrderInputs, OrdersResult, build_orders
from sap_ometria_assets.lib.transforms.products import build_products
from sap_ometria_assets.lib.transforms.refunds import net_value_by_customer
from sap_ometria_assets.lib.transforms.stock import StockResult, build_stock

__all__ = [
    "OrderInputs",
    "OrdersResult",
    "StockResult",
    "build_contacts",
    "build_orders",
    "build_products",
    "build_stock",
    "net_value_by_customer",
]
