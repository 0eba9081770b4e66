"""Contacts from Business Partners: stale customer records and lost UDFs are the failures here."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest

from sap_frames import bp, cufd, frame, ocrg
from sap_ometria_assets.lib.ometria.mapping import load_mapping, validate_against_cufd
from sap_ometria_assets.lib.ometria.models import validate_payloads
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT
from sap_ometria_assets.lib.transforms.contacts import build_contacts
from sap_ometria_assets.lib.transforms.contacts import phone_lookup

ZONE = "Europe/London"


@pytest.fixture(scope="module")
def mapping():
    return validate_against_cufd(load_mapping(PROJECT_ROOT / "data" / "mapping.yaml"), cufd())


def contacts(rows, mapping, **kw):
    return build_contacts(frame("ocrd", rows), ocrg(), mapping, collection="sap_b1", zone=ZONE, **kw)


def _with(mapping, section: str, **changes):
    part = getattr(mapping, section).model_copy(update=changes)
    return mapping.model_copy(update={section: part})


def row(df: pl.DataFrame, key: str) -> dict:
    found = df.filter(pl.col("sap_key") == key)
    assert found.height == 1, f"{key}: {found.height} rows"
    return found.row(0, named=True)


def test_a_customer_becomes_the_expected_contact(mapping):
    out = contacts([bp(
        "C001", CardName="Mrs Jane Mary Doe", EmailAddress="  Jane.Doe@Example.COM ",
        Cellular="07911 123456", Phone1="020 7946 0958", GroupCode=101,
        U_LoyaltyTier="Gold", U_AcquisitionSource="Web", U_MarketingOptIn="Y",
        U_DateOfBirth=dt.date(1990, 1, 2),
    )], mapping)
    expected = {
        "@type": "contact", "@collection": "sap_b1", "id": "C001", "customer_id": "C001",
        "email": "jane.doe@example.com", "prefix": "Mrs", "firstname": "Jane", "middlename": "Mary",
        "lastname": "Doe", "phone_number": "+447911123456", "country_id": "GB",
        "date_of_birth": "1990-01-02", "store_ids": ["www.example.co.uk"],
        "marketing_optin": "EXPLICITLY_OPTEDIN", "timestamp_acquired": "2023-04-19T09:00:00+01:00",
        "properties": {"loyalty_tier": "Gold", "acquisition_source": "Web",
                       "customer_group": "VIP", "segment": "VIP"},
        "@merge": True,
    }
    r = row(out, "C001")
    assert r["payload"] == json.dumps(expected, separators=(",", ":"))
    assert r["held_back_reason"] is None
    assert r["payload_bytes"] == len(r["payload"].encode())
    assert (r["record_type"], r["id"], r["sap_object"]) == ("contact", "C001", "OCRD")


# --- updates, not just creation -----------------------------------------------------------------

def test_a_bp_edited_in_sap_changes_its_payload_and_hash(mapping):
    before = row(contacts([bp("C001"), bp("C002")], mapping), "C001")
    after_df = contacts([bp("C001", EmailAddress="jane@new-domain.co.uk", U_LoyaltyTier="Silver",
                            UpdateDate="2024-07-02"), bp("C002")], mapping)
    after = row(after_df, "C001")
    assert after["payload_hash"] != before["payload_hash"]
    assert json.loads(after["payload"])["email"] == "jane@new-domain.co.uk"
    assert json.loads(after["payload"])["properties"]["loyalty_tier"] == "Silver"
    # the untouched BP is byte-for-byte the same
    assert row(after_df, "C002")["payload_hash"] == row(contacts([bp("C002")], mapping), "C002")["payload_hash"]


def test_unchanged_bp_gives_identical_payload_whenever_it_runs(mapping):
    first = contacts([bp("C001", Cellular="07911123456")], mapping)
    second = contacts([bp("C001", Cellular="07911123456", _landed_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))],
                      mapping)
    assert first["payload"].to_list() == second["payload"].to_list()
    assert first["payload_hash"].to_list() == second["payload_hash"].to_list()


def test_group_change_moves_the_customer_between_segments(mapping):
    vip = row(contacts([bp("C001", GroupCode=101)], mapping), "C001")
    retail = row(contacts([bp("C001", GroupCode=100)], mapping), "C001")
    assert json.loads(vip["payload"])["properties"]["segment"] == "VIP"
    assert "segment" not in json.loads(retail["payload"])["properties"]
    assert vip["payload_hash"] != retail["payload_hash"]


# --- UDFs arrive as properties ------------------------------------------------------------------

def test_bp_udfs_and_group_arrive_as_properties(mapping):
    r = row(contacts([bp("C009", GroupCode=103, U_LoyaltyTier="Bronze", U_AcquisitionSource="Event",
                         U_FirstPurchaseCategory="Shoes")], mapping), "C009")
    props = json.loads(r["payload"])["properties"]
    assert props == {"loyalty_tier": "Bronze", "acquisition_source": "Event",
                     "first_purchase_category": "Shoes", "customer_group": "Staff", "segment": "Staff"}


def test_loyalty_tier_gold_makes_a_retail_customer_vip(mapping):
    r = row(contacts([bp("C010", GroupCode=100, U_LoyaltyTier="Gold")], mapping), "C010")
    assert r["segment"] == "VIP"
    assert json.loads(r["payload"])["properties"]["segment"] == "VIP"


def test_a_udf_value_sap_does_not_allow_is_not_sent_but_reported(mapping):
    r = row(contacts([bp("C011", U_LoyaltyTier="Gld")], mapping), "C011")
    assert "loyalty_tier" not in json.loads(r["payload"])["properties"]
    assert r["warnings"] == ["U_LoyaltyTier: value 'Gld' is not an allowed value"]
    assert r["held_back_reason"] is None



def test_a_json_object_or_array_in_a_free_text_udf_is_not_sent_as_its_text(mapping):
    # landing keeps a non-scalar value SAP sent in a text UDF as its JSON text
    df = contacts([bp("C012", U_FirstPurchaseCategory='{"code":"APP"}'),
                   bp("C013", U_FirstPurchaseCategory=' ["Apparel", "Home"] '),
                   bp("C014", U_FirstPurchaseCategory="[Sale] {Shoes}")], mapping)
    for key, shown in (("C012", '{"code":"APP"}'), ("C013", '["Apparel", "Home"]')):
        r = row(df, key)
        assert "first_purchase_category" not in json.loads(r["payload"]).get("properties", {})
        assert r["warnings"] == [f"U_FirstPurchaseCategory: value '{shown}' is a JSON object or array, "
                                 "not a single value"]
        assert r["held_back_reason"] is None
    # text that only looks like one is sent as it is
    assert json.loads(row(df, "C014")["payload"])["properties"]["first_purchase_category"] == "[Sale] {Shoes}"

def test_value_map_and_types(mapping):
    m = mapping.model_copy(update={"udfs": mapping.udfs.model_copy(update={"BusinessPartner": [
        mapping.udfs.BusinessPartner[0].model_copy(update={
            "ometria_property": "vip_tier", "value_map": {"Gold": "gold", "Platinum": "platinum"}}),
    ]})})
    r = row(contacts([bp("C012", U_LoyaltyTier="Gold")], m), "C012")
    assert json.loads(r["payload"])["properties"]["vip_tier"] == "gold"


# --- email, consent, deletion -----------------------------------------------------------------

def test_invalid_email_holds_the_contact_back_missing_email_does_not(mapping):
    out = contacts([bp("C001", EmailAddress="jane.doe@@example"), bp("C002", EmailAddress=None),
                    bp("C003", EmailAddress="a@b.com; c@d.com")], mapping)
    assert row(out, "C001")["held_back_reason"] == "invalid_email"
    assert row(out, "C001")["sap_email"] == "jane.doe@@example"
    assert row(out, "C003")["held_back_reason"] == "invalid_email"
    missing = row(out, "C002")
    assert missing["held_back_reason"] is None and missing["email_status"] == "missing"
    assert "email" not in json.loads(missing["payload"])


def test_require_email_holds_back_customers_without_one(mapping):
    m = _with(mapping, "contacts", require_email=True)
    assert row(contacts([bp("C002", EmailAddress=None)], m), "C002")["held_back_reason"] == "missing_email"


@pytest.mark.parametrize(
    ("block", "udf", "expected"),
    [
        ("tYES", "Y", "EXPLICITLY_OPTEDOUT"),   # SAP's block flag always wins
        ("tNO", "Y", "EXPLICITLY_OPTEDIN"),
        ("tNO", "N", "EXPLICITLY_OPTEDOUT"),
        ("tNO", None, None),                    # no information: nothing sent, never a guessed opt-in
    ],
)
def test_marketing_optin_from_block_flag_and_udf(mapping, block, udf, expected):
    r = row(contacts([bp("C001", BlockSendingMarketingContent=block, U_MarketingOptIn=udf)], mapping), "C001")
    payload = json.loads(r["payload"])
    assert payload.get("marketing_optin") == expected
    assert "timestamp_subscribed" not in payload and "timestamp_unsubscribed" not in payload


def test_optin_timestamps_only_when_configured(mapping):
    mo = mapping.contacts.marketing_optin.model_copy(update={"send_timestamps": True})
    m = _with(mapping, "contacts", marketing_optin=mo)
    payload = json.loads(row(contacts([bp("C001", U_MarketingOptIn="Y")], m), "C001")["payload"])
    assert payload["timestamp_subscribed"] == "2024-06-30T16:45:00+01:00"


def test_consent_not_sent_when_sap_is_not_the_system_of_record(mapping):
    mo = mapping.contacts.marketing_optin.model_copy(update={"send": False})
    r = row(contacts([bp("C001", BlockSendingMarketingContent="tYES")], _with(mapping, "contacts", marketing_optin=mo)),
            "C001")
    assert "marketing_optin" not in json.loads(r["payload"])
    assert r["marketing_optin"] == "EXPLICITLY_OPTEDOUT"  # still visible to SQL users


def test_deleted_bp_is_held_back_by_default_or_opted_out(mapping):
    deleted = bp("C001", _deleted_at=dt.datetime(2024, 7, 1, tzinfo=dt.UTC), U_MarketingOptIn="Y")
    held = row(contacts([deleted], mapping), "C001")
    assert held["held_back_reason"] == "deleted_in_sap" and held["is_deleted"]
    opt_out = row(contacts([deleted], _with(mapping, "contacts", on_deleted="opt_out")), "C001")
    assert opt_out["held_back_reason"] is None
    assert json.loads(opt_out["payload"]) == {
        "@type": "contact", "@collection": "sap_b1", "id": "C001", "customer_id": "C001",
        "marketing_optin": "EXPLICITLY_OPTEDOUT", "@merge": True,
    }


# --- who is a customer, phones, duplicates -------------------------------------------------------

def test_only_configured_card_types_are_contacts(mapping):
    rows = [bp("C001"), bp("L001", CardType="cLid"), bp("S001", CardType="cSupplier", GroupCode=200)]
    assert contacts(rows, mapping)["sap_key"].to_list() == ["C001"]
    with_leads = _with(mapping, "contacts", card_types=["cCustomer", "cLid"])
    assert sorted(contacts(rows, with_leads)["sap_key"].to_list()) == ["C001", "L001"]


def test_phones_are_normalised_to_e164_or_reported(mapping):
    out = contacts([
        bp("C001", Cellular="07911 123456"),
        bp("C002", Cellular=None, Phone1="+33 1 42 68 53 00", Country="FR"),
        bp("C003", Cellular="01 42 68 53 00", Country="FR"),
        bp("C004", Cellular="12345"),
    ], mapping)
    assert row(out, "C001")["phone_number"] == "+447911123456"
    assert row(out, "C002")["phone_number"] == "+33142685300"
    assert row(out, "C003")["phone_number"] == "+33142685300"  # read in the BP's own country
    bad = row(out, "C004")
    assert bad["phone_number"] is None and bad["phone_status"] == "invalid"
    assert bad["held_back_reason"] is None and bad["warnings"]


def test_company_bps_take_names_from_the_contact_person(mapping):
    out = contacts([
        bp("C001", CardName="Northgate Carter Ltd", CompanyPrivate="cCompany", ContactPerson="Ann Lee"),
        bp("C002", CardName="Granite Supplies PLC", CompanyPrivate="cCompany"),
        bp("C003", CardName="Sam Co", CompanyPrivate="cPrivate"),       # a person called Sam Co
        bp("C004", CardName="Jo Bloggs", CompanyPrivate="cCompany"),     # SAP's default: still a person
    ], mapping)
    assert (row(out, "C001")["firstname"], row(out, "C001")["lastname"]) == ("Ann", "Lee")
    assert (row(out, "C002")["firstname"], row(out, "C002")["lastname"]) == (None, None)
    assert (row(out, "C003")["firstname"], row(out, "C003")["lastname"]) == ("Sam", "Co")
    assert (row(out, "C004")["firstname"], row(out, "C004")["lastname"]) == ("Jo", "Bloggs")


def test_uk_numbers_of_foreign_customers_fall_back_to_the_default_region(mapping):
    r = row(contacts([bp("C001", Country="US", Cellular=None, Phone1="020 7946 0958")], mapping), "C001")
    assert r["phone_number"] == "+442079460958"


def test_known_phone_validations_are_reused_not_redone(mapping):
    rows = [bp("C001", Cellular="07911 123456"), bp("C002", Cellular="07912 345678")]
    first = phone_lookup(frame("ocrd", rows), mapping)
    assert sorted(first["e164"].to_list()) == ["+447911123456", "+447912345678"]
    # a (deliberately different) known answer is used as it is: libphonenumber is not asked again
    known = first.with_columns(
        pl.when(pl.col("raw") == "07911 123456").then(pl.lit("+447911000000")).otherwise(pl.col("e164")).alias("e164"))
    out = contacts(rows, mapping, known_phones=phone_lookup(frame("ocrd", rows), mapping, known))
    assert row(out, "C001")["phone_number"] == "+447911000000"


def test_duplicate_cardcode_keeps_one_row_held_back(mapping):
    out = contacts([bp("C001", _landed_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC), EmailAddress="old@example.com"),
                    bp("C001", _landed_at=dt.datetime(2024, 2, 1, tzinfo=dt.UTC), EmailAddress="new@example.com")],
                   mapping)
    r = row(out, "C001")
    assert r["held_back_reason"] == "duplicate_sap_key"
    assert r["email"] == "new@example.com"


def test_every_pushable_contact_passes_the_model(mapping):
    out = contacts([bp(f"C{i:03d}", GroupCode=100 + i % 4, U_LoyaltyTier=["Gold", None][i % 2]) for i in range(20)],
                   mapping)
    pushable = out.filter(pl.col("held_back_reason").is_null())
    assert pushable.height == 20
    assert validate_payloads("contacts", pushable["payload"]).null_count() == 20
