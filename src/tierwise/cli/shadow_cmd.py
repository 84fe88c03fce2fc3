"""``tierwise shadow``: re-run a sample of your logged prompts on every candidate model,
judge the answers, write traces, and show where the cheapest model fails."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from tierwise.cli import render
from tierwise.cli.state import CliState
from tierwise.config import Settings, user_data_dir
from tierwise.engine import Engine
from tierwise.errors import InvalidRequestError
from tierwise.learning.shadow import ShadowOptions, ShadowReport, shadow

out = Console()

SHOWN_FAILURES = 10
PROMPT_CHARS = 90


def _cap(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidRequestError(f"--max-cost must be a dollar amount, not {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise InvalidRequestError(f"--max-cost must be a positive dollar amount, not {text!r}")
    return value


def _default_out() -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return user_data_dir() / "shadow" / f"shadow-{stamp}.jsonl"


def shadow_table(report: ShadowReport) -> Table:
    table = Table(
        title=f"Pass rate per task kind ({report.prompts_run} prompts, judged by "
        f"{', '.join(report.gates)}), cheapest model's weakest kinds first",
        title_justify="left",
    )
    table.add_column("kind")
    table.add_column("prompts", justify="right")
    for model in report.models:
        table.add_column(model, justify="right")
    for row in report.by_kind:
        table.add_row(row.kind, str(row.prompts), *(str(row.passed[m]) for m in report.models))
    return table


def print_shadow_report(report: ShadowReport) -> None:
    out.print(shadow_table(report))
    for kind, prompt in report.cheap_failures[:SHOWN_FAILURES]:
        short = " ".join(prompt.split())
        short = short if len(short) <= PROMPT_CHARS else short[: PROMPT_CHARS - 1] + "…"
        out.print(f"{report.cheapest} failed [{kind}]: {short}", markup=False, highlight=False)
    more = len(report.cheap_failures) - SHOWN_FAILURES
    if more > 0:
        out.print(f"… and {more} more prompts the cheapest model failed")
    capped = " — stopped at the spend cap" if report.stopped_at_cap else ""
    out.print(
        f"ran {report.prompts_run} of {report.planned} prompts on {len(report.models)} models, "
        f"{report.labels} labelled answers, {report.failed_calls} failed calls, spent "
        f"{render.dollars(report.spent_usd, 6)}{capped}; {report.traces_written} trace lines -> "
        f"{report.traces_path} (`tierwise calibrate {report.traces_path}`)",
        highlight=False,
    )


async def _run(settings: Settings, options: ShadowOptions) -> ShadowReport:
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    with Progress(*columns, console=out, transient=True) as bar:
        task = bar.add_task("shadowing prompts", total=options.sample)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        async with Engine(settings) as engine:
            return await shadow(engine, options, progress=progress)


def shadow_command(  # noqa: PLR0917 (typer takes options as parameters)
    ctx: typer.Context,
    sample: Annotated[int, typer.Option(min=1, help="How many logged prompts to re-run.")] = 50,
    models: Annotated[
        str | None,
        typer.Option(help="Comma-separated models (default: routing.candidates, else those used)."),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(help="Judge model (default, with no --gate: the strongest candidate)."),
    ] = None,
    gate: Annotated[
        list[str] | None,
        typer.Option(help="A gate spec (python, regex:^OK, command:pytest -q …); repeatable."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Trace file to write (JSONL).")
    ] = None,
    max_cost: Annotated[
        str | None, typer.Option(help="Stop before spending more than this many dollars.")
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Output token cap per answer.")] = 1024,
) -> None:
    """Run all tiers on your own traffic and look at where the cheap one fails."""
    state = ctx.ensure_object(CliState)
    options = ShadowOptions(
        sample=sample,
        models=[m.strip() for m in (models or "").split(",") if m.strip()],
        judge=judge,
        gates=list(gate or []),
        seed=seed,
        max_cost=_cap(max_cost),
        max_tokens=max_tokens,
        out=output or _default_out(),
    )
    print_shadow_report(asyncio.run(_run(state.settings, options)))


def register(app: typer.Typer) -> None:
    """Add ``tierwise shadow`` to ``app``."""
    app.command(name="shadow")(shadow_command)
