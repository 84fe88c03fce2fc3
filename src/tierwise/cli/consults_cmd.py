"""``tierwise consults``: when conversations consult the advisor, and how they end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tierwise.advisor.report import ConsultReport, consult_report
from tierwise.cli.state import CliState
from tierwise.ledger.records import ConsultRecord, OutcomeRecord
from tierwise.ledger.store import Ledger

out = Console()


def _money(value: object) -> str:
    return "unknown" if value is None else f"${value}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def report_table(report: ConsultReport) -> Table:
    table = Table(title="First consult of a conversation, by turn", title_justify="left")
    for column in ("turn", "conversations", "labelled", "correct", "succeeded"):
        table.add_column(column, justify="left" if column == "turn" else "right")
    for row in report.by_first_turn:
        table.add_row(
            row.turns,
            str(row.conversations),
            str(row.labelled),
            _share(row.correct_share),
            str(row.succeeded),
        )
    return table


def _counts(title: str, counts: dict[str, int]) -> str:
    listed = ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"
    return f"{title}: {listed}"


def consults_command(
    ctx: typer.Context,
    days: Annotated[int | None, typer.Option(min=1, help="Only the last N days.")] = None,
) -> None:
    """Advisor consults from the ledger: the turn of each conversation's first consult
    against how its task ended, results, what followed, and the dollars on each side."""
    state = ctx.ensure_object(CliState)
    since = datetime.now(UTC) - timedelta(days=days) if days else None
    with Ledger.open(state.settings.resolved_ledger_url()) as ledger:
        consults = ledger.read(ConsultRecord, since=since)
        tasks = sorted({c.task_id for c in consults})
        outcomes = ledger.read(OutcomeRecord, task_ids=tasks) if tasks else []
    report = consult_report(consults, outcomes)
    out.print(
        f"{report.consults} consults; advisor {_money(report.advisor_usd)}, "
        f"executor side {_money(report.executor_usd)}"
    )
    out.print(report_table(report))
    out.print(_counts("results", report.results))
    out.print(_counts("followed by", report.followed_by))


def register(app: typer.Typer) -> None:
    """Add ``tierwise consults`` to ``app``."""
    app.command(name="consults")(consults_command)
