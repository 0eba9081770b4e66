"""Amounts: document lines priced from unit price, discount and quantity (VAT by tax code, rounding
to pennies), and document headers totalled from their lines and expenses.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sap_ometria_assets.emulators.sap_b1.company.constants import LOCAL_CURRENCY
from sap_ometria_assets.emulators.sap_b1.company.schema import HEADER_COLUMNS


# ---------------------------------------------------------------------------------------------
# Amounts: lines priced from UnitPrice/discount/quantity, headers totalled from lines
# ---------------------------------------------------------------------------------------------

_VAT = pl.when(pl.col("TaxCode") == "O1").then(0.2).otherwise(0.0)


def _reprice(lines: pl.DataFrame) -> pl.DataFrame:
    """Line amounts from UnitPrice, DiscountPercent and Quantity: doc currency, then local at Rate."""
    fc = pl.col("Currency") != LOCAL_CURRENCY
    return (
        lines.with_columns(Price=(pl.col("UnitPrice") * (1 - pl.col("DiscountPercent") / 100)).round(2))
        .with_columns(_net=(pl.col("Price") * pl.col("Quantity")).round(2))
        .with_columns(_tax=(pl.col("_net") * _VAT).round(2))
        .with_columns(
            PriceAfterVAT=(pl.col("Price") * (1 + _VAT)).round(2),
            LineTotal=pl.when(fc).then((pl.col("_net") * pl.col("Rate")).round(2)).otherwise(pl.col("_net")),
            TaxTotal=pl.when(fc).then((pl.col("_tax") * pl.col("Rate")).round(2)).otherwise(pl.col("_tax")),
            RowTotalFC=pl.when(fc).then(pl.col("_net")).otherwise(0.0),
            GrossTotalFC=pl.when(fc).then((pl.col("_net") + pl.col("_tax")).round(2)).otherwise(0.0),
        )
        .with_columns(GrossTotal=(pl.col("LineTotal") + pl.col("TaxTotal")).round(2))
        .drop("_net", "_tax")
    )


_TOTAL_COLS = [
    "DocTotal", "DocTotalFc", "VatSum", "VatSumFc", "TotalDiscount", "TotalDiscountFC",
    "RoundingDiffAmount", "RoundingDiffAmountFC",
]


def _totals(hdr: pl.DataFrame, lines: pl.DataFrame, exp: pl.DataFrame, subset: bool = False) -> pl.DataFrame:
    """DocTotal = sum(LineTotal) - TotalDiscount + VatSum + freight + RoundingDiffAmount (and Fc).

    `subset`: lines/exp may hold other documents too (filtered to `hdr`'s first).
    """
    if subset:
        keys = hdr["DocEntry"].implode()
        lines = lines.filter(pl.col("DocEntry").is_in(keys))
        exp = exp.filter(pl.col("DocEntry").is_in(keys))
    # Sums per document with bincount: DocEntry is a dense integer key.
    entries = hdr["DocEntry"].to_numpy().astype(np.int64)
    lo = int(min(entries.min(initial=0), lines["DocEntry"].min() or 0, exp["DocEntry"].min() or 0))
    size = int(max(entries.max(initial=0), lines["DocEntry"].max() or 0, exp["DocEntry"].max() or 0)) - lo + 1
    l_de = lines["DocEntry"].to_numpy().astype(np.int64) - lo
    e_de = exp["DocEntry"].to_numpy().astype(np.int64) - lo

    def per_doc(de: np.ndarray, values: pl.Series) -> pl.Series:
        return pl.Series(np.bincount(de, weights=values.to_numpy(), minlength=size)[entries - lo])

    sums = {
        "_lt": per_doc(l_de, lines["LineTotal"]), "_tax": per_doc(l_de, lines["TaxTotal"]),
        "_ltfc": per_doc(l_de, lines["RowTotalFC"]), "_taxfc": per_doc(l_de, lines["GrossTotalFC"] - lines["RowTotalFC"]),
        "_fr": per_doc(e_de, exp["LineTotal"]), "_frtax": per_doc(e_de, exp["TaxSum"]),
        "_frfc": per_doc(e_de, exp["LineTotalFC"]), "_frtaxfc": per_doc(e_de, exp["TaxSumFC"]),
    }
    helpers = ["_lt", "_tax", "_ltfc", "_taxfc", "_fr", "_frtax", "_frfc", "_frtaxfc"]
    d = pl.col("DiscountPercent") / 100
    fc = pl.col("DocCurrency") != LOCAL_CURRENCY
    rounding = pl.col("Rounding") == "tYES"
    h = (
        hdr.drop([c for c in _TOTAL_COLS if c in hdr.columns])
        .with_columns(**{k: v.round(6) for k, v in sums.items()})
        .with_columns(
            TotalDiscount=(pl.col("_lt") * d).round(2),
            TotalDiscountFC=pl.when(fc).then((pl.col("_ltfc") * d).round(2)).otherwise(0.0),
        )
        .with_columns(
            VatSum=((pl.col("_tax") * (1 - d)).round(2) + pl.col("_frtax")).round(2),
            VatSumFc=pl.when(fc).then(((pl.col("_taxfc") * (1 - d)).round(2) + pl.col("_frtaxfc")).round(2)).otherwise(0.0),
        )
        .with_columns(
            _pre=pl.col("_lt") - pl.col("TotalDiscount") + pl.col("VatSum") + pl.col("_fr"),
            _prefc=pl.col("_ltfc") - pl.col("TotalDiscountFC") + pl.col("VatSumFc") + pl.col("_frfc"),
        )
        .with_columns(
            RoundingDiffAmountFC=pl.when(fc & rounding)
            .then(((pl.col("_prefc") * 20).round(0) / 20 - pl.col("_prefc")).round(2))
            .otherwise(0.0),
        )
        .with_columns(
            RoundingDiffAmount=pl.when(fc)
            .then((pl.col("RoundingDiffAmountFC") * pl.col("DocRate")).round(2))
            .when(rounding)
            .then(((pl.col("_pre") * 20).round(0) / 20 - pl.col("_pre")).round(2))
            .otherwise(0.0),
        )
        .with_columns(
            DocTotal=(pl.col("_pre") + pl.col("RoundingDiffAmount")).round(2),
            DocTotalFc=pl.when(fc).then((pl.col("_prefc") + pl.col("RoundingDiffAmountFC")).round(2)).otherwise(0.0),
        )
        .drop(helpers + ["_pre", "_prefc"])
    )
    extra = [c for c in hdr.columns if c not in HEADER_COLUMNS]
    return h.select(HEADER_COLUMNS + extra)
