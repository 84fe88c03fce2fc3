"""``tierwise calibrate``: fit a learned router on recorded outcomes and save it as a
versioned artifact; ``tierwise routers``: list the saved artifacts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table

from tierwise.cli import render
from tierwise.cli.options import DataDirOption
from tierwise.cli.state import CliState
from tierwise.routing.artifact import Interval, SplitFigures, list_artifacts
from tierwise.routing.calibrate import CalibrationReport, Objective, ObjectiveKind

out = Console()

SourceArgument = Annotated[
    str,
    typer.Argument(
        help="routellm-gsm8k, routellm-mmlu, routerbench, routerdc, or a path: a trace "
        "JSONL from `tierwise export`, a dataset file or folder."
    ),
]
RoutersDirOption = Annotated[
    Path | None,
    typer.Option("--routers-dir", help="Artifact folder (default: routing.artifacts_dir)."),
]


def _objective(
    target_quality: float | None, max_cost: float | None, strong_share: float | None
) -> Objective:
    options: dict[ObjectiveKind, float | None] = {
        "target-quality": target_quality,
        "max-cost": max_cost,
        "strong-share": strong_share,
    }
    given = [(kind, value) for kind, value in options.items() if value is not None]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --target-quality, --max-cost, --strong-share")
    kind, value = given[0]
    return Objective(kind=kind, value=value)


def _default_name(source: str, estimator: str) -> str:
    stem = Path(source).stem if ("/" in source or "." in source) else source
    cleaned = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in stem).strip("-.")
    return f"{cleaned or 'router'}-{estimator}"[:64]


def calibrate_command(  # noqa: PLR0917 (typer takes options as parameters)
    ctx: typer.Context,
    source: SourceArgument,
    target_quality: Annotated[
        float | None,
        typer.Option(min=0.0, max=2.0, help="Reach this share of the strongest's quality."),
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option(min=0.0, help="Spend at most this many $ per call on average.")
    ] = None,
    strong_share: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Send at most this share of calls to the strongest."),
    ] = None,
    estimator: Annotated[str, typer.Option(help="knn, logreg, gbm or mf.")] = "logreg",
    embedder: Annotated[str, typer.Option(help="auto, minilm or hashing.")] = "auto",
    calibration: Annotated[str, typer.Option(help="platt, isotonic or none.")] = "platt",
    rule: Annotated[str, typer.Option(help="auto, target, lambda or dollar.")] = "auto",
    name: Annotated[str | None, typer.Option(help="Artifact name.")] = None,
    data_dir: DataDirOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation/test split.")] = 0,
    resamples: Annotated[int, typer.Option(min=10, help="Bootstrap resamples.")] = 1000,
    routers_dir: RoutersDirOption = None,
    by_category: Annotated[
        bool,
        typer.Option(
            help="Blend in each category's success rates (requests then carry "
            "metadata.category: an MMLU subject, a task kind)."
        ),
    ] = False,
    folds: Annotated[
        int,
        typer.Option(
            help="Pick the threshold on N-fold cross-fitted predictions over train and "
            "validation (N >= 2; 0: on validation alone)."
        ),
    ] = 0,
) -> None:
    """Fit a learned router on recorded outcomes, pick its threshold, save the artifact."""
    from tierwise.evaluation.loaders import load_matrix  # noqa: PLC0415
    from tierwise.routing.calibrate import calibrate  # noqa: PLC0415

    objective = _objective(target_quality, max_cost, strong_share)
    if rule not in {"auto", "target", "lambda", "dollar"}:
        raise typer.BadParameter(f"--rule must be auto, target, lambda or dollar, not {rule!r}")
    if folds < 0 or folds == 1:
        raise typer.BadParameter(f"--folds must be 0 (off) or at least 2, not {folds}")
    state = ctx.ensure_object(CliState)
    settings = state.settings
    with _bars() as (bar, stage):
        loading = bar.add_task(f"loading {source}", total=None)
        matrix = load_matrix(
            source,
            data_dir=data_dir or settings.data_dir,
            cache_dir=settings.cache_dir,
            catalog=state.catalog(),
        )
        bar.update(loading, total=1, completed=1)
        report = calibrate(
            matrix,
            objective,
            name=name or _default_name(source, estimator),
            artifacts_dir=routers_dir or settings.routing.resolved_artifacts_dir(),
            cache_dir=settings.cache_dir,
            estimator=estimator,
            embedder=embedder,
            calibration=calibration,
            rule=rule,  # type: ignore[arg-type]  # checked above
            seed=seed,
            resamples=resamples,
            stage=stage,
            categories=by_category,
            folds=folds,
        )
    out.print(report_table(report))


class _Stages:
    """One progress bar per calibration stage, created when the stage first reports."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done, total=total)


@contextmanager
def _bars() -> Iterator[tuple[Progress, Callable[[str, int, int], None]]]:
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    with Progress(*columns, console=out, transient=True) as bar:
        yield bar, _Stages(bar)


def _per_call(cost: float) -> str:
    return render.dollars(Decimal(str(cost)), 6)


def _ci(value: float, interval: Interval | None, pct: bool = True) -> str:
    fmt = "{:.1%}" if pct else "{:.4f}"
    if interval is None:
        return fmt.format(value)
    return f"{fmt.format(value)} [{fmt.format(interval.low)}, {fmt.format(interval.high)}]"


def _figures_row(label: str, f: SplitFigures) -> list[str]:
    return [
        label,
        f"{f.prompts:,}",
        _ci(f.quality, f.quality_ci),
        _ci(f.relative_quality, f.relative_quality_ci),
        _per_call(f.cost_usd),
        _ci(f.savings, f.savings_ci),
        f"{f.strong_share:.1%}",
    ]


def report_table(report: CalibrationReport) -> Table:
    meta = report.meta
    rule = {
        "target": f"target {meta.threshold:.3f}",
        "lambda": f"lambda {meta.threshold:.4g}",
        "dollar": f"lambda {meta.threshold:.4g} on each prompt's dollars",
    }[meta.rule]
    table = Table(
        title=f"{meta.label}: {meta.estimator} on {meta.embedder}, {meta.objective} -> {rule}",
        title_justify="left",
        caption=f"vs all on {meta.strongest}; 95% bootstrap intervals ({meta.resamples} "
        f"resamples); artifact {report.path}",
    )
    for column in ("split", "prompts", "quality", "of strongest", "$/call", "saved", "strong"):
        table.add_column(column, justify="left" if column == "split" else "right")
    table.add_row(*_figures_row("validation", meta.validation))
    table.add_row(*_figures_row("test (held out)", meta.test))
    return table


def routers_command(ctx: typer.Context, routers_dir: RoutersDirOption = None) -> None:
    """List saved learned-router artifacts (every version)."""
    state = ctx.ensure_object(CliState)
    root = routers_dir or state.settings.routing.resolved_artifacts_dir()
    rows = list_artifacts(root)
    if not rows:
        out.print(f"no router artifacts in {root} (create one with `tierwise calibrate`)")
        return
    table = Table(title=f"Router artifacts in {root}", title_justify="left")
    for column in (
        "artifact",
        "created",
        "source",
        "estimator",
        "rule",
        "test vs strongest",
        "saved",
    ):
        table.add_column(
            column, justify="right" if column in {"test vs strongest", "saved"} else "left"
        )
    for meta, path in rows:
        if meta is None:
            table.add_row(
                f"{path.parent.name}@{path.name}", "[red]unreadable[/]", "", "", "", "", ""
            )
            continue
        test = meta.test
        table.add_row(
            f"{meta.label}",
            meta.created.strftime("%Y-%m-%d %H:%M"),
            meta.source,
            f"{meta.estimator}/{meta.embedder}",
            f"{meta.rule} {meta.threshold:.4g}",
            f"{test.relative_quality:.1%}",
            f"{test.savings:.1%} ({_per_call(test.cost_usd)}/call)",
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``tierwise calibrate`` and ``tierwise routers`` to ``app``."""
    app.command(name="calibrate")(calibrate_command)
    app.command(name="routers")(routers_command)
