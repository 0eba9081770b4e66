"""A document-local rule evaluated on the documents landed since its last evaluation says
what an evaluation of every document would: the open exceptions on untouched documents are
carried, fixed ones resolve, new ones open, and the periodic full pass reads everything."""

from datetime import timedelta

import pytest
from checks_fixtures import CONFIG, FACTS, T0, world

from sap_ometria_assets.lib.sync_exceptions.catalogue import RULES_BY_ID
from sap_ometria_assets.lib.sync_exceptions.register import evaluate_exceptions

RULE = RULES_BY_ID["order_total_mismatch"]
DOC_TABLES = ("ordr", "rdr1", "rdr3", "orin", "rin1", "rin3")


@pytest.fixture
def con(tmp_path):
    c = world(tmp_path)
    for t in DOC_TABLES:
        c.execute(f"UPDATE sap_raw.{t} SET _landed_at = ?", [T0])
    yield c
    c.close()


def evaluate(con, now, full_pass_hours=24.0):
    return evaluate_exceptions(con, now, CONFIG, FACTS, (RULE,), full_pass_hours=full_pass_hours)


def land(con, table, assignment, where, at):
    con.execute(f"UPDATE sap_raw.{table} SET {assignment}, _landed_at = ? WHERE {where}", [at])


def open_rows(con):
    return sorted(con.execute("SELECT entity, record_key, detail, impact, last_seen FROM ops.sync_exceptions "
                              "WHERE resolved_at IS NULL").fetchall())


def test_changed_documents_only_and_the_same_verdicts_as_a_full_evaluation(con):
    t1, t2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    total_4 = con.execute("SELECT DocTotal FROM sap_raw.ordr WHERE DocEntry = 4").fetchall()[0][0]
    con.execute("UPDATE sap_raw.ordr SET DocTotal = DocTotal + 25 WHERE DocEntry IN (2, 4)")
    first = evaluate(con, T0).outcomes[RULE.id]
    assert first.reason is None and first.open == 2  # the first evaluation reads every document

    # an hour later: order 4 corrected, a line of order 1 changed, credit memo 20 broken; order
    # 2 (still wrong) not landed again
    land(con, "ordr", f"DocTotal = {total_4}", "DocEntry = 4", t1)
    land(con, "rdr1", "LineTotal = LineTotal + 7", "DocEntry = 1", t1)
    land(con, "orin", "DocTotal = DocTotal + 3", "DocEntry = 20", t1)
    scoped = evaluate(con, t1).outcomes[RULE.id]
    assert "3 documents landed since" in scoped.reason
    assert (scoped.new, scoped.resolved, scoped.open) == (2, 1, 3)
    after_scoped = open_rows(con)
    assert [(e, k) for e, k, *_ in after_scoped] == [("credit_memo", "20"), ("order", "1"), ("order", "2")]
    assert {r[4] for r in after_scoped} == {t1}  # the carried exception was seen at t1 too

    # every document read again: nothing new, nothing resolved, the same words and money
    full = evaluate(con, t2, full_pass_hours=None).outcomes[RULE.id]
    assert full.reason is None and (full.new, full.resolved) == (0, 0)
    assert [r[:4] for r in open_rows(con)] == [r[:4] for r in after_scoped]


def test_the_full_pass_and_a_settings_change_read_every_document(con):
    evaluate(con, T0)
    assert evaluate(con, T0 + timedelta(hours=1)).outcomes[RULE.id].reason  # scoped
    assert evaluate(con, T0 + timedelta(hours=25)).outcomes[RULE.id].reason is None  # nightly pass
    looser = CONFIG.model_copy(update={"exceptions": CONFIG.exceptions.model_copy(
        update={"order_total_tolerance": 5.0})})
    outcome = evaluate_exceptions(con, T0 + timedelta(hours=26), looser, FACTS, (RULE,),
                                  full_pass_hours=24.0).outcomes[RULE.id]
    assert outcome.reason is None  # the rule's SQL changed with the tolerance


def test_a_reset_register_is_filled_from_every_document(con):
    con.execute("UPDATE sap_raw.ordr SET DocTotal = DocTotal + 25 WHERE DocEntry = 2")
    evaluate(con, T0)
    con.execute("DROP TABLE ops.sync_exceptions")
    outcome = evaluate(con, T0 + timedelta(hours=1)).outcomes[RULE.id]
    assert outcome.reason is None and outcome.open == 1
