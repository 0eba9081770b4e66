"""The end of a sync in the terminal: what happened to each business object, or why it failed.

`print_summary()` speaks in business objects (customers, orders, credit memos, products, stock):
how many SAP holds, how many this run sent, left unchanged and held back; then the open
exceptions per owner with their money in the company's currency, grouped by what the money
means (never one total over different meanings), and the three rules to look at first.
`print_failure()` ends a failed run: FAILED, the failing step, its cause in one sentence and the
log's path.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from sap_ometria_assets.console.run import SyncOutcome
from sap_ometria_assets.lib.config.settings import PROJECT_ROOT
from sap_ometria_assets.lib.quality.checks_config import mapping_facts
from sap_ometria_assets.lib.sync_exceptions.summaries import OpenMoney, open_money
from sap_ometria_assets.lib.snapshots.lake import Lake, open_reader

# business object -> (asset giving its SAP count, metadata key, push asset)
OBJECTS = (
    ("customers", "ometria/contacts", "dagster/row_count", "ometria_push/contacts"),
    ("orders", "ometria/orders", "orders_from_sap", "ometria_push/orders"),
    ("credit memos", "ometria/refunds", "dagster/row_count", None),
    ("products", "ometria/products", "dagster/row_count", "ometria_push/products"),
    ("stock", "ometria/stock", "dagster/row_count", "ometria_push/stock"),
)


def shown(path: Path) -> str:
    """A path relative to the project when it is inside it."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _num(value) -> str:
    return f"{int(value):,}" if isinstance(value, (int, float)) else "-"


def _money(currency: str, amount: float) -> str:
    return f"{currency} {amount:,.2f}"


def object_lines(metadata: dict[str, dict]) -> list[str]:
    lines = [f"{'':<14}{'in SAP':>9}{'sent':>9}{'unchanged':>11}{'held back':>11}"]
    for name, built, count_key, push in OBJECTS:
        sap = metadata.get(built, {}).get(count_key)
        if push is None:
            applied = metadata.get(built, {}).get("by_mode_applied") or {}
            sent = applied.get("negative_order", 0)
            note = (f"  {sent:,} go with the orders as negative orders"
                    if sent else "  sent with the orders (see credit_memo mode)")
            lines.append(f"{name:<14}{_num(sap):>9}{note}")
            continue
        md = metadata.get(push, {})
        row = (f"{name:<14}{_num(sap):>9}{_num(md.get('records_sent')):>9}"
               f"{_num(md.get('skipped_unchanged')):>11}{_num(md.get('held_back')):>11}")
        if name == "orders" and md:
            row += "  (with the credit memos)"
        lines.append(row)
    return lines


def exception_lines(money: OpenMoney) -> list[str]:
    total = sum(money.by_owner.values())
    if not total:
        return ["No open exceptions."]
    owners = sorted(money.by_owner, key=lambda o: -money.by_owner[o])
    lines = [f"Open exceptions: {total:,} ("
             + ", ".join(f"{o} {money.by_owner[o]:,}" for o in owners)
             + "); money at stake by what it means:"]
    for owner in owners:
        parts = sorted(money.money.get(owner, {}).items(), key=lambda kv: -kv[1])
        figures = "; ".join(f"{label}: {_money(money.currency, v)}" for label, v in parts)
        lines.append(f"  {owner:<10} {figures or 'no money at stake'}")
    lines.append("Look at these first:")
    for i, (rule, owner, n, amounts, fix) in enumerate(money.top, 1):
        figures = "".join(f", {label}: {_money(money.currency, v)}"
                          for label, v in sorted(amounts.items(), key=lambda kv: -kv[1]))
        lines.append(f"  {i}. {rule} ({owner}, {n:,} open{figures}). Fix: {fix}")
    return lines


def print_summary(outcome: SyncOutcome, duckdb_path: Path, console: Console) -> None:
    """The end of a successful sync, in business objects and money."""
    out = [f"Sync done in {outcome.elapsed:.1f}s. Log: {shown(outcome.log_path)}; "
           f"warehouse: {shown(duckdb_path)}", *object_lines(outcome.metadata)]
    try:
        # from the snapshot the run just published: the working warehouse is the sync's alone
        with open_reader(Lake.for_warehouse(duckdb_path)) as con:
            out += exception_lines(open_money(con, mapping_facts().local_currency))
    except Exception as exc:  # the sync itself succeeded; say why the register is not shown
        out.append(f"Open exceptions not shown ({type(exc).__name__}: {str(exc)[:200]}).")
    snapshot = outcome.metadata.get("recon/ometria_snapshot", {})
    if snapshot.get("outcome") == "unavailable":
        out.append(f"Reconciliation with Ometria UNAVAILABLE: {snapshot.get('note', 'read-back failed')}"
                   ". Pushes and exceptions stand; recon compared SAP with the ledger only.")
    report = duckdb_path.parent / "reports" / "latest.html"
    if report.exists():
        out.append(f"Health report (open in a browser): {shown(report)}")
    out.append("Details: ops.sync_exceptions in the published snapshot (`sap-ometria sql`, "
               "docs/operations.md).")
    for line in out:
        console.print(line, soft_wrap=True)


def print_failure(outcome: SyncOutcome, console: Console) -> None:
    """The end of a failed sync: FAILED, the step and its cause, the log."""
    console.print(f"FAILED after {outcome.elapsed:.1f}s at step {outcome.failed_step or '-'}: "
                  f"{outcome.cause}", soft_wrap=True)
    console.print(f"Log: {shown(outcome.log_path)}", soft_wrap=True)
