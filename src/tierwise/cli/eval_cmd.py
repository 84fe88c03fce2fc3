"""``tierwise eval``: routers scored on recorded outcomes, with RouteLLM's and RouterBench's
metrics, as tables, JSON and an HTML report."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn

from tierwise.cli.options import DataDirOption
from tierwise.cli.state import CliState
from tierwise.errors import PolicyError, TierwiseError
from tierwise.evaluation.harness import EvalReport, evaluate
from tierwise.evaluation.loaders import load_matrix
from tierwise.evaluation.matrix import OutcomeMatrix
from tierwise.evaluation.report import render, write_html, write_json

out = Console()

Writer = Callable[[EvalReport, Path], None]

DatasetArgument = Annotated[
    str,
    typer.Argument(
        help="routellm-gsm8k, routellm-mmlu, routerbench, routerdc, or a path: a trace "
        "JSONL from `tierwise export`, a dataset file or folder."
    ),
]
RoutersOption = Annotated[
    str,
    typer.Option(
        "--routers",
        "-r",
        help="Comma-separated routers: scorers (tfidf, learned, constant) or cascades "
        "(cascade, cascade+tfidf, cascade+learned).",
    ),
]
JsonOption = Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.")]
HtmlOption = Annotated[
    Path | None, typer.Option("--html", help="Write a self-contained HTML report.")
]
LimitOption = Annotated[
    int | None, typer.Option(min=2, help="Evaluate on a seeded sample of this many prompts.")
]


def eval_command(  # noqa: PLR0917 (typer takes options as parameters)
    ctx: typer.Context,
    dataset: DatasetArgument,
    routers: RoutersOption = "tfidf",
    seeds: Annotated[int, typer.Option(min=1, help="Number of seeded splits.")] = 5,
    data_dir: DataDirOption = None,
    json_out: JsonOption = None,
    html_out: HtmlOption = None,
    limit: LimitOption = None,
) -> None:
    """Score routers on recorded outcomes: cost-quality curves, APGR, CPT, AIQ, savings."""
    names = [name.strip() for name in routers.split(",") if name.strip()]
    if not names:
        raise PolicyError("--routers names no scorer")
    state = ctx.ensure_object(CliState)
    settings = state.settings
    report = _run(
        dataset,
        names,
        seeds=seeds,
        data_dir=data_dir or settings.data_dir,
        cache_dir=settings.cache_dir,
        limit=limit,
    )
    out.print(render(report))
    writers: list[tuple[Path | None, Writer]] = [(json_out, write_json), (html_out, write_html)]
    for path, write in writers:
        if path is not None:
            _write(report, path, write)


def _write(report: EvalReport, path: Path, write: Writer) -> None:
    try:
        write(report, path)
    except OSError as exc:
        raise TierwiseError(f"cannot write {path}: {exc.strerror or exc}") from None
    out.print(f"wrote {path}")


def _run(
    dataset: str,
    names: list[str],
    *,
    seeds: int,
    data_dir: Path | None,
    cache_dir: Path,
    limit: int | None,
) -> EvalReport:
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    with Progress(*columns, DownloadColumn(), console=out, transient=True) as bar:
        download = bar.add_task("downloading", total=None, visible=False)

        def on_download(name: str, done: int, total: int | None) -> None:
            bar.update(
                download,
                description=f"downloading {name}",
                completed=done,
                total=total,
                visible=True,
            )

        matrix = load_matrix(dataset, data_dir=data_dir, cache_dir=cache_dir, progress=on_download)
        bar.update(download, visible=False)
        matrix = limited(matrix, limit)
        work = bar.add_task("evaluating", total=seeds * len(names))

        def on_step(done: int, total: int, label: str) -> None:
            bar.update(work, completed=done, total=total, description=label)

        return evaluate(matrix, names, seeds=range(seeds), progress=on_step)


def limited(matrix: OutcomeMatrix, limit: int | None, seed: int = 0) -> OutcomeMatrix:
    """A seeded sample of ``limit`` prompts (the whole matrix when it is smaller)."""
    if limit is None or limit >= len(matrix):
        return matrix
    rows = np.sort(np.random.default_rng(seed).choice(len(matrix), size=limit, replace=False))
    sample = matrix.subset(rows)
    note = f"limited to a seeded sample of {limit} of {len(matrix)} prompts"
    return dataclasses.replace(sample, notes=[*matrix.notes, note])


def register(app: typer.Typer) -> None:
    """Add ``tierwise eval`` to ``app``."""
    app.command(name="eval")(eval_command)
