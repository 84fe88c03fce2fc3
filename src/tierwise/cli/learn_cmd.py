"""``tierwise learn``: learn from the ledger's labelled outcomes; ``tierwise drift``: is a
router artifact still calibrated for live traffic?"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from tierwise.cli.calibrate_cmd import RoutersDirOption, _bars, _objective, report_table
from tierwise.cli.state import CliState
from tierwise.config import user_data_dir
from tierwise.learning.drift import DriftReport, check_drift, find_meta
from tierwise.learning.kinds import KindReader
from tierwise.learning.learn import LearnOptions, LearnReport, gather, recalibrate
from tierwise.learning.report import KindFigures, Thresholds
from tierwise.ledger.store import Ledger

out = Console()

DaysOption = Annotated[
    float | None, typer.Option(min=0.0, help="Only the last N days (default: everything).")
]


def _since(days: float | None) -> datetime | None:
    return datetime.now(UTC) - timedelta(days=days) if days else None


def _default_traces_path() -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return user_data_dir() / "learn" / f"ledger-{stamp}.jsonl"


def _kinds_table(title: str, rows: list[KindFigures]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("kind", "tasks", "escalated", "cheap starts", "cheap fails", "cheap passes"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    table.add_column("dearer starts", justify="right")
    table.add_column("cheap passes those", justify="right")
    table.add_column("verdict")
    colours = {"too aggressive": "red", "too timid": "yellow", "ok": "green"}
    for row in rows:
        colour = colours.get(row.verdict, "dim")
        table.add_row(
            row.kind,
            str(row.tasks),
            str(row.escalated),
            str(row.cheap_starts),
            str(row.cheap_failed),
            str(row.cheap_pass),
            str(row.dear_starts),
            str(row.avoidable),
            f"[{colour}]{row.verdict}[/]",
        )
    return table


def print_learn_report(report: LearnReport) -> None:
    counts, kinds = report.labels, report.kinds
    sources = ", ".join(f"{k} {v}" for k, v in sorted(counts.by_source.items()))
    out.print(
        f"{report.tasks} tasks; {counts.labels} labelled answers ({sources}) on "
        f"{counts.prompts} prompts across {len(counts.models)} models; "
        f"{counts.imputed} cells imputed; {counts.traces_written} trace lines -> "
        f"{report.traces_path}",
        highlight=False,
    )
    tier = kinds.cheapest_tier
    out.print(
        f"live tasks {kinds.tasks}, escalated {kinds.escalated}; cheapest tier: "
        f"{tier if tier is not None else 'unknown'}",
        highlight=False,
    )
    out.print(_kinds_table("By routing rule (most escalated first)", kinds.by_rule))
    out.print(_kinds_table("By task words", kinds.by_words))
    for row in kinds.by_rule:
        if row.verdict in {"too aggressive", "too timid"}:
            out.print(f"rule {row.kind!r} is {row.verdict}: {row.why}", highlight=False)


def learn_command(  # noqa: PLR0917 (typer takes options as parameters)
    ctx: typer.Context,
    days: DaysOption = None,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Trace file to write (JSONL).")
    ] = None,
    target_quality: Annotated[
        float | None, typer.Option(min=0.0, max=2.0, help="Objective (default 0.95).")
    ] = None,
    max_cost: Annotated[float | None, typer.Option(min=0.0, help="Objective: $/call.")] = None,
    strong_share: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Objective: share to the strongest.")
    ] = None,
    name: Annotated[str, typer.Option(help="Artifact name (a new version each run).")] = "ledger",
    estimator: Annotated[str, typer.Option(help="knn, logreg, gbm or mf.")] = "logreg",
    embedder: Annotated[str, typer.Option(help="auto, minilm or hashing.")] = "auto",
    rule: Annotated[str, typer.Option(help="auto, target or lambda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the calibration split.")] = 0,
    resamples: Annotated[int, typer.Option(min=10, help="Bootstrap resamples.")] = 1000,
    min_prompts: Annotated[
        int, typer.Option(min=5, help="Prompts labelled for every model needed to calibrate.")
    ] = 30,
    impute: Annotated[
        bool, typer.Option(help="Fill gaps by tier order (a tier above a pass passes).")
    ] = True,
    calibrate: Annotated[
        bool, typer.Option(help="Re-calibrate the router (else: only the report).")
    ] = True,
    max_cheap_failure: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Above this the rules are too aggressive.")
    ] = 0.3,
    min_cheap_pass: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="From this the rules are too timid.")
    ] = 0.8,
    min_samples: Annotated[int, typer.Option(min=1, help="Observations a verdict needs.")] = 20,
    routers_dir: RoutersDirOption = None,
) -> None:
    """Turn the ledger's labelled outcomes into traces, report which task kinds escalate and
    whether the rules are too aggressive or too timid, and re-calibrate the router."""
    if rule not in {"auto", "target", "lambda"}:
        raise typer.BadParameter(f"--rule must be auto, target or lambda, not {rule!r}")
    given = (target_quality, max_cost, strong_share)
    objective = (
        _objective(*given) if any(v is not None for v in given) else _objective(0.95, None, None)
    )
    state = ctx.ensure_object(CliState)
    settings = state.settings
    options = LearnOptions(
        since=_since(days),
        traces_path=output or _default_traces_path(),
        impute=impute,
        min_prompts=min_prompts,
        objective=objective,
        name=name,
        estimator=estimator,
        embedder=embedder,
        rule=_rule_kind(rule),
        seed=seed,
        resamples=resamples,
        thresholds=Thresholds(
            max_cheap_failure=max_cheap_failure,
            min_cheap_pass=min_cheap_pass,
            min_samples=min_samples,
        ),
    )
    catalog = state.catalog()
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        report = gather(ledger, catalog, KindReader(settings.routing.rules), options)
    print_learn_report(report)
    if not calibrate:
        return
    with _bars() as (_, stage):
        calibration = recalibrate(
            report,
            options,
            catalog=catalog,
            artifacts_dir=routers_dir or settings.routing.resolved_artifacts_dir(),
            cache_dir=settings.cache_dir,
            stage=stage,
        )
    out.print(report_table(calibration))


def _rule_kind(rule: str) -> Literal["auto", "target", "lambda"]:
    return "target" if rule == "target" else "lambda" if rule == "lambda" else "auto"


def print_drift_report(report: DriftReport) -> None:
    window = f"since {report.since:%Y-%m-%d %H:%M} UTC" if report.since else "all time"
    table = Table(
        title=f"{report.artifact} vs live traffic ({report.scope}, {report.tasks} tasks, {window})",
        title_justify="left",
    )
    for column in ("check", "calibrated", "live (95% interval, n)", "status"):
        table.add_column(column)
    colours = {"drift": "red", "ok": "green"}
    for check in report.checks:
        colour = colours.get(check.status, "dim")
        table.add_row(
            check.name, f"{check.calibrated:.1%}", str(check.live), f"[{colour}]{check.status}[/]"
        )
    out.print(table)
    out.print(report.advice, highlight=False)


def drift_command(  # noqa: PLR0917 (typer takes options as parameters)
    ctx: typer.Context,
    artifact: Annotated[str, typer.Argument(help="Router artifact name (`tierwise routers`).")],
    version: Annotated[int | None, typer.Option(min=1, help="Version (default: latest).")] = None,
    days: Annotated[float, typer.Option(min=0.0, help="Live window in days (0: all).")] = 7.0,
    min_samples: Annotated[int, typer.Option(min=1, help="Observations a check needs.")] = 30,
    strict: Annotated[
        bool, typer.Option(help="Exit with status 3 when recalibration is advised.")
    ] = False,
    routers_dir: RoutersDirOption = None,
) -> None:
    """Compare live quality, escalation rate and strong share with the artifact's calibrated
    figures, and say whether to recalibrate."""
    state = ctx.ensure_object(CliState)
    settings = state.settings
    meta = find_meta(routers_dir or settings.routing.resolved_artifacts_dir(), artifact, version)
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        report = check_drift(ledger, meta, since=_since(days), min_samples=min_samples)
    print_drift_report(report)
    if strict and report.recalibrate:
        raise typer.Exit(code=3)


def register(app: typer.Typer) -> None:
    """Add ``tierwise learn`` and ``tierwise drift`` to ``app``."""
    app.command(name="learn")(learn_command)
    app.command(name="drift")(drift_command)
