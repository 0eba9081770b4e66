"""Telephone numbers of the demo partners: fictional yet valid for libphonenumber (the regulators'
drama ranges per UK city, foreign drama prefixes, an international UK drama number), and the
unusable numbers of the planted invalid phones.
"""

from __future__ import annotations

import polars as pl

from sap_ometria_assets.emulators.sap_b1.company.schema import _S


# Telephone numbers reserved for drama by the regulators, so no real person is ever rung, and
# that libphonenumber (the validator Ometria uses) still accepts. Ofcom's drama mobiles
# (07700 900xxx) and 01632 960xxx are reserved too but libphonenumber rejects them.
DRAMA_PHONE_PREFIX = {  # UK city -> national prefix of its drama range (+ 3 digits)
    "London": "020 7946 0", "Manchester": "0161 496 0", "Birmingham": "0121 496 0", "Leeds": "0113 496 0",
    "Sheffield": "0114 496 0", "Leicester": "0116 496 0", "Bristol": "0117 496 0", "Edinburgh": "0131 496 0",
    "Glasgow": "0141 496 0", "Liverpool": "0151 496 0", "Newcastle upon Tyne": "0191 498 0",
    "Cardiff": "029 2018 0", "Belfast": "028 9018 0",
}
FOREIGN_PHONE_PREFIX = {  # country -> international prefix (+ 3 digits; US: + 2 digits)
    "FR": "+33 1 99 00 0",   # ARCEP's fiction range 01 99 00 xx xx
    "US": "+1 212 555 01",   # NANP 555-0100..0199, reserved for fiction
}
OTHER_PHONE_PREFIX = "+44 20 7946 0"  # a UK drama number in international form: valid anywhere


def _fictional_phone(digits_col: str, international: bool = False) -> pl.Expr:
    """A valid, fictional number for the partner's country (and UK city)."""
    p = pl.col(digits_col)
    three, two = p.cast(_S).str.zfill(3), (p % 100).cast(_S).str.zfill(2)
    gb = pl.col("_city").replace_strict(DRAMA_PHONE_PREFIX, default=DRAMA_PHONE_PREFIX["London"],
                                        return_dtype=_S)
    if international:
        gb = pl.concat_str(pl.lit("+44 "), gb.str.slice(1))
    country = pl.col("Country")
    return (pl.when(country == "GB").then(pl.concat_str(gb, three))
            .when(country == "US").then(pl.concat_str(pl.lit(FOREIGN_PHONE_PREFIX["US"]), two))
            .when(country == "FR").then(pl.concat_str(pl.lit(FOREIGN_PHONE_PREFIX["FR"]), three))
            .otherwise(pl.concat_str(pl.lit(OTHER_PHONE_PREFIX), three)))


def _invalid_phone(digits_col: str) -> pl.Expr:
    """Numbers people really type that no validator accepts (drama mobiles, a digit short).
    Abroad only in international form: a UK national number can be a real foreign one."""
    p = pl.col(digits_col)
    gb = pl.col("Country") == "GB"
    return (pl.when(gb & (p % 3 == 0)).then(pl.concat_str(pl.lit("07700 900"), p.cast(_S).str.zfill(3)))
            .when(gb & (p % 3 == 2)).then(pl.concat_str(pl.lit("0161 496 0"), p.cast(_S)))  # p < 12: short
            .otherwise(pl.concat_str(pl.lit("+44 7700 900"), p.cast(_S).str.zfill(3))))
