"""One build of `ometria.contacts` in the warehouse: full, or only the business partners that changed.

A contact depends on its OCRD row, its group's OCRG row, the mapping, the time zone, the
collection and (for deletions with `on_deleted: opt_out`) the run's start. The mapping, time
zone, collection and `BUILD_VERSION` are in the fingerprint (a change rebuilds everything, see
`build_state`); the rest is per business partner, so an incremental build rebuilds the partners:
- whose OCRD row was landed since the previous build (edits, new partners, a changed group);
- in a group whose OCRG row was landed since, or whose group has gone from OCRG;
- whose deletion mark differs from what the table holds: the deletion scan sets and clears
  `_deleted_at` without landing the row, so the mark is compared, not its `_landed_at`;
- with `on_deleted: opt_out`, marked deleted at or after the previous build's run start (their
  opt-out falls due once the deletion has stood a run);
- that are in the table but no longer in sap_raw, or have no CardCode.
Their rows are replaced in one transaction; the phone cache (`ometria._phone_lookup`) and the
email cache (`ometria._email_verdicts`) gain the numbers and addresses checked for them. A full
build (first run, changed settings, `full_rebuild`, or the periodic full pass) rebuilds the
table and the phone cache from scratch, and checks only addresses the email cache lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import polars as pl

from sap_ometria_assets.lib.ometria.mapping import Mapping
from sap_ometria_assets.lib.transforms import build_state as bs
from sap_ometria_assets.lib.transforms import contacts as tc
from sap_ometria_assets.lib.transforms.people import PHONE_LOOKUP_SCHEMA, email_verdicts, remember_email_verdicts
from sap_ometria_assets.lib.transforms.tables import previous_hashes, read_raw, write_ometria
from sap_ometria_assets.lib.warehouse.db import append_rows, read_table, write_table
from sap_ometria_assets.lib.warehouse.sql import has_column, lit, table_exists, transaction

# Bump when the contacts transform changes what it produces: the next run rebuilds everything.
BUILD_VERSION = "contacts-1"
NAME = "contacts"
PHONE_LOOKUP = "_phone_lookup"  # cache of libphonenumber verdicts, see tc.phone_lookup
EMAIL_VERDICTS = "_email_verdicts"  # cache of email-validator verdicts, see people.rfc_valid_emails
KEY_SET = "_rebuild_cards"      # temp table of the CardCodes to rebuild
_CARD = 'CAST("CardCode" AS VARCHAR)'



def remember_kept_verdicts(con: duckdb.DuckDBPyConnection, emails: pl.Series) -> int:
    """Take the kept email-validator verdicts (`ometria._email_verdicts`) of these addresses
    (raw SAP EmailAddress values; matched ignoring case and surrounding blanks, so a few more
    may come along), so a build of some partners does not ask the library again for addresses
    an earlier run judged (~25 us each: 0.6 s for the 24,000 customers of an hour's orders at
    x100). Returns how many were taken."""
    if emails.len() == 0 or not table_exists(con, "ometria", EMAIL_VERDICTS):
        return 0
    wanted = pl.DataFrame({"a": emails.cast(pl.String).str.strip_chars().str.to_lowercase().unique()})
    con.register("_wanted_addresses", wanted)
    try:
        kept = con.sql(f"SELECT v.* FROM ometria.{EMAIL_VERDICTS} v "
                       "SEMI JOIN _wanted_addresses w ON w.a = lower(v.address)").pl()
    finally:
        con.unregister("_wanted_addresses")
    return remember_email_verdicts(kept)

@dataclass
class ContactsBuild:
    """What one build did: the rows it built (all, or the rebuilt ones), the id/payload_hash of
    the rows they replaced, why it was full (or the base it added to), and the new phones."""

    frame: pl.DataFrame
    previous: pl.DataFrame | None
    base: bs.Base
    full: bool
    phones_validated: int


def build_contacts_table(con: duckdb.DuckDBPyConnection, mapping: Mapping, *, zone: str, collection: str,
                         run_started_at: datetime | None, full_rebuild: bool = False,
                         full_pass_hours: float | None = None) -> ContactsBuild:
    print_ = bs.fingerprint(BUILD_VERSION, zone, mapping, collection)
    # read before the sources: a row landed while we build is newer and caught next time
    high_water = bs.landed_high_water(con, ("ocrd", "ocrg"))
    now = datetime.now(UTC)
    base = bs.Base("full rebuild requested") if full_rebuild else bs.plan_base(
        con, NAME, print_, outputs=(NAME,), required=("ocrd",), sources=("ocrd",), optional=("ocrg",),
        full_pass_hours=full_pass_hours, now=now)
    full = base.full_reason is not None
    if full:  # a full build that fails half-way must not be taken as a base for increments
        bs.forget_build(con, NAME)
    else:
        _fill_key_set(con, mapping, base.state)  # type: ignore[arg-type]
    where = None if full else f"{_CARD} IN (SELECT key FROM {KEY_SET}) OR \"CardCode\" IS NULL"
    ocrd = read_raw(con, "ocrd", where=where)
    ocrg = read_raw(con, "ocrg", required=False)
    known = read_table(con, "ometria", PHONE_LOOKUP) if table_exists(con, "ometria", PHONE_LOOKUP) else None
    if full and table_exists(con, "ometria", EMAIL_VERDICTS):
        remember_email_verdicts(read_table(con, "ometria", EMAIL_VERDICTS))
    elif ocrd is not None and "EmailAddress" in ocrd.columns:
        # an incremental build checks a few addresses: those of its partners only
        remember_kept_verdicts(con, ocrd["EmailAddress"].drop_nulls())
    phones = tc.phone_lookup(ocrd, mapping, known)  # type: ignore[arg-type]
    frame = tc.build_contacts(ocrd, ocrg, mapping, collection=collection, zone=zone,  # type: ignore[arg-type]
                              known_phones=phones, run_started_at=run_started_at)
    if full:
        previous = previous_hashes(con, NAME)
        write_ometria(con, NAME, frame, tc.DESCRIPTIONS)
        write_table(con, "ometria", PHONE_LOOKUP, phones)
        con.execute(f"COMMENT ON TABLE ometria.{PHONE_LOOKUP} IS " + lit(
            "Cache of libphonenumber results per distinct (raw phone, region) of SAP customers, "
            "kept so later runs validate only new numbers. Safe to drop."))
        validated = phones.height - (known.height if known is not None else 0)
        write_table(con, "ometria", EMAIL_VERDICTS, email_verdicts())
        con.execute(f"COMMENT ON TABLE ometria.{EMAIL_VERDICTS} IS " + lit(
            "Cache of email-validator verdicts per normalised address (with the library version), "
            "kept so a full contacts build checks only new addresses. Safe to drop."))
    else:
        previous = bs.rebuilt_hashes(con, NAME, KEY_SET)
        fresh = phones if known is None else phones.join(
            known.select(list(PHONE_LOOKUP_SCHEMA)).cast(PHONE_LOOKUP_SCHEMA),  # type: ignore[arg-type]
            on=["raw", "region", "default_region"], how="anti", nulls_equal=True)
        with transaction(con):
            bs.replace_keyed_rows(con, NAME, KEY_SET, frame)
            if fresh.height and known is None:
                write_table(con, "ometria", PHONE_LOOKUP, fresh)
            elif fresh.height:
                append_rows(con, "ometria", PHONE_LOOKUP, fresh)
            if table_exists(con, "ometria", EMAIL_VERDICTS):
                con.register("_verdicts", email_verdicts())
                try:
                    con.execute(f"INSERT INTO ometria.{EMAIL_VERDICTS} SELECT * FROM _verdicts v WHERE NOT EXISTS "
                                f"(SELECT 1 FROM ometria.{EMAIL_VERDICTS} e WHERE e.address = v.address "
                                "AND e.validator = v.validator)")
                finally:
                    con.unregister("_verdicts")
        validated = fresh.height
    bs.record_build(con, NAME, high_water=high_water, fingerprint=print_, mode="full" if full else "incremental",
                    now=now, run_started_at=run_started_at)
    return ContactsBuild(frame, previous, base, full, validated)


def _fill_key_set(con: duckdb.DuckDBPyConnection, mapping: Mapping, state: bs.BuildState) -> None:
    """The temp table KEY_SET(key): CardCodes to rebuild (NULL: the rows without one)."""
    p: dict = {"since": state.landed_high_water}
    parts = [f'SELECT {_CARD} AS key FROM sap_raw.ocrd WHERE "_landed_at" > $since OR "CardCode" IS NULL',
             # in the table but gone from sap_raw (a full re-read removes what SAP no longer returns)
             f"SELECT sap_key FROM ometria.{NAME} c WHERE sap_key IS NULL OR NOT EXISTS "
             f"(SELECT 1 FROM sap_raw.ocrd o WHERE {_CARD} = c.sap_key)"]
    if table_exists(con, "sap_raw", "ocrg"):
        groups = 'SELECT TRY_CAST("Code" AS BIGINT) FROM sap_raw.ocrg'
        parts += [f'SELECT {_CARD} FROM sap_raw.ocrd WHERE TRY_CAST("GroupCode" AS BIGINT) IN '
                  f'({groups} WHERE "_landed_at" > $since)',
                  f"SELECT sap_key FROM ometria.{NAME} WHERE group_name IS NOT NULL AND group_code NOT IN "
                  f'({groups} WHERE TRY_CAST("Code" AS BIGINT) IS NOT NULL)']
    else:
        parts.append(f"SELECT sap_key FROM ometria.{NAME} WHERE group_name IS NOT NULL")
    if has_column(con, "sap_raw", "ocrd", "_deleted_at"):
        parts.append(f'SELECT c.sap_key FROM ometria.{NAME} c JOIN sap_raw.ocrd o ON {_CARD} = c.sap_key '
                     'WHERE c.is_deleted IS DISTINCT FROM (o."_deleted_at" IS NOT NULL)')
        if mapping.contacts.on_deleted == "opt_out":
            due = "" if state.run_started_at is None else ' AND "_deleted_at" >= $started'
            if state.run_started_at is not None:
                p["started"] = state.run_started_at
            parts.append(f'SELECT {_CARD} FROM sap_raw.ocrd WHERE "_deleted_at" IS NOT NULL{due}')
    con.execute(f"CREATE OR REPLACE TEMP TABLE {KEY_SET} AS {' UNION '.join(parts)}", p)


def rebuilt_count(con: duckdb.DuckDBPyConnection) -> int:
    """How many CardCodes the last incremental build rebuilt."""
    return con.execute(f"SELECT count(*) FROM {KEY_SET}").fetchall()[0][0]
