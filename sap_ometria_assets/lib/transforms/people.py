"""People in SAP business partners: email validation (RFC 5322 via email-validator, without DNS),
name splitting (prefix / first / middle / last, the contact person for companies) and phone
numbers in E.164 (libphonenumber, the validator Ometria uses, once per distinct number).
"""

from __future__ import annotations

from collections.abc import Sequence

import phonenumbers
import polars as pl
from email_validator import EmailNotValidError, validate_email

from sap_ometria_assets.lib.ometria.models import EMAIL
from sap_ometria_assets.lib.transforms.values import text

_EMAIL_RE = EMAIL
_PREFIXES = r"(?i)^(mr|mrs|ms|miss|mx|dr|prof|sir|dame|lady|lord|rev)\.?$"


# Verdicts of `rfc_valid_emails` kept for the life of the process: the orders transform, the
# contacts transform and the exceptions register check the same business partners' addresses
# in one run (~25 us an address in email-validator: 5 s each for 200,000 partners). Bounded, so
# a long-lived code server does not grow without end.
_EMAIL_VERDICTS: dict[str, bool] = {}
_EMAIL_VERDICTS_MAX = 2_000_000


def _rfc_valid(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def rfc_valid_emails(emails: pl.Series) -> pl.Series:
    """Whether each address is valid by RFC 5321/5322 and the rules mail systems apply (no
    leading, trailing or doubled dots, no control or zero-width characters...), checked by the
    email-validator library without DNS. Each distinct address is checked once per process."""
    distinct = emails.drop_nulls().unique()
    if len(_EMAIL_VERDICTS) + distinct.len() > _EMAIL_VERDICTS_MAX:
        _EMAIL_VERDICTS.clear()
    known = _EMAIL_VERDICTS
    verdicts = {}
    for address in distinct.to_list():
        verdict = known.get(address)
        if verdict is None:
            verdict = known[address] = _rfc_valid(address)
        verdicts[address] = verdict
    if not verdicts:
        return pl.Series(emails.name, [None] * len(emails), dtype=pl.Boolean)
    return emails.replace_strict(verdicts, default=None, return_dtype=pl.Boolean)


EMAIL_VERDICTS_SCHEMA: dict[str, pl.DataType] = {"address": pl.String, "valid": pl.Boolean, "validator": pl.String}


def _validator_version() -> str:
    from importlib.metadata import version

    return "email-validator " + version("email-validator")


def email_verdicts() -> pl.DataFrame:
    """The verdicts this process knows (address, valid, validator version), to keep between runs:
    a full contacts build of 200,000 partners spends most of its time in email-validator."""
    return pl.DataFrame({"address": list(_EMAIL_VERDICTS), "valid": list(_EMAIL_VERDICTS.values())},
                        schema={"address": pl.String, "valid": pl.Boolean}).with_columns(
        pl.lit(_validator_version()).alias("validator"))


def remember_email_verdicts(verdicts: pl.DataFrame) -> int:
    """Take verdicts kept from earlier runs (`email_verdicts()`), those of the installed
    email-validator version only (an upgrade may judge differently); returns how many."""
    kept = verdicts.filter(pl.col("validator") == _validator_version())
    if len(_EMAIL_VERDICTS) + kept.height > _EMAIL_VERDICTS_MAX:
        return 0
    _EMAIL_VERDICTS.update(zip(kept["address"].to_list(), kept["valid"].to_list(), strict=True))
    return kept.height


def email_columns(raw: pl.Expr, lowercase: bool, status_column: str | None = None) -> tuple[pl.Expr, pl.Expr]:
    """(normalised email or null, status 'valid' | 'invalid' | 'missing').

    With `status_column`, the email reads the status from that column (computed first, e.g. in
    an earlier `with_columns`): the library check then runs once, not once per expression."""
    s = text(raw)
    local = s.str.extract(r"^(.*)@[^@]*$", 1)
    domain = s.str.extract(r"@([^@]*)$", 1)
    normal = pl.when(domain.is_not_null()).then(pl.concat_str([local, pl.lit("@"), domain.str.to_lowercase()])).otherwise(s)
    if lowercase:
        normal = normal.str.to_lowercase()
    valid = (normal.str.contains(_EMAIL_RE) & (normal.str.len_bytes() <= 254)
             & normal.map_batches(rfc_valid_emails, return_dtype=pl.Boolean))
    status = (
        pl.when(s.is_null()).then(pl.lit("missing"))
        .when(valid).then(pl.lit("valid"))
        .otherwise(pl.lit("invalid"))
    )
    if status_column is not None:
        return pl.when(pl.col(status_column) == "valid").then(normal), status
    return pl.when(valid).then(normal), status


def name_columns(raw: pl.Expr) -> dict[str, pl.Expr]:
    """Split a CardName into prefix / firstname / middlename / lastname.

    First word -> firstname, last word -> lastname, words between -> middlename; a leading title
    (Mr, Mrs, Dr...) becomes the prefix. One word: firstname only.
    """
    name = text(raw.cast(pl.String).str.replace_all(r"\s+", " "))
    words = name.str.split(" ")
    has_prefix = words.list.first().str.contains(_PREFIXES) & (words.list.len() > 1)
    words = pl.when(has_prefix).then(words.list.slice(1)).otherwise(words)
    n = words.list.len()
    return {
        "prefix": pl.when(has_prefix).then(name.str.split(" ").list.first()),
        "firstname": words.list.first(),
        "middlename": pl.when(n > 2).then(words.list.slice(1, n - 2).list.join(" ")),
        "lastname": pl.when(n > 1).then(words.list.last()),
    }


_COMPANY = (r"(?i)\b(ltd|limited|plc|llp|llc|inc|corp|gmbh|ag|s\.?a\.?|sarl|b\.?v\.?|n\.?v\.?|"
            r"co|company|group|holdings|trading|partners)\.?$")


def person_name(df: pl.DataFrame) -> pl.Expr:
    """The name to split into first/last names: the BP's own name for private persons, its contact
    person for companies (CardName "Northgate Carter Ltd" is nobody's first name).

    A BP is a company when its CardName ends like one (Ltd, PLC, GmbH...), unless SAP marks it
    `cPrivate`; SAP's CompanyPrivate alone is not trusted because it defaults to cCompany.
    """
    name = pl.col("CardName").cast(pl.String)
    company = text(name).str.contains(_COMPANY).fill_null(False)
    if "CompanyPrivate" in df.columns:
        company = company & (pl.col("CompanyPrivate").cast(pl.String) != "cPrivate").fill_null(True)
    contact = text("ContactPerson") if "ContactPerson" in df.columns else pl.lit(None, pl.String)
    return pl.when(company).then(contact).otherwise(name)


def _e164(raw: str, region: str, fallback: str) -> str | None:
    """E.164 if valid read in the BP's country, else read in the company's default region
    (a UK retailer's staff type UK numbers without +44 for foreign customers too)."""
    for reg in dict.fromkeys((region, fallback)):
        try:
            number = phonenumbers.parse(raw, reg)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


PHONE_LOOKUP_SCHEMA: dict[str, pl.DataType] = {
    "raw": pl.String, "region": pl.String, "default_region": pl.String, "e164": pl.String,
}


def distinct_phone_pairs(df: pl.DataFrame, fields: Sequence[str], region: pl.Expr) -> pl.DataFrame:
    """The distinct (raw number, region) pairs a frame's phone fields hold."""
    fields = [f for f in fields if f in df.columns]
    if not fields:
        return pl.DataFrame(schema={"raw": pl.String, "region": pl.String})
    work = df.select(*(text(f).alias(f) for f in fields), region.alias("region"))
    return pl.concat([work.select(pl.col(f).alias("raw"), "region") for f in fields]).drop_nulls("raw").unique()


def resolve_phones(pairs: pl.DataFrame, default_region: str, known: pl.DataFrame | None = None) -> pl.DataFrame:
    """(raw, region) -> E.164 or null, reusing `known` results; only new pairs reach libphonenumber.

    libphonenumber is the validator Ometria itself uses. It is pure Python (~90 us a number), so
    it runs once per distinct pair, and callers keep the results between runs (`known`).
    """
    pairs = pairs.select("raw", "region").with_columns(pl.lit(default_region).alias("default_region"))
    if known is not None and known.height:
        known = known.select(list(PHONE_LOOKUP_SCHEMA)).cast(PHONE_LOOKUP_SCHEMA)  # type: ignore[arg-type]
        hit = pairs.join(known, on=["raw", "region", "default_region"], how="inner", nulls_equal=True)
        todo = pairs.join(known, on=["raw", "region", "default_region"], how="anti", nulls_equal=True)
    else:
        hit, todo = pl.DataFrame(schema=PHONE_LOOKUP_SCHEMA), pairs
    # absurdly long strings are not phone numbers (and would only cost time)
    results = [
        _e164(raw, reg or default_region, default_region) if len(raw) <= 64 else None
        for raw, reg in todo.select("raw", "region").iter_rows()
    ]
    fresh = todo.with_columns(pl.Series("e164", results, dtype=pl.String))
    return pl.concat([hit.select(list(PHONE_LOOKUP_SCHEMA)), fresh.select(list(PHONE_LOOKUP_SCHEMA))])


def normalise_phones(df: pl.DataFrame, fields: Sequence[str], region: pl.Expr, default_region: str,
                     known: pl.DataFrame | None = None) -> pl.DataFrame:
    """Add `phone_number` (E.164 of the first valid field, or null) and `phone_status`
    ('valid' | 'invalid' | 'missing')."""
    fields = [f for f in fields if f in df.columns]
    if not fields:
        return df.with_columns(pl.lit(None, pl.String).alias("phone_number"), pl.lit("missing").alias("phone_status"))
    lookup = resolve_phones(distinct_phone_pairs(df, fields, region), default_region, known).select(
        "raw", "region", "e164")
    out = df.with_columns(region.alias("_phone_region"))
    for i, f in enumerate(fields):
        out = out.with_columns(text(f).alias(f"_raw{i}")).join(
            lookup.rename({"raw": f"_raw{i}", "region": "_phone_region", "e164": f"_e164_{i}"}),
            on=[f"_raw{i}", "_phone_region"], how="left", nulls_equal=False,
        )
    any_raw = pl.any_horizontal([pl.col(f"_raw{i}").is_not_null() for i in range(len(fields))])
    phone = pl.coalesce([pl.col(f"_e164_{i}") for i in range(len(fields))])
    out = out.with_columns(
        phone.alias("phone_number"),
        pl.when(phone.is_not_null()).then(pl.lit("valid"))
        .when(any_raw).then(pl.lit("invalid"))
        .otherwise(pl.lit("missing")).alias("phone_status"),
    )
    drop = ["_phone_region"] + [c for i in range(len(fields)) for c in (f"_raw{i}", f"_e164_{i}")]
    return out.drop(drop)
