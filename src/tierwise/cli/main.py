"""The ``tierwise`` command line.

Every expected failure is a :class:`tierwise.errors.TierwiseError`: :func:`run` prints its
one-line message and exits with its code; no traceback reaches the user.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tierwise.cli import (
    calibrate_cmd,
    consults_cmd,
    eval_cmd,
    learn_cmd,
    ledger_cmd,
    render,
    serve_cmd,
    shadow_cmd,
    workflow_cmd,
)
from tierwise.cli.options import DataDirOption
from tierwise.cli.state import CliState
from tierwise.errors import BudgetExceededError, PolicyError, TierwiseError

app = typer.Typer(
    name="tierwise",
    help="Spend the expensive model only where it pays: routing, exact cost, a ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect and validate the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

out = Console()

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Config file (TOML).", show_default=False)
]
LedgerOption = Annotated[
    str | None, typer.Option("--ledger", help="Ledger database URL.", show_default=False)
]


@app.callback()
def main(ctx: typer.Context, config: ConfigOption = None, ledger: LedgerOption = None) -> None:
    """tierwise — model routing, advisor, cascades and exact cost accounting."""
    ctx.obj = CliState(config_path=config, ledger_url=ledger)


@app.command()
def models(
    ctx: typer.Context,
    provider: Annotated[str | None, typer.Option(help="Only this provider's models.")] = None,
) -> None:
    """List the model catalog with prices (USD per million tokens) and capability profiles."""
    catalog = ctx.ensure_object(CliState).catalog()
    specs = [s for s in catalog if provider is None or s.provider == provider]
    out.print(render.models_table(specs))


def _print_partial(stopped: BudgetExceededError) -> None:
    """A task stopped by its budget still shows the best answer it got, marked partial."""
    if stopped.result is None:
        return
    out.print(stopped.result.response.text(), markup=False, highlight=False)
    cost = stopped.result.cost_usd
    spent = "an unknown amount" if cost is None else f"${cost}"
    out.print(f"[yellow](partial answer: the task stopped at its budget after {spent})[/]")


@app.command()
def ask(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="The prompt; '-' reads standard input.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Pin one model.")] = None,
    policy: Annotated[str | None, typer.Option("--policy", "-p", help="Policy name.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Output token cap.")] = 1024,
    explain: Annotated[bool, typer.Option(help="Show the decision, tokens and cost.")] = False,
) -> None:
    """Send one prompt through the engine and print the answer."""
    if model and policy:
        raise PolicyError("give --model or --policy, not both")
    text = sys.stdin.read() if prompt == "-" else prompt
    chosen = f"fixed:{model}" if model else policy
    state = ctx.ensure_object(CliState)
    try:
        result = asyncio.run(state.ask(text, chosen, max_tokens))
    except BudgetExceededError as stopped:
        _print_partial(stopped)
        raise
    out.print(result.response.text(), markup=False, highlight=False)
    if explain:
        out.print(render.explain_panel(result))


@app.command()
def spend(
    ctx: typer.Context,
    days: Annotated[int | None, typer.Option(help="Only the last N days.")] = None,
    strongest: Annotated[
        str | None, typer.Option(help="Counterfactual model (default: the catalog's strongest).")
    ] = None,
) -> None:
    """Spend by model, role and day, and savings against everything-on-the-strongest-model."""
    state = ctx.ensure_object(CliState)
    since = datetime.now(UTC) - timedelta(days=days) if days else None
    out.print(render.spend_report(state.spend_report(since=since, strongest=strongest)))


@app.command()
def export(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write.")],
    days: Annotated[int | None, typer.Option(help="Only the last N days.")] = None,
) -> None:
    """Export the ledger as JSONL traces (one task a line) for calibration and evaluation."""
    state = ctx.ensure_object(CliState)
    since = datetime.now(UTC) - timedelta(days=days) if days else None
    count = state.export(output, since=since)
    out.print(f"wrote {count} task traces to {output}")


@app.command()
def demo(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    limit: Annotated[int, typer.Option(min=1, help="How many recorded prompts to replay.")] = 200,
    embedder: Annotated[
        str, typer.Option(help="Learned router's embeddings: auto, minilm or hashing.")
    ] = "auto",
) -> None:
    """Routers vs baselines vs the oracle on real recorded prompts (RouteLLM GSM8K), replayed
    through the engine; no API key needed."""
    state = ctx.ensure_object(CliState)
    run = state.demo(data_dir=data_dir, limit=limit, embedder=embedder, console=out)
    out.print(render.demo_summary(run))
    out.print(
        render.spend_report(state.spend_report(since=run.started_at, strongest=run.strongest_model))
    )


@config_app.command("check")
def config_check(ctx: typer.Context) -> None:
    """Validate the config: file, catalog, policies, provider keys and the ledger."""
    state = ctx.ensure_object(CliState)
    report = state.check_config()
    out.print(render.config_report(report))
    if not report.ok:
        raise typer.Exit(code=2)


eval_cmd.register(app)
calibrate_cmd.register(app)
learn_cmd.register(app)
consults_cmd.register(app)
shadow_cmd.register(app)
serve_cmd.register(app)
workflow_cmd.register(app)
ledger_cmd.register(app)


def run() -> None:
    """Console-script entry point: one clear line and a non-zero exit for expected errors."""
    err = Console(stderr=True)
    try:
        app()
    except TierwiseError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)  # [a.table]
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
