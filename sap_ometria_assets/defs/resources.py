"""Resources shared by every layer. Configuration comes from the environment at run time
(`lib/config/settings.py`), so loading the definitions needs no secrets."""

import dagster as dg

from sap_ometria_assets.lib.warehouse.db import WarehouseResource


@dg.definitions
def resources() -> dg.Definitions:
    res: dict = {"warehouse": WarehouseResource()}
    try:
        from sap_ometria_assets.lib.sap.client import SapB1Resource

        res["sap_b1"] = SapB1Resource()
    except ImportError:  # pragma: no cover - layer not built yet
        pass
    try:
        from sap_ometria_assets.lib.ometria.client import OmetriaResource

        res["ometria"] = OmetriaResource()
    except ImportError:  # pragma: no cover - layer not built yet
        pass
    return dg.Definitions(resources=res)
