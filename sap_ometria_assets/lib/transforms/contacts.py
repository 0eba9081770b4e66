"""OCRD (Business Partners) -> Ometria contacts: one row per SAP customer.

Choices (configurable in the mapping, documented in the README):
- Which BPs: `contacts.card_types` (customers; leads optional). Suppliers never.
- Email: trimmed, domain lower-cased (whole address with `lowercase_email`). A BP with no email
  is sent without one (Ometria keys the listing on collection + id and links orders through
  customer_id, so store customers without email still count for lifetime value). A BP whose
  email is present but invalid is held back (`invalid_email`): sending it would be rejected by
  Ometria asynchronously or create a bad identity, and dropping it silently would hide a data
  error that belongs in SAP.
- Consent: BlockSendingMarketingContent = tYES -> EXPLICITLY_OPTEDOUT; else the opt-in UDF;
  otherwise no `marketing_optin` at all (never an implied opt-in). Timestamps only when asked.
- Deleted BPs: held back (`deleted_in_sap`) or, with `on_deleted: opt_out`, a minimal opt-out.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from sap_ometria_assets.lib.ometria.mapping import Mapping
from sap_ometria_assets.lib.transforms.frames import dedupe_latest, require_columns, with_optional
from sap_ometria_assets.lib.transforms.localtime import with_local_time
from sap_ometria_assets.lib.transforms.payloads import COMMON_DESCRIPTIONS, finalize
from sap_ometria_assets.lib.transforms.people import (
    distinct_phone_pairs,
    email_columns,
    name_columns,
    normalise_phones,
    person_name,
    resolve_phones,
)
from sap_ometria_assets.lib.transforms.udfs import udf_fields
from sap_ometria_assets.lib.transforms.values import join_reasons, text, warnings_list, yes

REQUIRED = ("CardCode", "CardName", "CardType", "GroupCode", "EmailAddress", "Country",
            "BlockSendingMarketingContent", "CreateDate", "UpdateDate")

BUSINESS_COLUMNS: dict[str, str] = {
    "customer_id": "Ometria customer_id (the SAP CardCode): links orders to this contact.",
    "card_type": "SAP BP type (CardType): cCustomer, or cLid for leads when configured.",
    "sap_email": "EmailAddress exactly as SAP holds it (to fix invalid addresses at source).",
    "email": "Email sent to Ometria: trimmed, lower-cased; NULL when missing or invalid.",
    "email_status": "valid | invalid | missing (an invalid email holds the contact back).",
    "prefix": "Title taken from the start of the name (Mr, Mrs, Dr...), if any.",
    "firstname": "First word of the name: CardName for people, ContactPerson for companies "
    "(a CardName ending in Ltd, PLC, GmbH... unless CompanyPrivate is cPrivate).",
    "middlename": "Words of the name between the first and the last.",
    "lastname": "Last word of the name.",
    "phone_number": "Phone in E.164 (first valid of the configured phone fields), NULL if none.",
    "phone_status": "valid | invalid | missing (an invalid phone is not sent; see warnings).",
    "country_id": "ISO 3166 country of the BP (SAP Country), NULL when not a 2-letter code.",
    "group_code": "SAP BP group code (GroupCode -> OCRG).",
    "group_name": "SAP BP group name (OCRG Name), sent as a property when configured.",
    "segment": "Segment from the mapping's rules (first matching rule), sent as a property.",
    "marketing_optin": "Consent derived from SAP: EXPLICITLY_OPTEDIN, EXPLICITLY_OPTEDOUT, or NULL "
    "(no consent information; nothing sent). Sent only when the mapping says SAP owns consent.",
    "is_deleted": "True when the BP was deleted in SAP (missing from the last key scan).",
    "sap_updated_at": "SAP's last update of the BP (UpdateDate + UpdateTime read in the company time zone).",
}

DESCRIPTIONS: dict[str, str] = {**COMMON_DESCRIPTIONS, **BUSINESS_COLUMNS}


def build_contacts(
    ocrd: pl.DataFrame,
    ocrg: pl.DataFrame | None,
    mapping: Mapping,
    *,
    collection: str,
    zone: str,
    known_phones: pl.DataFrame | None = None,
    run_started_at: datetime | None = None,
) -> pl.DataFrame:
    """One Ometria contact row per SAP customer (BP of a configured CardType).

    `run_started_at` (the current run's start): with `on_deleted: opt_out`, a deletion first
    seen in this run (`_deleted_at` at or after it) sends no opt-out yet; the contact goes as it
    was, and the opt-out follows from the next run on, once the deletion has stood a run (a scan
    that was wrong can be corrected before anyone is opted out).

    `known_phones` (from `phone_lookup()`) carries phone validations already done, so only new
    numbers go through libphonenumber.
    """
    cfg = mapping.contacts
    require_columns(ocrd, "ocrd", REQUIRED)
    df = with_optional(ocrd, {"_deleted_at": pl.Datetime("us", "UTC"), "CreateTime": pl.String,
                              "UpdateTime": pl.String, "Cellular": pl.String, "Phone1": pl.String})
    df = df.filter(pl.col("CardType").cast(pl.String).is_in(list(cfg.card_types)))
    df, dup_reason = dedupe_latest(df, ["CardCode"])

    groups = _groups(ocrg)
    df = df.with_columns(pl.col("GroupCode").cast(pl.Int64, strict=False).alias("_group_code"))
    df = df.join(groups, left_on="_group_code", right_on="_gcode", how="left")

    email, email_status = email_columns(pl.col("EmailAddress"), cfg.lowercase_email, status_column="email_status")
    # lazy, so the name split and the email normalisation are computed once for all their parts
    # (the email after its status: the library check, opaque to polars, runs once)
    df = df.lazy().with_columns(
        text("CardCode").alias("_id"),
        email_status.alias("email_status"),
        _country().alias("country_id"),
        *(e.alias(n) for n, e in name_columns(person_name(df)).items()),
    ).with_columns(email.alias("email")).collect()
    df = normalise_phones(df, cfg.phone_fields, _phone_region(mapping), cfg.phone_default_region, known_phones)

    props, fields, udf_warns = udf_fields(df, mapping.udfs.BusinessPartner, "ocrd")
    segment = _segment_expr(df, mapping)
    if cfg.group_property:
        props[cfg.group_property] = pl.col("group_name")
    if cfg.segments.property:
        props[cfg.segments.property] = pl.col("segment")

    optin = _optin_expr(df, mapping)
    df = with_local_time(df, "CreateDate", "CreateTime", zone, "_acquired")
    df = with_local_time(df, "UpdateDate", "UpdateTime", zone, "sap_updated_at")
    deleted = pl.col("_deleted_at").is_not_null()
    df = df.with_columns(
        segment.alias("segment"),
        optin.alias("marketing_optin"),
        deleted.alias("is_deleted"),
        *(v.alias(f"_field_{k}") for k, v in fields.items()),
    ).with_columns(
        *(v.alias(f"_prop_{k}") for k, v in props.items()),
    )

    send_optin = cfg.marketing_optin.send
    optin_sent = pl.col("marketing_optin") if send_optin else pl.lit(None, pl.String)
    ts = cfg.marketing_optin.send_timestamps and send_optin
    updated_iso = pl.col("sap_updated_at_iso")
    # A deleted BP in opt_out mode sends only its identity and the opt-out.
    minimal = deleted & pl.lit(cfg.on_deleted == "opt_out")
    if run_started_at is not None:
        # compared as instants (the stored zone may be spelt UTC or Etc/UTC)
        minimal = minimal & (pl.col("_deleted_at").dt.epoch("us")
                             < int(run_started_at.timestamp() * 1_000_000))

    def full(expr: pl.Expr) -> pl.Expr:
        return pl.when(~minimal).then(expr)

    payload_columns = [
        pl.lit("contact").alias("@type"),
        pl.lit(collection).alias("@collection"),
        pl.col("_id").alias("id"),
        pl.col("_id").alias("customer_id"),
        full(pl.col("email")).alias("email"),
        full(pl.col("prefix")).alias("prefix"),
        full(pl.col("firstname")).alias("firstname"),
        full(pl.col("middlename")).alias("middlename"),
        full(pl.col("lastname")).alias("lastname"),
        full(pl.col("phone_number")).alias("phone_number"),
        full(pl.col("country_id")).alias("country_id"),
        *(full(pl.col(f"_field_{k}")).alias(k) for k in fields),
        full(pl.lit([mapping.store])).alias("store_ids"),
        pl.when(minimal).then(pl.lit("EXPLICITLY_OPTEDOUT")).otherwise(optin_sent).alias("marketing_optin"),
        full(pl.col("_acquired_iso")).alias("timestamp_acquired"),
    ]
    if ts:
        payload_columns += [
            full(pl.when(optin_sent == "EXPLICITLY_OPTEDIN").then(updated_iso)).alias("timestamp_subscribed"),
            full(pl.when(optin_sent == "EXPLICITLY_OPTEDOUT").then(updated_iso)).alias("timestamp_unsubscribed"),
        ]
    if props:
        payload_columns.append(
            full(pl.struct(*(pl.col(f"_prop_{k}").alias(k) for k in props))).alias("properties")
        )
    payload_columns.append(pl.lit(True).alias("@merge"))

    reasons = [
        dup_reason,
        pl.when(pl.col("_id").is_null()).then(pl.lit("missing_sap_key")),
        pl.when(deleted & pl.lit(cfg.on_deleted == "hold_back")).then(pl.lit("deleted_in_sap")),
        pl.when(~deleted & (pl.col("email_status") == "invalid")).then(pl.lit("invalid_email")),
    ]
    if cfg.require_email:
        reasons.append(pl.when(~deleted & (pl.col("email_status") == "missing")).then(pl.lit("missing_email")))
    warns = [
        *udf_warns,
        pl.when(pl.col("phone_status") == "invalid").then(
            pl.lit("phone: no valid number in ") + pl.lit(", ".join(cfg.phone_fields))
        ),
        pl.when(text("Country").is_not_null() & pl.col("country_id").is_null()).then(
            pl.lit("Country: '") + text("Country").str.slice(0, 20) + pl.lit("' is not an ISO country code")
        ),
        pl.when(pl.col("_group_code").is_not_null() & pl.col("group_name").is_null()).then(
            pl.lit("GroupCode: ") + pl.col("_group_code").cast(pl.String) + pl.lit(" is not in OCRG")
        ),
    ]
    df = df.with_columns(
        pl.lit("contact").alias("record_type"),
        pl.col("_id").alias("id"),
        pl.lit("OCRD").alias("sap_object"),
        pl.col("CardCode").cast(pl.String).alias("sap_key"),
        pl.col("_id").alias("customer_id"),
        pl.col("CardType").cast(pl.String).alias("card_type"),
        pl.col("EmailAddress").cast(pl.String).alias("sap_email"),
        pl.col("_group_code").alias("group_code"),
        join_reasons(*reasons).alias("_reason"),
        warnings_list(*warns).alias("warnings"),
    )
    return finalize(df, df.select(payload_columns), "contacts", list(BUSINESS_COLUMNS))


def _country() -> pl.Expr:
    country = text("Country").str.to_uppercase()
    return pl.when(country.str.contains(r"^[A-Z]{2}$")).then(country)


def _phone_region(mapping: Mapping) -> pl.Expr:
    return pl.coalesce(_country(), pl.lit(mapping.contacts.phone_default_region))


def phone_lookup(ocrd: pl.DataFrame, mapping: Mapping, known: pl.DataFrame | None = None) -> pl.DataFrame:
    """Every (raw phone, region) of the customers with its E.164 form (null = invalid).

    Pass last run's result as `known`: phones rarely change, and libphonenumber costs ~90 us a
    number, so a second run of 100,000 customers validates only the numbers that are new.
    """
    cfg = mapping.contacts
    require_columns(ocrd, "ocrd", ["CardType", "Country"])
    customers = ocrd.filter(pl.col("CardType").cast(pl.String).is_in(list(cfg.card_types)))
    pairs = distinct_phone_pairs(customers, cfg.phone_fields, _phone_region(mapping))
    return resolve_phones(pairs, cfg.phone_default_region, known)


def _groups(ocrg: pl.DataFrame | None) -> pl.DataFrame:
    if ocrg is None or ocrg.height == 0 or not {"Code", "Name"} <= set(ocrg.columns):
        return pl.DataFrame(schema={"_gcode": pl.Int64, "group_name": pl.String})
    return (
        ocrg.select(pl.col("Code").cast(pl.Int64, strict=False).alias("_gcode"), text("Name").alias("group_name"))
        .drop_nulls("_gcode")
        .unique("_gcode", keep="last", maintain_order=True)
    )


def _segment_expr(df: pl.DataFrame, mapping: Mapping) -> pl.Expr:
    seg = mapping.contacts.segments
    if not seg.rules:
        return pl.lit(seg.default, pl.String)
    udfs = [c.udf for r in seg.rules for c in r.when_any if c.udf]
    require_columns(df, "ocrd", udfs)
    chain = None
    for rule in seg.rules:
        conds = []
        for c in rule.when_any:
            if c.udf:
                conds.append(text(c.udf).is_in(c.values).fill_null(False))
            elif isinstance(c.group, int):
                conds.append((pl.col("_group_code") == c.group).fill_null(False))
            else:
                conds.append((pl.col("group_name") == str(c.group)).fill_null(False))
        cond = pl.any_horizontal(conds)
        chain = (pl.when(cond) if chain is None else chain.when(cond)).then(pl.lit(rule.segment))
    return chain.otherwise(pl.lit(seg.default, pl.String))  # type: ignore[union-attr]


def _optin_expr(df: pl.DataFrame, mapping: Mapping) -> pl.Expr:
    mo = mapping.contacts.marketing_optin
    expr = pl.when(yes("BlockSendingMarketingContent")).then(pl.lit("EXPLICITLY_OPTEDOUT"))
    if mo.optin_udf:
        require_columns(df, "ocrd", [mo.optin_udf])
        v = text(mo.optin_udf)
        expr = (
            expr.when(v.is_in(mo.opted_in_values).fill_null(False)).then(pl.lit("EXPLICITLY_OPTEDIN"))
            .when(v.is_in(mo.opted_out_values).fill_null(False)).then(pl.lit("EXPLICITLY_OPTEDOUT"))
        )
    return expr.otherwise(pl.lit(None, pl.String))
