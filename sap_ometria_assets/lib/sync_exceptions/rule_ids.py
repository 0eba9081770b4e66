"""The sync-exception rule ids, and the groups of them other steps reason about.

Plain names, no rule logic: `data/checks.yaml` is validated against `RULE_IDS`
(lib/quality/checks_config.py) and the reconciliation asks which rules keep a record from
Ometria, without either importing the rules themselves. `RULE_IDS` is also the order the rules
are listed and evaluated in (lib/sync_exceptions/catalogue.py builds the registry in it).
"""

RULE_IDS = (
    "contact_invalid_email",
    "contact_missing_email",
    "contact_duplicate_email",
    "contact_missing_name",
    "order_unknown_customer",
    "line_unknown_item",
    "product_missing_price_or_title",
    "product_missing_image",
    "currency_unmapped",
    "document_date_implausible",
    "order_total_mismatch",
    "credit_memo_unlinked",
    "credit_memo_exceeds_order",
    "stock_negative_available",
    "udf_not_served",
    "udf_value_not_allowed",
    "record_too_large",
    "ometria_rejected",
    "ometria_stale",
    "deletion_scan_refused",
    "future_update_date",
    "held_back_other",
)

# Rules whose firing means Ometria does not hold the record's current version: the only ones
# that can explain a reconciliation difference.
KEEPS_RECORD_FROM_OMETRIA = ("currency_unmapped", "record_too_large", "ometria_rejected",
                             "ometria_stale", "held_back_other")

# The catch-all for held-back records: evaluated last, so records another rule explains are
# left out of it.
LAST_RULE = "held_back_other"

# The rules whose firing means the transform held the record back; any other rule (an unlinked
# credit memo, a total that does not add up...) leaves the record on its way to Ometria, so it
# cannot explain why the record is missing there.
HOLD_BACK_RULES = ("contact_invalid_email", "contact_missing_email", "currency_unmapped",
                   "record_too_large", "document_date_implausible")
