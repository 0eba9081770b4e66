"""Sync-exception rules on customers (SAP business partners -> Ometria contacts).

Invalid, missing or shared email addresses and customers without a name: what marketing needs
to fix in SAP so the customer can be emailed and recognised in Ometria.
"""

from __future__ import annotations

import polars as pl
from email_validator import SPECIAL_USE_DOMAIN_NAMES

# Valid email = what the contacts transform accepts (EMAIL, at most 254 bytes), so the rule
# flags exactly the contacts that are held back as `invalid_email`.
from sap_ometria_assets.lib.ometria.models import EMAIL as EMAIL_RE
from sap_ometria_assets.lib.sync_exceptions.rule import Rule, RuleContext
from sap_ometria_assets.lib.sync_exceptions.sources import POP_CUSTOMERS
from sap_ometria_assets.lib.transforms.people import rfc_valid_emails
from sap_ometria_assets.lib.warehouse.sql import lit, text_list


# An address of this shape is valid for email-validator too (an ASCII dot-atom before the @, then
# lowercase hostname labels without "--", an all-letter top-level domain that is not a
# special-use name, 254 bytes at most): only the others go through the library, at ~25 us an
# address in Python (5 s for 200,000 partners). tests/lib/test_sync_exceptions_perf.py holds
# the shape to the library's verdicts.
PLAIN_EMAIL = (r"^[A-Za-z0-9_+-]+(\.[A-Za-z0-9_+-]+)*@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+"
               r"[a-z]{2,63}$")


def plain_email_sql(expr: str) -> str:
    """SQL: is the address (text) surely valid for email-validator, without asking it?"""
    return (f"(regexp_full_match({expr}, {lit(PLAIN_EMAIL)}) AND strlen({expr}) <= 254 "
            f"AND NOT contains(split_part({expr}, '@', 2), '--') "
            f"AND NOT list_contains({text_list(SPECIAL_USE_DOMAIN_NAMES)}, "
            f"regexp_extract({expr}, '\\.([a-z]+)$', 1)))")


def _contact_invalid_email(ctx: RuleContext) -> str:
    # The same checks as the contacts transform (EMAIL and 254 bytes, then the library check of
    # transforms.people.rfc_valid_emails), once per distinct address that is not surely valid,
    # into a temp table the SQL reads. A surely valid (plain) address passes EMAIL too, so the
    # customers' addresses are matched against that short list only.
    email = 'trim("EmailAddress")'
    emails = ctx.con.sql(f"SELECT DISTINCT {email} AS e FROM x_customers "
                         f"WHERE nullif({email}, '') IS NOT NULL AND NOT {plain_email_sql(email)}"
                         ).pl()["e"]
    shape_ok = emails.str.contains(EMAIL_RE) & (emails.str.len_bytes() <= 254)
    bad = pl.DataFrame({"e": emails.filter(~shape_ok | ~rfc_valid_emails(emails).fill_null(False))},
                       schema={"e": pl.String})
    ctx.con.register("_rfc_invalid_emails_df", bad)
    ctx.con.execute("CREATE OR REPLACE TEMP TABLE _rfc_invalid_emails AS "
                    "SELECT * FROM _rfc_invalid_emails_df")
    ctx.con.unregister("_rfc_invalid_emails_df")
    return f"""
        SELECT CAST("CardCode" AS VARCHAR) AS record_key,
               'Email "' || {email} || '" is not a valid address' AS detail
        FROM x_customers WHERE {email} IN (SELECT e FROM _rfc_invalid_emails)"""


def _contact_missing_email(ctx: RuleContext) -> str:
    return """
        SELECT CAST("CardCode" AS VARCHAR) AS record_key,
               'No email address on the business partner (' || coalesce(nullif(trim("CardName"), ''),
               'no name') || ')' AS detail
        FROM x_customers WHERE nullif(trim("EmailAddress"), '') IS NULL"""


def _contact_duplicate_email(ctx: RuleContext) -> str:
    return """
        WITH e AS (
            SELECT CAST("CardCode" AS VARCHAR) AS code, lower(trim("EmailAddress")) AS email
            FROM x_customers WHERE nullif(trim("EmailAddress"), '') IS NOT NULL
        ), d AS (
            SELECT email, list(code ORDER BY code) AS codes FROM e GROUP BY email HAVING count(*) > 1
        )
        SELECT e.code AS record_key,
               'Email "' || e.email || '" is also on ' ||
               array_to_string(list_slice(list_filter(d.codes, lambda c: c <> e.code), 1, 10), ', ') ||
               CASE WHEN len(d.codes) > 11 THEN ' and ' || (len(d.codes) - 11) || ' more' ELSE '' END
               AS detail
        FROM e JOIN d USING (email)"""


def _contact_missing_name(ctx: RuleContext) -> str:
    return """
        SELECT CAST("CardCode" AS VARCHAR) AS record_key,
               'The business partner has no name (CardName is blank)' AS detail
        FROM x_customers WHERE nullif(trim("CardName"), '') IS NULL"""


CONTACT_RULES: tuple[Rule, ...] = (
    Rule(
        id="contact_invalid_email", entity="contact", severity="ERROR", owner="marketing",
        title="Invalid email address",
        description="A customer's email address in SAP is not a usable address (typo, missing @, "
        "spaces, missing domain). Ometria cannot email this customer, so they drop out of every "
        "campaign and flow.",
        fix_hint="Correct the email on the business partner in SAP (Business Partner Master Data "
        "> General > E-Mail). The next sync sends the fixed contact.",
        sql=_contact_invalid_email, requires=("sap_raw.ocrd",), population_sql=POP_CUSTOMERS,
    ),
    Rule(
        id="contact_missing_email", entity="contact", severity="WARN", owner="marketing",
        title="Missing email address",
        description="A customer has no email address in SAP, so Ometria can only use them for "
        "reporting, never for email marketing.",
        fix_hint="Add the customer's email on the business partner in SAP if you have it "
        "(and their consent); otherwise no action is needed.",
        sql=_contact_missing_email, requires=("sap_raw.ocrd",), population_sql=POP_CUSTOMERS,
    ),
    Rule(
        id="contact_duplicate_email", entity="contact", severity="WARN", owner="marketing",
        title="Email shared by several customers",
        description="Several customers in SAP have the same email address (ignoring case and "
        "spaces). Ometria merges profiles by email, so their orders and lifetime value mix.",
        fix_hint="Decide which business partner is the real customer; merge or correct the others "
        "in SAP (or give each their own email).",
        sql=_contact_duplicate_email, requires=("sap_raw.ocrd",), population_sql=POP_CUSTOMERS,
    ),
    Rule(
        id="contact_missing_name", entity="contact", severity="WARN", owner="marketing",
        title="Customer without a name",
        description="A customer has no name in SAP, so emails cannot be personalised and the "
        "contact is hard to recognise in Ometria.",
        fix_hint="Fill in the business partner's name in SAP.",
        sql=_contact_missing_name, requires=("sap_raw.ocrd",), population_sql=POP_CUSTOMERS,
    ),
)
