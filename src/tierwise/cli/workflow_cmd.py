"""``tierwise workflow compare``: the OO / OK / KO / KK variant harness, as a table and JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from tierwise.catalog import Catalog
from tierwise.cli.render import dollars
from tierwise.cli.state import CliState
from tierwise.config import Settings
from tierwise.engine import Engine
from tierwise.errors import InvalidRequestError, PolicyError, TierwiseError
from tierwise.workflows.compare import (
    VARIANTS,
    CompareReport,
    CompareSetup,
    RunResult,
    TaskSpec,
    compare,
    load_tasks,
)
from tierwise.workflows.rubric import DIMENSIONS, SHORT_LABELS

out = Console()

workflow_app = typer.Typer(
    help="Plan/execute workflows: strong vs cheap models at planning and at implementation.",
    no_args_is_help=True,
)

STRONG, CHEAP = "anthropic:claude-opus-4-7", "anthropic:claude-haiku-4-5"

TasksArgument = Annotated[
    str,
    typer.Argument(
        help="Task file, JSON Lines: {id, prompt, reference?, checks?, gates?, files?} per line; "
        "'examples' runs the small set shipped with tierwise.",
        show_default=False,
    ),
]


@workflow_app.command("compare")
def compare_command(  # noqa: PLR0917 (typer takes options as parameters)
    ctx: typer.Context,
    tasks: TasksArgument,
    planner_strong: Annotated[str, typer.Option(help="Strong planner (O).")] = STRONG,
    planner_cheap: Annotated[str, typer.Option(help="Cheap planner (K).")] = CHEAP,
    executor_strong: Annotated[
        str | None, typer.Option(help="Strong executor (default: the strong planner).")
    ] = None,
    executor_cheap: Annotated[
        str | None, typer.Option(help="Cheap executor (default: the cheap planner).")
    ] = None,
    judge: Annotated[
        str | None, typer.Option(help="Rubric judge (default: the strong planner).")
    ] = None,
    variants: Annotated[str, typer.Option(help="Comma-separated variants.")] = "OO,OK,KO,KK",
    replan_after: Annotated[int, typer.Option(min=1, help="Failed steps before a re-plan.")] = 2,
    max_replans: Annotated[int, typer.Option(min=0, help="Re-plans before a run fails.")] = 1,
    concurrency: Annotated[int, typer.Option(min=1, help="Runs at once.")] = 1,
    budget_usd: Annotated[
        float | None, typer.Option(min=0, help="Each run's budget in dollars (unfinished if hit).")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N tasks.")] = None,
    json_out: Annotated[Path, typer.Option("--json", help="Where to write the report.")] = Path(
        "workflow-compare.json"
    ),
) -> None:
    """Run the tasks as OO / OK / KO / KK (strong or cheap planner x strong or cheap
    executor); print cost and seven-dimension rubric scores per variant; write JSON."""
    chosen = _variants(variants)
    if not json_out.parent.is_dir():  # say so now, not after every run has been paid for
        raise InvalidRequestError(f"cannot write {json_out}: {json_out.parent} is not a directory")
    state = ctx.ensure_object(CliState)
    catalog = state.catalog()
    task_list = load_tasks(tasks, catalog)[:limit]
    setup = CompareSetup(
        planner_strong=catalog.get(planner_strong),
        planner_cheap=catalog.get(planner_cheap),
        executor_strong=catalog.get(executor_strong or planner_strong),
        executor_cheap=catalog.get(executor_cheap or planner_cheap),
        judge=catalog.get(judge or planner_strong),
        variants=chosen,
        replan_after=replan_after,
        max_replans=max_replans,
        concurrency=concurrency,
        budget_usd=None if budget_usd is None else Decimal(str(budget_usd)),
    )
    report = _run(state.settings, catalog, task_list, setup, tasks)
    out.print(compare_table(report))
    _write(report, json_out)


def _variants(text: str) -> tuple[str, ...]:
    names = [name.strip().upper() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in VARIANTS:
            raise PolicyError(f"unknown variant {name!r} (known: {', '.join(VARIANTS)})")
    if not names:
        raise PolicyError("--variants names no variant")
    return tuple(dict.fromkeys(names))


def _run(
    settings: Settings,
    catalog: Catalog,
    tasks: Sequence[TaskSpec],
    setup: CompareSetup,
    task_file: str,
) -> CompareReport:
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    with Progress(*columns, console=out, transient=True) as bar:
        work = bar.add_task("running variants", total=len(tasks) * len(setup.variants))

        def advance(run: RunResult) -> None:
            bar.advance(work)
            bar.update(work, description=f"{run.variant} {run.task}")

        async def main() -> CompareReport:
            async with Engine(settings, catalog=catalog) as engine:
                return await compare(engine, tasks, setup, task_file=task_file, progress=advance)

        return asyncio.run(main())


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def compare_table(report: CompareReport) -> Table:
    """One row per variant: models, runs finished, exact cost, rubric means, checks."""
    table = Table(
        title="Workflow variants (rubric 1-5; a run that did not finish scores 0)",
        caption=f"judge {report.judge}; cost = every call of the runs, judge $ = the rubric judge",
    )
    for header in ("variant", "planner", "executor"):
        table.add_column(header, overflow="fold")
    for header in ("done", "cost", "judge $"):
        table.add_column(header, justify="right", no_wrap=True)
    for key in DIMENSIONS:
        table.add_column(SHORT_LABELS[key], justify="right")
    for header in ("mean", "checks", "step fails", "replans"):
        table.add_column(header, justify="right")
    for v in report.variants:
        table.add_row(
            v.variant,
            v.planner.partition(":")[2],
            v.executor.partition(":")[2],
            f"{v.finished}/{v.tasks}",
            dollars(v.cost_usd, 6),
            dollars(v.judge_cost_usd, 6),
            *(_score(v.scores[key]) for key in DIMENSIONS),
            _score(v.overall),
            f"{v.checks_passed}/{v.checks_total}",
            str(v.steps_failed),
            str(v.replans),
        )
    return table


def _write(report: CompareReport, path: Path) -> None:
    try:
        path.write_text(report.model_dump_json(indent=2) + "\n", "utf-8")
    except OSError as exc:
        raise TierwiseError(f"cannot write {path}: {exc.strerror or exc}") from None
    out.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add ``tierwise workflow`` to ``app``."""
    app.add_typer(workflow_app, name="workflow")
