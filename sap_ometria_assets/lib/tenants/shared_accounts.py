"""Companies that feed one Ometria account must not overwrite each other's records.

Ometria keys an order (and a credit memo, sent as a negative order) by its id, and a contact by
its id within its `@collection`. Two companies of a retail group that both send
`SO-{DocEntry}` into one account overwrite each other's orders without any error: DocEntry 1
exists in both SAP companies, so one company's revenue silently replaces the other's. So a
company whose Ometria account is shared with another company of the folder must differ from
each of them in its order and credit-memo id templates (all of them share the orders id space)
and in its contact collection; otherwise its code location refuses to load, naming both files
and what to change.

Products are shared on purpose: a group's companies usually sell one catalogue under the same
ItemCode (docs/deployment.md says what that means for prices and stock).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sap_ometria_assets.lib.config.settings import Settings
from sap_ometria_assets.lib.ometria.mapping import Mapping, MappingError, load_mapping
from sap_ometria_assets.lib.tenants.companies import (
    CompanyConfig,
    CompanyConfigError,
    company_settings,
    list_companies,
    load_company,
)


@dataclass(frozen=True)
class AccountIdentity:
    """What a company writes into its Ometria account under its own ids."""

    source: str
    id_templates: frozenset[str]      # orders and credit memos: one id space in Ometria
    collection: str


def identity(company: CompanyConfig, settings: Settings,
             mapping: Mapping | None = None) -> AccountIdentity:
    mapping = mapping or load_mapping(settings.mapping_path)
    return AccountIdentity(
        source=company.source,
        id_templates=frozenset({mapping.orders.id_template, mapping.credit_memos.id_template}),
        collection=settings.ometria_collection,
    )


def _others_on_account(company: CompanyConfig, folder: Path | None,
                       environ: dict[str, str] | None) -> list[AccountIdentity]:
    others = []
    for name in list_companies(folder):
        if name == company.name:
            continue
        try:
            other = load_company(name, folder)
            if other.ometria_account != company.ometria_account:
                continue
            others.append(identity(other, company_settings(other, environ)))
        except (CompanyConfigError, MappingError):
            continue  # a broken company fails its own location's load, not this one's
    return others


def check_shared_account(company: CompanyConfig, settings: Settings, mapping: Mapping | None = None,
                         folder: Path | None = None, environ: dict[str, str] | None = None) -> None:
    """Raise CompanyConfigError when `company` would overwrite records of another company of
    the folder that feeds the same Ometria account (`mapping`: the company's, if already read)."""
    mine = identity(company, settings, mapping)
    problems = []
    for other in _others_on_account(company, folder, environ):
        same = sorted(mine.id_templates & other.id_templates)
        if same:
            problems.append(
                f"order ids {', '.join(same)} are also {other.source}'s, so their orders would "
                "overwrite each other: give this company its own orders.id_template and "
                "credit_memos.id_template in its mapping file (e.g. \"UK-SO-{DocEntry}\", "
                "\"UK-CN-{DocEntry}\")")
        if mine.collection == other.collection:
            problems.append(
                f"contact collection {mine.collection!r} is also {other.source}'s, so their "
                "contacts would overwrite each other: set "
                "ometria.collection to one of its own (e.g. sap_b1_" + company.name + ")")
    if problems:
        raise CompanyConfigError(
            f"{company.source}: shares Ometria account {company.ometria_account!r} with other "
            "companies; " + "; ".join(problems))
