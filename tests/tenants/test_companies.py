"""Company files: what is accepted, what is refused (and that a refusal never shows a secret),
and the Dagster definitions a company gets."""

from __future__ import annotations

import pytest
import yaml

from sap_ometria_assets import definitions, tenants
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT
from sap_ometria_assets.lib.tenants.companies import (
    ACCOUNT_TAG,
    COMPANY_TAG,
    CompanyConfigError,
    company_settings,
    list_companies,
    load_company,
    parse_company,
)

SECRET = "s3cr3t-Value-42"


def _write(folder, name, data) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))


def test_a_company_gets_its_own_paths_and_secrets_from_the_variables_it_names(tmp_path):
    _write(tmp_path, "acme_uk", {
        "warehouse": str(tmp_path / "wh"), "timezone": "Europe/Madrid",
        "sap": {"service_layer_url": "https://sap.example:50000/b1s/v2/", "company_db": "ACME_UK",
                "username": "sync", "password_env": "ACME_SAP_PASSWORD"},
        "ometria": {"api_url": "https://api.ometria.com/v2", "api_key_env": "ACME_OMETRIA_KEY",
                    "account": "acme-group", "rate_limit_per_s": 2},
        "schedules": {"sync": "15 * * * *"},
    })
    company = load_company("acme_uk", tmp_path)
    env = {"ACME_SAP_PASSWORD": "pw", "ACME_OMETRIA_KEY": "key-1",
           "OMETRIA_API_KEY": "someone-elses-key", "SAP_B1_COMPANY_DB": "OTHER"}
    s = company_settings(company, env)
    assert s.sap_b1_service_layer_url == "https://sap.example:50000/b1s/v2"
    assert (s.sap_b1_company_db, s.sap_b1_username) == ("ACME_UK", "sync")
    assert s.sap_b1_password.get_secret_value() == "pw"
    assert s.ometria_api_key.get_secret_value() == "key-1"
    assert s.duckdb_path == tmp_path / "wh" / "warehouse.duckdb"
    assert s.outbox_dir == tmp_path / "wh" / "outbox"
    assert (s.sap_ometria_timezone, s.sap_ometria_cron_sync, s.ometria_rate_limit_per_s) == (
        "Europe/Madrid", "15 * * * *", 2)
    assert company.run_tags(pushes=True) == {COMPANY_TAG: "acme_uk", ACCOUNT_TAG: "acme-group"}
    assert company.run_tags(pushes=False) == {COMPANY_TAG: "acme_uk"}


def test_an_api_key_left_in_the_environment_is_never_another_companys(tmp_path):
    company = parse_company({"warehouse": str(tmp_path)}, "demo_co", "companies/demo_co.yaml")
    s = company_settings(company, {"OMETRIA_API_KEY": "global-key",
                                   "SAP_B1_SERVICE_LAYER_URL": "https://other/b1s/v2"})
    assert s.ometria_api_key is None and s.uses_embedded_ometria and s.uses_embedded_sap
    assert company.ometria_account == "demo_co"  # no account named: its own


@pytest.mark.parametrize("data, field", [
    ({"sap": {"password": SECRET}}, "sap.password"),
    ({"ometria": {"api_key": SECRET}}, "ometria.api_key"),
    ({"alert_webhook": SECRET}, "alert_webhook"),
])
def test_a_literal_secret_is_refused_naming_file_and_field_not_value(tmp_path, data, field):
    with pytest.raises(CompanyConfigError) as err:
        parse_company({"warehouse": "x", **data}, "acme", "companies/acme.yaml")
    assert "companies/acme.yaml" in str(err.value) and field in str(err.value)
    assert SECRET not in str(err.value)


def test_a_secret_pasted_where_a_variable_name_belongs_is_refused_without_echo():
    with pytest.raises(CompanyConfigError) as err:
        parse_company({"warehouse": "x", "ometria": {"api_key_env": SECRET}}, "acme", "companies/acme.yaml")
    assert "ometria.api_key_env" in str(err.value) and SECRET not in str(err.value)


def test_a_variable_that_is_not_set_is_named(tmp_path):
    company = parse_company({"warehouse": "x", "sap": {"service_layer_url": "https://sap/b1s/v2",
                                                       "password_env": "ACME_SAP_PASSWORD"}},
                            "acme", "companies/acme.yaml")
    with pytest.raises(CompanyConfigError, match="sap.password_env names ACME_SAP_PASSWORD, which is not set"):
        company_settings(company, {})
    no_var = parse_company({"warehouse": "x", "sap": {"service_layer_url": "https://sap/b1s/v2"}},
                           "acme", "companies/acme.yaml")
    with pytest.raises(CompanyConfigError, match="sap.password_env: required"):
        company_settings(no_var, {})


def test_bad_names_fields_and_zones_are_refused(tmp_path):
    with pytest.raises(CompanyConfigError, match="timezone"):
        parse_company({"warehouse": "x", "timezone": "Mars/Olympus"}, "acme", "f.yaml")
    with pytest.raises(CompanyConfigError, match="sap.compnay_db"):
        parse_company({"warehouse": "x", "sap": {"compnay_db": "X"}}, "acme", "f.yaml")
    with pytest.raises(CompanyConfigError, match="lowercase"):
        parse_company({"warehouse": "x"}, "Acme-UK", "f.yaml")
    with pytest.raises(CompanyConfigError, match="no such company file"):
        load_company("nobody", tmp_path)


def test_no_companies_folder_is_the_single_company_product(tmp_path):
    assert list_companies(tmp_path / "companies") == []
    defs = definitions.defs()
    assert all(COMPANY_TAG not in (job.tags or {}) for job in defs.jobs)
    assert "sap_change_sensor" in {s.name for s in defs.sensors}
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "sap_raw/ocrd" in keys and "ometria_push/contacts" in keys


def test_a_companys_definitions_tag_every_run_with_the_company_and_its_account(tmp_path):
    company = parse_company({"warehouse": str(tmp_path), "ometria": {"account": "group"}},
                            "north", "companies/north.yaml")
    defs = tenants.for_company(definitions.defs(), company)
    tags = {job.name: dict(job.run_tags) for job in defs.jobs}
    assert all(t[COMPANY_TAG] == "north" for t in tags.values())
    # pushing jobs count against the account; landing-only jobs do not hold it
    assert tags["full_sync_job"][ACCOUNT_TAG] == tags["push_ometria_job"][ACCOUNT_TAG] == "group"
    assert ACCOUNT_TAG not in tags["land_sap_job"]
    assert tags["land_sap_job"]["sap_ometria/lane"] == "sync"
    repo = defs.get_repository_def()
    assert repo.get_schedule_def("land_sap_job_schedule").job.run_tags[COMPANY_TAG] == "north"
    assert "sap_change_sensor" not in {s.name for s in defs.sensors}
    assert "push_after_landing" in {s.name for s in defs.sensors}


def test_check_reports_every_company_and_fails_on_a_broken_one(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "companies"
    _write(folder, "good", {"warehouse": str(tmp_path / "good")})
    _write(folder, "bad", {"warehouse": str(tmp_path / "bad"), "sap": {"password": SECRET}})
    monkeypatch.setenv("SAP_OMETRIA_COMPANIES_DIR", str(folder))
    assert tenants.main(["check"]) == 1
    out = capsys.readouterr().out
    assert "ok      good" in out and "FAILED  bad" in out and SECRET not in out
    assert tenants.main(["workspace"]) == 0
    workspace = yaml.safe_load(capsys.readouterr().out)
    assert [e["python_module"]["attribute"] for e in workspace["load_from"]] == ["bad", "good"]


def test_the_example_company_files_are_valid(tmp_path):
    folder = PROJECT_ROOT / "docs" / "companies.example"
    names = list_companies(folder)
    assert names == ["acme_ie", "acme_uk", "demo_north"]
    env = {"ACME_UK_SAP_PASSWORD": "x", "ACME_IE_SAP_PASSWORD": "y", "ACME_GROUP_OMETRIA_KEY": "k"}
    accounts = {n: load_company(n, folder).ometria_account for n in names}
    assert accounts["acme_uk"] == accounts["acme_ie"] == "acme-group"
    for name in names:
        assert company_settings(load_company(name, folder), env).duckdb_path.name == "warehouse.duckdb"


def _group_company(folder, tmp_path, name, mapping=None, collection=None):
    ometria = {"account": "acme-group"}
    if collection:
        ometria["collection"] = collection
    data = {"warehouse": str(tmp_path / name), "ometria": ometria}
    if mapping:
        data["mapping"] = str(mapping)
    _write(folder, name, data)


def _mapping_with_ids(tmp_path, prefix):
    text = (PROJECT_ROOT / "data" / "mapping.yaml").read_text()
    text = text.replace('"SO-{DocEntry}"', f'"{prefix}-SO-{{DocEntry}}"')
    text = text.replace('"CN-{DocEntry}"', f'"{prefix}-CN-{{DocEntry}}"')
    path = tmp_path / f"{prefix}.mapping.yaml"
    path.write_text(text)
    return path


def test_companies_sharing_an_ometria_account_may_not_overwrite_each_others_orders(
        tmp_path, monkeypatch):
    folder = tmp_path / "companies"
    monkeypatch.setenv("SAP_OMETRIA_COMPANIES_DIR", str(folder))
    _group_company(folder, tmp_path, "acme_uk", collection="sap_b1_uk")
    _group_company(folder, tmp_path, "acme_ie", collection="sap_b1_ie")   # same order ids
    with pytest.raises(CompanyConfigError) as err:
        tenants.validated_company("acme_ie")
    text = str(err.value)
    assert "acme_ie.yaml" in text and "acme_uk.yaml" in text and "acme-group" in text
    assert "SO-{DocEntry}" in text and "orders.id_template" in text
    assert "collection" not in text.split("orders.id_template")[1]     # collections differ


def test_a_shared_contact_collection_is_refused_and_own_ids_and_collection_are_accepted(
        tmp_path, monkeypatch):
    folder = tmp_path / "companies"
    monkeypatch.setenv("SAP_OMETRIA_COMPANIES_DIR", str(folder))
    _group_company(folder, tmp_path, "acme_uk", mapping=_mapping_with_ids(tmp_path, "UK"))
    _group_company(folder, tmp_path, "acme_ie", mapping=_mapping_with_ids(tmp_path, "IE"))
    with pytest.raises(CompanyConfigError, match="contact collection 'sap_b1' is also"):
        tenants.validated_company("acme_ie")
    _group_company(folder, tmp_path, "acme_ie", mapping=_mapping_with_ids(tmp_path, "IE"),
                   collection="sap_b1_ie")
    _group_company(folder, tmp_path, "acme_uk", mapping=_mapping_with_ids(tmp_path, "UK"),
                   collection="sap_b1_uk")
    for name in ("acme_uk", "acme_ie"):
        company, settings = tenants.validated_company(name)
        assert company.ometria_account == "acme-group"
    # a company on an account of its own never conflicts, whatever its ids
    _write(folder, "solo", {"warehouse": str(tmp_path / "solo")})
    assert tenants.validated_company("solo")[0].ometria_account == "solo"
